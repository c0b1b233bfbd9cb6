//! A counting semaphore that keeps a fixed number of asynchronous writes in flight.

use parking_lot::{Condvar, Mutex};

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
