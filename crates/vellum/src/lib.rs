//! Vellum: a durable message store.
//!
//! Channel logs (CryptPad's model) with group commit across channels through a
//! shared journal. The core is synchronous and thread-safe; no async runtime runs
//! inside. Start at [`Vellum::open`]. ARCHITECTURE.md has the map; docs/format.md the
//! on-disk formats and the crash protocols.

mod channel;
mod commit;
pub mod cryptpad;
mod engine;
mod error;
mod eviction;
mod journal;
mod layout;
mod lost;
mod options;
mod record;
mod recovery;
pub mod storage;
mod store;
mod verify;

pub use channel::history::{History, Message, MessageRef, Position, ReadFrom, ReadRequest};
pub use channel::id::{ChannelId, InvalidId};
pub use channel::metadata::{Metadata, MetadataError, MetadataFold};
pub use lost::LostRange;

pub use commit::CommitStats;
pub use engine::{
    Appended, ChannelInfo, NewMessage, ReferenceCheck, Scope, Selector, StoreStats, TryQueued,
    Vellum,
};
pub use error::{Error, Result};
pub use eviction::EvictionReport;
pub use options::{Durability, EvictionOptions, MESSAGE_BYTES_CEILING, Options, SyncPolicy};
pub use recovery::RecoveryReport;
pub use store::{
    MessageStore, MessageStoreStats, MsgId, RefSource, SEGMENT_BYTES_CEILING, StoreOptions,
    StoreRecovery,
};
pub use verify::{Damage, VerifyReport, VerifyStep};

/// Internals for the fuzz targets in `fuzz/` only: not part of the API, may change.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::record::{Decoded, decode, encode_with};
}
