//! Proves that a torn tail — a channel file or a journal file cut inside its last record —
//! costs exactly that record and is reported, never returned half-written (docs/format.md
//! §3.4 step 2 and §3.5): every earlier message reads back intact, `lost_ranges()` (or the
//! recovery report, for the journal) names the file and the exact offset where the cut
//! record starts, its bytes are saved under `lost+found/`, and the store goes on: a new
//! append succeeds, reads back, and survives another crash without the range coming back.
//!
//! It also proves that acknowledged appends survive a crash that drops every unsynced
//! write, both in a provisioned data directory and in one that Vellum itself created, and
//! that a journal torn by a crash under `SyncPolicy::Buffered` replays to a prefix of the
//! appends with the rest reported.

mod common;

use common::{Msg, ROOT, live_path, open, open_with, options, provision, read_all};
use std::path::{Path, PathBuf};
use vellum::storage::{CrashMode, OpenMode, SimStorage, Storage};
use vellum::{Appended, NewMessage, Options, SyncPolicy, Vellum};

/// Shard `to`.
const ID: &str = "tornado";
const NEIGHBOUR: &str = "toucan";

/// A fresh storage whose data directory already exists durably, as a provisioned one does.
fn provisioned() -> SimStorage {
    let sim = SimStorage::new();
    provision(&sim);
    sim
}

/// The messages of `id`, none if it does not exist.
fn read_messages(store: &Vellum, id: &str) -> Vec<Msg> {
    if !store.exists(id).unwrap() {
        return Vec::new();
    }
    read_all(store, id).into_iter().map(Msg::from).collect()
}

fn acked(ack: &Appended, data: &[u8]) -> Msg {
    Msg(ack.seq, ack.key.clone(), data.to_vec())
}

/// Truncates `path` to `len` bytes, durably.
fn cut(sim: &SimStorage, path: &Path, len: u64) {
    let file = sim.open(path, OpenMode::ReadWrite).unwrap();
    file.set_len(len).unwrap();
    file.sync_data().unwrap();
}

fn data_for(i: usize) -> Vec<u8> {
    format!("message {i}: {}", "abcdefghij".repeat(1 + i % 4)).into_bytes()
}

/// The framed length of a message record (docs/format.md §2.2).
fn message_record_len(key: &[u8], data: &[u8]) -> u64 {
    (8 + 1 + 8 + 8 + 1 + key.len() + data.len()) as u64
}

/// After an append on a reopened store: it reads back after `kept`, and survives a crash
/// (and the truncation was durable: the damaged range does not come back).
fn append_reads_back_and_survives_a_crash(
    store: Vellum,
    disk: &SimStorage,
    kept: &[Msg],
    what: &str,
) {
    let ack = store
        .append(ID, b"after the cut")
        .unwrap_or_else(|e| panic!("{what}: append after reopening: {e}"));
    if let Some(last) = kept.last() {
        assert!(ack.seq > last.0, "{what}: seq {} after {}", ack.seq, last.0);
    }
    let mut expected = kept.to_vec();
    expected.push(acked(&ack, b"after the cut"));
    assert_eq!(read_messages(&store, ID), expected, "{what}");
    let image = disk.crash(CrashMode::DropUnsynced);
    store.close();
    let store = open(&image);
    assert_eq!(
        read_messages(&store, ID),
        expected,
        "{what}: after another crash, the messages (the last one was acknowledged {:?})",
        ack.durability
    );
    assert_eq!(
        store.recovery_report().lost,
        vec![],
        "{what}: after another crash"
    );
    assert_eq!(store.lost_ranges(), vec![], "{what}: after another crash");
}

#[test]
fn a_channel_file_cut_inside_its_last_record_loses_only_that_record() {
    let sim = provisioned();
    let store = open(&sim);
    let mut messages = Vec::new();
    let mut acks = Vec::new();
    for i in 0..8 {
        let data = data_for(i);
        let ack = store.append(ID, &data).unwrap();
        messages.push(acked(&ack, &data));
        acks.push(ack);
    }
    store.close(); // a clean close: everything is in the channel file, the journal is empty
    drop(store);
    let path = live_path(ID);
    let bytes = sim.read_file(&path).expect("the channel file");
    let last = acks.last().unwrap();
    let last_start = last.position.offset;
    let Msg(_, key, data) = messages.last().unwrap();
    assert_eq!(
        last_start + message_record_len(key, data),
        bytes.len() as u64,
        "the file ends with the last message"
    );
    let kept = &messages[..messages.len() - 1];
    for len in last_start + 1..bytes.len() as u64 {
        let image = sim.crash(CrashMode::DropUnsynced);
        cut(&image, &path, len);
        let store = open(&image);
        assert_eq!(read_messages(&store, ID), kept, "cut at {len}");
        let lost = store.lost_ranges();
        assert_eq!(lost.len(), 1, "cut at {len}: {lost:?}");
        let range = &lost[0];
        assert_eq!(
            (&range.path, range.start, range.end),
            (&path, last_start, len),
            "cut at {len}: {range:?}"
        );
        let saved = range.saved_as.as_ref().expect("the range is saved");
        assert!(saved.starts_with(format!("{ROOT}/lost+found")), "{saved:?}");
        assert_eq!(
            image.read_file(saved).as_deref(),
            Some(&bytes[last_start as usize..len as usize]),
            "cut at {len}: the saved bytes"
        );
        append_reads_back_and_survives_a_crash(store, &image, kept, &format!("cut at {len}"));
    }
    // A cut exactly between two records is a clean end: nothing is lost or reported.
    let image = sim.crash(CrashMode::DropUnsynced);
    cut(&image, &path, last_start);
    let store = open(&image);
    assert_eq!(read_messages(&store, ID), kept);
    assert_eq!(store.lost_ranges(), vec![]);
}

#[test]
fn acknowledged_appends_are_replayed_from_the_journal_after_a_crash() {
    let sim = provisioned();
    let store = open(&sim);
    let mut expected = Vec::new();
    for i in 0..10 {
        let data = data_for(i);
        expected.push(acked(&store.append(ID, &data).unwrap(), &data));
        if i == 4 {
            store.checkpoint().unwrap(); // half the channel in its file, half only in the journal
        }
    }
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open(&image);
    assert!(store.recovery_report().entries_replayed >= 5);
    assert_eq!(read_messages(&store, ID), expected);
    assert_eq!(store.recovery_report().lost, vec![]);
    assert_eq!(store.lost_ranges(), vec![]);
    append_reads_back_and_survives_a_crash(store, &image, &expected, "after replay");
}

#[test]
fn acknowledged_appends_survive_a_crash_in_a_data_directory_vellum_created() {
    let sim = SimStorage::new(); // no /data yet: opening creates it
    let store = open(&sim);
    let mut expected = Vec::new();
    for i in 0..3 {
        let data = data_for(i);
        expected.push(acked(&store.append(ID, &data).unwrap(), &data));
    }
    store.close(); // even a clean close
    drop(store);
    let store = open(&sim.crash(CrashMode::DropUnsynced));
    assert_eq!(
        read_messages(&store, ID),
        expected,
        "acknowledged appends vanished: the data directory's own entry was never made durable"
    );
}

#[test]
fn acknowledged_appends_after_a_clean_reopen_survive_a_crash() {
    let sim = provisioned();
    let store = open(&sim);
    let first = store.append(ID, b"before the restart").unwrap();
    store.close(); // a clean close leaves an empty journal file behind
    drop(store);
    let store = open(&sim);
    let second = store.append(ID, b"after the restart").unwrap();
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open(&image);
    assert_eq!(
        read_messages(&store, ID),
        vec![
            acked(&first, b"before the restart"),
            acked(&second, b"after the restart")
        ],
        "an append acknowledged as {:?} after a clean restart was lost",
        second.durability
    );
}

/// The offsets where the framed records of `bytes` start, from `start` to the end of the
/// written part (a journal file may have zero-filled room after its entries).
fn record_starts(bytes: &[u8], start: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = start;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(at);
        at += 8 + len;
    }
    assert!(at <= bytes.len(), "the journal ends with a whole entry");
    assert!(
        bytes[at..].iter().all(|&b| b == 0),
        "only zero-filled room follows the entries"
    );
    starts
}

/// The journal files of a storage, oldest first.
fn journal_files(sim: &SimStorage) -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join("journal");
    sim.list_dir(&dir)
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| dir.join(name))
        .collect()
}

const JOURNAL_HEADER_BYTES: usize = 32;
/// A journal entry's frame and tag: what recovery needs to know a torn entry as one.
const ENTRY_PROBE_BYTES: u64 = 16;

#[test]
fn a_journal_cut_inside_its_last_entry_loses_only_that_entry() {
    let sim = provisioned();
    let store = open(&sim);
    let mut before = Vec::new();
    for i in 0..8 {
        let data = data_for(i);
        before.push(acked(&store.append(ID, &data).unwrap(), &data));
        if i == 4 {
            store.checkpoint().unwrap();
        }
    }
    let neighbour = store.append(NEIGHBOUR, b"neighbour").unwrap();
    // The last entry: an atomic batch of three messages.
    let batch: Vec<Vec<u8>> = (8..11).map(data_for).collect();
    let batch: Vec<NewMessage<'_>> = batch.iter().map(|d| NewMessage::new(d)).collect();
    store.append_batch(ID, &batch).unwrap();
    // Power loss: nothing was checkpointed since, so the journal must be replayed.
    let _ = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let base = sim.crash(CrashMode::DropUnsynced);
    let journals = journal_files(&base);
    let journal = journals.last().expect("a journal file").clone();
    let bytes = base.read_file(&journal).unwrap();
    let starts = record_starts(&bytes, JOURNAL_HEADER_BYTES);
    let last_start = *starts.last().unwrap() as u64;
    let (entries_end, _) = intact_end(&bytes);
    for len in last_start..entries_end as u64 {
        let image = sim.crash(CrashMode::DropUnsynced);
        cut(&image, &journal, len);
        let store = open(&image);
        assert_eq!(read_messages(&store, ID), before, "journal cut at {len}");
        assert_eq!(
            read_messages(&store, NEIGHBOUR),
            vec![acked(&neighbour, b"neighbour")],
            "journal cut at {len}"
        );
        let lost = &store.recovery_report().lost;
        if len < last_start + ENTRY_PROBE_BYTES {
            // Cut before the end of its tag, a torn entry cannot be told from the old
            // bytes of a recycled file (docs/format.md §3.1): a clean end, and nothing
            // acknowledged was in it.
            assert_eq!(lost, &vec![], "journal cut at {len}: a clean end");
        } else {
            assert_eq!(lost.len(), 1, "journal cut at {len}: {lost:?}");
            let range = &lost[0];
            assert_eq!(
                (&range.path, range.start, range.end),
                (&journal, last_start, len),
                "journal cut at {len}: {range:?}"
            );
            let saved = range.saved_as.as_ref().expect("the range is saved");
            assert!(saved.starts_with(format!("{ROOT}/lost+found")), "{saved:?}");
            assert_eq!(
                image.read_file(saved).as_deref(),
                Some(&bytes[last_start as usize..len as usize]),
                "journal cut at {len}: the saved bytes"
            );
        }
        assert_eq!(store.lost_ranges(), store.recovery_report().lost);
        let what = format!("journal cut at {len}");
        append_reads_back_and_survives_a_crash(store, &image, &before, &what);
    }
}

/// The end of the intact entries of a journal image (what replay may apply).
fn intact_end(bytes: &[u8]) -> (usize, usize) {
    let mut at = JOURNAL_HEADER_BYTES;
    let mut entries = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        if len == 0
            || at + 8 + len > bytes.len()
            || crc32c::crc32c(&bytes[at + 8..at + 8 + len]) != crc
        {
            break;
        }
        at += 8 + len;
        entries += 1;
    }
    (at, entries)
}

/// Whether an intact entry starts anywhere at or after `from` (in a journal file of
/// one use, every intact entry is a current one).
fn intact_entry_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|at| intact_end(&bytes[at - JOURNAL_HEADER_BYTES..]).1 > 0)
}

#[test]
fn a_journal_torn_by_a_crash_under_buffered_replays_a_prefix_and_reports_the_rest() {
    let buffered = Options {
        sync: SyncPolicy::Buffered,
        ..options()
    };
    for seed in 0..40 {
        let sim = provisioned();
        let store = open_with(&sim, buffered.clone());
        let mut written = Vec::new();
        for i in 0..12 {
            let data = data_for(i);
            written.push(acked(&store.append(ID, &data).unwrap(), &data));
        }
        let image = sim.crash(CrashMode::Torn { seed });
        drop(store);
        let journal = journal_files(&image).pop().expect("a journal file");
        let bytes = image.read_file(&journal).unwrap();
        let (end, entries) = intact_end(&bytes);
        let store = open(&image);
        let read = read_messages(&store, ID);
        // One entry per append (the first also creates the channel).
        assert_eq!(
            read,
            written[..entries],
            "seed {seed}: not the intact prefix"
        );
        let lost = &store.recovery_report().lost;
        if bytes[end..].iter().all(|&b| b == 0) {
            // Zero-filled room after the intact entries (a prepared journal file) is no loss.
            assert_eq!(lost, &vec![], "seed {seed}");
        } else if intact_entry_after(&bytes, end + 1) {
            // Later pages reached the disk while an earlier one did not: all of it is reported.
            assert_eq!(lost.len(), 1, "seed {seed}: {lost:?}");
            assert_eq!(
                (&lost[0].path, lost[0].start, lost[0].end),
                (&journal, end as u64, bytes.len() as u64),
                "seed {seed}"
            );
        } else {
            // A torn entry is reported when enough of it survived to be recognised as one.
            assert!(lost.len() <= 1, "seed {seed}: {lost:?}");
            for range in lost {
                assert_eq!(
                    (&range.path, range.start),
                    (&journal, end as u64),
                    "seed {seed}"
                );
                assert!(range.end <= bytes.len() as u64, "seed {seed}: {range:?}");
            }
        }
        let what = format!("seed {seed}");
        append_reads_back_and_survives_a_crash(store, &image, &read, &what);
    }
}
