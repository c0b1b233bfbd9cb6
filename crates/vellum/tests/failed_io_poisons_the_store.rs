//! Proves that a failed write or fsync poisons the store and loses nothing acknowledged
//! (docs/format.md §5): after an injected failure of the journal (fsync, short write,
//! full disk) or of a channel file (write or fsync during a checkpoint, a tail written at
//! its size limit, a rewrite's forced checkpoint), the write that met it fails with
//! `Error::Poisoned`, so does every later append, create, amend, rewrite and checkpoint,
//! and reads of acknowledged messages still work and return exactly them. Reopening —
//! after a crash that drops or tears unsynced writes, or after a plain close — brings
//! back every acknowledged message intact (the failed write may or may not be there,
//! whole, since it was never acknowledged), and the reopened store accepts writes.

mod common;

use common::{open, provision, read_all};
use serde_json::json;
use std::fmt::Debug;
use std::io::ErrorKind;
use vellum::storage::{CrashMode, Fault, FaultKind, SimStorage};
use vellum::{Error, Metadata, NewMessage, Result, Selector, Vellum};

/// The channel the failure hits, and another written before it (shard `po`).
const ID: &str = "poisoned";
const NEIGHBOUR: &str = "pony";
/// Channels that a poisoned store must refuse to create.
const REFUSED: [&str; 2] = ["pofresh", "pocreate"];
const DOOMED: &[u8] = b"the write that meets the failure";
const TORN_SEEDS: [u64; 3] = [7, 8, 9];

/// A message: seq and data, compared byte for byte.
#[derive(Clone, PartialEq, Eq)]
struct Msg(u64, Vec<u8>);

impl Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = String::from_utf8_lossy(&self.1);
        write!(f, "#{} {:?}", self.0, &data[..data.len().min(40)])
    }
}

fn read_messages(store: &Vellum, id: &str) -> Vec<Msg> {
    read_all(store, id)
        .into_iter()
        .map(|m| Msg(m.seq, m.data))
        .collect()
}

fn append(store: &Vellum, id: &str, data: &[u8]) -> Msg {
    Msg(store.append(id, data).unwrap().seq, data.to_vec())
}

/// What the store acknowledged before the failure.
struct Setup {
    store: Vellum,
    acked: Vec<Msg>,
    neighbour: Vec<Msg>,
}

/// A store whose channel is partly checkpointed into its file and partly only in the
/// journal (with its tail still to write), and a neighbour channel.
fn setup(sim: &SimStorage) -> Setup {
    provision(sim);
    let store = open(sim);
    let mut acked = Vec::new();
    for i in 0..3 {
        acked.push(append(&store, ID, format!("cold message {i}").as_bytes()));
    }
    let neighbour = vec![append(&store, NEIGHBOUR, b"neighbour")];
    store.checkpoint().unwrap();
    // A checkpoint of an empty journal: waits out any background work the first one
    // started, so the injected fault meets the operation under test.
    store.checkpoint().unwrap();
    for i in 3..6 {
        acked.push(append(
            &store,
            ID,
            format!("journal message {i}").as_bytes(),
        ));
    }
    Setup {
        store,
        acked,
        neighbour,
    }
}

fn expect_poisoned<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::Poisoned { .. }) => {}
        other => panic!("{what}: expected Error::Poisoned, got {other:?}"),
    }
}

/// Every kind of write fails with `Poisoned`; reads still return exactly `acked`.
fn writes_are_refused_and_reads_still_work(store: &Vellum, setup: &Setup, acked: &[Msg]) {
    let batch = [NewMessage::new(b"refused")];
    expect_poisoned(store.append(ID, b"refused"), "append");
    expect_poisoned(store.append_batch(ID, &batch), "append_batch");
    expect_poisoned(
        store.append(REFUSED[0], b"refused"),
        "append to a new channel",
    );
    expect_poisoned(store.create(REFUSED[1], Metadata::new()), "create");
    expect_poisoned(
        store.amend(ID, "ALLOW_LINE_DELETION", &json!([true])),
        "amend",
    );
    expect_poisoned(store.clear(ID), "clear");
    expect_poisoned(store.trim(ID, &Selector::Seq(1)), "trim");
    expect_poisoned(store.delete_message(ID, &Selector::Seq(1)), "delete");
    expect_poisoned(store.remove(ID), "remove");
    expect_poisoned(store.archive(ID, "refused"), "archive");
    expect_poisoned(store.restore(ID), "restore");
    expect_poisoned(store.remove_archived(ID), "remove_archived");
    expect_poisoned(store.checkpoint(), "checkpoint");
    assert_eq!(read_messages(store, ID), acked, "reads while poisoned");
    assert_eq!(
        read_messages(store, NEIGHBOUR),
        setup.neighbour,
        "reads while poisoned"
    );
    assert!(store.exists(ID).unwrap());
    assert_eq!(store.info(ID).unwrap().messages, acked.len() as u64);
}

/// The reopened store holds every acknowledged message, maybe the doomed one (whole),
/// nothing else, and accepts writes again.
fn check_reopened(disk: &SimStorage, neighbour: &[Msg], acked: &[Msg], what: &str) {
    let store = open(disk);
    let messages = read_messages(&store, ID);
    assert!(
        messages.len() >= acked.len() && messages[..acked.len()] == *acked,
        "{what}: acknowledged messages are missing or changed: {messages:?}, acknowledged {acked:?}"
    );
    let extra = &messages[acked.len()..];
    let doomed = Msg(acked.len() as u64, DOOMED.to_vec());
    assert!(
        extra.is_empty() || extra == [doomed],
        "{what}: unexpected messages after the acknowledged ones: {extra:?}"
    );
    assert_eq!(read_messages(&store, NEIGHBOUR), neighbour, "{what}");
    for id in REFUSED {
        assert!(!store.exists(id).unwrap(), "{what}: refused {id} exists");
    }
    let next = store
        .append(ID, b"after reopening")
        .unwrap_or_else(|e| panic!("{what}: append after reopening: {e}"));
    assert_eq!(next.seq, messages.len() as u64, "{what}");
    let last = read_messages(&store, ID).pop().unwrap();
    assert_eq!(last, Msg(next.seq, b"after reopening".to_vec()), "{what}");
}

/// What meets the injected failure.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// An append: its journal write or sync fails, so it is never acknowledged.
    Append,
    /// An explicit checkpoint.
    Checkpoint,
    /// An append that fills the channel's in-memory tail, which is then written to the
    /// channel file after the journal sync: it may be acknowledged (the journal has it).
    TailFillingAppend,
    /// A clear, whose forced checkpoint fails: the clear must not go ahead.
    Clear,
}

fn run(fault: Fault, trigger: Trigger, close_instead_of_crash: bool) {
    let what = format!(
        "{:?} on {:?} met by {trigger:?}, then {}",
        fault.kind,
        fault.path_contains.as_deref().unwrap_or("any path"),
        if close_instead_of_crash {
            "close"
        } else {
            "crash"
        }
    );
    let sim = SimStorage::new();
    let setup = setup(&sim);
    let store = &setup.store;
    let mut acked = setup.acked.clone();
    sim.inject(fault);
    match trigger {
        Trigger::Append => expect_poisoned(store.append(ID, DOOMED), &what),
        Trigger::Checkpoint => expect_poisoned(store.checkpoint(), &what),
        Trigger::TailFillingAppend => {
            // 20 KB in messages small enough to stay inline (not in the message store).
            let bodies: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i; 4000]).collect();
            let batch: Vec<NewMessage<'_>> = bodies.iter().map(|b| NewMessage::new(b)).collect();
            match store.append_batch(ID, &batch) {
                Ok(acks) => acked.extend(acks.iter().zip(bodies).map(|(a, b)| Msg(a.seq, b))),
                Err(e) => expect_poisoned(Err::<(), _>(e), &what),
            }
        }
        Trigger::Clear => expect_poisoned(store.clear(ID), &what),
    }
    writes_are_refused_and_reads_still_work(store, &setup, &acked);
    if close_instead_of_crash {
        let neighbour = setup.neighbour.clone();
        drop(setup); // closes the poisoned store
        check_reopened(&sim, &neighbour, &acked, &what);
        return;
    }
    let mut modes = vec![CrashMode::DropUnsynced];
    modes.extend(TORN_SEEDS.map(|seed| CrashMode::Torn { seed }));
    let images: Vec<_> = modes.iter().map(|&mode| (mode, sim.crash(mode))).collect();
    setup.store.close(); // fails harmlessly against the dead storage
    for (mode, image) in images {
        let what = format!("{what} ({mode:?})");
        check_reopened(&image, &setup.neighbour, &acked, &what);
    }
}

/// Runs the scenario twice: ending in a crash, and in a plain close.
fn poisons_and_loses_nothing(fault: Fault, trigger: Trigger) {
    run(fault.clone(), trigger, false);
    run(fault, trigger, true);
}

fn on(kind: FaultKind, path: &str) -> Fault {
    Fault {
        path_contains: Some(path.into()),
        ..Fault::new(kind)
    }
}

#[test]
fn a_failed_journal_fsync_poisons_the_store_and_loses_nothing_acknowledged() {
    poisons_and_loses_nothing(on(FaultKind::SyncData, "/journal/"), Trigger::Append);
}

#[test]
fn a_short_journal_write_poisons_the_store_and_loses_nothing_acknowledged() {
    poisons_and_loses_nothing(on(FaultKind::Write, "/journal/"), Trigger::Append);
}

#[test]
fn a_full_disk_under_the_journal_poisons_the_store_and_loses_nothing_acknowledged() {
    let fault = Fault {
        error: ErrorKind::StorageFull,
        ..on(FaultKind::Write, "/journal/")
    };
    poisons_and_loses_nothing(fault, Trigger::Append);
}

#[test]
fn a_failed_channel_write_during_a_checkpoint_poisons_the_store_and_loses_nothing() {
    poisons_and_loses_nothing(on(FaultKind::Write, "/channels/"), Trigger::Checkpoint);
}

#[test]
fn a_full_disk_under_a_channel_file_during_a_checkpoint_poisons_the_store_and_loses_nothing() {
    let fault = Fault {
        error: ErrorKind::StorageFull,
        ..on(FaultKind::Write, "/channels/")
    };
    poisons_and_loses_nothing(fault, Trigger::Checkpoint);
}

#[test]
fn a_failed_channel_fsync_during_a_checkpoint_poisons_the_store_and_loses_nothing() {
    // The checkpoint thread meets the failure, not the thread waiting for the
    // checkpoint: repeat, so that every interleaving gets its chance.
    for _ in 0..20 {
        poisons_and_loses_nothing(on(FaultKind::SyncData, "/channels/"), Trigger::Checkpoint);
    }
}

#[test]
fn a_failed_fsync_of_the_next_journal_file_poisons_the_store_and_loses_nothing() {
    // Nothing is waiting for a journal sync: the next one is the new journal file's,
    // which the checkpoint starts.
    poisons_and_loses_nothing(on(FaultKind::SyncData, "/journal/"), Trigger::Checkpoint);
}

#[test]
fn a_failed_tail_write_after_the_journal_sync_poisons_the_store_and_loses_nothing() {
    poisons_and_loses_nothing(
        on(FaultKind::Write, "/channels/"),
        Trigger::TailFillingAppend,
    );
}

#[test]
fn a_rewrite_whose_forced_checkpoint_fails_is_refused_and_changes_nothing() {
    // As above, the failure is met by another thread than the one waiting for the
    // checkpoint: repeat, so that every interleaving gets its chance.
    for _ in 0..20 {
        poisons_and_loses_nothing(on(FaultKind::SyncData, "/channels/"), Trigger::Clear);
        poisons_and_loses_nothing(on(FaultKind::Write, "/channels/"), Trigger::Clear);
    }
}
