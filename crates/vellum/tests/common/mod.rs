//! Helpers shared by the integration tests: a store on a `SimStorage` at `ROOT`, the
//! paths of its channel files, and reading channels back.

// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

pub mod counted;
pub mod cryptpad;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use vellum::storage::{SimStorage, Storage};
use vellum::{Message, Options, ReadRequest, Vellum};

/// The data directory on the simulated filesystem.
pub const ROOT: &str = "/data";

/// No eviction pass, and a journal far above what the tests write (no checkpoint starts
/// on its own), yet small enough that copying a disk image at each simulated crash stays
/// cheap.
pub fn options() -> Options {
    Options {
        eviction: None,
        journal_bytes_max: 1 << 20,
        ..Options::default()
    }
}

/// Opens the store at `ROOT` on `sim` with `options`; a failure panics.
#[track_caller]
pub fn open_with(sim: &SimStorage, options: Options) -> Vellum {
    match Vellum::open_with_storage(Arc::new(sim.clone()), ROOT, options) {
        Ok(store) => store,
        Err(e) => panic!("opening the store: {e}"),
    }
}

/// Opens the store at `ROOT` on `sim` with `options()`; a failure panics.
#[track_caller]
pub fn open(sim: &SimStorage) -> Vellum {
    open_with(sim, options())
}

/// Makes the data directory exist durably beforehand, as a provisioned one does.
pub fn provision(sim: &SimStorage) {
    sim.create_dir_all(Path::new(ROOT)).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
}

/// The shard directory of a channel: the first two characters of its id.
pub fn shard(id: &str) -> &str {
    &id[..id.len().min(2)]
}

/// The file of a live channel.
pub fn live_path(id: &str) -> PathBuf {
    PathBuf::from(format!("{ROOT}/channels/{}/{id}.vlog", shard(id)))
}

/// The file of an archived channel.
pub fn archive_path(id: &str) -> PathBuf {
    PathBuf::from(format!("{ROOT}/archive/{}/{id}.vlog", shard(id)))
}

/// A 44-character owner key, all `c`.
pub fn owner(c: char) -> String {
    c.to_string().repeat(44)
}

/// The 32-hex-digit default key: the first 128 bits of the BLAKE3 hash of the content.
pub fn content_key(data: &[u8]) -> Vec<u8> {
    blake3::hash(data).as_bytes()[..16]
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}

/// Every message of `id`, from the start; an error panics.
#[track_caller]
pub fn read_all(store: &Vellum, id: &str) -> Vec<Message> {
    match store
        .read(id, &ReadRequest::all())
        .and_then(|history| history.collect())
    {
        Ok(messages) => messages,
        Err(e) => panic!("reading {id}: {e}"),
    }
}

/// A message as appended or read back: seq, key and data, compared byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg(pub u64, pub Vec<u8>, pub Vec<u8>);

impl From<Message> for Msg {
    fn from(m: Message) -> Self {
        Msg(m.seq, m.key, m.data)
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        write!(f, "#{} {:?} {:?}", self.0, text(&self.1), text(&self.2))
    }
}
