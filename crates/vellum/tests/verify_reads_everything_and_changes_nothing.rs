//! `Vellum::verify` reads every record — live channels, archived channels, stored
//! bodies — and reports damage with its file and offset, without changing anything:
//! not the data, and not the access times that inactivity eviction goes by.

mod common;

use common::*;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use vellum::storage::{SimStorage, Storage};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_clean_store_verifies_clean_and_keeps_its_access_times() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let big = vec![5u8; options().embed_bytes_max];
    store.append("live", b"small").unwrap();
    store.append("live", &big).unwrap();
    store.append("cold", b"archived").unwrap();
    store.archive("cold", "test").unwrap();
    let before = store.info("live").unwrap().accessed_ms;
    // Let the clock pass the recorded access, so a read would show.
    while now_ms() <= before + 1 {
        std::hint::spin_loop();
    }
    let report = store.verify(&mut |_| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (
            report.live_channels,
            report.archived_files,
            report.messages,
            report.store_messages
        ),
        (1, 1, 3, 1)
    );
    assert_eq!(store.info("live").unwrap().accessed_ms, before);
}

#[test]
fn a_damaged_stored_body_is_reported_with_its_place() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let big = vec![5u8; options().embed_bytes_max];
    store.append("live", &big).unwrap();
    store.checkpoint().unwrap();
    let segments = Path::new(ROOT).join("store");
    let segment = sim
        .list_dir(&segments)
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".seg"))
        .map(|n| segments.join(n))
        .unwrap();
    let len = sim.read_file(&segment).unwrap().len() as u64;
    sim.flip_bit(&segment, len - 10, 3);
    let report = store.verify(&mut |_| {}).unwrap();
    assert!(!report.is_clean());
    assert!(
        report.damage.iter().any(|d| d.path == segment),
        "{:?}",
        report.damage
    );
}
