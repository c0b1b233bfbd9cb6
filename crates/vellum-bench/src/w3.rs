//! `w3` churn: 1 GiB of 4 KiB messages in the store; remove a random 2/3; wait until
//! compaction settles, reading survivors at random meanwhile.

use crate::BenchOptions;
use crate::stats::percentile_us;
use crate::store_writes::{open_store, random_ids, write_all};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vellum::{MessageStore, MsgId};

pub const TOTAL_BYTES: usize = 1 << 30;
pub const MESSAGE_BYTES: usize = 4096;
pub const IN_FLIGHT: usize = 256;
const REMOVE_BATCH: usize = 1000;
/// Framing and id per record (docs/format.md §7.1).
const RECORD_OVERHEAD: usize = 24;

#[derive(Debug, Clone, serde::Serialize)]
pub struct W3Report {
    pub workload: &'static str,
    pub durability: &'static str,
    pub messages: usize,
    /// From the last remove until compaction has nothing left to do.
    pub settle_s: f64,
    /// Segment file bytes over live record bytes, once settled.
    pub space_ratio: f64,
    /// Bytes written to segments (records, then compaction's copies) over record bytes written.
    pub write_amplification: f64,
    pub read_p99_us_during_compaction: u64,
    pub reads_during_compaction: usize,
    pub compactions: u64,
    pub segments: u64,
}

pub fn run(options: &BenchOptions) -> anyhow::Result<W3Report> {
    let dir = options.temp_dir()?;
    let messages = options.scaled(TOTAL_BYTES / MESSAGE_BYTES, 1_000);
    let store = open_store(dir.path())?;
    let mut ids = random_ids(messages, 4);
    write_all(&store, &ids, MESSAGE_BYTES, IN_FLIGHT)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    ids.shuffle(&mut rng);
    let (removed, kept) = ids.split_at(messages * 2 / 3);
    let done = AtomicBool::new(false);
    let (settle, (latencies, reads)) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_until(&store, kept, &done));
        let result = (|| -> anyhow::Result<Duration> {
            for batch in removed.chunks(REMOVE_BATCH) {
                store.remove(batch)?;
            }
            let removed_at = Instant::now();
            while store.compaction_pending() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(removed_at.elapsed())
        })();
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("the reader thread");
        result.map(|settle| (settle, reads))
    })?;
    let mut latencies = latencies?;
    let stats = store.stats();
    anyhow::ensure!(stats.messages as usize == kept.len(), "survivors missing");
    for id in kept.iter().step_by(97) {
        anyhow::ensure!(
            store.read(id)?.len() == MESSAGE_BYTES,
            "a survivor came back short"
        );
    }
    store.close()?;
    let record_bytes = (messages * (MESSAGE_BYTES + RECORD_OVERHEAD)) as f64;
    Ok(W3Report {
        workload: "w3",
        durability: "fsync",
        messages,
        settle_s: settle.as_secs_f64(),
        space_ratio: stats.file_bytes as f64 / stats.live_bytes as f64,
        write_amplification: (record_bytes + stats.bytes_rewritten as f64) / record_bytes,
        read_p99_us_during_compaction: percentile_us(&mut latencies, 99.0),
        reads_during_compaction: reads,
        compactions: stats.compactions,
        segments: stats.segments,
    })
}

/// Reads random survivors until `done`; returns each read's latency and the count.
fn read_until(
    store: &MessageStore,
    kept: &[MsgId],
    done: &AtomicBool,
) -> (anyhow::Result<Vec<u32>>, usize) {
    use rand::Rng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut latencies = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let id = &kept[rng.random_range(0..kept.len())];
        let started = Instant::now();
        match store.read(id) {
            Ok(payload) if payload.len() == MESSAGE_BYTES => {}
            Ok(_) => {
                return (
                    Err(anyhow::anyhow!("a read came back short")),
                    latencies.len(),
                );
            }
            Err(e) => return (Err(e.into()), latencies.len()),
        }
        latencies.push(started.elapsed().as_micros() as u32);
    }
    let n = latencies.len();
    (Ok(latencies), n)
}
