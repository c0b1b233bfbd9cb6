//! One channel in memory: its scheduling lane and its loaded state — the open file,
//! the committed end readers may see, the message index and the folded metadata.

use super::file::{Body, CryptPadPart, Cursor, Header, HeaderError, Step};
use super::id::ChannelId;
use super::index::MessageIndex;
use super::metadata::{Metadata, MetadataFold};
use super::schedule::Lane;
use crate::error::{Error, IoContext, Result};
use crate::layout::Layout;
use crate::lost::{LostRange, save_range};
use crate::storage::{OpenMode, SharedStorage, StorageFile};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What channels need to create, open, count and flush their files.
pub struct Files {
    pub storage: SharedStorage,
    pub layout: Layout,
    open: AtomicUsize,
    peak: AtomicUsize,
    /// Directories with entries created since the last checkpoint took them.
    dirty_dirs: Mutex<HashSet<PathBuf>>,
    /// Shard directories known to exist.
    known_shards: Mutex<HashSet<String>>,
}

impl Files {
    pub fn new(storage: SharedStorage, layout: Layout) -> Arc<Self> {
        Arc::new(Files {
            storage,
            layout,
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            dirty_dirs: Mutex::new(HashSet::new()),
            known_shards: Mutex::new(HashSet::new()),
        })
    }
    /// Channel files open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// The most channel files ever open at once.
    pub fn peak_count(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    /// The directories a checkpoint must sync, emptied.
    pub fn take_dirty_dirs(&self) -> Vec<PathBuf> {
        self.dirty_dirs.lock().drain().collect()
    }

    /// Creates a new channel's file (and its shard directory), empty.
    fn create(self: &Arc<Self>, id: &ChannelId) -> io::Result<Arc<OpenFile>> {
        let shard = id.shard();
        let shard_dir = self.layout.channels.join(shard);
        if !self.known_shards.lock().contains(shard) {
            if self.storage.stat(&shard_dir)?.is_none() {
                self.storage.create_dir_all(&shard_dir)?;
            }
            // Synced once per shard and process even when the shard was there: a
            // process that died can leave an entry that was never made durable.
            self.dirty_dirs.lock().insert(self.layout.channels.clone());
            self.known_shards.lock().insert(shard.to_string());
        }
        let file = self.storage.open(
            &id.file_in(&self.layout.channels),
            OpenMode::CreateReadWrite,
        )?;
        file.set_len(0)?;
        self.dirty_dirs.lock().insert(shard_dir);
        Ok(OpenFile::new(file, self.clone()))
    }
}

/// An open channel file, counted while it lives (readers share it through an `Arc`).
pub struct OpenFile {
    pub file: Arc<dyn StorageFile>,
    files: Arc<Files>,
}

impl OpenFile {
    pub fn new(file: Arc<dyn StorageFile>, files: Arc<Files>) -> Arc<Self> {
        let now = files.open.fetch_add(1, Ordering::Relaxed) + 1;
        files.peak.fetch_max(now, Ordering::Relaxed);
        Arc::new(OpenFile { file, files })
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.files.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many committed bytes a channel keeps in memory before writing them to its file.
/// Batching the channel-file writes is what lets one commit thread keep up with many
/// channels; the journal already holds the bytes durably.
pub const TAIL_BYTES_MAX: usize = 16 * 1024;

/// A live channel's state.
///
/// Committed bytes are `[0, len)`: `[0, file_len)` in the file and `[file_len, len)`
/// in `tail`, waiting to be written (at `TAIL_BYTES_MAX`, at a checkpoint, or when the
/// channel leaves the cache).
pub struct Live {
    /// `None` until the first flush creates the file of a new channel.
    pub file: Option<Arc<OpenFile>>,
    pub header: Header,
    /// Bytes written to the file.
    pub file_len: u64,
    /// Committed bytes not yet written to the file.
    pub tail: Vec<u8>,
    /// The end once every queued write is committed: where the next append goes.
    pub reserved: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
    /// Committed messages.
    pub index: MessageIndex,
    /// Committed metadata.
    pub metadata: Metadata,
    /// The metadata once every queued amendment is committed: what the next amendment
    /// applies to (as `reserved` and `next_seq` are for appends).
    pub metadata_reserved: Metadata,
}

impl Live {
    /// Appends committed bytes (they are in the durable journal already).
    pub fn commit(&mut self, offset: u64, bytes: &[u8]) {
        assert_eq!(offset, self.len(), "commits must be contiguous");
        if self.tail.capacity() == 0 {
            // Sized once: a tail is written out and cleared (keeping its buffer) at the limit.
            self.tail.reserve(TAIL_BYTES_MAX + bytes.len());
        }
        self.tail.extend_from_slice(bytes);
    }

    /// The end of the committed records (file, then tail): readers never read past it.
    pub fn len(&self) -> u64 {
        self.file_len + self.tail.len() as u64
    }

    /// Writes the tail to the file, creating the file for a new channel. On failure
    /// the tail is kept, so nothing committed is dropped.
    pub fn flush(&mut self, id: &ChannelId, files: &Arc<Files>) -> io::Result<()> {
        if self.tail.is_empty() {
            return Ok(());
        }
        let file = match &self.file {
            Some(file) => file.clone(),
            None => {
                let file = files.create(id)?;
                self.file = Some(file.clone());
                file
            }
        };
        file.file.write_all_at(&self.tail, self.file_len)?;
        self.file_len += self.tail.len() as u64;
        self.tail.clear();
        // A large write grew the buffer; do not keep it while the channel is cached.
        self.tail.shrink_to(TAIL_BYTES_MAX * 2);
        Ok(())
    }

    /// A read-only view of the committed bytes `[0, len)`: the file's part, then a
    /// copy of the tail.
    pub fn snapshot(&self) -> Arc<dyn StorageFile> {
        Arc::new(Snapshot {
            file: self.file.clone(),
            file_len: self.file_len,
            tail: self.tail.clone(),
        })
    }
}

/// The committed bytes of a channel as of one moment.
struct Snapshot {
    file: Option<Arc<OpenFile>>,
    file_len: u64,
    tail: Vec<u8>,
}

impl StorageFile for Snapshot {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset < self.file_len {
            let file = self
                .file
                .as_ref()
                .expect("bytes below file_len are in a file");
            let n = buf.len().min((self.file_len - offset) as usize);
            return file.file.read_at(&mut buf[..n], offset);
        }
        let at = (offset - self.file_len) as usize;
        let n = buf.len().min(self.tail.len().saturating_sub(at));
        buf[..n].copy_from_slice(&self.tail[at..at + n]);
        Ok(n)
    }
    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a snapshot is read-only",
        ))
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file_len + self.tail.len() as u64)
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a snapshot is read-only",
        ))
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

/// What is known about a channel.
pub enum Presence {
    /// Not read from disk yet.
    Unloaded,
    /// No live channel; `archived` holds the reason when an archived copy exists.
    Missing {
        archived: Option<String>,
    },
    Live(Box<Live>),
}

pub struct State {
    pub presence: Presence,
    /// Writes queued to the committer and not applied yet.
    pub pending: usize,
    pub last_access_ms: u64,
}

/// One channel: its lane (ordered / unordered / blocking tasks) and its state.
pub struct Channel {
    pub id: ChannelId,
    pub lane: Lane,
    pub state: Mutex<State>,
    /// Signalled when `pending` drops to zero.
    pub drained: Condvar,
}

/// The damaged ranges found since open, the most recent first to go past its limit.
#[derive(Debug, Default)]
pub struct LostLog(Mutex<Vec<LostRange>>);

impl LostLog {
    /// The most ranges remembered.
    const KEPT: usize = 1024;

    pub fn new(ranges: Vec<LostRange>) -> Self {
        LostLog(Mutex::new(ranges))
    }
    pub fn push(&self, range: LostRange) {
        let mut ranges = self.0.lock();
        if ranges.len() >= Self::KEPT {
            ranges.remove(0);
        }
        ranges.push(range);
    }
    pub fn snapshot(&self) -> Vec<LostRange> {
        self.0.lock().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// What loading needs from the engine.
pub struct LoadContext<'a> {
    pub files: &'a Arc<Files>,
    /// Receives every damaged range found while loading.
    pub lost: &'a LostLog,
}

impl Channel {
    pub fn new(id: ChannelId) -> Self {
        Channel {
            id,
            lane: Lane::new(),
            state: Mutex::new(State {
                presence: Presence::Unloaded,
                pending: 0,
                last_access_ms: 0,
            }),
            drained: Condvar::new(),
        }
    }

    /// Locks the state, reading the channel from disk first if needed.
    pub fn loaded(&self, cx: &LoadContext<'_>) -> Result<MutexGuard<'_, State>> {
        let mut state = self.state.lock();
        if matches!(state.presence, Presence::Unloaded) {
            state.presence = load(&self.id, cx)?;
        }
        Ok(state)
    }

    /// The state if it is loaded already; `None` when loading it would read the disk.
    pub fn try_loaded(&self) -> Option<MutexGuard<'_, State>> {
        let state = self.state.lock();
        (!matches!(state.presence, Presence::Unloaded)).then_some(state)
    }

    /// Waits until every queued write of this channel is committed.
    pub fn wait_drained<'a>(&self, state: &mut MutexGuard<'a, State>) {
        while state.pending > 0 {
            self.drained.wait(state);
        }
    }

    /// True when nothing uses the channel, so the cache may drop it. Writes the
    /// channel's tail to its file first; a channel whose tail cannot be written stays.
    pub fn is_idle_and_flushed(&self, files: &Arc<Files>) -> bool {
        if !self.lane.is_idle() {
            return false;
        }
        let Some(mut state) = self.state.try_lock() else {
            return false;
        };
        if state.pending > 0 {
            return false;
        }
        match &mut state.presence {
            Presence::Live(live) => match live.flush(&self.id, files) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(channel = %self.id, error = %e, "could not write a channel's tail; keeping it cached");
                    false
                }
            },
            _ => true,
        }
    }
}

/// Reads a channel from disk: the live file if there is one, else whether it is archived.
pub fn load(id: &ChannelId, cx: &LoadContext<'_>) -> Result<Presence> {
    let path = id.file_in(&cx.files.layout.channels);
    let file = match cx.files.storage.open(&path, OpenMode::ReadWrite) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let archived = archived_reason(id, cx)?;
            return Ok(Presence::Missing { archived });
        }
        Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
    };
    let header_len = match Header::read(&*file) {
        Ok((header, header_len)) => {
            if header.id != *id {
                return Err(corrupted(&path, 0, "header names another channel"));
            }
            (header, header_len)
        }
        Err(HeaderError::Short) => {
            // A creation that never became durable (only possible without `Fsync`).
            let len = file
                .len()
                .context(|| format!("sizing {}", path.display()))?;
            quarantine(
                cx,
                &path,
                &*file,
                0,
                len,
                "channel file shorter than its header",
            )?;
            drop(file);
            cx.files
                .storage
                .remove_file(&path)
                .context(|| format!("removing {}", path.display()))?;
            return Ok(Presence::Missing {
                archived: archived_reason(id, cx)?,
            });
        }
        Err(HeaderError::Invalid(reason)) => return Err(corrupted(&path, 0, reason)),
        Err(HeaderError::Io(e)) => return Err(e).context(|| format!("reading {}", path.display())),
    };
    let (header, header_len) = header_len;
    let file_len = file
        .len()
        .context(|| format!("sizing {}", path.display()))?;
    let mut index = MessageIndex::default();
    let mut fold = MetadataFold::new();
    // Seqs in a file increase; the first may be anything at or above first_seq.
    let mut next_seq = header.first_seq;
    // The last archive or restore marker, if it is the file's last record.
    let mut last_move: Option<Move> = None;
    let mut cursor = Cursor::new(file.clone(), header_len, file_len);
    let end = loop {
        match cursor
            .next()
            .context(|| format!("reading {}", path.display()))?
        {
            Step::Record { offset, body } => {
                let parsed = Body::parse(cursor.body(body));
                last_move = match &parsed {
                    Ok(Body::Archived { reason, .. }) => Some(Move::Archived(reason.to_string())),
                    Ok(Body::Restored { .. }) => Some(Move::Restored),
                    _ => None,
                };
                match parsed {
                    Ok(body @ (Body::Message { .. } | Body::Stored { .. })) => {
                        let (seq, key) = body.seq_and_key().expect("a message");
                        if seq < next_seq {
                            break damaged(
                                cx,
                                &path,
                                &*file,
                                offset,
                                file_len,
                                "seq out of order",
                            )?;
                        }
                        index.push(seq, offset, index.key_hash(&key));
                        next_seq = seq + 1;
                    }
                    Ok(Body::Metadata { line, .. }) => {
                        // A bad line is skipped, as CryptPad's fold does; it was never logged by us.
                        let _ = fold.feed(line);
                    }
                    Ok(Body::CryptPad {
                        part: CryptPadPart::LegacyFolded,
                        bytes,
                        ..
                    }) => {
                        // An imported legacy first line CryptPad reads before the dedicated log.
                        let _ = fold.feed_channel_first_line(bytes);
                    }
                    Ok(Body::Archived { .. } | Body::Restored { .. } | Body::CryptPad { .. }) => {}
                    Err(reason) => break damaged(cx, &path, &*file, offset, file_len, reason)?,
                }
            }
            Step::End => break file_len,
            Step::Damaged { offset, reason } => {
                break damaged(cx, &path, &*file, offset, file_len, reason)?;
            }
        }
    };
    if let Some(moved) = last_move
        && let Some(presence) = finish_interrupted_move(id, cx, moved)?
    {
        return Ok(presence);
    }
    let next_seq = next_seq.max(header.next_seq_min);
    let metadata = fold.finish();
    Ok(Presence::Live(Box::new(Live {
        file: Some(OpenFile::new(file, cx.files.clone())),
        header,
        file_len: end,
        tail: Vec::new(),
        reserved: end,
        next_seq,
        index,
        metadata_reserved: metadata.clone(),
        metadata,
    })))
}

/// What a channel file's last record says was being done to it.
enum Move {
    Archived(String),
    Restored,
}

/// Archive and restore rename a file between two directories and then sync both. A
/// crash between the two syncs can leave both names durable (they are one file). The
/// file's last record tells which move it was: finish it. Returns the presence when
/// the channel turns out archived.
fn finish_interrupted_move(
    id: &ChannelId,
    cx: &LoadContext<'_>,
    moved: Move,
) -> Result<Option<Presence>> {
    let storage = &*cx.files.storage;
    let live = id.file_in(&cx.files.layout.channels);
    let archived = id.file_in(&cx.files.layout.archive);
    if storage
        .stat(&archived)
        .context(|| format!("stat of {}", archived.display()))?
        .is_none()
    {
        return Ok(None);
    }
    let (drop, reason) = match moved {
        Move::Archived(reason) => (&live, Some(reason)),
        Move::Restored => (&archived, None),
    };
    tracing::warn!(path = %drop.display(), "finishing an archive or restore interrupted by a crash");
    storage
        .remove_file(drop)
        .and_then(|()| storage.sync_dir(drop.parent().expect("shard directory")))
        .context(|| format!("removing {}", drop.display()))?;
    Ok(reason.map(|reason| Presence::Missing {
        archived: Some(reason),
    }))
}

/// Moves `[start, end)` of a damaged file aside, truncates the file there, and reports it.
fn damaged(
    cx: &LoadContext<'_>,
    path: &Path,
    file: &dyn StorageFile,
    start: u64,
    end: u64,
    reason: &str,
) -> Result<u64> {
    quarantine(cx, path, file, start, end, reason)?;
    file.set_len(start)
        .and_then(|()| file.sync_data())
        .context(|| format!("truncating {}", path.display()))?;
    Ok(start)
}

/// Saves `start..end` of `path` to `lost+found/` and reports it as lost.
pub(crate) fn quarantine(
    cx: &LoadContext<'_>,
    path: &Path,
    file: &dyn StorageFile,
    start: u64,
    end: u64,
    reason: &str,
) -> Result<()> {
    let saved_as = save_range(
        &*cx.files.storage,
        &cx.files.layout.lost_found,
        path,
        file,
        start,
        end,
    )
    .context(|| format!("saving the damaged range of {}", path.display()))?;
    tracing::warn!(path = %path.display(), start, end, reason, "damaged range moved to lost+found");
    cx.lost.push(LostRange {
        path: path.to_path_buf(),
        start,
        end,
        reason: reason.to_string(),
        saved_as: Some(saved_as),
    });
    Ok(())
}

fn corrupted(path: &Path, offset: u64, reason: &str) -> Error {
    Error::Corrupted {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}

/// The reason an archived copy of `id` was archived, or `None` if there is none.
pub fn archived_reason(id: &ChannelId, cx: &LoadContext<'_>) -> Result<Option<String>> {
    let path = id.file_in(&cx.files.layout.archive);
    let file = match cx.files.storage.open(&path, OpenMode::ReadQuietly) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
    };
    let (_, header_len) = Header::read(&*file).map_err(|e| e.into_error(&path))?;
    let len = file
        .len()
        .context(|| format!("sizing {}", path.display()))?;
    let mut reason = String::from("archived");
    let mut cursor = Cursor::new(file, header_len, len);
    while let Step::Record { body, .. } = cursor
        .next()
        .context(|| format!("reading {}", path.display()))?
    {
        if let Ok(Body::Archived { reason: r, .. }) = Body::parse(cursor.body(body)) {
            reason = r.to_string();
        }
    }
    Ok(Some(reason))
}
