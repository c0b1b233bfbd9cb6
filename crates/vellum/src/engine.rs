//! The public API: [`Vellum`], a store of channel logs in one data directory.

use crate::channel::cache::ChannelCache;
use crate::channel::file::{Body, Header, KEY_BYTES_MAX, StoredKey};
use crate::channel::history::{self, History, ReadRequest};
use crate::channel::id::{ChannelId, id_of_file_name};
use crate::channel::log::{Channel, Files, Live, LoadContext, LostLog, Presence, State};
use crate::channel::metadata::{self, Metadata};
use crate::channel::rewrite::{self, Bodies};
use crate::commit::{ChannelWrite, CommitStats, Committer, Job, Settings};
use crate::error::{Error, IoContext, Result};
use crate::eviction::{self, EvictionReport};
use crate::layout::Layout;
use crate::lost::LostRange;
use crate::options::{Durability, MESSAGE_BYTES_CEILING, Options};
use crate::recovery::{self, RecoveryReport};
use crate::storage::{RealStorage, SharedStorage};
use crate::store::{MessageStore, MessageStoreStats, MsgId, StoreOptions};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most bytes of records one batch may write: a batch is one journal entry, which
/// must hold the records plus a new channel's header and metadata in one record body.
const BATCH_BYTES_MAX: usize = crate::record::BODY_BYTES_MAX - METADATA_BYTES_MAX - 4096;

/// The longest metadata line (a JSON object or command) a channel may log.
const METADATA_BYTES_MAX: usize = 1024 * 1024;

/// One message to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMessage<'a> {
    pub data: &'a [u8],
    /// The client's key for it (≤ 64 bytes); `None` keys it by a hash of its content.
    pub key: Option<&'a [u8]>,
}

impl<'a> NewMessage<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        NewMessage { data, key: None }
    }
    pub fn with_key(data: &'a [u8], key: &'a [u8]) -> Self {
        NewMessage {
            data,
            key: Some(key),
        }
    }
}

/// The acknowledgement of one appended message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub position: crate::Position,
    pub time_ms: u64,
    pub key: Vec<u8>,
    pub durability: Durability,
}

/// What [`Vellum::try_append_with`] did.
pub enum TryQueued<F> {
    /// Queued: `done` will run.
    Queued,
    /// Not queued, nothing changed: it would have had to wait. Here is `done` back.
    WouldWait(F),
}

/// Picks one message: by seq or by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Seq(u64),
    Key(Vec<u8>),
}

/// Live channels or archived ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Live,
    Archived,
}

/// What `info` and `list` report about a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub id: ChannelId,
    /// Bytes of the channel's file: messages and metadata.
    pub size_bytes: u64,
    pub messages: u64,
    /// The lowest seq a read may still ask for (raised by trim and clear).
    pub first_seq: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub accessed_ms: u64,
    /// Why it was archived, for an archived channel.
    pub archived: Option<String>,
}

/// Engine-wide counters.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStats {
    pub open_files: usize,
    pub open_files_peak: usize,
    pub cached_channels: usize,
    pub commit: CommitStats,
    pub lost_ranges: usize,
    /// The message store holding large bodies.
    pub message_store: MessageStoreStats,
}

/// How the message store's counts compare with the channel files' references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceCheck {
    /// Stored message records in channel files.
    pub references: u64,
    /// Referenced ids the store does not hold: bodies lost.
    pub dangling: Vec<MsgId>,
    /// Ids with fewer store references than records: a release would drop them too early.
    pub undercounted: Vec<MsgId>,
    /// Ids with more store references than records: space kept until the next recount.
    pub overcounted: Vec<MsgId>,
    /// Store messages no record references at all: space kept until the next recount.
    pub unreferenced: u64,
}

impl ReferenceCheck {
    /// No body lost and none about to be dropped too early.
    pub fn is_safe(&self) -> bool {
        self.dangling.is_empty() && self.undercounted.is_empty()
    }

    /// Exactly as many references as records, for every id.
    pub fn is_exact(&self) -> bool {
        self.is_safe() && self.overcounted.is_empty() && self.unreferenced == 0
    }
}

pub(crate) struct Inner {
    pub storage: SharedStorage,
    pub layout: Layout,
    pub options: Options,
    pub files: Arc<Files>,
    pub cache: Arc<ChannelCache>,
    pub committer: Committer,
    /// The message store holding bodies of `embed_bytes_max` bytes and more.
    pub store: Arc<MessageStore>,
    pub lost: LostLog,
    recovery: RecoveryReport,
    last_epoch: Mutex<u64>,
    stop: Mutex<bool>,
    stop_signal: Condvar,
    _lock: Box<dyn Send + Sync>,
}

/// A Vellum store open on one data directory. Cheap to share across threads (`&Vellum` is `Sync`).
pub struct Vellum {
    inner: Arc<Inner>,
    evictor: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stamps each receipt with the durability its commit reached.
fn with_durability((mut receipts, durability): (Vec<Appended>, Durability)) -> Vec<Appended> {
    for r in &mut receipts {
        r.durability = durability;
    }
    receipts
}

/// The default key: a 128-bit BLAKE3 hash of the content, in hex.
pub(crate) fn content_key(data: &[u8]) -> Vec<u8> {
    crate::channel::file::hex(&blake3::hash(data).as_bytes()[..16])
}

impl Vellum {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Opens (creating if needed) the data directory at `path` on the real filesystem.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Vellum> {
        Vellum::open_with_storage(Arc::new(RealStorage), path, options)
    }

    /// Opens a data directory through `storage` (tests pass a simulated one).
    pub fn open_with_storage(
        storage: SharedStorage,
        path: impl AsRef<Path>,
        options: Options,
    ) -> Result<Vellum> {
        let path = path.as_ref();
        // Options come from configuration: refused with a typed error, before anything is touched.
        if !(1..=MESSAGE_BYTES_CEILING).contains(&options.message_bytes_max) {
            return Err(Error::InvalidOptions(format!(
                "message_bytes_max must be 1 to {MESSAGE_BYTES_CEILING} bytes"
            )));
        }
        if options.open_files_max < 2 {
            return Err(Error::InvalidOptions(
                "open_files_max must be at least 2".into(),
            ));
        }
        let layout = Layout::new(path);
        crate::storage::create_dir_durably(&*storage, path)
            .context(|| format!("creating {}", path.display()))?;
        let lock = storage
            .lock_exclusive(&layout.lock)
            .context(|| format!("locking {}", path.display()))?;
        let (recovery, journal) = recovery::recover(
            &*storage,
            &layout,
            options.open_files_max,
            options.journal_bytes_max,
        )?;
        // After the replay: the channel files are whole, so they can vouch for what the
        // store must keep if it was not closed cleanly.
        let refs = |add: &mut dyn FnMut(MsgId, u32)| {
            crate::channel::refs::for_each_reference(&*storage, &layout, add)
        };
        let store = Arc::new(MessageStore::open_with_storage(
            storage.clone(),
            &layout.store,
            StoreOptions {
                sync: options.sync,
                ..options.store.clone()
            },
            &refs,
        )?);
        let files = Files::new(storage.clone(), layout.clone());
        // Two files of the budget stay free for the checkpoint's and the eviction pass's
        // short-lived opens of channels that are not cached.
        let cached_max = options.open_files_max.saturating_sub(2).max(1);
        let cache = Arc::new(ChannelCache::new(cached_max, files.clone()));
        let committer = Committer::start(
            Settings {
                files: files.clone(),
                cache: cache.clone(),
                policy: options.sync,
                commit_bytes_max: options.commit_bytes_max,
                queue_bytes_max: options.queue_bytes_max,
                journal_bytes_max: options.journal_bytes_max,
            },
            journal,
        );
        let lost = recovery.lost.clone();
        let inner = Arc::new(Inner {
            storage,
            layout,
            cache,
            options,
            files,
            committer,
            store,
            lost: LostLog::new(lost),
            recovery,
            last_epoch: Mutex::new(0),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            _lock: lock,
        });
        let evictor = inner.options.eviction.map(|eviction| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("vellum-evict".into())
                .spawn(move || inner.run_evictor(eviction.interval))
                .expect("spawning the eviction thread")
        });
        Ok(Vellum {
            inner,
            evictor: Mutex::new(evictor),
        })
    }

    /// Compares the message store's reference counts with the stored message records
    /// of every channel file (live, archived, pre-trim copies). Meant for a quiet store
    /// (verification, tests): writes made during the scan may show as differences. Runs
    /// a checkpoint first, so the files hold every committed record.
    pub fn check_references(&self) -> Result<ReferenceCheck> {
        // Every committed record into its channel file first.
        self.checkpoint()?;
        let mut held: std::collections::HashMap<MsgId, u32> = Default::default();
        crate::channel::refs::for_each_reference(
            &*self.inner.storage,
            &self.inner.layout,
            &mut |id, n| {
                *held.entry(id).or_default() += n;
            },
        )?;
        let mut check = ReferenceCheck {
            references: held.values().map(|&n| u64::from(n)).sum(),
            ..ReferenceCheck::default()
        };
        for (id, n) in &held {
            match self.inner.store.refcount(id) {
                None => check.dangling.push(*id),
                Some(count) if count < *n => check.undercounted.push(*id),
                Some(count) if count > *n => check.overcounted.push(*id),
                Some(_) => {}
            }
        }
        let stored = self.inner.store.stats().messages;
        check.unreferenced = stored.saturating_sub((held.len() - check.dangling.len()) as u64);
        check.dangling.sort();
        check.undercounted.sort();
        check.overcounted.sort();
        Ok(check)
    }

    /// Compacts the message store now, in this thread, until no segment qualifies.
    pub fn compact_message_store(&self) -> Result<()> {
        self.inner.store.compact()
    }

    /// What opening the message store found (a clean snapshot, or a scan and recount).
    pub fn store_recovery(&self) -> &crate::store::StoreRecovery {
        self.inner.store.recovery()
    }

    /// What opening found: journal entries replayed, damaged ranges.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Every damaged range found since open (the most recent 1,024).
    pub fn lost_ranges(&self) -> Vec<LostRange> {
        self.inner.lost.snapshot()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            open_files: self.inner.files.open_count(),
            open_files_peak: self.inner.files.peak_count(),
            cached_channels: self.inner.cache.len(),
            commit: self.inner.committer.stats(),
            lost_ranges: self.inner.lost.len(),
            message_store: self.inner.store.stats(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Creates a channel with initial metadata (a JSON object). Fails if it exists or is archived.
    pub fn create(&self, channel: &str, metadata: Metadata) -> Result<Durability> {
        let id = ChannelId::new(channel)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner.write(
            &id,
            Write::Create(metadata),
            Box::new(move |r| drop(tx.send(r))),
        )?;
        rx.recv().map_err(|_| Error::Closed)?.map(|(_, d)| d)
    }

    /// Appends one message; returns once it is acknowledged under the sync policy.
    pub fn append(&self, channel: &str, data: &[u8]) -> Result<Appended> {
        let mut appended = self.append_batch(channel, &[NewMessage::new(data)])?;
        Ok(appended.pop().expect("one receipt per message"))
    }

    /// Appends messages atomically (all or none survive a crash), in order.
    pub fn append_batch(
        &self,
        channel: &str,
        messages: &[NewMessage<'_>],
    ) -> Result<Vec<Appended>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_with(channel, messages, move |r| drop(tx.send(r)))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Appends one message to each of `channels`, all or none (one journal entry, so a
    /// crash never leaves it in some of them only). A body of `embed_bytes_max` bytes
    /// or more is stored once, with one reference per channel. Returns one receipt per
    /// channel, in the order given. At most half of `open_files_max` channels (and
    /// `batch_messages_max`), each named once.
    pub fn publish(&self, channels: &[&str], data: &[u8]) -> Result<Vec<Appended>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.publish_with(channels, data, move |r| drop(tx.send(r)))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// [`Vellum::publish`], queued: returns once the body is stored and the records
    /// are queued; `done` runs (on the commit thread, so it must be quick) once they
    /// are acknowledged or have failed. Bad input is refused here.
    pub fn publish_with(
        &self,
        channels: &[&str],
        data: &[u8],
        done: impl FnOnce(Result<Vec<Appended>>) + Send + 'static,
    ) -> Result<()> {
        let mut ids = Vec::with_capacity(channels.len());
        for name in channels {
            let id = ChannelId::new(name)?;
            if ids.contains(&id) {
                return Err(Error::DuplicateChannel { channel: id });
            }
            ids.push(id);
        }
        let max = (self.inner.options.open_files_max / 2)
            .min(self.inner.options.batch_messages_max)
            .max(1);
        if ids.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if ids.len() > max {
            return Err(Error::BatchTooLarge {
                len: ids.len(),
                max,
            });
        }
        let message = NewMessage::new(data);
        self.inner.check_batch(&[message])?;
        self.inner.publish(
            &ids,
            message,
            Box::new(move |r| done(r.map(with_durability))),
        )
    }

    /// Queues an atomic batch and returns at once; `done` runs (on the commit thread,
    /// so it must be quick) once the batch is acknowledged or has failed. Bad input
    /// is refused here, before anything is queued.
    pub fn append_with(
        &self,
        channel: &str,
        messages: &[NewMessage<'_>],
        done: impl FnOnce(Result<Vec<Appended>>) + Send + 'static,
    ) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.check_batch(messages)?;
        self.inner
            .write(
                &id,
                Write::Append(messages),
                Box::new(move |r| done(r.map(with_durability))),
            )
            .map(|_| ())
    }

    /// [`Vellum::append_with`] only if it can queue the batch without waiting — for
    /// queue room, for the channel's lane, or for a load from disk — so an async
    /// server can call it on its event loop. Otherwise it changes nothing and hands
    /// `done` back (`TryQueued::WouldWait`) for a thread that may wait. Bad input is
    /// refused here either way. Bodies that go to the message store always wait.
    pub fn try_append_with<F>(
        &self,
        channel: &str,
        messages: &[NewMessage<'_>],
        done: F,
    ) -> Result<TryQueued<F>>
    where
        F: FnOnce(Result<Vec<Appended>>) + Send + 'static,
    {
        let id = ChannelId::new(channel)?;
        let inner = &self.inner;
        inner.check_batch(messages)?;
        if messages
            .iter()
            .any(|m| m.data.len() >= inner.options.embed_bytes_max)
        {
            return Ok(TryQueued::WouldWait(done));
        }
        let Some(channel) = inner.cache.peek(&id) else {
            return Ok(TryQueued::WouldWait(done));
        };
        let stored = vec![None; messages.len()];
        let write = Write::Append(messages);
        let (keys, record_bytes) = inner.record_plan(&write, &stored);
        let Some(reservation) = inner.committer.try_reserve(record_bytes + 1024)? else {
            return Ok(TryQueued::WouldWait(done));
        };
        let Some(task) = channel.lane.try_ordered() else {
            return Ok(TryQueued::WouldWait(done));
        };
        let Some(mut state) = channel.try_loaded() else {
            return Ok(TryQueued::WouldWait(done));
        };
        let staged = inner.stage(&id, &channel, &mut state, write, keys, &stored, now_ms())?;
        let (staged, receipts) = staged.expect("an append always stages a write");
        inner.committer.submit(
            reservation,
            Job {
                writes: vec![staged],
                done: Box::new(move |r| done(r.map(|d| with_durability((receipts, d))))),
            },
        );
        drop(state);
        drop(task);
        Ok(TryQueued::Queued)
    }

    /// Reads history as `request` says: a consistent snapshot, streamed.
    pub fn read(&self, channel: &str, request: &ReadRequest) -> Result<History> {
        let id = ChannelId::new(channel)?;
        let channel = self.inner.cache.get(&id);
        let _task = channel.lane.unordered();
        let mut state = self.inner.loaded(&channel)?;
        state.last_access_ms = now_ms();
        let live = committed_live(&id, &state)?;
        history::plan(
            &id,
            channel.clone(),
            id.file_in(&self.inner.layout.channels),
            live,
            request,
            self.inner.store.clone(),
        )
    }

    /// The channel's current (folded) metadata.
    pub fn metadata(&self, channel: &str) -> Result<Metadata> {
        let id = ChannelId::new(channel)?;
        let channel = self.inner.cache.get(&id);
        let _task = channel.lane.unordered();
        let state = self.inner.loaded(&channel)?;
        Ok(committed_live(&id, &state)?.metadata.clone())
    }

    /// Applies a CryptPad metadata command; it is logged only if it changes the state.
    /// Returns whether it did.
    pub fn amend(&self, channel: &str, command: &str, args: &serde_json::Value) -> Result<bool> {
        let id = ChannelId::new(channel)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let changed = self.inner.write(
            &id,
            Write::Amend(command, args),
            Box::new(move |r| drop(tx.send(r))),
        )?;
        if !changed {
            return Ok(false);
        }
        rx.recv().map_err(|_| Error::Closed)??;
        Ok(true)
    }

    /// Drops every message; keeps the metadata. Seqs are never reused.
    pub fn clear(&self, channel: &str) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.exclusive(
            &id,
            |id, state| Ok(live_or_error(id, state)?.next_seq),
            |inner, id, state, first_seq| {
                let dropped =
                    rewrite::rewrite(inner, id, state, |_| false, first_seq, Bodies::Referenced)?;
                inner.release(dropped);
                Ok(())
            },
        )
    }

    /// Drops every message before the selected one (which is kept), after copying the
    /// channel to `trimmed/`; the metadata log collapses to its folded state.
    pub fn trim(&self, channel: &str, to: &Selector) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.exclusive(
            &id,
            |id, state| {
                let live = live_or_error(id, state)?;
                let keep_from = select(id, live, to)?;
                Ok((keep_from, live.index.get(keep_from).expect("selected").seq))
            },
            |inner, id, state, (keep_from, first_seq)| {
                let copy = rewrite::backup(inner, id, live_or_error(id, state)?)?;
                match rewrite::rewrite(
                    inner,
                    id,
                    state,
                    |pos| pos >= keep_from,
                    first_seq,
                    Bodies::Referenced,
                ) {
                    Ok(dropped) => {
                        inner.release(dropped);
                        Ok(())
                    }
                    Err(e) => {
                        // The copy still names the live file: undo it (see recovery).
                        rewrite::discard_backup(inner, copy);
                        Err(e)
                    }
                }
            },
        )
    }

    /// Deletes one message, if the metadata allows it (CryptPad's `ALLOW_LINE_DELETION`).
    pub fn delete_message(&self, channel: &str, which: &Selector) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.exclusive(
            &id,
            |id, state| {
                let live = live_or_error(id, state)?;
                if !live.metadata.delete_lines() {
                    return Err(Error::Forbidden {
                        channel: id.clone(),
                    });
                }
                Ok((select(id, live, which)?, live.header.first_seq))
            },
            |inner, id, state, (victim, first_seq)| {
                let dropped = rewrite::rewrite(
                    inner,
                    id,
                    state,
                    |pos| pos != victim,
                    first_seq,
                    Bodies::Referenced,
                )?;
                inner.release(dropped);
                Ok(())
            },
        )
    }

    /// Removes a live channel and its metadata. A later append starts a fresh channel.
    pub fn remove(&self, channel: &str) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.exclusive(
            &id,
            |id, state| live_or_error(id, state).map(|_| ()),
            |inner, id, state, ()| rewrite::remove(inner, id, state),
        )
    }

    /// Moves a live channel to the archive; reading it then answers `Archived { reason }`.
    pub fn archive(&self, channel: &str, reason: &str) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.archive(&id, reason)
    }

    /// Brings an archived channel back; refuses to clobber a live one.
    pub fn restore(&self, channel: &str) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.exclusive(
            &id,
            |id, state| match &state.presence {
                Presence::Live(_) => Err(Error::RestoreConflict {
                    channel: id.clone(),
                }),
                Presence::Missing { archived: None } => Err(Error::NotArchived {
                    channel: id.clone(),
                }),
                _ => Ok(()),
            },
            |inner, id, state, ()| rewrite::restore(inner, id, state),
        )
    }

    /// Deletes an archived channel for good.
    pub fn remove_archived(&self, channel: &str) -> Result<()> {
        let id = ChannelId::new(channel)?;
        self.inner.remove_archived(&id)
    }

    pub fn exists(&self, channel: &str) -> Result<bool> {
        let id = ChannelId::new(channel)?;
        let channel = self.inner.cache.get(&id);
        let state = self.inner.loaded(&channel)?;
        Ok(committed_live(&id, &state).is_ok())
    }

    pub fn is_archived(&self, channel: &str) -> Result<bool> {
        let id = ChannelId::new(channel)?;
        let channel = self.inner.cache.get(&id);
        let state = self.inner.loaded(&channel)?;
        Ok(matches!(
            state.presence,
            Presence::Missing { archived: Some(_) }
        ))
    }

    /// Size, message count and times of a live or archived channel.
    pub fn info(&self, channel: &str) -> Result<ChannelInfo> {
        let id = ChannelId::new(channel)?;
        self.inner.info(&id)
    }

    /// Bytes of the channel's file (messages and metadata).
    pub fn size(&self, channel: &str) -> Result<u64> {
        Ok(self.info(channel)?.size_bytes)
    }

    /// Streams the live or archived channels, one shard directory in memory at a time.
    pub fn list(&self, scope: Scope) -> Result<ChannelList<'_>> {
        let root = match scope {
            Scope::Live => &self.inner.layout.channels,
            Scope::Archived => &self.inner.layout.archive,
        };
        let shards = self
            .inner
            .storage
            .list_dir(root)
            .context(|| format!("listing {}", root.display()))?;
        Ok(ChannelList {
            store: self,
            scope,
            shards: shards.into_iter(),
            names: Vec::new().into_iter(),
        })
    }

    /// Runs one expiry / inactivity / retention pass now.
    pub fn evict_now(&self) -> Result<EvictionReport> {
        eviction::run_once(&self.inner, now_ms())
    }

    /// Runs a checkpoint: afterwards every acknowledged write is in its channel file.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.committer.checkpoint()
    }

    /// Commits what is queued, checkpoints, and stops the background threads.
    /// Dropping the store does the same.
    pub fn close(&self) {
        *self.inner.stop.lock() = true;
        self.inner.stop_signal.notify_all();
        if let Some(evictor) = self.evictor.lock().take() {
            let _ = evictor.join();
        }
        self.inner.committer.close();
        // Should a channel write have failed midway, its store reference may or may not
        // be backed by a record: let the next open count them again.
        let closed = if self.inner.committer.is_poisoned() {
            self.inner.store.close_for_recount()
        } else {
            self.inner.store.close()
        };
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the message store");
        }
    }
}

impl Drop for Vellum {
    fn drop(&mut self) {
        self.close();
    }
}

/// A stream of channel infos; see [`Vellum::list`].
pub struct ChannelList<'a> {
    store: &'a Vellum,
    scope: Scope,
    shards: std::vec::IntoIter<String>,
    names: std::vec::IntoIter<String>,
}

impl Iterator for ChannelList<'_> {
    type Item = Result<ChannelInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = &self.store.inner;
        let root = match self.scope {
            Scope::Live => &inner.layout.channels,
            Scope::Archived => &inner.layout.archive,
        };
        loop {
            for name in self.names.by_ref() {
                let Some(id) = id_of_file_name(&name) else {
                    continue;
                };
                match inner.info(&id) {
                    Ok(info) if (info.archived.is_some()) == (self.scope == Scope::Archived) => {
                        return Some(Ok(info));
                    }
                    // Removed (or restored) since the directory was listed.
                    Ok(_) | Err(Error::NotFound { .. }) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            let shard = self.shards.next()?;
            let dir = root.join(&shard);
            match inner.storage.list_dir(&dir) {
                Ok(names) => self.names = names.into_iter(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Some(Err(Error::Io {
                        context: format!("listing {}", dir.display()),
                        source: e,
                    }));
                }
            }
        }
    }
}

/// The live channel in `state`, or why there is none.
/// A channel's committed state, as readers see it: a channel whose creation is still
/// queued — nothing of it committed, as after a failed commit until the reopen — does
/// not exist yet.
pub(crate) fn committed_live<'s>(id: &ChannelId, state: &'s State) -> Result<&'s Live> {
    match live_or_error(id, state)? {
        live if live.len() == 0 => Err(Error::NotFound {
            channel: id.clone(),
        }),
        live => Ok(live),
    }
}

pub(crate) fn live_or_error<'s>(id: &ChannelId, state: &'s State) -> Result<&'s Live> {
    match &state.presence {
        Presence::Live(live) => Ok(live),
        Presence::Missing {
            archived: Some(reason),
        } => Err(Error::Archived {
            channel: id.clone(),
            reason: reason.clone(),
        }),
        Presence::Missing { archived: None } => Err(Error::NotFound {
            channel: id.clone(),
        }),
        Presence::Unloaded => unreachable!("state is loaded"),
    }
}

/// The index position of the message `which` picks.
fn select(id: &ChannelId, live: &Live, which: &Selector) -> Result<usize> {
    match which {
        Selector::Key(key) => history::find_key(id, live, key),
        Selector::Seq(seq) => {
            let pos = live.index.position_of_seq_at_least(*seq);
            match live.index.get(pos) {
                Some(entry) if entry.seq == *seq => Ok(pos),
                _ => Err(Error::SeqNotFound {
                    channel: id.clone(),
                    seq: *seq,
                }),
            }
        }
    }
}

/// A write to one channel.
enum Write<'a> {
    Create(Metadata),
    Append(&'a [NewMessage<'a>]),
    Amend(&'a str, &'a serde_json::Value),
}

type WriteDone = Box<dyn FnOnce(Result<(Vec<Appended>, Durability)>) + Send>;

impl Inner {
    pub(crate) fn load_context(&self) -> LoadContext<'_> {
        LoadContext {
            files: &self.files,
            lost: &self.lost,
        }
    }

    pub(crate) fn loaded<'c>(&self, channel: &'c Channel) -> Result<MutexGuard<'c, State>> {
        channel.loaded(&self.load_context())
    }

    /// Reloads a channel's state from disk after a rewrite.
    pub(crate) fn reload(&self, id: &ChannelId, state: &mut State) -> Result<()> {
        state.presence = crate::channel::log::load(id, &self.load_context())?;
        Ok(())
    }

    /// A new epoch: increasing, and above every epoch issued before a restart unless the clock went back.
    pub(crate) fn new_epoch(&self, above: u64) -> u64 {
        let mut last = self.last_epoch.lock();
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        *last = (*last + 1).max(micros).max(above + 1);
        *last
    }

    fn check_batch(&self, messages: &[NewMessage<'_>]) -> Result<()> {
        if messages.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let max = self.options.batch_messages_max;
        if messages.len() > max {
            return Err(Error::BatchTooLarge {
                len: messages.len(),
                max,
            });
        }
        // A batch is one journal entry, so it must fit one record (with room for a new
        // channel's header and metadata).
        let bytes: usize = messages
            .iter()
            .map(|m| crate::channel::file::message_record_bytes(KEY_BYTES_MAX, m.data.len()))
            .sum();
        if bytes > BATCH_BYTES_MAX {
            return Err(Error::BatchBytesTooLarge {
                bytes,
                max: BATCH_BYTES_MAX,
            });
        }
        for m in messages {
            if m.data.len() > self.options.message_bytes_max {
                return Err(Error::MessageTooLarge {
                    len: m.data.len(),
                    max: self.options.message_bytes_max,
                });
            }
            if let Some(key) = m.key
                && key.len() > KEY_BYTES_MAX
            {
                return Err(Error::KeyTooLong {
                    len: key.len(),
                    max: KEY_BYTES_MAX,
                });
            }
        }
        Ok(())
    }

    /// Queues one write to `id` in order with its other writes. Returns `false` (and
    /// queues nothing) for an amendment that changes nothing.
    fn write(&self, id: &ChannelId, write: Write<'_>, done: WriteDone) -> Result<bool> {
        // Large bodies go to the message store first, durably; the channel records
        // their ids. Should the channel write not be queued, the references go again.
        let stored = self.store_large_bodies(&write)?;
        let result = self.write_records(id, write, &stored, done);
        if !matches!(result, Ok(true)) {
            self.release(stored.iter().flatten().copied().collect());
        }
        result
    }

    /// `Vellum::publish`: the body stored once with a reference per channel, then one
    /// record per channel, staged under every channel's lock (taken in id order, so two
    /// publishes never wait for each other in a cycle) and submitted as one job.
    fn publish(&self, ids: &[ChannelId], message: NewMessage<'_>, done: WriteDone) -> Result<()> {
        let stored = if message.data.len() >= self.options.embed_bytes_max {
            let id = MsgId::random()?;
            self.write_to_store(&vec![(id, message.data); ids.len()])?;
            Some(id)
        } else {
            None
        };
        let result = self.publish_records(ids, message, stored, done);
        if result.is_err()
            && let Some(id) = stored
        {
            self.release(vec![id; ids.len()]);
        }
        result
    }

    fn publish_records(
        &self,
        ids: &[ChannelId],
        message: NewMessage<'_>,
        stored: Option<MsgId>,
        done: WriteDone,
    ) -> Result<()> {
        let key = message
            .key
            .map_or_else(|| content_key(message.data), <[u8]>::to_vec);
        let record_bytes = match stored {
            Some(_) => crate::channel::file::stored_record_bytes(key.len()),
            None => crate::channel::file::message_record_bytes(key.len(), message.data.len()),
        };
        let reservation = self.committer.reserve((record_bytes + 1024) * ids.len())?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by(|&a, &b| ids[a].as_str().cmp(ids[b].as_str()));
        let channels: Vec<Arc<Channel>> = ids.iter().map(|id| self.cache.get(id)).collect();
        let mut held = Vec::with_capacity(ids.len());
        for &i in &order {
            let task = channels[i].lane.ordered();
            let state = self.loaded(&channels[i])?;
            if let Presence::Missing {
                archived: Some(reason),
            } = &state.presence
            {
                return Err(Error::Archived {
                    channel: ids[i].clone(),
                    reason: reason.clone(),
                });
            }
            held.push((i, task, state));
        }
        // Nothing can refuse an append to a live or missing channel from here on.
        let time_ms = now_ms();
        let batch = [message];
        let mut writes = Vec::with_capacity(ids.len());
        let mut receipts: Vec<Option<Appended>> = vec![None; ids.len()];
        for (i, _, state) in &mut held {
            let (write, mut receipt) = self
                .stage(
                    &ids[*i],
                    &channels[*i],
                    state,
                    Write::Append(&batch),
                    vec![key.clone()],
                    &[stored],
                    time_ms,
                )?
                .expect("an append always stages");
            writes.push(write);
            receipts[*i] = receipt.pop();
        }
        let receipts: Vec<Appended> = receipts.into_iter().map(|r| r.expect("staged")).collect();
        self.committer.submit(
            reservation,
            Job {
                writes,
                done: Box::new(move |result| done(result.map(|d| (receipts, d)))),
            },
        );
        drop(held);
        Ok(())
    }

    /// Writes each message of an append of at least `embed_bytes_max` bytes to the
    /// message store under a fresh random id; `None` for those kept inline.
    fn store_large_bodies(&self, write: &Write<'_>) -> Result<Vec<Option<MsgId>>> {
        let Write::Append(batch) = write else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::with_capacity(batch.len());
        let mut items = Vec::new();
        for m in batch.iter() {
            if m.data.len() >= self.options.embed_bytes_max {
                let id = MsgId::random()?;
                items.push((id, m.data));
                ids.push(Some(id));
            } else {
                ids.push(None);
            }
        }
        if !items.is_empty() {
            self.write_to_store(&items)?;
        }
        Ok(ids)
    }

    /// Writes bodies to the message store. A failed segment write or sync poisons the
    /// whole store, not only the appends with stored bodies: one rule, one reopen
    /// (docs/format.md §5).
    fn write_to_store(&self, items: &[(MsgId, &[u8])]) -> Result<()> {
        let result = self.store.write(items);
        if let Err(Error::Poisoned { cause } | Error::Io { context: cause, .. }) = &result {
            self.committer
                .poison(format!("the message store failed: {cause}"));
        }
        result.map(|_| ())
    }

    /// Drops one store reference per id: the channel records that held them are gone
    /// for good (or were never queued). A failure only leaks space until the store's
    /// next unclean open recounts from the channel files, so it is logged, not raised.
    pub(crate) fn release(&self, ids: Vec<MsgId>) {
        for batch in ids.chunks(self.options.store.batch_messages_max) {
            if let Err(e) = self.store.remove(batch) {
                tracing::warn!(error = %e, "releasing message store references");
            }
        }
    }

    /// Takes one more store reference per id, for a new file that holds their records
    /// (a pre-trim copy), before that file exists: a failure midway leaves references
    /// too many, never too few (space kept until the next recount).
    pub(crate) fn add_references(&self, ids: &[MsgId]) -> Result<()> {
        for batch in ids.chunks(self.options.store.batch_messages_max) {
            self.store.add_references(batch)?;
        }
        Ok(())
    }

    /// An append's keys (given, or hashed from the content) and the bytes its records
    /// will take; nothing for other writes.
    fn record_plan(&self, write: &Write<'_>, stored: &[Option<MsgId>]) -> (Vec<Vec<u8>>, usize) {
        let Write::Append(batch) = write else {
            return (Vec::new(), 0);
        };
        let keys: Vec<Vec<u8>> = batch
            .iter()
            .map(|m| m.key.map_or_else(|| content_key(m.data), <[u8]>::to_vec))
            .collect();
        let record_bytes = batch
            .iter()
            .zip(&keys)
            .zip(stored)
            .map(|((m, key), stored)| match stored {
                Some(_) => crate::channel::file::stored_record_bytes(key.len()),
                None => crate::channel::file::message_record_bytes(key.len(), m.data.len()),
            })
            .sum();
        (keys, record_bytes)
    }

    fn write_records(
        &self,
        id: &ChannelId,
        write: Write<'_>,
        stored: &[Option<MsgId>],
        done: WriteDone,
    ) -> Result<bool> {
        // Keys are hashed before any lock is taken.
        let (keys, record_bytes) = self.record_plan(&write, stored);
        // Room for a new channel's header and metadata, or an amendment, counted roughly.
        let reservation = self.committer.reserve(record_bytes + 1024)?;
        let channel = self.cache.get(id);
        let task = channel.lane.ordered();
        let mut state = self.loaded(&channel)?;
        let Some((staged, receipts)) =
            self.stage(id, &channel, &mut state, write, keys, stored, now_ms())?
        else {
            return Ok(false);
        };
        self.committer.submit(
            reservation,
            Job {
                writes: vec![staged],
                done: Box::new(move |result| done(result.map(|d| (receipts, d)))),
            },
        );
        drop(state);
        drop(task);
        Ok(true)
    }

    /// Assigns seqs and the file offset to one channel's write under its lock, encodes
    /// its records and counts it as pending; the caller submits it. `None` for an
    /// amendment that changes nothing.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        id: &ChannelId,
        channel: &Arc<Channel>,
        state: &mut State,
        write: Write<'_>,
        keys: Vec<Vec<u8>>,
        stored: &[Option<MsgId>],
        time_ms: u64,
    ) -> Result<Option<(ChannelWrite, Vec<Appended>)>> {
        state.last_access_ms = time_ms;
        let mut bytes = Vec::new();
        let creating = match (&state.presence, &write) {
            (Presence::Live(_), Write::Create(_)) => {
                return Err(Error::AlreadyExists {
                    channel: id.clone(),
                });
            }
            (Presence::Live(_), _) => false,
            (
                Presence::Missing {
                    archived: Some(reason),
                },
                _,
            ) => {
                return Err(Error::Archived {
                    channel: id.clone(),
                    reason: reason.clone(),
                });
            }
            (Presence::Missing { archived: None }, Write::Amend(..)) => {
                return Err(Error::NotFound {
                    channel: id.clone(),
                });
            }
            (Presence::Missing { archived: None }, _) => true,
            (Presence::Unloaded, _) => unreachable!("state is loaded"),
        };
        if creating {
            let metadata = match &write {
                Write::Create(metadata) => metadata.clone(),
                _ => Metadata::new(),
            };
            let line = metadata.to_json();
            if line.len() > METADATA_BYTES_MAX {
                return Err(Error::MetadataTooLarge {
                    bytes: line.len(),
                    max: METADATA_BYTES_MAX,
                });
            }
            let header = Header {
                epoch: self.new_epoch(0),
                first_seq: 0,
                next_seq_min: 0,
                created_ms: time_ms,
                // 0 means "never" in the header; an expiry at the epoch is already past.
                expire_ms: metadata.expire_ms().map_or(0, |ms| ms.max(1)),
                id: id.clone(),
            };
            bytes.extend_from_slice(&header.encode());
            Body::Metadata {
                time_ms,
                line: &line,
            }
            .encode_into(&mut bytes);
            state.presence = Presence::Live(Box::new(Live {
                file: None,
                file_len: 0,
                tail: Vec::new(),
                reserved: 0,
                next_seq: 0,
                index: Default::default(),
                metadata_reserved: metadata.clone(),
                metadata: metadata.clone(),
                header,
            }));
        }
        let Presence::Live(live) = &mut state.presence else {
            unreachable!("made live above")
        };
        let offset = live.reserved;
        let mut receipts = Vec::new();
        let mut messages = Vec::new();
        let mut new_metadata = creating.then(|| live.metadata.clone());
        match write {
            Write::Create(_) => {}
            Write::Append(batch) => {
                let mut digest = [0u8; 16];
                for ((m, key), stored) in batch.iter().zip(keys).zip(stored) {
                    let seq = live.next_seq + receipts.len() as u64;
                    let at = offset + bytes.len() as u64;
                    match stored {
                        Some(id) => Body::Stored {
                            seq,
                            time_ms,
                            key: StoredKey::of(&key, &mut digest),
                            id: *id,
                        },
                        None => Body::Message {
                            seq,
                            time_ms,
                            key: &key,
                            data: m.data,
                        },
                    }
                    .encode_into(&mut bytes);
                    messages.push((seq, at, live.index.key_hash(&key)));
                    receipts.push(Appended {
                        seq,
                        position: crate::Position {
                            epoch: live.header.epoch,
                            offset: at,
                        },
                        time_ms,
                        key,
                        durability: Durability::Written,
                    });
                }
            }
            Write::Amend(command, args) => {
                // Against the state after every queued amendment, not the committed one.
                let mut amended = live.metadata_reserved.clone();
                if !amended.apply(command, args)? {
                    return Ok(None);
                }
                let line = metadata::command_line(command, args, time_ms);
                if line.len() > METADATA_BYTES_MAX {
                    return Err(Error::MetadataTooLarge {
                        bytes: line.len(),
                        max: METADATA_BYTES_MAX,
                    });
                }
                Body::Metadata {
                    time_ms,
                    line: &line,
                }
                .encode_into(&mut bytes);
                live.metadata_reserved = amended.clone();
                new_metadata = Some(amended);
            }
        }
        live.next_seq += receipts.len() as u64;
        live.reserved += bytes.len() as u64;
        state.pending += 1;
        Ok(Some((
            ChannelWrite {
                channel: channel.clone(),
                offset,
                bytes,
                messages,
                metadata: new_metadata,
            },
            receipts,
        )))
    }

    /// Runs an operation alone on the channel (the blocking class): `check` validates
    /// it against the channel's state and changes nothing; only if it passes do the
    /// channel's queued writes drain, a checkpoint move all its journal entries into its
    /// file (for a live channel), and `apply` run with what `check` returned.
    pub(crate) fn exclusive<P, T>(
        &self,
        id: &ChannelId,
        check: impl FnOnce(&ChannelId, &State) -> Result<P>,
        apply: impl FnOnce(&Inner, &ChannelId, &mut State, P) -> Result<T>,
    ) -> Result<T> {
        self.committer.check_writable()?;
        let channel = self.cache.get(id);
        let _task = channel.lane.blocking();
        let mut state = self.loaded(&channel)?;
        channel.wait_drained(&mut state);
        let plan = check(id, &state)?;
        // Only the channel's own writes could need the checkpoint, and they take the
        // lane this task holds: release the state lock while waiting for it.
        let needs_checkpoint = matches!(state.presence, Presence::Live(_));
        drop(state);
        if needs_checkpoint {
            self.committer.checkpoint()?;
        }
        let mut state = self.loaded(&channel)?;
        let result = apply(self, id, &mut state, plan);
        if let Err(e) = &result {
            // The disk may be past the point of no return (a rename or unlink done, its
            // directory sync failed): forget the in-memory state and read it again.
            state.presence = Presence::Unloaded;
            // And after a failed write or sync nothing written since can be trusted to
            // reach the disk (a later fsync may report success for pages a failed one
            // dropped): refuse writes until a reopen (docs/format.md §5).
            if let Error::Io { context, source } = e {
                self.committer.poison(format!("{context}: {source}"));
            }
        }
        result
    }

    pub(crate) fn archive(&self, id: &ChannelId, reason: &str) -> Result<()> {
        self.exclusive(
            id,
            |id, state| live_or_error(id, state).map(|_| ()),
            |inner, id, state, ()| rewrite::archive(inner, id, state, reason),
        )
    }

    pub(crate) fn remove_archived(&self, id: &ChannelId) -> Result<()> {
        self.exclusive(
            id,
            |id, state| match state.presence {
                Presence::Missing { archived: Some(_) } => Ok(()),
                _ => Err(Error::NotArchived {
                    channel: id.clone(),
                }),
            },
            |inner, id, state, ()| rewrite::remove_archived(inner, id, state),
        )
    }

    pub(crate) fn info(&self, id: &ChannelId) -> Result<ChannelInfo> {
        let channel = self.cache.get(id);
        let state = self.loaded(&channel)?;
        match &state.presence {
            Presence::Live(live) if live.len() > 0 => {
                let stat = self
                    .storage
                    .stat(&id.file_in(&self.layout.channels))
                    .context(|| format!("stat of channel {id}"))?;
                let (modified_ms, accessed_ms) =
                    stat.map_or((0, 0), |s| (system_ms(s.modified), system_ms(s.accessed)));
                Ok(ChannelInfo {
                    id: id.clone(),
                    size_bytes: live.len(),
                    messages: live.index.len() as u64,
                    first_seq: live.header.first_seq,
                    next_seq: live.next_seq,
                    created_ms: live.header.created_ms,
                    modified_ms,
                    accessed_ms: accessed_ms.max(state.last_access_ms),
                    archived: None,
                })
            }
            Presence::Missing {
                archived: Some(reason),
            } => {
                let mut info = rewrite::summarize(self, &id.file_in(&self.layout.archive), id)?;
                info.archived = Some(reason.clone());
                Ok(info)
            }
            // A creation still queued: nothing of the channel committed yet.
            Presence::Live(_) | Presence::Missing { archived: None } => Err(Error::NotFound {
                channel: id.clone(),
            }),
            Presence::Unloaded => unreachable!("state is loaded"),
        }
    }

    fn run_evictor(self: Arc<Self>, interval: Duration) {
        let mut stop = self.stop.lock();
        loop {
            if *stop {
                return;
            }
            if self.stop_signal.wait_for(&mut stop, interval).timed_out() && !*stop {
                drop(stop);
                if let Err(e) = eviction::run_once(&self, now_ms()) {
                    tracing::warn!(error = %e, "eviction pass failed");
                }
                stop = self.stop.lock();
            }
        }
    }
}

pub(crate) fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
