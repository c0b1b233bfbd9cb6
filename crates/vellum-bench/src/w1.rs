//! `w1` collab appends: 1,000 channels; 1,000,000 messages of 200 random bytes
//! appended with 256 in flight under Fsync; then every channel read in full; then
//! one channel, one append at a time, 10,000 messages.

use crate::BenchOptions;
use crate::stats::{per_second, percentile_us};
use crate::window::{Outcomes, Window};
use rand::{Rng, SeedableRng};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;
use vellum::{NewMessage, Options, ReadRequest, SyncPolicy, Vellum};

pub const CHANNELS: usize = 1_000;
pub const MESSAGES: usize = 1_000_000;
pub const MESSAGE_BYTES: usize = 200;
pub const IN_FLIGHT: usize = 256;
pub const SEQUENTIAL: usize = 10_000;
/// Threads submitting appends (each keeps `IN_FLIGHT / SUBMITTERS` in flight).
const SUBMITTERS: usize = 2;

#[derive(Debug, Clone, serde::Serialize)]
pub struct W1Report {
    pub workload: &'static str,
    pub durability: &'static str,
    pub channels: usize,
    pub messages: usize,
    pub appends_per_s: f64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub read_msgs_per_s: f64,
    pub seq_ack_p50_us: u64,
    pub journal_syncs: u64,
    pub journal_writes: u64,
}

pub fn run(options: &BenchOptions) -> anyhow::Result<W1Report> {
    let dir = options.temp_dir()?;
    let messages = options.scaled(MESSAGES, 1_000);
    let sequential = options.scaled(SEQUENTIAL, 100);
    let store = Arc::new(Vellum::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Fsync,
            open_files_max: 4096,
            eviction: None,
            ..Options::default()
        },
    )?);
    let channel_names: Arc<Vec<String>> = Arc::new(
        (0..CHANNELS)
            .map(|i| format!("w1-channel-{i:04}"))
            .collect(),
    );

    // Phase 1: concurrent appends.
    let outcomes = Outcomes::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..SUBMITTERS {
            let window = Arc::new(Window::new(IN_FLIGHT / SUBMITTERS));
            let (store, names) = (store.clone(), channel_names.clone());
            let outcomes = outcomes.clone();
            let share = messages / SUBMITTERS + usize::from(t < messages % SUBMITTERS);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                let mut data = [0u8; MESSAGE_BYTES];
                for _ in 0..share {
                    rng.fill(&mut data[..]);
                    let channel = &names[rng.random_range(0..names.len())];
                    outcomes.submit(&window, |done| {
                        store.append_with(channel, &[NewMessage::new(&data)], move |result| {
                            done(result.map(|acks| acks[0].durability))
                        })
                    });
                }
                window.wait_all();
            });
        }
    });
    let append_elapsed = started.elapsed();
    let mut latencies = outcomes.into_latencies(messages)?;

    // Phase 2: read every channel in full.
    let started = Instant::now();
    let mut read = 0usize;
    for name in channel_names.iter() {
        store.read(name, &ReadRequest::all())?.for_each_ref(|m| {
            read += 1;
            std::hint::black_box(m.data);
            ControlFlow::Continue(())
        })?;
    }
    let read_elapsed = started.elapsed();
    anyhow::ensure!(read == messages, "read {read} of {messages} messages");

    // Phase 3: one channel, one append at a time.
    let mut seq_latencies = Vec::with_capacity(sequential);
    let mut data = [0u8; MESSAGE_BYTES];
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    for _ in 0..sequential {
        rng.fill(&mut data[..]);
        let submitted = Instant::now();
        store.append("w1-sequential", &data)?;
        seq_latencies.push(submitted.elapsed().as_micros() as u32);
    }
    let commit = store.stats().commit;
    Ok(W1Report {
        workload: "w1",
        durability: "fsync",
        channels: CHANNELS,
        messages,
        appends_per_s: per_second(messages, append_elapsed),
        ack_p50_us: percentile_us(&mut latencies, 50.0),
        ack_p99_us: percentile_us(&mut latencies, 99.0),
        read_msgs_per_s: per_second(read, read_elapsed),
        seq_ack_p50_us: percentile_us(&mut seq_latencies, 50.0),
        journal_syncs: commit.journal_syncs,
        journal_writes: commit.groups,
    })
}
