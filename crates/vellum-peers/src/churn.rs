//! `w3` churn against peers (BRIEF §5): 1 GiB of 4 KiB values under random ids; remove
//! a random 2/3 (1,000 per durable commit); then give the space back the way each
//! peer's users do, reading survivors from another thread meanwhile where the peer
//! allows it. Every row's write amplification is measured the same way, Vellum's too:
//! bytes the process sent to the disk (`/proc/self/io`) over key and value bytes put.

use crate::driver::pipelined;
use crate::kv_peers::{KvPeer, id};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use vellum_bench::stats::percentile_us;

pub const VALUE_BYTES: usize = vellum_bench::w3::MESSAGE_BYTES;
const REMOVE_BATCH: usize = 1000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct W3Row {
    pub settle_s: f64,
    pub space_ratio: f64,
    pub write_amplification: f64,
    /// NaN when the peer's way of reclaiming shuts readers out.
    pub read_p99_us_during_compaction: f64,
}

fn value(i: u64) -> Vec<u8> {
    crate::driver::payload(u32::MAX - 2, i, VALUE_BYTES)
}

/// Bytes this process has caused to be written to storage so far.
pub fn disk_bytes_written() -> anyhow::Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no write_bytes in /proc/self/io"))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Vellum's `w3`, its write amplification measured as the peers' is.
pub fn vellum(options: &vellum_bench::BenchOptions) -> anyhow::Result<W3Row> {
    let before = disk_bytes_written()?;
    let r = vellum_bench::w3::run(options)?;
    let put = r.messages * (16 + VALUE_BYTES);
    Ok(W3Row {
        settle_s: r.settle_s,
        space_ratio: r.space_ratio,
        write_amplification: (disk_bytes_written()? - before) as f64 / put as f64,
        read_p99_us_during_compaction: r.read_p99_us_during_compaction as f64,
    })
}

/// `w3` with `messages` values on `peer`, whose files are all under `dir`.
pub fn w3(peer: &mut dyn KvPeer, dir: &Path, messages: usize) -> anyhow::Result<W3Row> {
    let before = disk_bytes_written()?;
    pipelined(
        messages,
        |i| (id(i as u64), value(i as u64)),
        |batch: &[crate::kv_peers::Put]| peer.put(batch),
    )?;
    let mut order: Vec<u64> = (0..messages as u64).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(5));
    let (removed, kept) = order.split_at(messages * 2 / 3);
    for chunk in removed.chunks(REMOVE_BATCH) {
        let ids: Vec<[u8; 16]> = chunk.iter().map(|&i| id(i)).collect();
        peer.remove(&ids)?;
    }
    let reader = peer.reader()?;
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (settle, latencies) = std::thread::scope(|s| {
        let reading = reader.map(|reader| s.spawn(|| read_until(reader, kept, &done)));
        let reclaimed = peer.reclaim();
        let settle = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let latencies = reading.map(|r| r.join().expect("the reader thread"));
        reclaimed.map(|()| (settle, latencies))
    })?;
    let read_p99 = match latencies {
        Some(latencies) => percentile_us(&mut latencies?, 99.0) as f64,
        None => f64::NAN,
    };
    for &i in kept.iter().step_by(97) {
        anyhow::ensure!(peer.get(&id(i))? == Some(value(i)), "survivor {i} lost");
    }
    for &i in removed.iter().step_by(97) {
        anyhow::ensure!(peer.get(&id(i))?.is_none(), "removed {i} came back");
    }
    let put = messages * (16 + VALUE_BYTES);
    let live = kept.len() * (16 + VALUE_BYTES);
    Ok(W3Row {
        settle_s: settle.as_secs_f64(),
        space_ratio: dir_bytes(dir)? as f64 / live as f64,
        write_amplification: (disk_bytes_written()? - before) as f64 / put as f64,
        read_p99_us_during_compaction: read_p99,
    })
}

/// Reads random survivors until `done`, checking each; returns the latencies.
fn read_until(
    mut read: crate::kv_peers::Reader,
    kept: &[u64],
    done: &AtomicBool,
) -> anyhow::Result<Vec<u32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut latencies = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let i = kept[rng.random_range(0..kept.len())];
        let started = Instant::now();
        anyhow::ensure!(
            read(&id(i))? == Some(value(i)),
            "survivor {i} read wrong during compaction"
        );
        latencies.push(started.elapsed().as_micros() as u32);
    }
    Ok(latencies)
}
