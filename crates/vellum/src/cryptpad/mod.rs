//! CryptPad compatibility: its metadata command set and line rules, and
//! [`import_cryptpad`] / [`export_cryptpad`] between a CryptPad datastore and a store.
//!
//! An import followed by an export gives back every file it read, byte for byte
//! (docs/format.md §8): each line of a CryptPad file becomes one record holding its
//! exact bytes — messages as messages (keyed by CryptPad's hash, so a client's
//! `lastKnownHash` works), dedicated metadata lines as metadata records — and what
//! has no record of its own (a legacy first line, a torn tail, an offset hint, where
//! the channel came from) becomes a CryptPad record (kind 6). Each channel is built
//! in `tmp/` and renamed into place: it appears whole or not at all.
//!
//! The CryptPad trees are foreign directories, read and written with `std::fs`; the
//! data directory only through the store's `Storage`.

mod builder;
mod confirms;
mod export;
mod fingerprint;
mod import;
mod layout;
mod lines;
mod message;
mod records;
mod report;

pub use crate::channel::metadata::{
    COMMANDS, channel_line_needed, command_line, is_valid_public_key,
};
pub use export::export_cryptpad;
pub use import::import_cryptpad;
pub use report::{
    ExportProgress, ExportReport, ImportPhase, ImportProgress, ImportReport, SKIPPED_LISTED_MAX,
    Skipped, SkippedFiles,
};
