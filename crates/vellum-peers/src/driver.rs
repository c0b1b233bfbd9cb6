//! The `w1` and `w2` drivers for peers, shaped as a competent user would drive an
//! embedded store from many writers: the writers keep 256 writes in flight; one
//! writer thread drains whatever is queued (up to 256) into one commit of the peer and
//! acknowledges them all once it returns. Every message's bytes derive from where it
//! goes, so reads are checked byte for byte without keeping a copy.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;
use vellum_bench::stats::{per_second, percentile_us};

pub const IN_FLIGHT: usize = 256;

/// The bytes of message `seq` of `channel` (or of key `seq` when `channel` is
/// `u32::MAX`): SplitMix64 from the pair.
pub fn payload(channel: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut state = (u64::from(channel) << 40) ^ seq ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A counting semaphore: the writes in flight.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn acquire(&self) {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
    }
    fn release(&self, n: usize) {
        *self.free.lock() += n;
        self.freed.notify_one();
    }
}

/// Throughput and acknowledgement latencies of `count` writes kept `IN_FLIGHT` deep.
pub struct Pipelined {
    pub per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Runs `count` writes: `make(i)` builds write `i`, `commit` makes a batch durable
/// (per the peer's label) and returns only then.
pub fn pipelined<W: Send + 'static>(
    count: usize,
    mut make: impl FnMut(usize) -> W,
    mut commit: impl FnMut(&[W]) -> anyhow::Result<()> + Send,
) -> anyhow::Result<Pipelined> {
    let slots = Arc::new(Slots {
        free: Mutex::new(IN_FLIGHT),
        freed: Condvar::new(),
    });
    let (tx, rx) = mpsc::sync_channel::<(W, Instant)>(IN_FLIGHT);
    let started = Instant::now();
    let latencies = std::thread::scope(|s| -> anyhow::Result<Vec<u32>> {
        let writer_slots = slots.clone();
        let writer = s.spawn(move || -> anyhow::Result<Vec<u32>> {
            let mut latencies = Vec::with_capacity(count);
            let (mut batch, mut starts) = (Vec::with_capacity(IN_FLIGHT), Vec::new());
            while let Ok(first) = rx.recv() {
                batch.push(first.0);
                starts.push(first.1);
                while batch.len() < IN_FLIGHT {
                    match rx.try_recv() {
                        Ok((w, t)) => {
                            batch.push(w);
                            starts.push(t);
                        }
                        Err(_) => break,
                    }
                }
                commit(&batch)?;
                latencies.extend(starts.iter().map(|t| t.elapsed().as_micros() as u32));
                writer_slots.release(batch.len());
                batch.clear();
                starts.clear();
            }
            Ok(latencies)
        });
        for i in 0..count {
            slots.acquire();
            if tx.send((make(i), Instant::now())).is_err() {
                break; // The writer failed; its error is reported below.
            }
        }
        drop(tx);
        writer.join().expect("the writer thread")
    })?;
    anyhow::ensure!(latencies.len() == count, "lost acknowledgements");
    let per_s = per_second(count, started.elapsed());
    let mut latencies = latencies;
    Ok(Pipelined {
        per_s,
        p50_us: percentile_us(&mut latencies, 50.0),
        p99_us: percentile_us(&mut latencies, 99.0),
    })
}

/// The median latency of `count` writes made one at a time.
pub fn one_at_a_time(
    count: usize,
    mut write: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let t0 = Instant::now();
        write(i)?;
        latencies.push(t0.elapsed().as_micros() as u32);
    }
    Ok(percentile_us(&mut latencies, 50.0))
}
