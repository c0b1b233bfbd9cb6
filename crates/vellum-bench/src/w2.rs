//! `w2` store writes: 1,000,000 writes of 1 KiB under random ids, 256 in flight,
//! Fsync; then 10,000 one at a time; then 100,000 random reads.

use crate::BenchOptions;
use crate::stats::{per_second, percentile_us};
use crate::store_writes::{open_store, random_ids, write_all};
use rand::{Rng, SeedableRng};
use std::time::Instant;

pub const MESSAGES: usize = 1_000_000;
pub const MESSAGE_BYTES: usize = 1024;
pub const IN_FLIGHT: usize = 256;
pub const SEQUENTIAL: usize = 10_000;
pub const READS: usize = 100_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct W2Report {
    pub workload: &'static str,
    pub durability: &'static str,
    pub messages: usize,
    pub writes_per_s: f64,
    /// Payload megabytes (10^6 bytes) confirmed per second.
    pub write_mb_per_s: f64,
    /// One write at a time: the latency of a lone confirmed write.
    pub confirm_p50_us: u64,
    pub confirm_p99_us: u64,
    /// With 256 in flight.
    pub loaded_confirm_p50_us: u64,
    pub loaded_confirm_p99_us: u64,
    pub reads_per_s: f64,
    /// Heap bytes of the index over the messages it holds.
    pub index_bytes_per_msg: f64,
    pub syncs: u64,
    pub segments: u64,
}

pub fn run(options: &BenchOptions) -> anyhow::Result<W2Report> {
    let dir = options.temp_dir()?;
    let messages = options.scaled(MESSAGES, 1_000);
    let sequential = options.scaled(SEQUENTIAL, 100);
    let reads = options.scaled(READS, 1_000);
    let store = open_store(dir.path())?;

    // Phase 1: concurrent writes.
    let ids = random_ids(messages + sequential, 2);
    let mut written = write_all(&store, &ids[..messages], MESSAGE_BYTES, IN_FLIGHT)?;

    // Phase 2: one write at a time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut data = vec![0u8; MESSAGE_BYTES];
    let mut one_at_a_time = Vec::with_capacity(sequential);
    for id in &ids[messages..] {
        rng.fill(&mut data[..]);
        let submitted = Instant::now();
        store.write(&[(*id, &data)])?;
        one_at_a_time.push(submitted.elapsed().as_micros() as u32);
    }
    let stats = store.stats();
    anyhow::ensure!(stats.messages as usize == ids.len(), "messages missing");

    // Phase 3: random reads.
    let started = Instant::now();
    for _ in 0..reads {
        let id = &ids[rng.random_range(0..ids.len())];
        let payload = store.read(id)?;
        anyhow::ensure!(payload.len() == MESSAGE_BYTES, "a read came back short");
    }
    let read_elapsed = started.elapsed();
    store.close()?;
    Ok(W2Report {
        workload: "w2",
        durability: "fsync",
        messages,
        writes_per_s: per_second(messages, written.elapsed),
        write_mb_per_s: per_second(messages * MESSAGE_BYTES, written.elapsed) / 1e6,
        confirm_p50_us: percentile_us(&mut one_at_a_time, 50.0),
        confirm_p99_us: percentile_us(&mut one_at_a_time, 99.0),
        loaded_confirm_p50_us: percentile_us(&mut written.latencies, 50.0),
        loaded_confirm_p99_us: percentile_us(&mut written.latencies, 99.0),
        reads_per_s: per_second(reads, read_elapsed),
        index_bytes_per_msg: stats.index_bytes as f64 / stats.messages as f64,
        syncs: stats.syncs,
        segments: stats.segments,
    })
}
