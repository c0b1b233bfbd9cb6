//! Proves that damage at rest in a channel file is reported, quarantined and never
//! returned as data (docs/format.md §3.5): a flipped bit anywhere in a cold
//! (checkpointed) message — its length, its checksum, its key, its data — or a
//! zero-filled range makes the reopened store return exactly the messages before it,
//! byte for byte, report the damaged range in `lost_ranges()` with the channel file's
//! path and the damaged record's exact offset, and save those bytes under `lost+found/`.
//! The channel then takes new appends, and the truncation holds across a reopen. A
//! damaged record met by a reader of an already loaded channel is an error, never data,
//! and a damaged header makes the channel an error rather than an empty channel.

mod common;

use common::{Msg, ROOT, live_path, open, provision, read_all};
use std::path::Path;
use vellum::storage::{CrashMode, OpenMode, SimStorage, Storage};
use vellum::{Error, Metadata, NewMessage, ReadFrom, ReadRequest, Vellum};

/// The damaged channel and a neighbour in the same shard (`co`).
const ID: &str = "corrupted";
const NEIGHBOUR: &str = "cobalt";
const MESSAGES: usize = 10;
/// The message the damage hits.
const VICTIM: usize = 4;

/// Reads `request` of `id`, keeping every message returned before an error, and the error.
fn read_until_error(store: &Vellum, id: &str, request: &ReadRequest) -> (Vec<Msg>, Option<Error>) {
    let mut messages = Vec::new();
    for m in store.read(id, request).unwrap() {
        match m {
            Ok(m) => messages.push(Msg(m.seq, m.key, m.data)),
            Err(e) => return (messages, Some(e)),
        }
    }
    (messages, None)
}

fn read_messages(store: &Vellum, id: &str) -> Vec<Msg> {
    read_all(store, id).into_iter().map(Msg::from).collect()
}

/// What was written: the messages, the offset of each, and the neighbour's.
struct Written {
    messages: Vec<Msg>,
    offsets: Vec<u64>,
    neighbour: Vec<Msg>,
}

/// Writes the channel (each message with its own key, and a metadata amendment in the
/// middle) and its neighbour. With `close`, closes the store cleanly (everything in the
/// channel file); otherwise checkpoints, appends two more messages that stay in the
/// journal, and leaves the store open.
fn write_channel(sim: &SimStorage, close: bool) -> (Option<Vellum>, Written) {
    provision(sim);
    let store = open(sim);
    let mut written = Written {
        messages: Vec::new(),
        offsets: Vec::new(),
        neighbour: Vec::new(),
    };
    let mut append = |store: &Vellum, i: usize| {
        let data = format!("message {i}: {}", "0123456789".repeat(2 + i % 3)).into_bytes();
        let key = format!("key of message {i}").into_bytes();
        let ack = store
            .append_batch(ID, &[NewMessage::with_key(&data, &key)])
            .unwrap()
            .remove(0);
        written.messages.push(Msg(ack.seq, key, data));
        written.offsets.push(ack.position.offset);
    };
    for i in 0..MESSAGES {
        append(&store, i);
        if i == 2 {
            let args = serde_json::json!([true]);
            assert!(store.amend(ID, "ALLOW_LINE_DELETION", &args).unwrap());
        }
    }
    let ack = store.append(NEIGHBOUR, b"neighbour").unwrap();
    written
        .neighbour
        .push(Msg(ack.seq, ack.key, b"neighbour".to_vec()));
    if close {
        store.close();
        return (None, written);
    }
    store.checkpoint().unwrap();
    for i in MESSAGES..MESSAGES + 2 {
        append(&store, i);
    }
    (Some(store), written)
}

/// The damage to do to the channel file at rest.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Flip bit `bit` of the byte `at` bytes into the victim record.
    Flip { at: u64, bit: u8 },
    /// Zero `len` bytes from `at` bytes into the victim record (`None`: to the end).
    Zero { at: u64, len: Option<u64> },
}

fn damage(image: &SimStorage, path: &Path, record: u64, damage: Damage) {
    match damage {
        Damage::Flip { at, bit } => image.flip_bit(path, record + at, bit),
        Damage::Zero { at, len } => {
            let file = image.open(path, OpenMode::ReadWrite).unwrap();
            let len = len.unwrap_or_else(|| file.len().unwrap() - record - at);
            file.write_all_at(&vec![0; len as usize], record + at)
                .unwrap();
            file.sync_data().unwrap();
        }
    }
}

/// The places in a message record to damage: its length (low byte, and high bit), its
/// checksum, its kind, its seq, its key and the middle of its data.
fn damages(record_len: u64) -> Vec<Damage> {
    vec![
        Damage::Flip { at: 0, bit: 0 },
        Damage::Flip { at: 0, bit: 6 },
        Damage::Flip { at: 3, bit: 7 },
        Damage::Flip { at: 5, bit: 3 },
        Damage::Flip { at: 8, bit: 1 },
        Damage::Flip { at: 10, bit: 0 },
        Damage::Flip { at: 27, bit: 5 },
        Damage::Flip {
            at: record_len / 2 + 9,
            bit: 2,
        },
        Damage::Flip {
            at: record_len - 1,
            bit: 4,
        },
        Damage::Zero {
            at: record_len / 2,
            len: Some(16),
        },
        Damage::Zero {
            at: 0,
            len: Some(8),
        },
        Damage::Zero { at: 0, len: None },
    ]
}

/// Opens the damaged image, whose channel file the load will find holding `at_load`,
/// and checks that the victim and everything after it are reported, saved and never
/// returned, and that the channel goes on.
fn check_damaged(image: &SimStorage, written: &Written, at_load: &[u8], what: &str) {
    let path = live_path(ID);
    let store = open(image);
    let kept = &written.messages[..VICTIM];
    assert_eq!(
        read_messages(&store, ID),
        kept,
        "{what}: not exactly the messages before the damage"
    );
    let (start, end) = (written.offsets[VICTIM], at_load.len() as u64);
    let lost = store.lost_ranges();
    assert_eq!(lost.len(), 1, "{what}: {lost:?}");
    let range = &lost[0];
    assert_eq!(
        (&range.path, range.start, range.end),
        (&path, start, end),
        "{what}: the reported range ({})",
        range.reason
    );
    let saved = range.saved_as.as_ref().expect("the range is saved");
    assert!(saved.starts_with(format!("{ROOT}/lost+found")), "{saved:?}");
    assert_eq!(
        image.read_file(saved).as_deref(),
        Some(&at_load[start as usize..]),
        "{what}: the saved bytes"
    );
    assert_eq!(
        read_messages(&store, NEIGHBOUR),
        written.neighbour,
        "{what}"
    );
    // Reading from the damaged seq on finds nothing (it is gone), not garbage.
    let (from_victim, error) = read_until_error(&store, ID, &ReadFrom::Seq(VICTIM as u64).into());
    assert_eq!((from_victim, error.map(|e| e.to_string())), (vec![], None));
    let ack = store.append(ID, b"after the damage").unwrap();
    assert!(ack.seq > kept.last().unwrap().0, "{what}: seq {}", ack.seq);
    let mut expected = kept.to_vec();
    expected.push(Msg(ack.seq, ack.key.clone(), b"after the damage".to_vec()));
    assert_eq!(read_messages(&store, ID), expected, "{what}");
    drop(store);
    let store = open(image);
    assert_eq!(
        read_messages(&store, ID),
        expected,
        "{what}: after reopening"
    );
    assert_eq!(store.lost_ranges(), vec![], "{what}: reported again");
}

#[test]
fn damage_in_a_cold_message_is_reported_and_never_returned() {
    let sim = SimStorage::new();
    let (_, written) = write_channel(&sim, true);
    let path = live_path(ID);
    let record_len = written.offsets[VICTIM + 1] - written.offsets[VICTIM];
    for d in damages(record_len) {
        let image = sim.crash(CrashMode::DropUnsynced);
        damage(&image, &path, written.offsets[VICTIM], d);
        let at_load = image.read_file(&path).unwrap();
        check_damaged(&image, &written, &at_load, &format!("{d:?}"));
    }
}

#[test]
fn damage_below_replayed_journal_entries_is_reported_and_never_returned() {
    let sim = SimStorage::new();
    let (store, written) = write_channel(&sim, false);
    // Power loss: the last two messages are only in the journal. Opening replays them
    // after the damaged record, so the damaged range runs to their end.
    let _ = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let path = live_path(ID);
    let replayed = {
        let image = sim.crash(CrashMode::DropUnsynced);
        drop(open(&image));
        image.read_file(&path).unwrap()
    };
    assert!(
        replayed.len() as u64 > written.offsets[MESSAGES + 1],
        "the replay wrote the journal's messages"
    );
    let record_len = written.offsets[VICTIM + 1] - written.offsets[VICTIM];
    for d in damages(record_len) {
        let image = sim.crash(CrashMode::DropUnsynced);
        damage(&image, &path, written.offsets[VICTIM], d);
        let mut at_load = image.read_file(&path).unwrap();
        assert_eq!(
            at_load.len() as u64,
            written.offsets[MESSAGES],
            "checkpointed part"
        );
        at_load.extend_from_slice(&replayed[at_load.len()..]);
        check_damaged(&image, &written, &at_load, &format!("{d:?}"));
    }
}

#[test]
fn damage_met_by_a_reader_of_a_loaded_channel_is_an_error_never_data() {
    let sim = SimStorage::new();
    let (store, written) = write_channel(&sim, false);
    let store = store.unwrap();
    store.checkpoint().unwrap(); // every message is in the file now
    assert_eq!(read_messages(&store, ID), written.messages); // loaded and cached
    let record_len = written.offsets[VICTIM + 1] - written.offsets[VICTIM];
    sim.flip_bit(&live_path(ID), written.offsets[VICTIM] + record_len / 2, 0);
    let (messages, error) = read_until_error(&store, ID, &ReadRequest::all());
    assert_eq!(messages, written.messages[..VICTIM]);
    match error {
        Some(Error::Corrupted { offset, .. }) => assert_eq!(offset, written.offsets[VICTIM]),
        other => panic!("expected Error::Corrupted at the damaged record, got {other:?}"),
    }
    // Reading from the damaged message on fails at once; after it, messages are intact.
    let (messages, error) = read_until_error(&store, ID, &ReadFrom::Seq(VICTIM as u64).into());
    assert_eq!(messages, vec![]);
    assert!(matches!(error, Some(Error::Corrupted { .. })), "{error:?}");
    let (messages, error) = read_until_error(&store, ID, &ReadFrom::Seq(VICTIM as u64 + 1).into());
    assert_eq!(
        (messages, error.map(|e| e.to_string())),
        (written.messages[VICTIM + 1..].to_vec(), None)
    );
}

#[test]
fn a_damaged_header_makes_the_channel_an_error_not_an_empty_channel() {
    let sim = SimStorage::new();
    let (_, written) = write_channel(&sim, true);
    let image = sim.crash(CrashMode::DropUnsynced);
    image.flip_bit(&live_path(ID), 20, 1); // the epoch
    let store = open(&image);
    let read = store.read(ID, &ReadRequest::all()).map(|h| h.count());
    assert!(
        matches!(read, Err(Error::Corrupted { .. })),
        "read of a channel with a damaged header: {read:?}"
    );
    let append = store.append(ID, b"must not start a fresh channel");
    assert!(
        matches!(append, Err(Error::Corrupted { .. })),
        "append to a channel with a damaged header: {append:?}"
    );
    assert!(store.create(ID, Metadata::new()).is_err());
    assert_eq!(read_messages(&store, NEIGHBOUR), written.neighbour);
    drop(store);
    // Nothing was overwritten: the file still holds every message after its header.
    let bytes = image.read_file(&live_path(ID)).unwrap();
    for m in &written.messages {
        assert!(bytes.windows(m.2.len()).any(|w| w == m.2), "{m:?} is gone");
    }
}
