//! The store's shared state and its write, remove and read paths (docs/format.md
//! §7.2–7.3): the index, the file summary, the write buffer and the waiting confirms.

use super::handles::SegmentHandles;
use super::index::{Entry, Index};
use super::segment::{self, HEADER_BYTES, RECORD_OVERHEAD};
use super::{MessageStoreStats, MsgId, Shared};
use crate::error::{Error, IoContext, Result};
use crate::options::Durability;
use crate::storage::{OpenMode, StorageFile};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

pub type Confirm = Box<dyn FnOnce(Result<Durability>) + Send>;

/// One segment's summary.
pub struct Segment {
    pub path: PathBuf,
    /// Bytes of the file, buffered ones included.
    pub file_bytes: u64,
    /// Framed bytes of the records the index points to.
    pub valid_bytes: u64,
    /// Bytes already written to the file; reads past it come from the buffer.
    pub flushed_bytes: u64,
    /// The store LSN of the file's first byte, for segments written since open (older
    /// ones, and compaction outputs, are durable as a whole).
    pub lsn_base: Option<u64>,
}

impl Segment {
    pub fn garbage_bytes(&self) -> u64 {
        self.file_bytes - HEADER_BYTES.min(self.file_bytes) - self.valid_bytes
    }
}

/// Bytes for one segment at one offset, waiting to be written.
pub struct Chunk {
    pub segment: u32,
    pub file: Arc<dyn StorageFile>,
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// The chunk starts a new file, whose directory entry must be synced.
    pub creates_file: bool,
}

struct Waiter {
    lsn: u64,
    confirm: Confirm,
}

pub struct State {
    pub index: Index,
    pub segments: BTreeMap<u32, Segment>,
    /// Open handles of segments; the current segment's is always among them.
    pub files: SegmentHandles,
    pub current: u32,
    pub next_number: u32,
    /// Chunks waiting for the flusher.
    pub buffer: Vec<Chunk>,
    pub buffered_bytes: usize,
    /// Chunks the flusher is writing; still read from memory.
    pub in_flight: Vec<Arc<Chunk>>,
    /// Bytes appended to segments since open: the store's LSN.
    pub appended_lsn: u64,
    /// The LSN up to which confirms have been given.
    pub confirmed_lsn: u64,
    waiters: VecDeque<Waiter>,
    pub poisoned: Option<String>,
    pub closing: bool,
    /// Segments a compaction is copying (not to be picked again).
    pub compacting: Vec<u32>,
    /// Segments compaction found damaged: never compacted again (their other records
    /// stay readable in place).
    pub unreadable: Vec<u32>,
    pub counters: Counters,
}

#[derive(Default, Clone, Copy)]
pub struct Counters {
    pub compactions: u64,
    pub bytes_rewritten: u64,
    pub segments_deleted: u64,
    pub syncs: u64,
    pub records_written: u64,
}

/// How a read gets its bytes, decided under the lock and carried out outside it.
pub enum ReadPlan {
    Buffered(Vec<u8>),
    File {
        segment: u32,
        /// The cached handle; `None`: open `path`.
        file: Option<Arc<dyn StorageFile>>,
        path: PathBuf,
        offset: u64,
        size: u32,
    },
}

impl State {
    /// A state with no current segment yet (segment numbers start at 1, so 0 is none).
    pub fn new(
        index: Index,
        segments: BTreeMap<u32, Segment>,
        next_number: u32,
        open_segments_max: usize,
    ) -> State {
        State {
            index,
            segments,
            files: SegmentHandles::new(open_segments_max),
            current: 0,
            next_number,
            buffer: Vec::new(),
            buffered_bytes: 0,
            in_flight: Vec::new(),
            appended_lsn: 0,
            confirmed_lsn: 0,
            waiters: VecDeque::new(),
            poisoned: None,
            closing: false,
            compacting: Vec::new(),
            unreadable: Vec::new(),
            counters: Counters::default(),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.closing {
            return Err(Error::Closed);
        }
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Starts segment `next_number` as the current one: creates its file and buffers its header.
    pub fn roll(&mut self, shared: &Shared) -> Result<()> {
        let number = self.next_number;
        let path = shared.dir.join(segment::segment_name(number));
        let file = shared
            .storage
            .open(&path, OpenMode::CreateReadWrite)
            .context(|| format!("creating {}", path.display()))?;
        self.next_number += 1;
        self.files.insert(number, file.clone(), number);
        self.segments.insert(
            number,
            Segment {
                path,
                file_bytes: HEADER_BYTES,
                valid_bytes: 0,
                flushed_bytes: 0,
                lsn_base: Some(self.appended_lsn),
            },
        );
        self.push_bytes(number, file, 0, true, |out| {
            out.extend_from_slice(&segment::header(number))
        });
        self.current = number;
        Ok(())
    }

    /// Buffers the bytes `write` appends, at `offset` of `segment`: at the end of the
    /// last chunk when they follow it, else in a new chunk. They are written straight
    /// into the buffer, never through a copy.
    fn push_bytes(
        &mut self,
        segment: u32,
        file: Arc<dyn StorageFile>,
        offset: u64,
        creates_file: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let follows = self.buffer.last().is_some_and(|last| {
            last.segment == segment && last.offset + last.bytes.len() as u64 == offset
        });
        if !follows {
            self.buffer.push(Chunk {
                segment,
                file,
                offset,
                bytes: Vec::new(),
                creates_file,
            });
        }
        let bytes = &mut self.buffer.last_mut().expect("a chunk").bytes;
        let before = bytes.len();
        write(bytes);
        let added = bytes.len() - before;
        self.buffered_bytes += added;
        self.appended_lsn += added as u64;
    }

    /// Appends a new record to the current segment (rolling first when it would not
    /// fit) and indexes it. Returns the LSN its bytes end at.
    fn append(&mut self, shared: &Shared, id: MsgId, payload: &[u8]) -> Result<u64> {
        let size = (RECORD_OVERHEAD + payload.len()) as u64;
        // The first write after open starts a segment; so does one that would not fit.
        let full = self.segments.get(&self.current).is_none_or(|current| {
            current.file_bytes > HEADER_BYTES
                && current.file_bytes + size > shared.options.segment_bytes_max
        });
        if full {
            self.roll(shared)?;
        }
        let number = self.current;
        let segment = self.segments.get_mut(&number).expect("the current segment");
        let offset = segment.file_bytes;
        segment.file_bytes += size;
        segment.valid_bytes += size;
        let file = (self.files.get(number)).expect("the current segment's handle stays open");
        self.push_bytes(number, file, offset, false, |out| {
            segment::encode_record(out, &id, payload)
        });
        self.index.insert(Entry {
            id,
            segment: number,
            offset: offset as u32,
            size: size as u32,
            refs: 1,
        });
        self.counters.records_written += 1;
        Ok(self.appended_lsn)
    }

    /// The LSN a record's bytes end at when they may not be durable yet, else 0.
    fn pending_lsn(&self, entry: &Entry) -> u64 {
        self.segments
            .get(&entry.segment)
            .and_then(|s| s.lsn_base)
            .map_or(0, |base| {
                base + u64::from(entry.offset) + u64::from(entry.size)
            })
    }

    fn wait_for(&mut self, lsn: u64, confirm: Confirm) -> Option<Confirm> {
        if lsn <= self.confirmed_lsn {
            return Some(confirm);
        }
        self.waiters.push_back(Waiter { lsn, confirm });
        None
    }

    /// The confirms the flusher can give now that everything up to `lsn` is confirmed.
    pub fn take_confirmed(&mut self, lsn: u64) -> Vec<Confirm> {
        self.confirmed_lsn = self.confirmed_lsn.max(lsn);
        let mut ready = Vec::new();
        while self
            .waiters
            .front()
            .is_some_and(|w| w.lsn <= self.confirmed_lsn)
        {
            ready.push(self.waiters.pop_front().unwrap().confirm);
        }
        ready
    }

    /// Every waiting confirm, for a store that failed.
    pub fn take_all_waiters(&mut self) -> Vec<Confirm> {
        self.waiters.drain(..).map(|w| w.confirm).collect()
    }

    pub fn plan_read(&mut self, id: &MsgId) -> Result<ReadPlan> {
        let entry = self
            .index
            .get(id)
            .ok_or(Error::UnknownMessage { id: *id })?;
        let segment = &self.segments[&entry.segment];
        let (offset, size) = (u64::from(entry.offset), entry.size);
        if offset + u64::from(size) <= segment.flushed_bytes {
            return Ok(ReadPlan::File {
                segment: entry.segment,
                file: self.files.get(entry.segment),
                path: segment.path.clone(),
                offset,
                size,
            });
        }
        let chunks = self.in_flight.iter().map(|c| &**c).chain(&self.buffer);
        for chunk in chunks {
            let end = chunk.offset + chunk.bytes.len() as u64;
            if chunk.segment == entry.segment && chunk.offset <= offset && offset < end {
                let at = (offset - chunk.offset) as usize;
                let framed = &chunk.bytes[at..at + size as usize];
                let payload =
                    segment::check_record(framed, id).expect("a buffered record is intact");
                return Ok(ReadPlan::Buffered(payload));
            }
        }
        unreachable!("an unflushed record is in a buffered chunk")
    }

    /// Removes segment `number` (its file is being deleted).
    pub fn remove_segment(&mut self, number: u32) -> Option<Segment> {
        self.files.remove(number);
        self.segments.remove(&number)
    }

    /// Drops one reference from `id`; at zero its bytes become garbage.
    fn release(&mut self, id: &MsgId) {
        let entry = self.index.get_mut(id).expect("validated");
        entry.refs -= 1;
        if entry.refs == 0 {
            let entry = self.index.remove(id).expect("present");
            let segment = self
                .segments
                .get_mut(&entry.segment)
                .expect("indexed segment");
            segment.valid_bytes -= u64::from(entry.size);
        }
    }

    pub fn stats(&self) -> MessageStoreStats {
        let file_bytes: u64 = self.segments.values().map(|s| s.file_bytes).sum();
        let live_bytes: u64 = self.segments.values().map(|s| s.valid_bytes).sum();
        MessageStoreStats {
            messages: self.index.len() as u64,
            live_bytes,
            file_bytes,
            garbage_fraction: if file_bytes == 0 {
                0.0
            } else {
                (file_bytes - live_bytes) as f64 / file_bytes as f64
            },
            segments: self.segments.len() as u64,
            open_segment_files: self.files.len() as u64,
            compactions: self.counters.compactions,
            bytes_rewritten: self.counters.bytes_rewritten,
            segments_deleted: self.counters.segments_deleted,
            index_bytes: self.index.heap_bytes() as u64,
            syncs: self.counters.syncs,
            records_written: self.counters.records_written,
        }
    }
}

/// `MessageStore::write_with` (§7.3).
pub fn write(shared: &Shared, items: &[(MsgId, &[u8])], confirm: Confirm) -> Result<()> {
    let options = &shared.options;
    if items.is_empty() {
        return Err(Error::EmptyBatch);
    }
    if items.len() > options.batch_messages_max {
        return Err(Error::BatchTooLarge {
            len: items.len(),
            max: options.batch_messages_max,
        });
    }
    let mut bytes = 0;
    for (_, payload) in items {
        if payload.len() > options.message_bytes_max {
            return Err(Error::MessageTooLarge {
                len: payload.len(),
                max: options.message_bytes_max,
            });
        }
        bytes += RECORD_OVERHEAD + payload.len();
    }
    let mut state = shared.state.lock();
    // Wait for room, unless the buffer is empty: a batch bigger than the whole buffer
    // still goes through, alone.
    while state.buffered_bytes > 0
        && state.buffered_bytes + bytes > options.write_buffer_bytes_max
        && state.check_writable().is_ok()
    {
        shared.drained.wait(&mut state);
    }
    state.check_writable()?;
    for (id, _) in items {
        if let Some(entry) = state.index.get(id)
            && u64::from(entry.refs) + items.len() as u64 > u64::from(u32::MAX)
        {
            return Err(Error::TooManyReferences { id: *id });
        }
    }
    let mut lsn = 0;
    for (i, (id, payload)) in items.iter().enumerate() {
        let end = match state.index.get(id).copied() {
            Some(entry) => {
                state.index.get_mut(id).unwrap().refs += 1;
                state.pending_lsn(&entry)
            }
            None => match state.append(shared, *id, payload) {
                Ok(end) => end,
                Err(e) => {
                    // Only a segment's creation can fail here; undo this batch's references.
                    for (id, _) in &items[..i] {
                        state.release(id);
                    }
                    return Err(e);
                }
            },
        };
        lsn = lsn.max(end);
    }
    let now = state.wait_for(lsn, confirm);
    let queued = state.buffered_bytes > 0;
    drop(state);
    if queued {
        shared.flush_wake.notify_one();
    }
    if let Some(confirm) = now {
        confirm(Ok(confirmed_durability(shared)));
    }
    Ok(())
}

/// What a confirm given at once promises: the level the policy syncs to.
fn confirmed_durability(shared: &Shared) -> Durability {
    match shared.options.sync {
        crate::options::SyncPolicy::Fsync => Durability::Fsynced,
        _ => Durability::Written,
    }
}

/// `MessageStore::add_references`: one more reference to each id, all present.
pub fn add_references(shared: &Shared, ids: &[MsgId]) -> Result<()> {
    let mut state = shared.state.lock();
    state.check_writable()?;
    for id in ids {
        match state.index.get(id) {
            None => return Err(Error::UnknownMessage { id: *id }),
            Some(e) if u64::from(e.refs) + ids.len() as u64 > u64::from(u32::MAX) => {
                return Err(Error::TooManyReferences { id: *id });
            }
            Some(_) => {}
        }
    }
    for id in ids {
        state.index.get_mut(id).expect("validated").refs += 1;
    }
    Ok(())
}

/// `MessageStore::remove` (§7.3).
pub fn remove(shared: &Shared, ids: &[MsgId]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::EmptyBatch);
    }
    if ids.len() > shared.options.batch_messages_max {
        return Err(Error::BatchTooLarge {
            len: ids.len(),
            max: shared.options.batch_messages_max,
        });
    }
    let mut state = shared.state.lock();
    state.check_writable()?;
    let mut wanted: HashMap<MsgId, u32> = HashMap::with_capacity(ids.len());
    for id in ids {
        *wanted.entry(*id).or_default() += 1;
    }
    for (id, count) in &wanted {
        match state.index.get(id) {
            None => return Err(Error::UnknownMessage { id: *id }),
            Some(entry) if entry.refs < *count => {
                return Err(Error::TooFewReferences {
                    id: *id,
                    refs: entry.refs,
                    removing: *count,
                });
            }
            Some(_) => {}
        }
    }
    for id in ids {
        state.release(id);
    }
    let wake = super::compact::wanted(&state, &shared.options);
    drop(state);
    if wake {
        shared.compact_wake.notify_one();
    }
    Ok(())
}
