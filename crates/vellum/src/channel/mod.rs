//! Channel logs (CryptPad's storage model): named, ordered, append-only logs of
//! messages with CryptPad metadata beside them, one file per channel.

pub mod cache;
pub mod file;
pub mod history;
pub mod id;
pub mod index;
pub mod log;
pub mod metadata;
pub mod refs;
pub mod rewrite;
pub mod schedule;
