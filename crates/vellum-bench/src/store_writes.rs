//! Writing many messages to a `MessageStore` with a fixed number in flight (w2, w3).

use crate::window::Window;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vellum::{Durability, MessageStore, MsgId};

/// Threads submitting writes; each keeps `in_flight / SUBMITTERS` in flight.
const SUBMITTERS: usize = 2;

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
    let latencies = Arc::new(Mutex::new(Vec::<u32>::with_capacity(ids.len())));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for (t, share) in ids
            .chunks(ids.len().div_ceil(SUBMITTERS).max(1))
            .enumerate()
        {
            let window = Arc::new(Window::new(in_flight / SUBMITTERS));
            let (latencies, failures) = (latencies.clone(), failures.clone());
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t as u64);
                let mut data = vec![0u8; bytes];
                for id in share {
                    rng.fill(&mut data[..]);
                    window.acquire();
                    let submitted = Instant::now();
                    let (lat, fail, win) = (latencies.clone(), failures.clone(), window.clone());
                    let queued = store.write_with(&[(*id, &data)], move |result| {
                        match result {
                            Ok(Durability::Fsynced) => {
                                lat.lock().push(submitted.elapsed().as_micros() as u32)
                            }
                            Ok(_) => fail.lock().push("confirmed below Fsync".into()),
                            Err(e) => fail.lock().push(e.to_string()),
                        }
                        win.release();
                    });
                    if let Err(e) = queued {
                        failures.lock().push(e.to_string());
                        window.release();
                    }
                }
                window.wait_all();
            });
        }
    });
    let elapsed = started.elapsed();
    if let Some(e) = failures.lock().first() {
        anyhow::bail!("a write failed: {e}");
    }
    let latencies = std::mem::take(&mut *latencies.lock());
    anyhow::ensure!(latencies.len() == ids.len(), "lost confirms");
    Ok(Written { elapsed, latencies })
}
