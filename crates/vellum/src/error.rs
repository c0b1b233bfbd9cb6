//! Vellum's typed errors. Bad input gets one of these and changes nothing.

use crate::channel::id::{ChannelId, InvalidId};
use crate::channel::metadata::MetadataError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid channel id: {0}")]
    InvalidId(#[from] InvalidId),
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    #[error("key of {len} bytes is over the limit of {max} bytes")]
    KeyTooLong { len: usize, max: usize },
    #[error("batch of {len} messages is over the limit of {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("batch of {bytes} bytes is over the limit of {max} bytes")]
    BatchBytesTooLarge { bytes: usize, max: usize },
    #[error("metadata of {bytes} bytes is over the limit of {max} bytes")]
    MetadataTooLarge { bytes: usize, max: usize },
    #[error("a batch must hold at least one message")]
    EmptyBatch,
    #[error("channel {channel} is named twice")]
    DuplicateChannel { channel: ChannelId },
    #[error("channel {channel} does not exist")]
    NotFound { channel: ChannelId },
    #[error("channel {channel} already exists")]
    AlreadyExists { channel: ChannelId },
    #[error("channel {channel} is archived: {reason}")]
    Archived { channel: ChannelId, reason: String },
    #[error("channel {channel} is not archived")]
    NotArchived { channel: ChannelId },
    #[error("restoring {channel} would clobber a live channel of the same id")]
    RestoreConflict { channel: ChannelId },
    #[error("no message with that key in channel {channel}")]
    KeyNotFound { channel: ChannelId },
    #[error("no message with seq {seq} in channel {channel}")]
    SeqNotFound { channel: ChannelId, seq: u64 },
    #[error(
        "seq {requested} of channel {channel} was trimmed or cleared; history starts at seq {first_seq}"
    )]
    Trimmed {
        channel: ChannelId,
        requested: u64,
        first_seq: u64,
    },
    #[error(
        "position is stale: channel {channel} was rewritten (trim, clear or delete) since it was issued"
    )]
    StalePosition { channel: ChannelId },
    #[error("channel {channel} does not allow deleting messages (ALLOW_LINE_DELETION is off)")]
    Forbidden { channel: ChannelId },
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
    #[error("corrupted data in {path}: bytes {offset}.. ({reason})")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "the store refuses writes after an earlier I/O failure ({cause}); reopen it to recover"
    )]
    Poisoned { cause: String },
    #[error("the store is closed")]
    Closed,
    #[error("no message {id} in the message store")]
    UnknownMessage { id: crate::store::MsgId },
    #[error("message {id} has {refs} references; cannot remove {removing}")]
    TooFewReferences {
        id: crate::store::MsgId,
        refs: u32,
        removing: u32,
    },
    #[error("message {id} would have more than 2^32 - 1 references")]
    TooManyReferences { id: crate::store::MsgId },
    #[error("cannot import {path}: {reason}")]
    ImportBadName { path: PathBuf, reason: String },
    #[error("cannot import {path}: line {line} is over the limit of {max} bytes")]
    ImportLineTooLong {
        path: PathBuf,
        line: u64,
        max: usize,
    },
    #[error("cannot export to {path}: the directory is not empty")]
    ExportTargetNotEmpty { path: PathBuf },
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to an I/O error.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
