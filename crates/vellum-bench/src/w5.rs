//! `w5` server: HTTP appends from 64 keep-alive clients at Fsync; then 1,000 WebSocket
//! subscribers on one channel, with delivery latency measured from just before each
//! publishing POST to its arrival at each subscriber.
//!
//! The server is `vellum serve` in a child process (this executable again) on a
//! loopback port; the clients run here, on the same two cores.

use crate::BenchOptions;
use crate::http::{Sender, connect, send};
use crate::server_process::ServerProcess;
use crate::stats::{per_second, percentile_us};
use anyhow::Context;
use base64::Engine;
use futures_util::StreamExt;
use hyper::Method;
use hyper::body::Bytes;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub const APPENDS: usize = 200_000;
pub const CLIENTS: usize = 64;
pub const CHANNELS: usize = 1_000;
pub const MESSAGE_BYTES: usize = 200;
pub const SUBSCRIBERS: usize = 1_000;
/// Messages published to the subscribed channel, one at a time, at `PUBLISH_PER_S`.
pub const LIVE_MESSAGES: usize = 1_000;
pub const PUBLISH_PER_S: u64 = 100;
const LIVE_CHANNEL: &str = "w5-live";

#[derive(Debug, Clone, serde::Serialize)]
pub struct W5Report {
    pub workload: &'static str,
    pub durability: &'static str,
    pub appends: usize,
    pub clients: usize,
    pub http_appends_per_s: f64,
    pub http_ack_p50_us: u64,
    pub http_ack_p99_us: u64,
    /// Journal fsyncs and group commits during the append phase (and before it: none).
    pub journal_syncs: u64,
    pub commit_groups: u64,
    pub subscribers: usize,
    pub live_messages: usize,
    pub deliveries: usize,
    pub ws_delivery_p50_ms: f64,
    pub ws_delivery_p99_ms: f64,
}

pub fn run(options: &BenchOptions, exe: &Path) -> anyhow::Result<W5Report> {
    let dir = options.temp_dir()?;
    let server = ServerProcess::start(exe, &dir.path().join("data"), &["--sync", "fsync"])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(drive(options, server.addr));
    anyhow::ensure!(server.stop()?, "the server did not shut down cleanly");
    report
}

async fn drive(options: &BenchOptions, addr: SocketAddr) -> anyhow::Result<W5Report> {
    let appends = options.scaled(APPENDS, CLIENTS);
    let per_client = appends / CLIENTS;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(append_loop(addr, client, per_client)));
    }
    let mut latencies = Vec::with_capacity(per_client * CLIENTS);
    for client in clients {
        latencies.extend(client.await?.context("an appending client")?);
    }
    let elapsed = started.elapsed();
    let http_appends_per_s = per_second(latencies.len(), elapsed);
    let http_ack_p50_us = percentile_us(&mut latencies, 50.0);
    let http_ack_p99_us = percentile_us(&mut latencies, 99.0);
    let stats = server_stats(addr).await?;

    let subscribers = options.scaled(SUBSCRIBERS, 10);
    let live_messages = options.scaled(LIVE_MESSAGES, 20);
    let base = Instant::now();
    let mut sockets = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        sockets.push(subscribe(addr).await.context("subscribing")?);
    }
    let mut receivers = Vec::with_capacity(subscribers);
    for socket in sockets {
        receivers.push(tokio::spawn(receive(socket, base, live_messages)));
    }
    publish(addr, base, live_messages)
        .await
        .context("publishing")?;
    let mut delivery_us = Vec::with_capacity(subscribers * live_messages);
    for receiver in receivers {
        delivery_us.extend(receiver.await?.context("a subscriber")?);
    }
    let deliveries = delivery_us.len();
    anyhow::ensure!(
        deliveries == subscribers * live_messages,
        "{deliveries} deliveries of {} expected",
        subscribers * live_messages
    );
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(W5Report {
        workload: "w5",
        durability: "fsync",
        appends: per_client * CLIENTS,
        clients: CLIENTS,
        http_appends_per_s,
        http_ack_p50_us,
        http_ack_p99_us,
        journal_syncs: stats["journal_syncs"].as_u64().unwrap_or_default(),
        commit_groups: stats["commit_groups"].as_u64().unwrap_or_default(),
        subscribers,
        live_messages,
        deliveries,
        ws_delivery_p50_ms: ms(percentile_us(&mut delivery_us, 50.0)),
        ws_delivery_p99_ms: ms(percentile_us(&mut delivery_us, 99.0)),
    })
}

/// The server's `/v1/stats`.
async fn server_stats(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut sender = connect(addr).await?;
    let (_, body) = send(&mut sender, addr, Method::GET, "/v1/stats", Bytes::new()).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// POSTs `body` as one message; checks the answer is 201.
async fn post(
    sender: &mut Sender,
    addr: SocketAddr,
    channel: &str,
    body: Bytes,
) -> anyhow::Result<()> {
    let path = format!("/v1/channels/{channel}/messages");
    let (status, answer) = send(sender, addr, Method::POST, &path, body).await?;
    anyhow::ensure!(
        status == hyper::StatusCode::CREATED,
        "append answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

/// One client: `count` appends, one at a time, over one connection; their latencies.
async fn append_loop(addr: SocketAddr, client: usize, count: usize) -> anyhow::Result<Vec<u32>> {
    let mut sender = connect(addr).await?;
    let body = Bytes::from(vec![b'x'; MESSAGE_BYTES]);
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let channel = format!("w5-{}", (client * count + i) % CHANNELS);
        let t0 = Instant::now();
        post(&mut sender, addr, &channel, body.clone()).await?;
        latencies.push(t0.elapsed().as_micros() as u32);
    }
    Ok(latencies)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes, and waits for a pong: the server answers pings only once the
/// subscription has joined the live queue.
async fn subscribe(addr: SocketAddr) -> anyhow::Result<Socket> {
    use futures_util::SinkExt;
    let url = format!("ws://{addr}/v1/channels/{LIVE_CHANNEL}/subscribe");
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("subscribing")?;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Ping(Bytes::new()))
        .await?;
    loop {
        match socket.next().await.context("closed before the pong")?? {
            tokio_tungstenite::tungstenite::Message::Pong(_) => return Ok(socket),
            _ => continue,
        }
    }
}

/// The one field of a message frame the subscribers need (the rest is skipped).
#[derive(serde::Deserialize)]
struct Line<'a> {
    data: &'a str,
}

/// Reads `count` messages; each carries the microseconds since `base` at which its
/// POST was sent. Returns the delivery latencies.
async fn receive(mut socket: Socket, base: Instant, count: usize) -> anyhow::Result<Vec<u32>> {
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .context("no message for 60 s")?
            .context("subscription closed")??;
        let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
            continue;
        };
        let arrived = base.elapsed().as_micros() as u64;
        let line: Line<'_> = serde_json::from_str(&text)?;
        let data = base64::engine::general_purpose::STANDARD.decode(line.data)?;
        let sent = u64::from_le_bytes(data[..8].try_into()?);
        latencies.push(arrived.saturating_sub(sent) as u32);
    }
    Ok(latencies)
}

/// Publishes `count` messages at `PUBLISH_PER_S`, one at a time, each stamped with
/// the microseconds since `base` just before its POST.
async fn publish(addr: SocketAddr, base: Instant, count: usize) -> anyhow::Result<()> {
    let mut sender = connect(addr).await?;
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / PUBLISH_PER_S));
    for _ in 0..count {
        ticks.tick().await;
        let mut body = vec![b'p'; MESSAGE_BYTES];
        body[..8].copy_from_slice(&(base.elapsed().as_micros() as u64).to_le_bytes());
        post(&mut sender, addr, LIVE_CHANNEL, Bytes::from(body)).await?;
    }
    Ok(())
}
