//! The shared message store (docs/format.md §7): immutable messages named by 128-bit
//! ids, reference-counted, appended to numbered segments with group commit, compacted
//! in the background, snapshotted at a clean close and rebuilt from its clients'
//! references after a crash.

mod compact;
mod flusher;
mod handles;
mod index;
mod open;
mod segment;
mod snapshot;
mod state;

pub use open::{RefSource, StoreRecovery};

use crate::error::{Error, IoContext, Result};
use crate::options::{Durability, MESSAGE_BYTES_CEILING, SyncPolicy};
use crate::storage::{OpenMode, RealStorage, Storage};
use parking_lot::{Condvar, Mutex};
use state::{ReadPlan, State};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A message's 128-bit id, chosen by its writer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub [u8; 16]);

impl MsgId {
    pub const BYTES: usize = 16;

    /// A fresh id from the operating system's random source.
    pub fn random() -> Result<MsgId> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| Error::Io {
            context: "drawing a message id".into(),
            source: e.into(),
        })?;
        Ok(MsgId(id))
    }
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MsgId({self})")
    }
}

/// How a message store is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    pub sync: SyncPolicy,
    /// Segments roll at this size; a bigger message gets a segment of its own.
    pub segment_bytes_max: u64,
    /// The largest message payload.
    pub message_bytes_max: usize,
    /// The most messages in one `write` or `remove`.
    pub batch_messages_max: usize,
    /// Bytes waiting for the flusher, at most; writers wait beyond it.
    pub write_buffer_bytes_max: usize,
    /// A segment (other than the current one) is compacted once this fraction of its
    /// bytes is garbage. Bounds both space (≤ 1/(1 − g) of live bytes, plus the current
    /// segment) and write amplification (≤ 1/g).
    pub compact_garbage_fraction: f64,
    /// `false` leaves compaction to explicit [`MessageStore::compact`] calls.
    pub compact_in_background: bool,
    /// How long close waits for the compactor to stop before leaving it behind.
    pub compactor_stop_timeout: Duration,
    /// Segment files kept open at most (the least recently read are closed first; the
    /// segment being written is always open).
    pub open_segments_max: usize,
}

/// The largest `segment_bytes_max`: offsets in the index are 32-bit.
pub const SEGMENT_BYTES_CEILING: u64 = 1 << 30;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncPolicy::Fsync,
            segment_bytes_max: 16 * 1024 * 1024,
            message_bytes_max: MESSAGE_BYTES_CEILING,
            batch_messages_max: 10_000,
            write_buffer_bytes_max: 4 * 1024 * 1024,
            compact_garbage_fraction: 0.2,
            compact_in_background: true,
            compactor_stop_timeout: Duration::from_secs(10),
            open_segments_max: 128,
        }
    }
}

/// What the store holds and has done since it was opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageStoreStats {
    pub messages: u64,
    /// Framed bytes of the records the index points to.
    pub live_bytes: u64,
    /// Bytes of every segment file, headers included.
    pub file_bytes: u64,
    /// (file bytes − live bytes) / file bytes.
    pub garbage_fraction: f64,
    pub segments: u64,
    /// Segment files open now (at most `open_segments_max`).
    pub open_segment_files: u64,
    pub compactions: u64,
    /// Bytes copied by compaction since open.
    pub bytes_rewritten: u64,
    /// Empty segments deleted without copying.
    pub segments_deleted: u64,
    /// Heap bytes of the index.
    pub index_bytes: u64,
    pub syncs: u64,
    /// Records appended since open.
    pub records_written: u64,
}

pub(crate) struct Shared {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    options: StoreOptions,
    state: Mutex<State>,
    /// Wakes the flusher (work queued, closing).
    flush_wake: Condvar,
    /// Wakes writers waiting for buffer room and closers waiting for the buffer to drain.
    drained: Condvar,
    /// Wakes the compactor.
    compact_wake: Condvar,
}

/// The shared message store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct MessageStore {
    shared: Arc<Shared>,
    recovery: StoreRecovery,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: Box<dyn Send + Sync>,
}

impl MessageStore {
    /// Opens (or creates) the store in directory `dir`. `refs` is asked for the clients'
    /// references only when the store was not closed cleanly.
    pub fn open(
        dir: impl AsRef<Path>,
        options: StoreOptions,
        refs: &dyn RefSource,
    ) -> Result<MessageStore> {
        Self::open_with_storage(Arc::new(RealStorage), dir, options, refs)
    }

    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: StoreOptions,
        refs: &dyn RefSource,
    ) -> Result<MessageStore> {
        validate_options(&options)?;
        let dir = dir.as_ref().to_path_buf();
        crate::storage::create_dir_durably(&*storage, &dir)
            .context(|| format!("creating {}", dir.display()))?;
        let lock = storage
            .lock_exclusive(&dir.join("LOCK"))
            .context(|| format!("locking {}", dir.display()))?;
        let (state, recovery) = open::open(&*storage, &dir, refs, options.open_segments_max)?;
        let shared = Arc::new(Shared {
            storage,
            dir,
            options,
            state: Mutex::new(state),
            flush_wake: Condvar::new(),
            drained: Condvar::new(),
            compact_wake: Condvar::new(),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(spawn("vellum-store-flush", move || flusher::run(&s)));
        if shared.options.compact_in_background {
            let s = shared.clone();
            threads.push(spawn("vellum-store-compact", move || compact::run(&s)));
        }
        Ok(MessageStore {
            shared,
            recovery,
            threads: Mutex::new(threads),
            _lock: lock,
        })
    }

    /// What opening found: whether the snapshot was used, what a scan found.
    pub fn recovery(&self) -> &StoreRecovery {
        &self.recovery
    }

    /// Writes a batch and returns once every message in it is durable under the policy.
    pub fn write(&self, items: &[(MsgId, &[u8])]) -> Result<Durability> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.write_with(items, move |result| {
            let _ = tx.send(result);
        })?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Writes a batch and calls `confirmed` once every message in it is durable under
    /// the policy — at once, in this thread, when they all already are. An error
    /// returned here means nothing was written; `confirmed` is then never called.
    pub fn write_with(
        &self,
        items: &[(MsgId, &[u8])],
        confirmed: impl FnOnce(Result<Durability>) + Send + 'static,
    ) -> Result<()> {
        state::write(&self.shared, items, Box::new(confirmed))
    }

    /// Drops one reference to each id (an id listed twice drops two). Refused whole,
    /// changing nothing, when an id is unknown or has fewer references than that.
    pub fn remove(&self, ids: &[MsgId]) -> Result<()> {
        state::remove(&self.shared, ids)
    }

    /// Adds one reference to each id (an id listed twice gains two), without writing
    /// anything: for a client that starts holding messages the store already has.
    /// Refused whole, changing nothing, when an id is unknown.
    pub fn add_references(&self, ids: &[MsgId]) -> Result<()> {
        state::add_references(&self.shared, ids)
    }

    /// The message's payload, checked against its checksum and id.
    pub fn read(&self, id: &MsgId) -> Result<Vec<u8>> {
        // A segment whose handle is not cached is opened here, outside the lock. A
        // compaction may move the message and delete the segment in between: plan again.
        let mut replans = 0;
        let (file, path, offset, size) = loop {
            let plan = self.shared.state.lock().plan_read(id)?;
            let (segment, file, path, offset, size) = match plan {
                ReadPlan::Buffered(payload) => return Ok(payload),
                ReadPlan::File {
                    segment,
                    file,
                    path,
                    offset,
                    size,
                } => (segment, file, path, offset, size),
            };
            if let Some(file) = file {
                break (file, path, offset, size);
            }
            match self.shared.storage.open(&path, OpenMode::Read) {
                Ok(file) => {
                    let mut state = self.shared.state.lock();
                    if state.segments.contains_key(&segment) {
                        let current = state.current;
                        state.files.insert(segment, file.clone(), current);
                    }
                    break (file, path, offset, size);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && replans < 3 => {
                    replans += 1;
                }
                Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
            }
        };
        match segment::read_record(&*file, offset, size, id) {
            Ok(payload) => Ok(payload),
            Err(segment::ReadError::Io(e)) => {
                Err(e).context(|| format!("reading message {id} in {}", path.display()))
            }
            Err(segment::ReadError::Damaged(reason)) => Err(Error::Corrupted {
                path,
                offset,
                reason: format!("message {id}: {reason}"),
            }),
        }
    }

    /// Every id the store holds, in no particular order (16 bytes each: what `verify`
    /// walks).
    pub fn ids(&self) -> Vec<MsgId> {
        self.shared
            .state
            .lock()
            .index
            .iter()
            .map(|e| e.id)
            .collect()
    }

    pub fn contains(&self, id: &MsgId) -> bool {
        self.shared.state.lock().index.get(id).is_some()
    }

    /// The id's reference count, or `None` when the store does not hold it.
    pub fn refcount(&self, id: &MsgId) -> Option<u32> {
        self.shared.state.lock().index.get(id).map(|e| e.refs)
    }

    pub fn stats(&self) -> MessageStoreStats {
        self.shared.state.lock().stats()
    }

    /// Whether compaction has work: an empty segment to delete, garbage over the
    /// threshold, or a compaction under way.
    pub fn compaction_pending(&self) -> bool {
        let state = self.shared.state.lock();
        !state.compacting.is_empty() || compact::wanted(&state, &self.shared.options)
    }

    /// Runs compaction now, in this thread, until no segment qualifies (§7.4). For
    /// stores opened with `compact_in_background: false`, and for operators.
    pub fn compact(&self) -> Result<()> {
        compact::until_settled(&self.shared)
    }

    /// Flushes and syncs everything, stops the background threads and writes the
    /// snapshot the next open loads without a scan. Later calls fail with `Closed`.
    pub fn close(&self) -> Result<()> {
        self.close_with(true)
    }

    /// Closes like [`close`](Self::close) but writes no snapshot, so the next open
    /// recounts references from the clients: for a client that cannot vouch for the
    /// counts it leaves (its own writes failed midway).
    pub fn close_for_recount(&self) -> Result<()> {
        self.close_with(false)
    }

    fn close_with(&self, snapshot: bool) -> Result<()> {
        let threads = std::mem::take(&mut *self.threads.lock());
        if threads.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        shared.state.lock().closing = true;
        shared.compact_wake.notify_all();
        shared.flush_wake.notify_all();
        let deadline = std::time::Instant::now() + shared.options.compactor_stop_timeout;
        for thread in threads {
            let compactor = thread.thread().name() == Some("vellum-store-compact");
            if compactor {
                while !thread.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if !thread.is_finished() {
                    tracing::warn!("the compactor did not stop in time; closing without it");
                    continue;
                }
            }
            let _ = thread.join();
        }
        if !snapshot {
            return Ok(());
        }
        snapshot::write_at_close(shared)
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the message store");
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a store thread")
}

fn validate_options(options: &StoreOptions) -> Result<()> {
    let bad = |what: &str| Err(Error::InvalidOptions(what.to_string()));
    if options.segment_bytes_max < segment::HEADER_BYTES + segment::RECORD_OVERHEAD as u64
        || options.segment_bytes_max > SEGMENT_BYTES_CEILING
    {
        return bad("segment_bytes_max must be between 64 bytes and 1 GiB");
    }
    if options.message_bytes_max > MESSAGE_BYTES_CEILING {
        return bad("message_bytes_max is over the 8 MiB ceiling");
    }
    if !(options.compact_garbage_fraction > 0.0 && options.compact_garbage_fraction < 1.0) {
        return bad("compact_garbage_fraction must be between 0 and 1");
    }
    if options.batch_messages_max == 0 || options.write_buffer_bytes_max == 0 {
        return bad("batch_messages_max and write_buffer_bytes_max must be positive");
    }
    if options.open_segments_max == 0 {
        return bad("open_segments_max must be at least 1");
    }
    Ok(())
}
