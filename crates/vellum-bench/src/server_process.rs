//! `vellum serve` as a child process on a free loopback port: what `w5` drives, and
//! what the CLI tests talk to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to open its data directory and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `exe serve --data <data> --listen 127.0.0.1:<free port> <extra…>` and
    /// waits until `/healthz` answers.
    pub fn start(exe: &Path, data: &Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        let addr = free_port()?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut server = ServerProcess { child, addr };
        server.wait_until_healthy()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_until_healthy(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("vellum serve exited at start: {status}");
            }
            if healthz(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("vellum serve did not answer /healthz within {START_TIMEOUT:?}")
    }

    /// SIGTERM, then waits for the clean shutdown; returns whether it exited 0.
    pub fn stop(mut self) -> anyhow::Result<bool> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        Ok(self.child.wait()?.success())
    }

    /// SIGKILL: the process dies with everything open, as in a power cut of the process.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn healthz(addr: SocketAddr) -> std::io::Result<()> {
    let mut socket = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.write_all(b"GET /healthz HTTP/1.1\r\nhost: vellum\r\nconnection: close\r\n\r\n")?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(answer))
    }
}
