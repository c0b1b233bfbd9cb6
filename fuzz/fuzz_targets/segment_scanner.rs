//! The message store's segment scanner (the unclean-open path, docs/format.md §7.6): a
//! damaged or arbitrary segment never panics the open, never makes a read return bytes
//! that were not written, loses no message whose record the damage left untouched (the
//! scan resyncs on the next intact record), and the store the open leaves behind reopens.
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
    assert_untouched_records_read(&store, contents, &original, input);
    let _ = store.verify(&mut |_| {});
    store.close();
    drop(store);
    let again = common::open(&sim).expect("reopening after the recovery of a damaged segment");
    common::assert_nothing_altered(&common::read_what_reads(&again), contents);
});

/// Every message whose stored body sits in a record of the original segment that the
/// patch left wholly intact still reads, byte for byte.
fn assert_untouched_records_read(
    store: &vellum::Vellum,
    contents: &common::Contents,
    original: &[u8],
    input: &[u8],
) {
    const HEADER_BYTES: usize = 32;
    let patched = common::patched_range(original, input);
    let touches =
        |range: std::ops::Range<usize>| range.start < patched.end && patched.start < range.end;
    let mut at = HEADER_BYTES;
    while at + 8 <= original.len() {
        let body_len = u32::from_le_bytes(original[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 8 + body_len;
        let payload = &original[at + 8 + 16..end];
        if !touches(at..end) {
            for (channel, messages) in common::CHANNELS.iter().zip(contents) {
                for (seq, _) in messages.iter().filter(|(_, data)| data == payload) {
                    let request = vellum::ReadRequest {
                        from: vellum::ReadFrom::Seq(*seq),
                        to_seq: Some(*seq),
                        limit: Some(1),
                    };
                    let got: Vec<Vec<u8>> = store
                        .read(channel, &request)
                        .and_then(|history| history.map(|m| m.map(|m| m.data)).collect())
                        .unwrap_or_else(|e| panic!("{channel} seq {seq}, untouched: {e}"));
                    assert_eq!(
                        got,
                        vec![payload.to_vec()],
                        "{channel} seq {seq}, untouched"
                    );
                }
            }
        }
        at = end;
    }
}
