//! How a store is configured, and what an acknowledgement promises.

use std::time::Duration;

/// When the journal is fsynced (docs/format.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge after `fdatasync`: acknowledged ⇒ durable. Concurrent writes share syncs.
    Fsync,
    /// Acknowledge after `write`; a timer fsyncs at least this often (bounded loss window).
    Interval(Duration),
    /// Acknowledge after `write`; never fsync between checkpoints (the seeds' behaviour).
    Buffered,
}

/// The durability an acknowledgement reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// On stable storage (fdatasync done).
    Fsynced,
    /// Written to the operating system, not yet synced.
    Written,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsynced => "fsynced",
            Durability::Written => "written",
        }
    }
}

/// Background expiry, inactivity eviction and archive retention (CryptPad's eviction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionOptions {
    /// How often the background pass runs.
    pub interval: Duration,
    /// Archive live channels not modified nor read for this long (reason `INACTIVE`).
    pub inactive_after: Option<Duration>,
    /// Delete archived channels and pre-trim copies older than this.
    pub archive_retention: Option<Duration>,
}

impl Default for EvictionOptions {
    fn default() -> Self {
        EvictionOptions {
            interval: Duration::from_secs(3600),
            inactive_after: None,
            archive_retention: None,
        }
    }
}

/// Store configuration. `Options::default()` is what `vellum serve` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub sync: SyncPolicy,
    /// The most channel files kept open at once (the open-channel cache).
    pub open_files_max: usize,
    /// The largest message.
    pub message_bytes_max: usize,
    /// The most messages in one atomic batch.
    pub batch_messages_max: usize,
    /// The journal is checkpointed once it holds this many bytes.
    pub journal_bytes_max: u64,
    /// The most bytes one group commit writes.
    pub commit_bytes_max: usize,
    /// The most bytes waiting to be committed; writers wait beyond it.
    pub queue_bytes_max: usize,
    /// `None` turns the background eviction pass off.
    pub eviction: Option<EvictionOptions>,
    /// A message of at least this many bytes goes to the message store, its channel
    /// record keeping only its id (docs/format.md §7.7). `usize::MAX` keeps every body inline.
    pub embed_bytes_max: usize,
    /// The message store under `store/`. Its sync policy is `sync`, whatever this says.
    pub store: crate::store::StoreOptions,
}

/// The hard ceiling on `message_bytes_max`: one message, with a new channel's header and
/// metadata, must fit one journal entry (a record body is at most 16 MiB + 1 KiB).
pub const MESSAGE_BYTES_CEILING: usize = 8 * 1024 * 1024;

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Fsync,
            open_files_max: 1024,
            message_bytes_max: 8 * 1024 * 1024,
            batch_messages_max: 10_000,
            journal_bytes_max: 64 * 1024 * 1024,
            commit_bytes_max: 4 * 1024 * 1024,
            queue_bytes_max: 64 * 1024 * 1024,
            eviction: Some(EvictionOptions::default()),
            embed_bytes_max: 4096,
            store: crate::store::StoreOptions::default(),
        }
    }
}
