//! The flusher thread (docs/format.md §7.3): writes the buffered chunks, syncs the
//! files they went to, and gives the confirms that covers. One sync covers every write
//! that arrived while the previous one ran: that is the group commit.

use super::Shared;
use super::state::Chunk;
use crate::error::Error;
use crate::options::{Durability, SyncPolicy};
use crate::storage::StorageFile;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Files written but not yet synced (under `Interval` and `Buffered`).
#[derive(Default)]
struct Unsynced {
    files: Vec<(u32, Arc<dyn StorageFile>)>,
    directory: bool,
    since: Option<Instant>,
}

impl Unsynced {
    fn add(&mut self, chunks: &[Arc<Chunk>]) {
        for chunk in chunks {
            if !self.files.iter().any(|(n, _)| *n == chunk.segment) {
                self.files.push((chunk.segment, chunk.file.clone()));
            }
            self.directory |= chunk.creates_file;
        }
        if !chunks.is_empty() {
            self.since.get_or_insert_with(Instant::now);
        }
    }

    /// Syncs the files in the order they were first written, then the directory.
    fn sync(&mut self, shared: &Shared) -> io::Result<()> {
        for (_, file) in &self.files {
            file.sync_data()?;
        }
        if self.directory {
            shared.storage.sync_dir(&shared.dir)?;
        }
        *self = Unsynced::default();
        Ok(())
    }
}

pub fn run(shared: &Shared) {
    let mut unsynced = Unsynced::default();
    loop {
        let (chunks, target) = {
            let mut state = shared.state.lock();
            loop {
                if !state.buffer.is_empty() || state.poisoned.is_some() {
                    break;
                }
                let due = sync_due(shared, &unsynced);
                if due == Some(Duration::ZERO) || state.closing {
                    break;
                }
                match due {
                    Some(wait) => {
                        shared.flush_wake.wait_for(&mut state, wait);
                    }
                    None => shared.flush_wake.wait(&mut state),
                }
            }
            if state.poisoned.is_some() {
                let waiters = state.take_all_waiters();
                let cause = state.poisoned.clone().unwrap_or_default();
                drop(state);
                fail(waiters, &cause);
                shared.drained.notify_all();
                return;
            }
            let chunks: Vec<Arc<Chunk>> = state.buffer.drain(..).map(Arc::new).collect();
            state.buffered_bytes = 0;
            state.in_flight = chunks.clone();
            (chunks, state.appended_lsn)
        };
        shared.drained.notify_all();
        let closing_with_nothing = chunks.is_empty();
        let result = write_and_sync(shared, &chunks, &mut unsynced, closing_with_nothing);
        let mut state = shared.state.lock();
        for chunk in &chunks {
            if let Some(segment) = state.segments.get_mut(&chunk.segment) {
                segment.flushed_bytes = segment
                    .flushed_bytes
                    .max(chunk.offset + chunk.bytes.len() as u64);
            }
        }
        state.in_flight.clear();
        match result {
            Ok(synced) => {
                if synced {
                    state.counters.syncs += 1;
                }
                let durability = match shared.options.sync {
                    SyncPolicy::Fsync => Durability::Fsynced,
                    _ => Durability::Written,
                };
                let ready = state.take_confirmed(target);
                let closing = state.closing && state.buffer.is_empty() && unsynced.files.is_empty();
                drop(state);
                shared.drained.notify_all();
                for confirm in ready {
                    confirm(Ok(durability));
                }
                if closing {
                    return;
                }
            }
            Err(e) => {
                let cause = format!("writing or syncing a segment failed: {e}");
                tracing::error!(%cause, "the message store is poisoned");
                state.poisoned = Some(cause);
            }
        }
    }
}

/// How long until `unsynced` must be synced: `None` when nothing waits or never.
fn sync_due(shared: &Shared, unsynced: &Unsynced) -> Option<Duration> {
    let since = unsynced.since?;
    match shared.options.sync {
        SyncPolicy::Interval(every) => Some(every.saturating_sub(since.elapsed())),
        _ => None,
    }
}

/// Writes `chunks`; syncs what the policy asks (everything when `final_sync`).
/// Returns whether it synced.
fn write_and_sync(
    shared: &Shared,
    chunks: &[Arc<Chunk>],
    unsynced: &mut Unsynced,
    final_sync: bool,
) -> io::Result<bool> {
    for chunk in chunks {
        chunk.file.write_all_at(&chunk.bytes, chunk.offset)?;
    }
    unsynced.add(chunks);
    let sync = match shared.options.sync {
        SyncPolicy::Fsync => true,
        SyncPolicy::Interval(_) => sync_due(shared, unsynced) == Some(Duration::ZERO),
        SyncPolicy::Buffered => false,
    } || final_sync;
    if sync && unsynced.since.is_some() {
        unsynced.sync(shared)?;
        return Ok(true);
    }
    Ok(false)
}

fn fail(waiters: Vec<super::state::Confirm>, cause: &str) {
    for confirm in waiters {
        confirm(Err(Error::Poisoned {
            cause: cause.to_string(),
        }));
    }
}
