//! Writing many messages to a `MessageStore` with a fixed number in flight (w2, w3).

use crate::window::{Outcomes, Window};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vellum::{MessageStore, MsgId, StoreOptions, SyncPolicy};

/// Threads submitting writes; each keeps `in_flight / SUBMITTERS` in flight.
const SUBMITTERS: usize = 2;

/// A fresh store in `dir/store` with the defaults, under Fsync, with no clients.
pub fn open_store(dir: &std::path::Path) -> anyhow::Result<MessageStore> {
    let options = StoreOptions {
        sync: SyncPolicy::Fsync,
        ..StoreOptions::default()
    };
    Ok(MessageStore::open(dir.join("store"), options, &Vec::new())?)
}

/// `count` random ids, reproducible from `seed`.
pub fn random_ids(count: usize, seed: u64) -> Vec<MsgId> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count).map(|_| MsgId(rng.random())).collect()
}

/// What a concurrent write phase measured.
pub struct Written {
    pub elapsed: Duration,
    /// Confirm latency of every write, in microseconds.
    pub latencies: Vec<u32>,
}

/// Writes one message of `bytes` random bytes under each id, `in_flight` at a time,
/// each confirmed at `Fsynced`.
pub fn write_all(
    store: &MessageStore,
    ids: &[MsgId],
    bytes: usize,
    in_flight: usize,
) -> anyhow::Result<Written> {
    let outcomes = Outcomes::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for (t, share) in ids
            .chunks(ids.len().div_ceil(SUBMITTERS).max(1))
            .enumerate()
        {
            let window = Arc::new(Window::new(in_flight / SUBMITTERS));
            let outcomes = outcomes.clone();
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t as u64);
                let mut data = vec![0u8; bytes];
                for id in share {
                    rng.fill(&mut data[..]);
                    outcomes.submit(&window, |done| store.write_with(&[(*id, &data)], done));
                }
                window.wait_all();
            });
        }
    });
    let elapsed = started.elapsed();
    let latencies = outcomes.into_latencies(ids.len())?;
    Ok(Written { elapsed, latencies })
}
