//! Group commit (docs/format.md §3.2–3.3).
//!
//! The threads:
//! - the **commit** thread takes every queued write, appends it to the journal with one
//!   `write`, and — once the journal is synced past it — applies it to its channel
//!   (committed bytes, index, metadata) and acknowledges it;
//! - two **sync** threads `fdatasync` the journal, each sync covering everything
//!   written before it began, so the next group is written (and its sync may start)
//!   while the previous one syncs;
//! - the **checkpoint** thread makes channel files durable, deletes old journal files,
//!   and zero-fills the next journal file.

use crate::channel::cache::ChannelCache;
use crate::channel::id::ChannelId;
use crate::channel::log::{Channel, Files, Presence, TAIL_BYTES_MAX};
use crate::channel::metadata::Metadata;
use crate::error::{Error, Result};
use crate::journal::{self, Entry, JournalWriter, Part};
use crate::options::{Durability, SyncPolicy};
use crate::storage::{OpenMode, StorageFile};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Called once a write is committed (or failed). Runs on the commit thread: keep it short.
pub type Completion = Box<dyn FnOnce(Result<Durability>) + Send>;

/// One write to one channel file: records to put at `offset`, and what committing them changes.
pub struct ChannelWrite {
    pub channel: Arc<Channel>,
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// `(seq, offset, key hash)` of each message in `bytes`, for the channel's index.
    pub messages: Vec<(u64, u64, u64)>,
    /// The channel's metadata once this write is committed, if it changes it.
    pub metadata: Option<Metadata>,
}

/// Writes committed together, all or none (one journal entry), then acknowledged once:
/// one channel's write, or a publish to many channels.
pub struct Job {
    pub writes: Vec<ChannelWrite>,
    pub done: Completion,
}

impl Job {
    fn bytes(&self) -> usize {
        self.writes.iter().map(|w| w.bytes.len()).sum()
    }
}

/// Counters the committer keeps (read by stats and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Groups written to the journal.
    pub groups: u64,
    pub jobs: u64,
    pub journal_syncs: u64,
    pub checkpoints: u64,
    /// Retired journal files kept as the next one (docs/format.md §3.1).
    pub journal_files_recycled: u64,
    /// Journal files prepared by writing zeros (when none could be recycled).
    pub journal_files_zero_filled: u64,
}

pub struct Settings {
    pub files: Arc<Files>,
    pub cache: Arc<ChannelCache>,
    pub policy: SyncPolicy,
    pub commit_bytes_max: usize,
    pub queue_bytes_max: usize,
    pub journal_bytes_max: u64,
}

/// Groups written to the journal and waiting for their sync, at most.
const GROUPS_IN_FLIGHT_MAX: usize = 64;

struct Queue {
    jobs: VecDeque<Job>,
    /// Bytes reserved by writers, queued or about to be.
    bytes: usize,
    closing: bool,
    checkpoint_wanted: bool,
    /// The journal file being written, and the LSNs written and synced in it.
    journal_file: Arc<dyn StorageFile>,
    written_lsn: u64,
    synced_lsn: u64,
    /// The highest LSN a running or finished sync covers.
    claimed_lsn: u64,
    /// Targets of syncs running now, and of syncs that returned while an earlier one ran.
    syncs_running: Vec<u64>,
    syncs_done: Vec<u64>,
    last_sync_start: Instant,
    /// Jobs written since the sync thread last started a sync.
    unsynced_jobs: usize,
    /// Set when the sync thread should stop.
    sync_stop: bool,
}

struct Checkpoints {
    requested: u64,
    completed: u64,
}

struct Shared {
    settings: Settings,
    queue: Mutex<Queue>,
    /// Wakes the commit thread (new jobs, a sync done, a checkpoint wanted, closing).
    wake: Condvar,
    /// Wakes writers waiting for queue space.
    space: Condvar,
    /// Wakes the sync thread.
    sync_wake: Condvar,
    poison: Mutex<Option<String>>,
    /// Mirrors `poison.is_some()` and `queue.closing` for the writers' fast check.
    poisoned: AtomicBool,
    closing: AtomicBool,
    checkpoints: Mutex<Checkpoints>,
    checkpoint_done: Condvar,
    stats: Mutex<CommitStats>,
}

pub struct Committer {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Bytes of queue space held by a writer; released unless turned into a queued job.
pub struct Reservation<'a> {
    committer: &'a Committer,
    bytes: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.committer.shared.release(self.bytes);
        }
    }
}

impl Committer {
    pub fn start(settings: Settings, journal: JournalWriter) -> Committer {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                bytes: 0,
                closing: false,
                checkpoint_wanted: false,
                journal_file: journal.file(),
                written_lsn: journal.lsn(),
                synced_lsn: journal.lsn(),
                claimed_lsn: journal.lsn(),
                syncs_running: Vec::new(),
                syncs_done: Vec::new(),
                last_sync_start: Instant::now(),
                unsynced_jobs: 0,
                sync_stop: false,
            }),
            settings,
            wake: Condvar::new(),
            space: Condvar::new(),
            sync_wake: Condvar::new(),
            poison: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            checkpoints: Mutex::new(Checkpoints {
                requested: 0,
                completed: 0,
            }),
            checkpoint_done: Condvar::new(),
            stats: Mutex::new(CommitStats::default()),
        });
        let (tx, rx) = mpsc::channel();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .expect("spawning a store thread")
        };
        let mut threads = vec![
            spawn("vellum-commit", {
                let shared = shared.clone();
                Box::new(move || CommitLoop::new(shared, journal, tx).run())
            }),
            spawn("vellum-checkpoint", {
                let shared = shared.clone();
                Box::new(move || run_checkpoints(&shared, rx))
            }),
        ];
        for _ in 0..SYNC_THREADS {
            let shared = shared.clone();
            threads.push(spawn("vellum-sync", Box::new(move || run_syncs(&shared))));
        }
        Committer {
            shared,
            threads: Mutex::new(threads),
        }
    }

    /// Fails if the store is poisoned or closed.
    pub fn check_writable(&self) -> Result<()> {
        if self.shared.poisoned.load(Ordering::Acquire)
            && let Some(cause) = self.shared.poisoned()
        {
            return Err(Error::Poisoned { cause });
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Waits for room for `bytes` in the commit queue (a write bigger than the whole
    /// queue waits for an empty queue).
    pub fn reserve(&self, bytes: usize) -> Result<Reservation<'_>> {
        self.check_writable()?;
        let max = self.shared.settings.queue_bytes_max;
        let mut queue = self.shared.queue.lock();
        while queue.bytes > 0 && queue.bytes + bytes > max && !queue.closing {
            self.shared.space.wait(&mut queue);
        }
        if queue.closing {
            return Err(Error::Closed);
        }
        queue.bytes += bytes;
        Ok(Reservation {
            committer: self,
            bytes,
        })
    }

    /// [`Committer::reserve`] without waiting: `None` when the queue has no room now.
    pub fn try_reserve(&self, bytes: usize) -> Result<Option<Reservation<'_>>> {
        self.check_writable()?;
        let max = self.shared.settings.queue_bytes_max;
        let mut queue = self.shared.queue.lock();
        if queue.closing {
            return Err(Error::Closed);
        }
        if queue.bytes > 0 && queue.bytes + bytes > max {
            return Ok(None);
        }
        queue.bytes += bytes;
        Ok(Some(Reservation {
            committer: self,
            bytes,
        }))
    }

    /// Queues a job. Call with its channels' states locked, so each channel's jobs
    /// queue in the order their offsets were assigned.
    pub fn submit(&self, mut reservation: Reservation<'_>, job: Job) {
        let mut queue = self.shared.queue.lock();
        // The reservation's bytes now belong to the queued job.
        queue.bytes += job.bytes();
        queue.bytes -= reservation.bytes;
        reservation.bytes = 0;
        queue.jobs.push_back(job);
        self.shared.wake.notify_one();
    }

    /// Runs a checkpoint that starts after this call and waits for it: afterwards no
    /// journal entry written before the call remains, and every channel's committed
    /// bytes are durable in its file.
    pub fn checkpoint(&self) -> Result<()> {
        let ticket = {
            let mut c = self.shared.checkpoints.lock();
            c.requested += 1;
            c.requested
        };
        {
            let mut queue = self.shared.queue.lock();
            if queue.closing {
                return Err(Error::Closed);
            }
            queue.checkpoint_wanted = true;
            self.shared.wake.notify_one();
        }
        let mut c = self.shared.checkpoints.lock();
        while c.completed < ticket && self.shared.poisoned().is_none() {
            self.shared.checkpoint_done.wait(&mut c);
        }
        // A failed checkpoint poisons the store before it counts as completed: whoever
        // waited for it must not go on as if its entries had left the journal.
        match self.shared.poisoned() {
            Some(cause) => Err(Error::Poisoned { cause }),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> CommitStats {
        *self.shared.stats.lock()
    }

    /// Refuses every later write until reopened, for a failure met outside the
    /// journal (the message store's segments).
    pub fn poison(&self, cause: String) {
        self.shared.poison(cause);
    }

    /// Whether a failed write or sync has poisoned the journal.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned().is_some()
    }

    /// Commits everything queued, checkpoints, and stops the threads.
    pub fn close(&self) {
        {
            let mut queue = self.shared.queue.lock();
            queue.closing = true;
            self.shared.closing.store(true, Ordering::Release);
            self.shared.wake.notify_all();
            self.shared.space.notify_all();
        }
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn release(&self, bytes: usize) {
        let mut queue = self.queue.lock();
        queue.bytes -= bytes;
        self.space.notify_all();
        if queue.closing {
            // The commit thread waits for the last reservation before it stops.
            self.wake.notify_one();
        }
    }

    fn poison(&self, cause: String) {
        tracing::error!(%cause, "store poisoned: refusing writes until reopened");
        self.poison.lock().get_or_insert(cause);
        self.poisoned.store(true, Ordering::Release);
        let _c = self.checkpoints.lock();
        self.checkpoint_done.notify_all();
    }

    fn poisoned(&self) -> Option<String> {
        self.poison.lock().clone()
    }
}

/// Under concurrent writes, the least time between the starts of two journal syncs.
/// An fdatasync is dear (on the reference machine ~170 µs of wall time and ~70 µs of
/// CPU), so while other writes are in flight a sync waits to cover more of them. A lone
/// writer is never delayed.
const SYNC_PERIOD_MIN: Duration = Duration::from_micros(100);

/// Sync threads. With two, a sync can start while the previous one is still running,
/// so a write waits for one sync, not for the end of another first. Each fdatasync
/// makes durable everything written before it began, so they may finish in any order.
const SYNC_THREADS: usize = 2;

/// A sync thread: fdatasyncs the journal whenever it has entries no sync has claimed.
fn run_syncs(shared: &Shared) {
    let mut queue = shared.queue.lock();
    loop {
        while queue.written_lsn == queue.claimed_lsn && !queue.sync_stop {
            shared.sync_wake.wait(&mut queue);
        }
        if queue.written_lsn == queue.claimed_lsn {
            return;
        }
        let deadline = queue.last_sync_start + SYNC_PERIOD_MIN;
        while (queue.unsynced_jobs > 1 || !queue.jobs.is_empty()) && !queue.sync_stop {
            if shared
                .sync_wake
                .wait_until(&mut queue, deadline)
                .timed_out()
            {
                break;
            }
        }
        if queue.written_lsn == queue.claimed_lsn {
            continue; // The other sync thread took it meanwhile.
        }
        queue.last_sync_start = Instant::now();
        queue.unsynced_jobs = 0;
        let (target, file) = (queue.written_lsn, queue.journal_file.clone());
        queue.claimed_lsn = target;
        queue.syncs_running.push(target);
        let result = MutexGuard::unlocked(&mut queue, || file.sync_data());
        if let Err(e) = result {
            // The groups waiting for this sync fail: the commit thread sees the poison
            // before `synced_lsn` moves past them.
            shared.poison(format!("journal sync failed: {e}"));
        }
        shared.stats.lock().journal_syncs += 1;
        queue.syncs_running.retain(|&t| t != target);
        queue.syncs_done.push(target);
        // A sync vouches for its range only once every sync that started before it has
        // returned too: an earlier one may have met (and consumed) a writeback error.
        let floor = queue
            .syncs_running
            .iter()
            .min()
            .copied()
            .unwrap_or(u64::MAX);
        let covered = queue
            .syncs_done
            .iter()
            .filter(|&&t| t < floor)
            .max()
            .copied();
        if let Some(covered) = covered {
            queue.synced_lsn = queue.synced_lsn.max(covered);
            queue.syncs_done.retain(|&t| t >= floor);
        }
        shared.wake.notify_one();
    }
}

/// What one checkpoint must make durable before it deletes old journal files.
struct CheckpointJob {
    ticket: u64,
    dirty: Vec<ChannelId>,
    dirty_dirs: Vec<PathBuf>,
    delete_below_lsn: u64,
}

/// Jobs written to the journal, waiting for the sync that covers `end_lsn`.
struct Group {
    jobs: Vec<Job>,
    end_lsn: u64,
}

struct CommitLoop {
    shared: Arc<Shared>,
    journal: JournalWriter,
    checkpoints: mpsc::Sender<CheckpointJob>,
    buf: Vec<u8>,
    in_flight: VecDeque<Group>,
    /// Channels written since the last checkpoint.
    dirty: HashSet<ChannelId>,
    /// When the journal was first written after its last sync (`Interval` policy).
    unsynced_since: Option<Instant>,
}

/// What the commit thread should do next.
struct Work {
    write: Vec<Job>,
    synced_lsn: u64,
    checkpoint: bool,
    closing: bool,
    sync_due: bool,
}

impl CommitLoop {
    fn new(
        shared: Arc<Shared>,
        journal: JournalWriter,
        checkpoints: mpsc::Sender<CheckpointJob>,
    ) -> Self {
        CommitLoop {
            shared,
            journal,
            checkpoints,
            buf: Vec::new(),
            in_flight: VecDeque::new(),
            dirty: HashSet::new(),
            unsynced_since: None,
        }
    }

    fn run(mut self) {
        loop {
            let work = self.next_work();
            if !work.write.is_empty() {
                self.write(work.write);
            }
            self.apply_synced(work.synced_lsn);
            if work.sync_due {
                self.request_sync();
            }
            let full = self.journal.entry_bytes() >= self.shared.settings.journal_bytes_max;
            if work.checkpoint || full || work.closing {
                self.settle();
                self.rotate();
            }
            if work.closing {
                self.mark_clean_end();
                break;
            }
        }
        self.shared.queue.lock().sync_stop = true;
        self.shared.sync_wake.notify_all();
        // Dropping the checkpoint sender lets that thread finish its queue and stop.
    }

    /// Waits until there is something to do, and takes it.
    fn next_work(&mut self) -> Work {
        let shared = self.shared.clone();
        let mut queue = shared.queue.lock();
        loop {
            let synced = self
                .in_flight
                .front()
                .is_some_and(|g| g.end_lsn <= queue.synced_lsn);
            let writable = !queue.jobs.is_empty() && self.in_flight.len() < GROUPS_IN_FLIGHT_MAX;
            let interval = match shared.settings.policy {
                SyncPolicy::Interval(every) => self.unsynced_since.map(|since| since + every),
                _ => None,
            };
            let sync_due = interval.is_some_and(|due| due <= Instant::now());
            let closed = queue.closing && queue.jobs.is_empty() && queue.bytes == 0;
            if synced || writable || sync_due || queue.checkpoint_wanted || closed {
                break;
            }
            match interval {
                Some(due) => {
                    shared.wake.wait_until(&mut queue, due);
                }
                None => shared.wake.wait(&mut queue),
            }
        }
        let mut write = Vec::new();
        if self.in_flight.len() < GROUPS_IN_FLIGHT_MAX {
            let mut bytes = 0;
            while let Some(job) = queue.jobs.front() {
                if !write.is_empty() && bytes + job.bytes() > shared.settings.commit_bytes_max {
                    break;
                }
                bytes += job.bytes();
                write.push(queue.jobs.pop_front().expect("front exists"));
            }
        }
        let sync_due = matches!(shared.settings.policy, SyncPolicy::Interval(every)
            if self.unsynced_since.is_some_and(|since| since.elapsed() >= every));
        Work {
            write,
            synced_lsn: queue.synced_lsn,
            checkpoint: std::mem::take(&mut queue.checkpoint_wanted),
            // A writer holding a reservation will still queue its job: wait for it.
            closing: queue.closing && queue.jobs.is_empty() && queue.bytes == 0,
            sync_due,
        }
    }

    /// Appends a group to the journal (§3.2 step 1) and hands it to the sync thread,
    /// or, without `Fsync`, applies it at once.
    fn write(&mut self, jobs: Vec<Job>) {
        let written = match self.shared.poisoned() {
            Some(cause) => Err(cause),
            None => self.append(&jobs).map_err(|e| {
                let cause = format!("journal write failed: {e}");
                self.shared.poison(cause.clone());
                cause
            }),
        };
        self.shared.stats.lock().groups += 1;
        if let Err(cause) = written {
            self.finish(jobs, &Err(Error::Poisoned { cause }));
            return;
        }
        let end_lsn = self.journal.lsn();
        match self.shared.settings.policy {
            SyncPolicy::Fsync => {
                {
                    let mut queue = self.shared.queue.lock();
                    queue.written_lsn = end_lsn;
                    queue.unsynced_jobs += jobs.len();
                }
                self.in_flight.push_back(Group { jobs, end_lsn });
                self.shared.sync_wake.notify_one();
            }
            SyncPolicy::Interval(_) | SyncPolicy::Buffered => {
                self.unsynced_since.get_or_insert_with(Instant::now);
                self.finish(jobs, &Ok(Durability::Written));
            }
        }
    }

    fn append(&mut self, jobs: &[Job]) -> io::Result<()> {
        self.buf.clear();
        for job in jobs {
            let tag = self.journal.tag_after(self.buf.len());
            let parts: Vec<Part<'_>> = job
                .writes
                .iter()
                .map(|w| Part {
                    id: w.channel.id.as_str(),
                    offset: w.offset,
                    bytes: &w.bytes,
                })
                .collect();
            Entry { tag, parts }.encode_into(&mut self.buf);
            for w in &job.writes {
                if !self.dirty.contains(&w.channel.id) {
                    self.dirty.insert(w.channel.id.clone());
                }
            }
        }
        self.journal.append(&self.buf)
    }

    /// Applies and acknowledges every group the journal is synced past (§3.2 step 3–4).
    fn apply_synced(&mut self, synced_lsn: u64) {
        while self
            .in_flight
            .front()
            .is_some_and(|g| g.end_lsn <= synced_lsn)
        {
            let group = self.in_flight.pop_front().expect("front exists");
            let result = match self.shared.poisoned() {
                Some(cause) => Err(Error::Poisoned { cause }),
                None => Ok(Durability::Fsynced),
            };
            self.finish(group.jobs, &result);
        }
    }

    /// Hands the journal to the sync thread now (`Interval` policy).
    fn request_sync(&mut self) {
        self.unsynced_since = None;
        self.shared.queue.lock().written_lsn = self.journal.lsn();
        self.shared.sync_wake.notify_one();
    }

    /// Makes committed jobs visible to readers and acknowledges them; fails them all
    /// if `result` is an error.
    fn finish(&mut self, jobs: Vec<Job>, result: &Result<Durability>) {
        let files = &self.shared.settings.files;
        let mut flush_failed = None;
        let bytes: usize = jobs.iter().map(Job::bytes).sum();
        for write in jobs.iter().flat_map(|j| &j.writes) {
            let mut state = write.channel.state.lock();
            if result.is_ok()
                && let Presence::Live(live) = &mut state.presence
            {
                live.commit(write.offset, &write.bytes);
                for &(seq, offset, key_hash) in &write.messages {
                    live.index.push(seq, offset, key_hash);
                }
                if let Some(metadata) = &write.metadata {
                    live.metadata = metadata.clone();
                }
                // A new channel's file is made at once, so listings and eviction see it.
                if (live.file.is_none() || live.tail.len() >= TAIL_BYTES_MAX)
                    && let Err(e) = live.flush(&write.channel.id, files)
                {
                    flush_failed =
                        Some(format!("writing channel {} failed: {e}", write.channel.id));
                }
            }
            state.pending -= 1;
            if state.pending == 0 {
                write.channel.drained.notify_all();
            }
        }
        if let Some(cause) = flush_failed {
            // The bytes are safe in the journal; refuse writes until a reopen replays it.
            self.shared.poison(cause);
        }
        self.shared.release(bytes);
        self.shared.stats.lock().jobs += jobs.len() as u64;
        for job in jobs {
            (job.done)(match result {
                Ok(durability) => Ok(*durability),
                Err(Error::Poisoned { cause }) => Err(Error::Poisoned {
                    cause: cause.clone(),
                }),
                Err(_) => unreachable!("commit errors are poison"),
            });
        }
    }

    /// Waits until every written group is synced and applied.
    fn settle(&mut self) {
        while let Some(end_lsn) = self.in_flight.back().map(|g| g.end_lsn) {
            let synced = {
                let mut queue = self.shared.queue.lock();
                while queue.synced_lsn < end_lsn {
                    self.shared.wake.wait(&mut queue);
                }
                queue.synced_lsn
            };
            self.apply_synced(synced);
        }
    }

    /// Writes the tails of the channels written since the last checkpoint into their files.
    fn flush_dirty(&self) -> io::Result<()> {
        let settings = &self.shared.settings;
        for id in &self.dirty {
            // A channel that left the cache wrote its tail as it left.
            if let Some(channel) = settings.cache.peek(id)
                && let Presence::Live(live) = &mut channel.state.lock().presence
            {
                live.flush(id, &settings.files)?;
            }
        }
        Ok(())
    }

    /// At a clean close, after the last checkpoint: an end entry tells the next open
    /// where the (empty) journal ends, sparing it the search through the file's unused
    /// room (§3.1). A failure here costs only that search.
    fn mark_clean_end(&mut self) {
        if self.shared.poisoned().is_some() {
            return;
        }
        self.buf.clear();
        Entry::end(self.journal.tag_after(0)).encode_into(&mut self.buf);
        if let Err(e) = self
            .journal
            .append(&self.buf)
            .and_then(|()| self.journal.file().sync_data())
        {
            tracing::warn!(error = %e, "could not mark the journal's clean end");
        }
    }

    /// Starts a new journal file and hands the old one's checkpoint to the checkpoint
    /// thread (§3.3 step 1). Runs between groups, with nothing in flight.
    fn rotate(&mut self) {
        let ticket = self.shared.checkpoints.lock().requested;
        if self.shared.poisoned().is_some() {
            return;
        }
        if let Err(e) = self.flush_dirty() {
            self.shared.poison(format!(
                "writing channel files for a checkpoint failed: {e}"
            ));
            return;
        }
        let lsn = self.journal.lsn();
        if self.unsynced_since.is_some()
            && let Err(e) = self.journal.file().sync_data()
        {
            // Under Interval, later synced entries must not follow an unsynced gap.
            self.shared.poison(format!("journal sync failed: {e}"));
            return;
        }
        if self.journal.entry_bytes() > 0 {
            let files = &self.shared.settings.files;
            match JournalWriter::create(&*files.storage, &files.layout.journal, lsn) {
                Ok(journal) => {
                    let mut queue = self.shared.queue.lock();
                    queue.journal_file = journal.file();
                    queue.written_lsn = lsn;
                    queue.synced_lsn = lsn;
                    queue.claimed_lsn = lsn;
                    self.journal = journal;
                }
                Err(e) => {
                    self.shared
                        .poison(format!("starting a journal file failed: {e}"));
                    return;
                }
            }
            self.unsynced_since = None;
        }
        let job = CheckpointJob {
            ticket,
            dirty: self.dirty.drain().collect(),
            dirty_dirs: self.shared.settings.files.take_dirty_dirs(),
            delete_below_lsn: lsn,
        };
        let _ = self.checkpoints.send(job);
    }
}

fn run_checkpoints(shared: &Shared, jobs: mpsc::Receiver<CheckpointJob>) {
    delete_retired(shared);
    prepare_journal(shared);
    for job in jobs {
        if let Err(e) = checkpoint(shared, &job) {
            shared.poison(format!("checkpoint failed: {e}"));
        }
        delete_retired(shared);
        shared.stats.lock().checkpoints += 1;
        {
            let mut c = shared.checkpoints.lock();
            c.completed = c.completed.max(job.ticket);
            shared.checkpoint_done.notify_all();
        }
        prepare_journal(shared);
    }
}

/// Deletes retired journal files. Failing here costs only space (they are deleted at
/// the next try), so it is logged, not poison.
fn delete_retired(shared: &Shared) {
    let files = &shared.settings.files;
    if let Err(e) = journal::delete_retired(&*files.storage, &files.layout.journal) {
        tracing::warn!(error = %e, "could not delete retired journal files");
    }
}

/// Readies the next journal file. Failing here costs only speed (the next journal
/// file then grows as it is written), so it is logged, not poison.
fn prepare_journal(shared: &Shared) {
    let settings = &shared.settings;
    if shared.poisoned().is_some() || shared.closing.load(Ordering::Acquire) {
        return;
    }
    let files = &settings.files;
    match journal::prepare(
        &*files.storage,
        &files.layout.journal,
        settings.journal_bytes_max,
    ) {
        Ok(true) => shared.stats.lock().journal_files_zero_filled += 1,
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not prepare the next journal file"),
    }
}

/// Steps 2–3 of §3.3: make the channel files durable, then drop the journal files that described them.
fn checkpoint(shared: &Shared, job: &CheckpointJob) -> io::Result<()> {
    let storage = &*shared.settings.files.storage;
    let layout = &shared.settings.files.layout;
    for id in &job.dirty {
        // A cached channel's own handle serves; others are opened for the sync only.
        let cached = shared.settings.cache.peek(id).and_then(|channel| {
            match &channel.state.lock().presence {
                Presence::Live(live) => live.file.as_ref().map(|f| f.file.clone()),
                _ => None,
            }
        });
        let file = match cached {
            Some(file) => file,
            None => match storage.open(&id.file_in(&layout.channels), OpenMode::ReadQuietly) {
                Ok(file) => file,
                // Removed by hand by an operator: nothing to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        file.sync_data()?;
    }
    for dir in &job.dirty_dirs {
        storage.sync_dir(dir)?;
    }
    let mut retired = false;
    for (lsn, path) in journal::list_files(storage, &layout.journal)? {
        if lsn < job.delete_below_lsn {
            let entry_bytes = shared.settings.journal_bytes_max;
            if journal::retire(storage, &layout.journal, &path, entry_bytes)? {
                shared.stats.lock().journal_files_recycled += 1;
            }
            retired = true;
        }
    }
    if retired {
        storage.sync_dir(&layout.journal)?;
    }
    Ok(())
}
