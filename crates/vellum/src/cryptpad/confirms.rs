//! Waiting for the message store to confirm the bodies an import wrote, without
//! waiting for each in turn: writes are queued as they are met, the store's flusher
//! makes them durable in groups, and the channel is made visible only once all are.

use crate::error::{Error, Result};
use crate::store::{MessageStore, MsgId};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

#[derive(Default)]
struct Pending {
    count: usize,
    /// The first write that failed.
    error: Option<Error>,
}

/// The store writes of one channel being imported.
#[derive(Default)]
pub struct Confirms {
    pending: Arc<(Mutex<Pending>, Condvar)>,
}

impl Confirms {
    /// Writes `data` under `id` (one reference); its confirmation is awaited by `wait`.
    pub fn write(&self, store: &MessageStore, id: MsgId, data: &[u8]) -> Result<()> {
        self.pending.0.lock().count += 1;
        let pending = self.pending.clone();
        let queued = store.write_with(&[(id, data)], move |result| {
            let (lock, done) = &*pending;
            let mut state = lock.lock();
            state.count -= 1;
            if let Err(e) = result {
                state.error.get_or_insert(e);
            }
            done.notify_all();
        });
        if queued.is_err() {
            // Refused: the callback never runs.
            self.pending.0.lock().count -= 1;
        }
        queued
    }

    /// Returns once every write is confirmed (durable under the store's policy), or
    /// the first failure.
    pub fn wait(&self) -> Result<()> {
        let (lock, done) = &*self.pending;
        let mut state = lock.lock();
        while state.count > 0 {
            done.wait(&mut state);
        }
        state.error.take().map_or(Ok(()), Err)
    }
}
