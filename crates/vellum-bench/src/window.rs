//! Keeping a fixed number of asynchronous writes in flight, and recording how each ended.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Instant;
use vellum::Durability;

/// What a write's completion reports to [`Outcomes`].
pub type Completion = Box<dyn FnOnce(vellum::Result<Durability>) + Send>;

/// The latencies (µs) and failures of writes submitted through [`Outcomes::submit`].
#[derive(Clone, Default)]
pub struct Outcomes {
    latencies: Arc<Mutex<Vec<u32>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Outcomes {
    /// Takes a slot of `window`, then calls `submit` with the completion to hand to the
    /// write; it records the latency (a write must reach `Fsynced`) or the failure and
    /// frees the slot.
    pub fn submit(
        &self,
        window: &Arc<Window>,
        submit: impl FnOnce(Completion) -> vellum::Result<()>,
    ) {
        window.acquire();
        let submitted = Instant::now();
        let (latencies, failures, slot) = (
            self.latencies.clone(),
            self.failures.clone(),
            window.clone(),
        );
        let completion: Completion = Box::new(move |result| {
            match result {
                Ok(Durability::Fsynced) => latencies
                    .lock()
                    .push(submitted.elapsed().as_micros() as u32),
                Ok(_) => failures.lock().push("acknowledged below Fsync".into()),
                Err(e) => failures.lock().push(e.to_string()),
            }
            slot.release();
        });
        if let Err(e) = submit(completion) {
            self.failures.lock().push(e.to_string());
            window.release();
        }
    }

    /// The latencies, once every one of `expected` writes succeeded.
    pub fn into_latencies(self, expected: usize) -> anyhow::Result<Vec<u32>> {
        if let Some(e) = self.failures.lock().first() {
            anyhow::bail!("a write failed: {e}");
        }
        let latencies = std::mem::take(&mut *self.latencies.lock());
        anyhow::ensure!(latencies.len() == expected, "lost acknowledgements");
        Ok(latencies)
    }
}

/// One submitter's share of the in-flight writes: a counting semaphore whose waiting
/// submitter is woken once `WAKE_BATCH` slots are free, so completions (which run on
/// Vellum's commit or flusher thread) do not pay a thread wake-up each.
pub struct Window {
    free: Mutex<usize>,
    freed: Condvar,
    size: usize,
}

const WAKE_BATCH: usize = 8;

impl Window {
    pub fn new(size: usize) -> Self {
        Window {
            free: Mutex::new(size),
            freed: Condvar::new(),
            size,
        }
    }
    pub fn acquire(&self) {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
    }
    pub fn release(&self) {
        let mut free = self.free.lock();
        *free += 1;
        if *free == WAKE_BATCH.min(self.size) || *free == self.size {
            self.freed.notify_one();
        }
    }
    pub fn wait_all(&self) {
        let mut free = self.free.lock();
        while *free < self.size {
            self.freed.wait(&mut free);
        }
    }
}
