//! `soak`: a bounded mixed workload through the server for a fixed time — appends
//! (single and batches, some bodies large enough for the message store), reads,
//! WebSocket subscribers that come and go, trims, clears, archives and restores,
//! metadata amendments, deletes, store compactions, stats and metrics scrapes — while
//! the server's memory and open files are sampled. Memory must stay flat.
//!
//! Bounded: appends are paced, channels are a fixed set kept short by trims, so what
//! grows over time is only what a leak would grow. Checked along the way: every
//! acknowledged seq of a channel above the one before, reads and subscriptions in seq
//! order, and no 5xx but `503 overloaded`.

use crate::BenchOptions;
use crate::http::{connect, send, send_json};
use crate::server_process::ServerProcess;
use crate::stats::{per_second, percentile_us};
use anyhow::Context;
use base64::Engine;
use futures_util::StreamExt;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const CHANNELS: usize = 40;
const APPENDERS: usize = 8;
/// Appends per second, all appenders together.
const APPENDS_PER_S: u64 = 2_000;
const READERS: usize = 2;
const SUBSCRIBERS: usize = 16;
/// Trims keep about this many messages per channel.
const KEEP: u64 = 300;
const MAINTENANCE_EVERY: Duration = Duration::from_millis(250);
const COMPACT_EVERY: Duration = Duration::from_secs(20);
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Below this, the run checks correctness only: too short to judge memory.
const FLATNESS_MIN: Duration = Duration::from_secs(120);
/// Flat: the resident set at the end within 10 % + 8 MiB of the one after warm-up.
const RSS_GROWTH_MAX: f64 = 0.10;
const RSS_SLACK_KIB: u64 = 8 * 1024;
const FDS_SLACK: u64 = 16;

#[derive(Debug, Clone, serde::Serialize)]
pub struct OpFigures {
    pub count: usize,
    pub per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t_s: u64,
    pub rss_kib: u64,
    pub fds: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    pub workload: &'static str,
    pub durability: &'static str,
    pub seconds: u64,
    pub ops: BTreeMap<&'static str, OpFigures>,
    /// Answers the workload expects now and then (a write to a channel being archived,
    /// a delete the metadata forbids, …), by error code.
    pub expected_refusals: BTreeMap<String, u64>,
    pub deliveries: u64,
    pub subscriptions: u64,
    /// Resident set after warm-up (median of 30 s), at the end (median of the last 30 s),
    /// the most seen, and the slope of a least-squares line through the post-warm-up samples.
    pub rss_warm_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
    pub rss_slope_kib_per_min: f64,
    pub fds_warm: u64,
    pub fds_end: u64,
    /// `None` when the run was too short to judge.
    pub flat: Option<bool>,
    pub samples: Vec<Sample>,
}

/// What the workers record.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    latencies: Mutex<BTreeMap<&'static str, Vec<u32>>>,
    refusals: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
    /// The highest acknowledged seq of each channel.
    last_seq: Mutex<Vec<Option<u64>>>,
    deliveries: AtomicU64,
    subscriptions: AtomicU64,
}

impl Shared {
    fn record(&self, op: &'static str, started: Instant) {
        let us = started.elapsed().as_micros() as u32;
        self.latencies.lock().entry(op).or_default().push(us);
    }

    fn fail(&self, what: String) {
        self.failures.lock().push(what);
        self.stop.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Counts an expected refusal, or fails the run on anything else.
    fn refused(&self, op: &str, status: StatusCode, body: &[u8], expected: &[&str]) {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_else(|| status.to_string());
        if expected.contains(&code.as_str()) || code == "overloaded" {
            *self.refusals.lock().entry(code).or_default() += 1;
        } else {
            self.fail(format!(
                "{op} answered {status}: {}",
                String::from_utf8_lossy(body)
            ));
        }
    }

    /// Checks an acknowledged seq is above the channel's last one.
    fn acknowledged(&self, channel: usize, seq: u64) {
        let mut last = self.last_seq.lock();
        if last[channel].is_some_and(|l| seq <= l) {
            let previous = last[channel];
            drop(last);
            self.fail(format!(
                "channel {channel}: seq {seq} acknowledged after {previous:?}"
            ));
            return;
        }
        last[channel] = Some(seq);
    }
}

fn channel_name(i: usize) -> String {
    format!("soak-{i:02}")
}

pub fn run(options: &BenchOptions, exe: &Path, duration: Duration) -> anyhow::Result<SoakReport> {
    let dir = options.temp_dir()?;
    // Pre-trim copies and archives are deleted after a minute: with them, the data
    // stays bounded (else every trim keeps a copy, and its stored bodies, for good).
    let server = ServerProcess::start(
        exe,
        &dir.path().join("data"),
        &[
            "--sync",
            "fsync",
            "--eviction-interval-s",
            "10",
            "--archive-retention-s",
            "60",
        ],
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(drive(server.addr, server.pid(), duration));
    anyhow::ensure!(server.stop()?, "the server did not shut down cleanly");
    let report = report?;
    if report.flat == Some(false) {
        // The figures first: they are what explains the failure.
        eprintln!("{}", serde_json::to_string(&report)?);
        anyhow::bail!(
            "memory grew: {} KiB after warm-up, {} KiB at the end ({} fds → {})",
            report.rss_warm_kib,
            report.rss_end_kib,
            report.fds_warm,
            report.fds_end
        );
    }
    Ok(report)
}

async fn drive(addr: SocketAddr, pid: u32, duration: Duration) -> anyhow::Result<SoakReport> {
    let shared = Arc::new(Shared {
        last_seq: Mutex::new(vec![None; CHANNELS]),
        ..Shared::default()
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..APPENDERS {
        tasks.push(tokio::spawn(appender(addr, shared.clone(), worker as u64)));
    }
    for worker in 0..READERS {
        tasks.push(tokio::spawn(reader(
            addr,
            shared.clone(),
            100 + worker as u64,
        )));
    }
    for worker in 0..SUBSCRIBERS {
        tasks.push(tokio::spawn(subscriber(
            addr,
            shared.clone(),
            200 + worker as u64,
        )));
    }
    tasks.push(tokio::spawn(maintenance(addr, shared.clone())));
    let samples = sample(pid, &shared, started, duration).await;
    shared.stop.store(true, Ordering::Release);
    for task in tasks {
        if let Err(e) = task.await? {
            shared.fail(format!("{e:#}"));
        }
    }
    if let Some(first) = shared.failures.lock().first() {
        anyhow::bail!("the soak failed: {first}");
    }
    let elapsed = started.elapsed();
    let mut ops = BTreeMap::new();
    for (op, mut latencies) in std::mem::take(&mut *shared.latencies.lock()) {
        let count = latencies.len();
        ops.insert(
            op,
            OpFigures {
                count,
                per_s: per_second(count, elapsed),
                p50_us: percentile_us(&mut latencies, 50.0),
                p99_us: percentile_us(&mut latencies, 99.0),
            },
        );
    }
    let memory = Memory::judge(&samples, duration);
    Ok(SoakReport {
        workload: "soak",
        durability: "fsync",
        seconds: elapsed.as_secs(),
        ops,
        expected_refusals: std::mem::take(&mut *shared.refusals.lock()),
        deliveries: shared.deliveries.load(Ordering::Relaxed),
        subscriptions: shared.subscriptions.load(Ordering::Relaxed),
        rss_warm_kib: memory.rss_warm,
        rss_end_kib: memory.rss_end,
        rss_max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_slope_kib_per_min: memory.slope,
        fds_warm: memory.fds_warm,
        fds_end: memory.fds_end,
        flat: memory.flat,
        samples,
    })
}

/// The server's resident set and open files every `SAMPLE_EVERY` until `duration`.
async fn sample(pid: u32, shared: &Shared, started: Instant, duration: Duration) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    while started.elapsed() < duration && !shared.stopped() {
        ticks.tick().await;
        match read_sample(pid) {
            Ok((rss_kib, fds)) => samples.push(Sample {
                t_s: started.elapsed().as_secs(),
                rss_kib,
                fds,
            }),
            Err(e) => shared.fail(format!("sampling the server: {e:#}")),
        }
    }
    samples
}

fn read_sample(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok((rss, fds))
}

struct Memory {
    rss_warm: u64,
    rss_end: u64,
    slope: f64,
    fds_warm: u64,
    fds_end: u64,
    flat: Option<bool>,
}

impl Memory {
    /// Warm-up is the first 10 % of the run, at least 60 s; "after warm-up" and "at the
    /// end" are the medians of 30 s of samples, so one sample's noise decides nothing.
    fn judge(samples: &[Sample], duration: Duration) -> Memory {
        let warm = (duration.as_secs() / 10).max(60);
        let window = 30;
        let last = samples.last().map_or(0, |s| s.t_s);
        let median = |from: u64, to: u64, f: fn(&Sample) -> u64| {
            let mut v: Vec<u64> = samples
                .iter()
                .filter(|s| s.t_s >= from && s.t_s < to)
                .map(f)
                .collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let rss_warm = median(warm, warm + window, |s| s.rss_kib);
        let rss_end = median(last.saturating_sub(window), last + 1, |s| s.rss_kib);
        let fds_warm = median(warm, warm + window, |s| s.fds);
        let fds_end = median(last.saturating_sub(window), last + 1, |s| s.fds);
        let after: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.t_s >= warm)
            .map(|s| (s.t_s as f64 / 60.0, s.rss_kib as f64))
            .collect();
        let flat = (duration >= FLATNESS_MIN).then(|| {
            let allowed = rss_warm as f64 * (1.0 + RSS_GROWTH_MAX) + RSS_SLACK_KIB as f64;
            (rss_end as f64) <= allowed && fds_end <= fds_warm + FDS_SLACK
        });
        Memory {
            rss_warm,
            rss_end,
            slope: least_squares_slope(&after),
            fds_warm,
            fds_end,
            flat,
        }
    }
}

fn least_squares_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

/// A message: mostly small, one in ten large enough for the message store.
fn message(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let len = if rng.random_ratio(1, 10) {
        rng.random_range(4_096..8_192)
    } else {
        rng.random_range(50..1_500)
    };
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

async fn appender(addr: SocketAddr, shared: Arc<Shared>, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sender = connect(addr).await?;
    let every = Duration::from_micros(1_000_000 * APPENDERS as u64 / APPENDS_PER_S);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stopped() {
        ticks.tick().await;
        // Each channel has one appender, so its acknowledgements arrive in order.
        let channel = rng.random_range(0..CHANNELS / APPENDERS) * APPENDERS + seed as usize;
        let name = channel_name(channel);
        let t0 = Instant::now();
        if rng.random_ratio(1, 10) {
            let messages: Vec<serde_json::Value> = (0..rng.random_range(1..10))
                .map(|_| {
                    let data = base64::engine::general_purpose::STANDARD.encode(message(&mut rng));
                    serde_json::json!({ "data": data })
                })
                .collect();
            let path = format!("/v1/channels/{name}/batch");
            let body = serde_json::json!({ "messages": messages });
            let (status, answer) = send_json(&mut sender, addr, Method::POST, &path, &body).await?;
            if status == StatusCode::CREATED {
                shared.record("append batch", t0);
                let answer: serde_json::Value = serde_json::from_slice(&answer)?;
                for m in answer["messages"].as_array().context("batch answer")? {
                    shared.acknowledged(channel, m["seq"].as_u64().context("a seq")?);
                }
            } else {
                shared.refused("append batch", status, &answer, &["channel_archived"]);
            }
        } else {
            let path = format!("/v1/channels/{name}/messages");
            let body = Bytes::from(message(&mut rng));
            let (status, answer) = send(&mut sender, addr, Method::POST, &path, body).await?;
            if status == StatusCode::CREATED {
                shared.record("append", t0);
                let answer: serde_json::Value = serde_json::from_slice(&answer)?;
                shared.acknowledged(channel, answer["seq"].as_u64().context("a seq")?);
            } else {
                shared.refused("append", status, &answer, &["channel_archived"]);
            }
        }
    }
    Ok(())
}

/// Reads the last messages or from a seq; checks seqs increase.
async fn reader(addr: SocketAddr, shared: Arc<Shared>, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sender = connect(addr).await?;
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    while !shared.stopped() {
        ticks.tick().await;
        let channel = rng.random_range(0..CHANNELS);
        let last = shared.last_seq.lock()[channel];
        let query = match (rng.random_bool(0.5), last) {
            (true, Some(seq)) => format!("from_seq={}&limit=50", seq.saturating_sub(KEEP / 2)),
            _ => format!("last={}", rng.random_range(1..50)),
        };
        let path = format!("/v1/channels/{}/messages?{query}", channel_name(channel));
        let t0 = Instant::now();
        let (status, body) = send(&mut sender, addr, Method::GET, &path, Bytes::new()).await?;
        if status != StatusCode::OK {
            shared.refused(
                "read",
                status,
                &body,
                &["channel_not_found", "channel_archived", "trimmed"],
            );
            continue;
        }
        shared.record("read", t0);
        let mut previous = None;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let seq = serde_json::from_slice::<serde_json::Value>(line)?["seq"]
                .as_u64()
                .context("a line's seq")?;
            if previous.is_some_and(|p| seq <= p) {
                shared.fail(format!("{path}: seq {seq} after {previous:?}"));
            }
            previous = Some(seq);
        }
    }
    Ok(())
}

/// Subscribes to a random channel for a few seconds, checks the seqs it is sent
/// increase, leaves, and starts again.
async fn subscriber(addr: SocketAddr, shared: Arc<Shared>, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !shared.stopped() {
        let name = channel_name(rng.random_range(0..CHANNELS));
        let url = format!("ws://{addr}/v1/channels/{name}/subscribe?last=5");
        let (mut socket, _) = match tokio_tungstenite::connect_async(url).await {
            Ok(connected) => connected,
            // Refused at the handshake (the channel is archived, or too many streams).
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = response.into_body().unwrap_or_default();
                shared.refused(
                    "subscribe",
                    status,
                    &body,
                    &["channel_archived", "channel_not_found"],
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e).context("subscribing"),
        };
        shared.subscriptions.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + Duration::from_millis(rng.random_range(2_000..15_000));
        let mut previous: Option<u64> = None;
        while Instant::now() < until && !shared.stopped() {
            let frame = match tokio::time::timeout(Duration::from_millis(500), socket.next()).await
            {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(frame)) => frame.context("a subscription frame")?,
            };
            match frame {
                tokio_tungstenite::tungstenite::Message::Text(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text)?;
                    if let Some(seq) = value["seq"].as_u64() {
                        if previous.is_some_and(|p| seq <= p) {
                            shared.fail(format!(
                                "{name}: subscription sent seq {seq} after {previous:?}"
                            ));
                        }
                        previous = Some(seq);
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Archived (1000) or too slow (1008): subscribe again.
                tokio_tungstenite::tungstenite::Message::Close(_) => break,
                _ => {}
            }
        }
        drop(socket);
    }
    Ok(())
}

/// Trims, clears, archives and restores, amends, deletes; compacts the store; scrapes
/// stats and metrics.
async fn maintenance(addr: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(999);
    let mut sender = connect(addr).await?;
    let mut archived: Vec<usize> = Vec::new();
    let (mut last_compaction, mut last_scrape) = (Instant::now(), Instant::now());
    let mut ticks = tokio::time::interval(MAINTENANCE_EVERY);
    while !shared.stopped() {
        ticks.tick().await;
        // Channels archived a tick ago come back.
        for channel in archived.drain(..) {
            let path = format!("/v1/archive/{}/restore", channel_name(channel));
            let t0 = Instant::now();
            let (status, body) = send(&mut sender, addr, Method::POST, &path, Bytes::new()).await?;
            if status == StatusCode::OK {
                shared.record("restore", t0);
            } else {
                shared.refused(
                    "restore",
                    status,
                    &body,
                    &["channel_not_archived", "restore_conflict", "channel_exists"],
                );
            }
        }
        let channel = rng.random_range(0..CHANNELS);
        let name = channel_name(channel);
        let last = shared.last_seq.lock()[channel];
        let t0 = Instant::now();
        let (op, status, body) = match rng.random_range(0..10) {
            0..=3 => {
                let Some(seq) = last.filter(|&s| s > KEEP) else {
                    continue;
                };
                let path = format!("/v1/channels/{name}/trim");
                let body = serde_json::json!({ "seq": seq - KEEP });
                let (s, b) = send_json(&mut sender, addr, Method::POST, &path, &body).await?;
                ("trim", s, b)
            }
            4 => {
                let path = format!("/v1/channels/{name}/clear");
                let (s, b) = send(&mut sender, addr, Method::POST, &path, Bytes::new()).await?;
                ("clear", s, b)
            }
            5..=6 => {
                let path = format!("/v1/channels/{name}/archive");
                let body = serde_json::json!({ "reason": "soak" });
                let (s, b) = send_json(&mut sender, addr, Method::POST, &path, &body).await?;
                if s == StatusCode::OK {
                    archived.push(channel);
                }
                ("archive", s, b)
            }
            7..=8 => {
                let path = format!("/v1/channels/{name}/metadata");
                let body = serde_json::json!({
                    "command": "ALLOW_LINE_DELETION",
                    "args": [rng.random_bool(0.5)],
                });
                let (s, b) = send_json(&mut sender, addr, Method::POST, &path, &body).await?;
                ("amend", s, b)
            }
            _ => {
                let Some(seq) = last else { continue };
                let path = format!("/v1/channels/{name}/messages/{seq}");
                let (s, b) = send(&mut sender, addr, Method::DELETE, &path, Bytes::new()).await?;
                ("delete", s, b)
            }
        };
        if status == StatusCode::OK {
            shared.record(op, t0);
        } else {
            shared.refused(
                op,
                status,
                &body,
                &[
                    "channel_not_found",
                    "channel_archived",
                    "forbidden",
                    "seq_not_found",
                    "trimmed",
                ],
            );
        }
        if last_compaction.elapsed() >= COMPACT_EVERY {
            last_compaction = Instant::now();
            let (status, body) = send(
                &mut sender,
                addr,
                Method::POST,
                "/v1/store/compaction",
                Bytes::new(),
            )
            .await?;
            if status == StatusCode::OK {
                shared.record("compaction", last_compaction);
            } else {
                shared.refused("compaction", status, &body, &[]);
            }
        }
        if last_scrape.elapsed() >= SCRAPE_EVERY {
            last_scrape = Instant::now();
            for path in ["/v1/stats", "/metrics"] {
                let (status, body) =
                    send(&mut sender, addr, Method::GET, path, Bytes::new()).await?;
                if status != StatusCode::OK {
                    shared.refused(path, status, &body, &[]);
                }
            }
            shared.record("stats and metrics", last_scrape);
        }
    }
    Ok(())
}
