//! `w5` against Redis over its own protocol (RESP), driven like Vellum's `w5`: 64
//! keep-alive connections each `XADD`ing 200-byte messages one at a time to 1,000
//! streams; then 1,000 subscribers blocked in `XREAD` on one stream while 1,000
//! messages are added at 100 per second, delivery measured from just before each
//! `XADD` to its arrival at each subscriber. The clients run on a tokio runtime like
//! Vellum's `w5` clients (two worker threads), on the same two cores as the server.

use anyhow::Context;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vellum_bench::stats::{per_second, percentile_us};
use vellum_bench::w5::{
    APPENDS, CHANNELS, CLIENTS, LIVE_MESSAGES, MESSAGE_BYTES, PUBLISH_PER_S, SUBSCRIBERS,
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct W5Row {
    pub appends_per_s: f64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub delivery_p99_ms: f64,
}

impl From<vellum_bench::w5::W5Report> for W5Row {
    fn from(r: vellum_bench::w5::W5Report) -> Self {
        W5Row {
            appends_per_s: r.http_appends_per_s,
            ack_p50_us: r.http_ack_p50_us,
            ack_p99_us: r.http_ack_p99_us,
            delivery_p99_ms: r.ws_delivery_p99_ms,
        }
    }
}

/// A RESP reply.
#[derive(Debug, PartialEq)]
enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

/// Parses one reply from the front of `buf`: `None` until it is all there.
fn parse(buf: &[u8]) -> anyhow::Result<Option<(Value, usize)>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..eol]).context("a RESP line")?;
    let after = eol + 2;
    let number = || line.parse::<i64>().context("a RESP length");
    Ok(match buf.first() {
        Some(b'+') => Some((Value::Simple(line.into()), after)),
        Some(b'-') => Some((Value::Error(line.into()), after)),
        Some(b':') => Some((Value::Int(number()?), after)),
        Some(b'$') => match number()? {
            -1 => Some((Value::Bulk(None), after)),
            n => {
                let end = after + n as usize;
                (buf.len() >= end + 2)
                    .then(|| (Value::Bulk(Some(buf[after..end].to_vec())), end + 2))
            }
        },
        Some(b'*') => match number()? {
            -1 => Some((Value::Array(None), after)),
            n => {
                let mut items = Vec::with_capacity(n as usize);
                let mut at = after;
                for _ in 0..n {
                    let Some((item, used)) = parse(&buf[at..])? else {
                        return Ok(None);
                    };
                    items.push(item);
                    at += used;
                }
                Some((Value::Array(Some(items)), at))
            }
        },
        _ => anyhow::bail!("not a RESP reply"),
    })
}

/// One connection: a command at a time.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Connection {
    async fn open(port: u16) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::new(),
            out: Vec::new(),
        })
    }

    async fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Value> {
        self.out.clear();
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.out
                .extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&self.out).await?;
        loop {
            if let Some((value, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                if let Value::Error(e) = value {
                    anyhow::bail!("redis: {e}");
                }
                return Ok(value);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `XADD stream * data <bytes>`; the new entry's id.
    async fn xadd(&mut self, stream: &[u8], data: &[u8]) -> anyhow::Result<Vec<u8>> {
        match self
            .command(&[b"XADD", stream, b"*", b"data", data])
            .await?
        {
            Value::Bulk(Some(id)) => Ok(id),
            other => anyhow::bail!("XADD answered {other:?}"),
        }
    }
}

/// `w5` against the Redis at `port` (started with `appendfsync always`), scaled as
/// Vellum's `w5` is by the same options.
pub fn w5(port: u16, options: &vellum_bench::BenchOptions) -> anyhow::Result<W5Row> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(drive(port, options))
}

async fn drive(port: u16, options: &vellum_bench::BenchOptions) -> anyhow::Result<W5Row> {
    let per_client = options.scaled(APPENDS, CLIENTS) / CLIENTS;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(append_loop(port, client, per_client)));
    }
    let mut latencies = Vec::with_capacity(per_client * CLIENTS);
    for client in clients {
        latencies.extend(client.await?.context("an appending client")?);
    }
    let appends_per_s = per_second(latencies.len(), started.elapsed());
    let mut check = Connection::open(port).await?;
    let mut total = 0;
    for channel in 0..CHANNELS {
        match check
            .command(&[b"XLEN", format!("w5-{channel}").as_bytes()])
            .await?
        {
            Value::Int(n) => total += n as usize,
            other => anyhow::bail!("XLEN answered {other:?}"),
        }
    }
    anyhow::ensure!(
        total == per_client * CLIENTS,
        "{total} entries, {} acknowledged",
        per_client * CLIENTS
    );

    let subscribers = options.scaled(SUBSCRIBERS, 10);
    let live = options.scaled(LIVE_MESSAGES, 20);
    // The stream exists before anyone reads it; every subscriber reads from its first entry on.
    let first = check.xadd(b"w5-live", b"start").await?;
    let base = Instant::now();
    let mut receivers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let connection = Connection::open(port).await?;
        receivers.push(tokio::spawn(receive(connection, first.clone(), base, live)));
    }
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / PUBLISH_PER_S));
    for _ in 0..live {
        ticks.tick().await;
        let mut data = (base.elapsed().as_micros() as u64).to_le_bytes().to_vec();
        data.resize(MESSAGE_BYTES, b'x');
        check.xadd(b"w5-live", &data).await?;
    }
    let mut delivery_us = Vec::with_capacity(subscribers * live);
    for receiver in receivers {
        delivery_us.extend(receiver.await?.context("a subscriber")?);
    }
    anyhow::ensure!(
        delivery_us.len() == subscribers * live,
        "deliveries missing"
    );
    Ok(W5Row {
        appends_per_s,
        ack_p50_us: percentile_us(&mut latencies, 50.0),
        ack_p99_us: percentile_us(&mut latencies, 99.0),
        delivery_p99_ms: percentile_us(&mut delivery_us, 99.0) as f64 / 1000.0,
    })
}

/// One client: `count` XADDs, one at a time, over one connection; their latencies.
async fn append_loop(port: u16, client: usize, count: usize) -> anyhow::Result<Vec<u32>> {
    let mut connection = Connection::open(port).await?;
    let data = vec![b'x'; MESSAGE_BYTES];
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let stream = format!("w5-{}", (client * count + i) % CHANNELS);
        let t0 = Instant::now();
        connection.xadd(stream.as_bytes(), &data).await?;
        latencies.push(t0.elapsed().as_micros() as u32);
    }
    Ok(latencies)
}

/// One subscriber: `XREAD BLOCK` after `last` until `count` entries arrived; each one's
/// delay from the time written in its first 8 bytes.
async fn receive(
    mut connection: Connection,
    mut last: Vec<u8>,
    base: Instant,
    count: usize,
) -> anyhow::Result<Vec<u32>> {
    let mut delays = Vec::with_capacity(count);
    while delays.len() < count {
        let reply = connection
            .command(&[b"XREAD", b"BLOCK", b"60000", b"STREAMS", b"w5-live", &last])
            .await?;
        let Value::Array(Some(streams)) = reply else {
            anyhow::bail!("XREAD timed out or answered {reply:?}");
        };
        for stream in streams {
            let Value::Array(Some(mut parts)) = stream else {
                anyhow::bail!("XREAD: a stream that is not [name, entries]");
            };
            let Some(Value::Array(Some(entries))) = parts.pop() else {
                anyhow::bail!("XREAD: no entries");
            };
            for entry in entries {
                let now = base.elapsed().as_micros() as u64;
                let Value::Array(Some(mut entry)) = entry else {
                    anyhow::bail!("XREAD: an entry that is not [id, fields]");
                };
                let (Some(Value::Array(Some(fields))), Some(Value::Bulk(Some(id)))) =
                    (entry.pop(), entry.pop())
                else {
                    anyhow::bail!("XREAD: an entry without id and fields");
                };
                let Some(Value::Bulk(Some(data))) = fields.get(1) else {
                    anyhow::bail!("XREAD: an entry without data");
                };
                let sent = u64::from_le_bytes(data[..8].try_into()?);
                delays.push(now.saturating_sub(sent) as u32);
                last = id;
            }
        }
    }
    Ok(delays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let reply = b"*2\r\n$3\r\nabc\r\n:5\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        assert_eq!(
            value,
            Value::Array(Some(vec![
                Value::Bulk(Some(b"abc".to_vec())),
                Value::Int(5)
            ]))
        );
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Some((Value::Error("ERR no".into()), 9))
        );
        assert!(parse(b"?\r\n").is_err());
    }
}
