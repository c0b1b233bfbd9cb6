//! With a certificate and key configured, the server speaks HTTPS (rustls): an append
//! and a read over TLS to a real socket, the client trusting only the test's own
//! self-signed certificate; and a plain-HTTP client gets no answer.

use std::io::{Read, Write};
use std::sync::Arc;

/// One HTTP/1.1 exchange over TLS, trusting `cert` only.
fn exchange(addr: std::net::SocketAddr, cert: &rcgen::Certificate, request: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // The server closes after `connection: close`; a TLS close_notify may be missing.
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = vellum_server::Config {
        data_dir: dir.path().join("data"),
        listen: addr,
        tls: Some(vellum_server::TlsConfig {
            cert: cert_path,
            key: key_path,
        }),
        ..vellum_server::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vellum_server::serve_on(listener, config, async {
        let _ = stopped.await;
    }));
    let cert = key.cert;
    let (appended, read, plain) = tokio::task::spawn_blocking(move || {
        let appended = exchange(
            addr,
            &cert,
            "POST /v1/channels/tls/messages HTTP/1.1\r\nhost: localhost\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecret",
        );
        let read = exchange(
            addr,
            &cert,
            "GET /v1/channels/tls/messages HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        );
        // Plain HTTP to a TLS port: no HTTP answer comes back.
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut plain = Vec::new();
        let _ = socket.read_to_end(&mut plain);
        (appended, read, plain)
    })
    .await
    .unwrap();
    assert!(appended.starts_with("HTTP/1.1 201"), "{appended}");
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    assert!(read.contains("\"data\":\"c2VjcmV0\""), "{read}");
    assert!(!String::from_utf8_lossy(&plain).contains("HTTP/1.1 200"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
