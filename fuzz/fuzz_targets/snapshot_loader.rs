//! The message store's snapshot loader (the clean-open path, docs/format.md §7.5): a
//! damaged snapshot never panics the open and is never believed — the segments and
//! channel files are intact, so every message must read back exactly, and the
//! reference counts must match the channel files.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use std::path::Path;

const SNAPSHOT: &str = "/data/store/snapshot";

fuzz_target!(|input: &[u8]| {
    let (base, contents) = common::base();
    let sim = base.copy_after_crash(vellum::storage::CrashMode::DropUnsynced);
    let original = sim
        .read_file(Path::new(SNAPSHOT))
        .expect("a clean close's snapshot");
    common::put(&sim, SNAPSHOT, &common::patch(&original, input));
    let store = common::open(&sim).expect("a damaged snapshot must not stop the open");
    let read = common::read_all(&store).expect("every message must read");
    assert_eq!(
        &read, contents,
        "a damaged snapshot changed what reads return"
    );
    let refs = store.check_references().expect("checking references");
    assert!(refs.is_exact(), "a damaged snapshot was believed: {refs:?}");
});
