//! The message store's segment scanner (the unclean-open path, docs/format.md §7.6): a
//! damaged or arbitrary segment never panics the open, never makes a read return bytes
//! that were not written, and the store the open leaves behind reopens.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vellum::storage::Storage;

const SEGMENT: &str = "/data/store/0000000001.seg";

fuzz_target!(|input: &[u8]| {
    let (base, contents) = common::base();
    let sim = base.copy_after_crash(vellum::storage::CrashMode::DropUnsynced);
    let original = sim
        .read_file(Path::new(SEGMENT))
        .expect("the first segment");
    common::put(&sim, SEGMENT, &common::patch(&original, input));
    // Without the snapshot, opening scans every segment.
    sim.remove_file(Path::new("/data/store/snapshot")).unwrap();
    sim.sync_dir(Path::new("/data/store")).unwrap();
    let Ok(store) = common::open(&sim) else {
        return;
    };
    common::assert_nothing_altered(&common::read_what_reads(&store), contents);
    let _ = store.verify(&mut |_| {});
    store.close();
    drop(store);
    let again = common::open(&sim).expect("reopening after the recovery of a damaged segment");
    common::assert_nothing_altered(&common::read_what_reads(&again), contents);
});
