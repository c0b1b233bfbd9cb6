//! RabbitMQ's message store scenarios (reference/rabbitmq-store.md §2) as black-box
//! tests of `MessageStore`: refcounts, confirms, group commit, compaction, clean and
//! unclean restarts, torn tails, corruption, and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vellum::storage::{CrashMode, Fault, FaultKind, OpenMode, SimStorage, Storage, StorageFile};
use vellum::{Durability, Error, MessageStore, MsgId, StoreOptions};

const DIR: &str = "/store";

fn id(n: u64) -> MsgId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&(n ^ 0x5a5a_5a5a).to_be_bytes());
    MsgId(b)
}

fn body(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i * 7) as u8).collect()
}

fn options() -> StoreOptions {
    StoreOptions {
        compact_in_background: false,
        ..StoreOptions::default()
    }
}

fn small_segments() -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 64 * 1024,
        ..options()
    }
}

fn no_refs() -> Vec<(MsgId, u32)> {
    Vec::new()
}

#[track_caller]
fn open(sim: &SimStorage, options: StoreOptions, refs: &[(MsgId, u32)]) -> MessageStore {
    match MessageStore::open_with_storage(Arc::new(sim.clone()), DIR, options, &refs) {
        Ok(store) => store,
        Err(e) => panic!("opening the store: {e}"),
    }
}

fn write_one(store: &MessageStore, n: u64, len: usize) {
    let data = body(n, len);
    assert_eq!(store.write(&[(id(n), &data)]).unwrap(), Durability::Fsynced);
}

fn segments(sim: &SimStorage) -> Vec<PathBuf> {
    sim.list_dir(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| Path::new(DIR).join(n))
        .collect()
}

#[test]
fn refcounts_go_two_one_zero_and_reads_follow() {
    let sim = SimStorage::new();
    let store = open(&sim, small_segments(), &no_refs());
    let (a, b): (Vec<u64>, Vec<u64>) = (1..=100).partition(|n| *n <= 50);
    for n in 1..=100 {
        assert!(!store.contains(&id(n)));
    }
    for &n in &a {
        write_one(&store, n, 100);
    }
    for &n in &b {
        write_one(&store, n, 100);
    }
    // B a second time: stored once, two references.
    for &n in &b {
        write_one(&store, n, 100);
    }
    let before = store.stats();
    assert_eq!(before.messages, 100);
    for n in 1..=100 {
        assert_eq!(store.read(&id(n)).unwrap(), body(n, 100), "{n}");
        assert_eq!(store.refcount(&id(n)), Some(if n <= 50 { 1 } else { 2 }));
    }
    let all: Vec<MsgId> = (1..=100).map(id).collect();
    store.remove(&all).unwrap();
    for &n in &a {
        assert!(!store.contains(&id(n)), "{n} should be gone");
        assert!(matches!(
            store.read(&id(n)),
            Err(Error::UnknownMessage { .. })
        ));
    }
    for &n in &b {
        assert_eq!(store.refcount(&id(n)), Some(1));
        assert_eq!(store.read(&id(n)).unwrap(), body(n, 100));
    }
    let after = store.stats();
    assert_eq!(after.messages, 50);
    assert!(after.live_bytes < before.live_bytes);
    assert_eq!(
        after.file_bytes, before.file_bytes,
        "garbage stays until compaction"
    );
    let b_ids: Vec<MsgId> = b.iter().map(|&n| id(n)).collect();
    store.remove(&b_ids).unwrap();
    assert_eq!(store.stats().messages, 0);
    assert_eq!(store.stats().live_bytes, 0);
}

#[test]
fn a_write_read_at_once_comes_from_the_buffer_or_the_file_alike() {
    let sim = SimStorage::new();
    let store = open(&sim, options(), &no_refs());
    for n in 0..200 {
        let data = body(n, 300);
        store.write_with(&[(id(n), &data)], |_| {}).unwrap();
        assert_eq!(store.read(&id(n)).unwrap(), data, "{n}");
    }
    store.close().unwrap();
}

/// Sends each confirm's result to a channel, to count and inspect them.
fn confirm_to(
    tx: &mpsc::Sender<(u64, vellum::Result<Durability>)>,
    n: u64,
) -> impl FnOnce(vellum::Result<Durability>) + Send + 'static {
    let tx = tx.clone();
    move |result| {
        let _ = tx.send((n, result));
    }
}

#[test]
fn confirm_sequences_write_remove_and_their_mixes() {
    let sim = SimStorage::new();
    let store = open(&sim, options(), &no_refs());
    let (tx, rx) = mpsc::channel();
    let data = body(0, 64);
    let confirmed = |n: u64| {
        let (got, result): (u64, vellum::Result<Durability>) =
            rx.recv_timeout(Duration::from_secs(10)).expect("a confirm");
        assert_eq!(got, n);
        assert_eq!(result.unwrap(), Durability::Fsynced);
    };

    // write → confirmed
    store
        .write_with(&[(id(1), &data)], confirm_to(&tx, 1))
        .unwrap();
    confirmed(1);
    // remove of an unknown id → a typed error, nothing changes, no confirm
    assert!(matches!(
        store.remove(&[id(2)]),
        Err(Error::UnknownMessage { .. })
    ));
    // write, remove → the write is still confirmed; the id is gone
    store
        .write_with(&[(id(3), &data)], confirm_to(&tx, 3))
        .unwrap();
    store.remove(&[id(3)]).unwrap();
    confirmed(3);
    assert!(!store.contains(&id(3)));
    // write, remove, write → both confirmed; one reference left
    store
        .write_with(&[(id(4), &data)], confirm_to(&tx, 4))
        .unwrap();
    store.remove(&[id(4)]).unwrap();
    store
        .write_with(&[(id(4), &data)], confirm_to(&tx, 40))
        .unwrap();
    confirmed(4);
    confirmed(40);
    assert_eq!(store.refcount(&id(4)), Some(1));
    // remove, write → the remove is refused; the write confirmed
    assert!(store.remove(&[id(5)]).is_err());
    store
        .write_with(&[(id(5), &data)], confirm_to(&tx, 5))
        .unwrap();
    confirmed(5);
    // remove, write, remove → refused, confirmed, gone
    assert!(store.remove(&[id(6)]).is_err());
    store
        .write_with(&[(id(6), &data)], confirm_to(&tx, 6))
        .unwrap();
    confirmed(6);
    store.remove(&[id(6)]).unwrap();
    assert!(!store.contains(&id(6)));
    // A second write of an id already durable is confirmed at once, in the caller.
    let (now_tx, now_rx) = mpsc::channel();
    store
        .write_with(&[(id(1), &data)], move |r| now_tx.send(r).unwrap())
        .unwrap();
    assert_eq!(
        now_rx.try_recv().expect("confirmed in the caller").unwrap(),
        Durability::Fsynced
    );
    assert_eq!(store.refcount(&id(1)), Some(2));
    // No surplus confirms.
    assert!(rx.try_recv().is_err());
}

#[test]
fn concurrent_confirms_share_syncs() {
    let sim = SimStorage::new();
    let store = Arc::new(open(&sim, options(), &no_refs()));
    let writes = 4 * 500;
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let store = store.clone();
            scope.spawn(move || {
                let (tx, rx) = mpsc::channel();
                for i in 0..500u64 {
                    let n = t * 1000 + i;
                    let data = body(n, 200);
                    store
                        .write_with(&[(id(n), &data)], confirm_to(&tx, n))
                        .unwrap();
                }
                for _ in 0..500 {
                    let (_, r) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
                    assert_eq!(r.unwrap(), Durability::Fsynced);
                }
            });
        }
    });
    let stats = store.stats();
    assert_eq!(stats.messages, writes);
    assert!(
        stats.syncs > 0 && stats.syncs < writes,
        "{} syncs for {writes} writes",
        stats.syncs
    );
}

#[test]
fn a_busy_store_still_confirms() {
    let sim = SimStorage::new();
    let store = open(&sim, options(), &no_refs());
    let (tx, rx) = mpsc::channel();
    let data = body(1, 100);
    store
        .write_with(&[(id(1), &data)], confirm_to(&tx, 1))
        .unwrap();
    // Keep the store busy with writes and removes of other ids until id 1 is confirmed.
    let mut n = 1_000;
    let confirmed = loop {
        if let Ok((1, result)) = rx.try_recv() {
            break result;
        }
        let d = body(n, 100);
        store.write_with(&[(id(n), &d)], |_| {}).unwrap();
        store.remove(&[id(n)]).unwrap();
        n += 1;
        assert!(n < 10_000_000, "never confirmed while busy");
    };
    assert_eq!(confirmed.unwrap(), Durability::Fsynced);
}

/// ~100 segments' worth of messages, then interleaved thirds removed.
#[test]
fn compaction_shrinks_a_hundred_segments_and_keeps_every_survivor() {
    let sim = SimStorage::new();
    let opts = small_segments();
    let store = open(&sim, opts.clone(), &no_refs());
    let per_segment = 64 * 1024 / (8 * 1024 + 24);
    let count = 100 * per_segment as u64;
    for chunk in (0..count).collect::<Vec<_>>().chunks(50) {
        let data: Vec<(MsgId, Vec<u8>)> =
            chunk.iter().map(|&n| (id(n), body(n, 8 * 1024))).collect();
        let items: Vec<(MsgId, &[u8])> = data.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        store.write(&items).unwrap();
    }
    let full = store.stats();
    assert!(full.segments >= 95, "{full:?}");
    for third in 0..3u64 {
        let ids: Vec<MsgId> = (0..count).filter(|n| n % 3 == third).map(id).collect();
        for batch in ids.chunks(1000) {
            store.remove(batch).unwrap();
        }
        store.compact().unwrap();
        let stats = store.stats();
        for n in (0..count).filter(|n| n % 3 > third) {
            assert_eq!(
                store.read(&id(n)).unwrap(),
                body(n, 8 * 1024),
                "{n} after third {third}"
            );
        }
        if third < 2 {
            assert!(stats.compactions > 0, "{stats:?}");
            assert!(stats.file_bytes < full.file_bytes, "{stats:?}");
            // Settled: the garbage of the non-current segments is under the threshold.
            assert!(
                stats.garbage_fraction <= opts.compact_garbage_fraction + 0.05,
                "third {third}: {stats:?}"
            );
        }
    }
    let end = store.stats();
    assert_eq!(end.messages, 0);
    assert!(end.segments <= 1, "empty segments are deleted: {end:?}");
    assert!(segments(&sim).len() <= 1);
}

#[test]
fn a_clean_restart_loads_the_snapshot_without_a_scan() {
    let sim = SimStorage::new();
    let store = open(&sim, small_segments(), &no_refs());
    for n in 0..300 {
        write_one(&store, n, 500);
    }
    for n in 0..100 {
        write_one(&store, n, 500);
    }
    store
        .remove(&(200..300).map(id).collect::<Vec<_>>())
        .unwrap();
    let before = store.stats();
    store.close().unwrap();
    drop(store);
    let store = open(&sim, small_segments(), &no_refs());
    assert!(store.recovery().clean, "{:?}", store.recovery());
    assert_eq!(store.recovery().records_scanned, 0);
    let after = store.stats();
    assert_eq!(
        (after.messages, after.live_bytes, after.file_bytes),
        (before.messages, before.live_bytes, before.file_bytes)
    );
    for n in 0..300 {
        let refs = match n {
            0..100 => Some(2),
            100..200 => Some(1),
            _ => None,
        };
        assert_eq!(store.refcount(&id(n)), refs, "{n}");
        if refs.is_some() {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 500));
        }
    }
    // The snapshot is gone once opened: a crash now takes the dirty path.
    assert!(
        sim.stat(&Path::new(DIR).join("snapshot"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_unclean_restart_keeps_exactly_the_referenced_ids_with_their_counts() {
    let sim = SimStorage::new();
    let store = open(&sim, small_segments(), &no_refs());
    for n in 0..100 {
        write_one(&store, n, 700);
    }
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    // Every other id of the second half is still referenced, some twice.
    let refs: Vec<(MsgId, u32)> = (50..100)
        .filter(|n| n % 2 == 0)
        .flat_map(|n| {
            let twice = n % 4 == 0;
            std::iter::repeat_n((id(n), 1), if twice { 2 } else { 1 })
        })
        .collect();
    let store = open(&image, small_segments(), &refs);
    let recovery = store.recovery();
    assert!(!recovery.clean);
    assert_eq!(recovery.records_scanned, 100);
    assert_eq!(recovery.unreferenced, 75);
    assert_eq!(recovery.missing_count, 0);
    for n in 0..100 {
        let expected = match n {
            50.. if n % 4 == 0 => Some(2),
            50.. if n % 2 == 0 => Some(1),
            _ => None,
        };
        assert_eq!(store.refcount(&id(n)), expected, "{n}");
        if expected.is_some() {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 700));
        }
    }
    // A referenced id no segment holds is reported, not invented.
    let image = image.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open(&image, small_segments(), &[(id(5000), 1)]);
    assert_eq!(store.recovery().missing, vec![id(5000)]);
    assert!(!store.contains(&id(5000)));
}

#[test]
fn a_truncated_or_garbage_snapshot_forces_the_dirty_path() {
    for damage in ["truncate", "garbage", "stale"] {
        let sim = SimStorage::new();
        let store = open(&sim, options(), &no_refs());
        for n in 0..50 {
            write_one(&store, n, 100);
        }
        store.close().unwrap();
        drop(store);
        let snapshot = Path::new(DIR).join("snapshot");
        let bytes = sim.read_file(&snapshot).unwrap();
        match damage {
            "truncate" => {
                let f = sim
                    .open(&snapshot, vellum::storage::OpenMode::ReadWrite)
                    .unwrap();
                f.set_len(bytes.len() as u64 / 2).unwrap();
            }
            "garbage" => sim.flip_bit(&snapshot, bytes.len() as u64 / 3, 5),
            _ => {
                // A segment that grew after the snapshot was written.
                let seg = segments(&sim).pop().unwrap();
                let f = sim
                    .open(&seg, vellum::storage::OpenMode::ReadWrite)
                    .unwrap();
                let len = f.len().unwrap();
                f.write_all_at(&[0u8; 10], len).unwrap();
            }
        }
        let refs: Vec<(MsgId, u32)> = (0..50).map(|n| (id(n), 1)).collect();
        let store = open(&sim, options(), &refs);
        let recovery = store.recovery();
        assert!(!recovery.clean, "{damage}: {recovery:?}");
        assert!(recovery.dirty_reason.is_some(), "{damage}");
        for n in 0..50 {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 100), "{damage} {n}");
        }
    }
}

/// Intact records of a segment file, as (offset, framed length).
fn record_extents(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 32;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        out.push((at, 8 + len));
        at += 8 + len;
    }
    out
}

#[test]
fn a_torn_tail_is_cut_at_every_byte_of_the_last_record() {
    let sim = SimStorage::new();
    let store = open(&sim, options(), &no_refs());
    for n in 0..5 {
        write_one(&store, n, 50);
    }
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let seg = segments(&image).pop().unwrap();
    let bytes = image.read_file(&seg).unwrap();
    let (last, framed) = *record_extents(&bytes).last().unwrap();
    let refs: Vec<(MsgId, u32)> = (0..5).map(|n| (id(n), 1)).collect();
    for cut in last..last + framed {
        let sim = image.crash(CrashMode::DropUnsynced);
        let f = sim
            .open(&seg, vellum::storage::OpenMode::ReadWrite)
            .unwrap();
        f.set_len(cut as u64).unwrap();
        f.sync_data().unwrap();
        let store = open(&sim, options(), &refs);
        let recovery = store.recovery();
        for n in 0..4 {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 50), "cut at {cut}");
        }
        assert!(!store.contains(&id(4)), "cut at {cut}");
        assert_eq!(recovery.missing, vec![id(4)], "cut at {cut}");
        if cut > last {
            let torn = recovery.torn_tails.first().expect("a torn tail reported");
            assert_eq!(
                (torn.start, torn.end),
                (last as u64, cut as u64),
                "cut at {cut}"
            );
        } else {
            assert!(recovery.torn_tails.is_empty(), "cut at {cut}");
        }
        assert_eq!(
            sim.durable_len(&seg),
            Some(last as u64),
            "the tail is cut off"
        );
    }
}

/// A cleanly closed store of nine 80-byte messages in one segment: the disk, the
/// segment's path and bytes, and the messages' references.
fn nine_messages() -> (SimStorage, PathBuf, Vec<u8>, Vec<(MsgId, u32)>) {
    let sim = SimStorage::new();
    let store = open(&sim, options(), &no_refs());
    for n in 0..9 {
        write_one(&store, n, 80);
    }
    store.close().unwrap();
    drop(store);
    let seg = segments(&sim).pop().unwrap();
    let bytes = sim.read_file(&seg).unwrap();
    (sim, seg, bytes, (0..9).map(|n| (id(n), 1)).collect())
}

/// The ranges a store's open set aside, as (start, end).
fn lost(store: &MessageStore) -> Vec<(u64, u64)> {
    store
        .recovery()
        .lost
        .iter()
        .map(|l| (l.start, l.end))
        .collect()
}

#[test]
fn a_corrupted_record_mid_file_is_reported_with_its_range_and_the_rest_stays_readable() {
    let (sim, seg, bytes, refs) = nine_messages();
    let (at, framed) = record_extents(&bytes)[4];
    sim.flip_bit(&seg, (at + 40) as u64, 2);

    // The clean path does not scan: the read itself finds the damage.
    let store = open(&sim, options(), &refs);
    assert!(store.recovery().clean);
    match store.read(&id(4)) {
        Err(Error::Corrupted { path, offset, .. }) => {
            assert_eq!((path, offset), (seg.clone(), at as u64))
        }
        other => panic!("read a damaged record: {other:?}"),
    }
    for n in (0..9).filter(|n| *n != 4) {
        assert_eq!(store.read(&id(n)).unwrap(), body(n, 80));
    }
    // The dirty path scans, sets the record aside with its exact range, keeps the rest.
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open(&image, options(), &refs);
    let recovery = store.recovery();
    assert_eq!(recovery.lost.len(), 1, "{recovery:?}");
    let lost = &recovery.lost[0];
    assert_eq!(
        (&lost.path, lost.start, lost.end),
        (&seg, at as u64, (at + framed) as u64)
    );
    let saved = lost.saved_as.as_ref().expect("saved to lost+found");
    assert_eq!(image.read_file(saved).unwrap(), {
        let mut b = bytes[at..at + framed].to_vec();
        b[40] ^= 1 << 2;
        b
    });
    assert_eq!(recovery.missing, vec![id(4)]);
    for n in (0..9).filter(|n| *n != 4) {
        assert_eq!(store.read(&id(n)).unwrap(), body(n, 80), "{n}");
    }
}

#[test]
fn a_damaged_length_mid_file_loses_that_record_only_the_scan_resyncs_on_the_next() {
    let (sim, seg, bytes, refs) = nine_messages();
    let (at, framed) = record_extents(&bytes)[4];
    // Every bit of the length field: the record may now claim to end past the file,
    // inside the next record, or before its own body ends.
    for bit in 0..32u64 {
        let image = sim.crash(CrashMode::DropUnsynced);
        image.flip_bit(&seg, at as u64 + bit / 8, (bit % 8) as u8);
        image.remove_file(&Path::new(DIR).join("snapshot")).unwrap();
        let store = open(&image, options(), &refs);
        let recovery = store.recovery();
        assert!(!recovery.clean);
        assert!(recovery.torn_tails.is_empty(), "bit {bit}: {recovery:?}");
        assert_eq!(
            lost(&store),
            vec![(at as u64, (at + framed) as u64)],
            "bit {bit}"
        );
        assert_eq!(recovery.missing, vec![id(4)], "bit {bit}");
        for n in (0..9).filter(|n| *n != 4) {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 80), "bit {bit}, {n}");
        }
    }
}

#[test]
fn a_damaged_length_that_lands_on_a_later_record_skips_no_intact_one() {
    let (sim, seg, bytes, refs) = nine_messages();
    let extents = record_extents(&bytes);
    let ((at, framed), (sixth, _)) = (extents[4], extents[6]);
    // Record 4 now claims to end exactly where record 6 starts: 5 would be skipped.
    let declared = (sixth - at - 8) as u32;
    let file = sim.open(&seg, OpenMode::ReadWrite).unwrap();
    file.write_all_at(&declared.to_le_bytes(), at as u64)
        .unwrap();
    file.sync_data().unwrap();
    drop(file);
    sim.remove_file(&Path::new(DIR).join("snapshot")).unwrap();
    let store = open(&sim, options(), &refs);
    assert_eq!(lost(&store), vec![(at as u64, (at + framed) as u64)]);
    for n in (0..9).filter(|n| *n != 4) {
        assert_eq!(store.read(&id(n)).unwrap(), body(n, 80), "{n}");
    }
}

#[test]
fn a_damaged_segment_header_loses_only_itself() {
    let (sim, seg, _, refs) = nine_messages();
    // Magic, version, segment number (the rest of the header is reserved, unchecked).
    for byte in [0, 7, 8, 16, 23] {
        let image = sim.crash(CrashMode::DropUnsynced);
        image.flip_bit(&seg, byte, 3);
        image.remove_file(&Path::new(DIR).join("snapshot")).unwrap();
        let store = open(&image, options(), &refs);
        assert_eq!(lost(&store), vec![(0, 32)], "byte {byte}");
        let recovery = store.recovery();
        assert!(recovery.missing.is_empty(), "byte {byte}: {recovery:?}");
        for n in 0..9 {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 80), "byte {byte}, {n}");
        }
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let sim = SimStorage::new();
    let opts = StoreOptions {
        message_bytes_max: 1000,
        batch_messages_max: 4,
        ..options()
    };
    let store = open(&sim, opts, &no_refs());
    write_one(&store, 1, 10);
    let before = (store.stats(), store.refcount(&id(1)));
    let big = vec![0u8; 1001];
    let small = body(2, 10);
    let refused: Vec<(&str, vellum::Result<()>)> = vec![
        (
            "oversized",
            store.write_with(&[(id(2), &small), (id(3), &big)], |_| {}),
        ),
        ("empty", store.write_with(&[], |_| {})),
        (
            "too many",
            store.write_with(&[(id(2), small.as_slice()); 5], |_| {}),
        ),
        ("unknown", store.remove(&[id(1), id(9)])),
        ("too few refs", store.remove(&[id(1), id(1)])),
        ("empty remove", store.remove(&[])),
    ];
    for (what, result) in refused {
        assert!(result.is_err(), "{what} was accepted");
    }
    assert!(matches!(
        store.read(&id(9)),
        Err(Error::UnknownMessage { .. })
    ));
    assert_eq!((store.stats(), store.refcount(&id(1))), before);
    assert!(!store.contains(&id(2)));
    assert!(
        MessageStore::open_with_storage(
            Arc::new(SimStorage::new()),
            DIR,
            StoreOptions {
                segment_bytes_max: 10,
                ..options()
            },
            &no_refs()
        )
        .is_err()
    );
}

#[test]
fn a_failed_sync_poisons_the_store_until_reopened() {
    let sim = SimStorage::new();
    let store = open(&sim, options(), &no_refs());
    write_one(&store, 1, 10);
    sim.inject(Fault {
        path_contains: Some(".seg".into()),
        ..Fault::new(FaultKind::SyncData)
    });
    let data = body(2, 10);
    assert!(matches!(
        store.write(&[(id(2), &data)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        store.write(&[(id(3), &data)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(store.remove(&[id(1)]).is_err());
    drop(store);
    let image = sim.crash(CrashMode::DropUnsynced);
    let store = open(&image, options(), &[(id(1), 1)]);
    assert_eq!(store.read(&id(1)).unwrap(), body(1, 10));
    write_one(&store, 4, 10);
}

#[test]
fn a_message_bigger_than_a_segment_gets_its_own() {
    let sim = SimStorage::new();
    let store = open(&sim, small_segments(), &no_refs());
    write_one(&store, 1, 100);
    write_one(&store, 2, 200 * 1024);
    write_one(&store, 3, 100);
    assert_eq!(segments(&sim).len(), 3);
    for (n, len) in [(1, 100), (2, 200 * 1024), (3, 100)] {
        assert_eq!(store.read(&id(n)).unwrap(), body(n, len));
    }
}

/// One message per id, written and all referenced; `alive` says which are still.
fn churn(store: &MessageStore, count: u64) -> BTreeMap<u64, bool> {
    let mut alive = BTreeMap::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(20) {
        let data: Vec<(MsgId, Vec<u8>)> = chunk.iter().map(|&n| (id(n), body(n, 2000))).collect();
        let items: Vec<(MsgId, &[u8])> = data.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        store.write(&items).unwrap();
        for &n in chunk {
            alive.insert(n, true);
        }
    }
    let gone: Vec<MsgId> = (0..count).filter(|n| n % 4 != 0).map(id).collect();
    store.remove(&gone).unwrap();
    for n in (0..count).filter(|n| n % 4 != 0) {
        alive.insert(n, false);
    }
    alive
}

#[test]
fn a_crash_at_every_step_of_compaction_loses_nothing_and_resurrects_nothing() {
    let opts = StoreOptions {
        segment_bytes_max: 16 * 1024,
        ..options()
    };
    // Count the storage steps of one compaction run.
    let count = 60;
    let steps = {
        let sim = SimStorage::new();
        let store = open(&sim, opts.clone(), &no_refs());
        churn(&store, count);
        let before = sim.mutating_ops();
        store.compact().unwrap();
        assert!(store.stats().compactions > 0);
        sim.mutating_ops() - before
    };
    assert!(steps > 5, "{steps}");
    for k in 0..=steps {
        let sim = SimStorage::new();
        let store = open(&sim, opts.clone(), &no_refs());
        let alive = churn(&store, count);
        sim.crash_after_ops(k);
        let _ = store.compact();
        for mode in [CrashMode::DropUnsynced, CrashMode::Torn { seed: k }] {
            let image = sim.crash(mode);
            let refs: Vec<(MsgId, u32)> = alive
                .iter()
                .filter(|(_, a)| **a)
                .map(|(n, _)| (id(*n), 1))
                .collect();
            let reopened = open(&image, opts.clone(), &refs);
            let what = format!("crash after {k} of {steps} compaction steps ({mode:?})");
            assert_eq!(reopened.recovery().missing, vec![], "{what}");
            for (&n, &live) in &alive {
                if live {
                    assert_eq!(reopened.read(&id(n)).unwrap(), body(n, 2000), "{what}: {n}");
                } else {
                    assert!(!reopened.contains(&id(n)), "{what}: {n} resurrected");
                }
            }
            // And it compacts to the end from there.
            reopened.compact().unwrap();
            for (&n, &live) in &alive {
                assert_eq!(
                    reopened.contains(&id(n)),
                    live,
                    "{what}: {n} after compacting again"
                );
            }
        }
        drop(store);
    }
}

/// A `SimStorage` whose opened files a test wraps (to block or count them).
struct Wrapping<F> {
    inner: SimStorage,
    wrap: F,
}

impl<F> Storage for Wrapping<F>
where
    F: Fn(&Path, Arc<dyn StorageFile>) -> Arc<dyn StorageFile> + Send + Sync + 'static,
{
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn StorageFile>> {
        Ok((self.wrap)(path, self.inner.open(path, mode)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn hard_link(&self, original: &Path, link: &Path) -> std::io::Result<()> {
        self.inner.hard_link(original, link)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn sync_filesystem(&self, path: &Path) -> std::io::Result<()> {
        self.inner.sync_filesystem(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn stat(&self, path: &Path) -> std::io::Result<Option<vellum::storage::FileStat>> {
        self.inner.stat(path)
    }
    fn lock_exclusive(&self, path: &Path) -> std::io::Result<Box<dyn Send + Sync>> {
        self.inner.lock_exclusive(path)
    }
}

/// A file whose writes block until released: a wedged compactor's output.
struct WedgedFile {
    inner: Arc<dyn StorageFile>,
    release: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl StorageFile for WedgedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let (released, cv) = &*self.release;
        let mut released = released.lock().unwrap();
        while !*released {
            released = cv.wait(released).unwrap();
        }
        self.inner.write_all_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
}

#[test]
fn a_wedged_compactor_at_shutdown_still_leaves_a_clean_consistent_store() {
    let sim = SimStorage::new();
    let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let wedge = release.clone();
    let storage = Arc::new(Wrapping {
        inner: sim.clone(),
        wrap: move |path: &Path, file: Arc<dyn StorageFile>| -> Arc<dyn StorageFile> {
            if path.to_string_lossy().ends_with(".compacting") {
                Arc::new(WedgedFile {
                    inner: file,
                    release: wedge.clone(),
                })
            } else {
                file
            }
        },
    });
    let opts = StoreOptions {
        segment_bytes_max: 16 * 1024,
        compact_in_background: true,
        compactor_stop_timeout: Duration::from_millis(200),
        ..options()
    };
    let store = MessageStore::open_with_storage(storage, DIR, opts.clone(), &no_refs()).unwrap();
    let alive = churn(&store, 60);
    // Wait until the compactor is stuck writing its output.
    let wedged = (0..2000).any(|_| {
        std::thread::sleep(Duration::from_millis(5));
        sim.list_dir(Path::new(DIR))
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".compacting"))
    });
    assert!(wedged, "the compactor never started");
    store.close().unwrap();
    let image = sim.crash(CrashMode::DropUnsynced);
    // Let the wedged thread go: it must change nothing of the closed store.
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
    std::thread::sleep(Duration::from_millis(50));
    drop(store);
    let store = open(&image, opts.clone(), &no_refs());
    assert!(store.recovery().clean, "{:?}", store.recovery());
    for (&n, &live) in &alive {
        assert_eq!(store.contains(&id(n)), live, "{n}");
        if live {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 2000));
        }
    }
}

#[test]
fn segment_files_open_at_once_never_exceed_the_cap() {
    const CAP: usize = 4;
    let sim = SimStorage::new();
    let counter = Arc::new(common::counted::Counter::default());
    let count = counter.clone();
    let storage = Arc::new(Wrapping {
        inner: sim.clone(),
        wrap: move |path: &Path, file: Arc<dyn StorageFile>| {
            if path.to_string_lossy().ends_with(".seg") {
                count.count(file)
            } else {
                file
            }
        },
    });
    let opts = StoreOptions {
        open_segments_max: CAP,
        ..small_segments()
    };
    let open = |refs: &[(MsgId, u32)]| {
        MessageStore::open_with_storage(storage.clone(), DIR, opts.clone(), &refs).unwrap()
    };
    let store = open(&no_refs());
    // ~40 segments, read back in an order that keeps missing the cache.
    let count = 40 * (64 * 1024 / (4 * 1024 + 24)) as u64;
    for n in 0..count {
        write_one(&store, n, 4 * 1024);
    }
    assert!(segments(&sim).len() >= 38, "{}", segments(&sim).len());
    for round in 0..3 {
        for n in (0..count).rev().step_by(7 + round) {
            assert_eq!(store.read(&id(n)).unwrap(), body(n, 4 * 1024), "{n}");
        }
        assert!(store.stats().open_segment_files <= CAP as u64);
    }
    // Compaction reads its inputs through handles of its own: one more per input at most.
    for n in (0..count).filter(|n| n % 3 != 0) {
        store.remove(&[id(n)]).unwrap();
    }
    store.compact().unwrap();
    for n in (0..count).filter(|n| n % 3 == 0) {
        assert_eq!(store.read(&id(n)).unwrap(), body(n, 4 * 1024), "{n}");
    }
    assert!(
        counter.peak() <= CAP + 2,
        "{} segment files were open at once",
        counter.peak()
    );
    // A clean reopen opens no segment until one is read.
    store.close().unwrap();
    drop(store);
    let refs: Vec<(MsgId, u32)> = (0..count)
        .filter(|n| n % 3 == 0)
        .map(|n| (id(n), 1))
        .collect();
    let store = open(&refs);
    assert_eq!(counter.open(), 0);
    assert_eq!(store.read(&id(0)).unwrap(), body(0, 4 * 1024));
    assert_eq!(counter.open(), 1);
}
