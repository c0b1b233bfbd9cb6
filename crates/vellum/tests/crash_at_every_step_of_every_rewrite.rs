//! Proves that every rewrite — clear, trim (by seq and by key), delete one message, remove,
//! archive, restore and remove-archived — is crash-atomic (docs/format.md §4).
//!
//! For each operation the test counts the mutating storage steps it takes on a
//! deterministic setup, then, for every k from 0 to that count, rebuilds the same setup on
//! a fresh `SimStorage`, lets the operation run exactly k steps before the "process" dies,
//! and simulates power loss (dropping every unsynced write, and for some k also tearing the
//! unsynced writes with several seeds). After reopening, the channel must be exactly its
//! old state or exactly its new state: byte-identical messages with their seqs, keys and
//! times, equal metadata, the same first and next seq, archived or not — never a mix, and
//! never both a live and an archived file. An operation that returned `Ok` must be found
//! done. A neighbouring channel in the same shard must be untouched, and an append after
//! reopening must work and get a seq above every seq acknowledged before (or seq 0 in a
//! fresh channel when the outcome is "removed").

mod common;

use common::{ROOT, archive_path, live_path, open, owner, provision, read_all};
use serde_json::json;
use std::path::PathBuf;
use vellum::storage::{CrashMode, SimStorage, Storage};
use vellum::{Metadata, NewMessage, Result, Selector, Vellum};

/// The channel under test and a neighbour in the same shard (`cr`).
const ID: &str = "crashy";
const NEIGHBOUR: &str = "cranky";
const REASON: &str = "archived by the test";
const MESSAGES: usize = 6;
/// Seeds used for torn crashes (on every other k, and on the last one).
const TORN_SEEDS: [u64; 3] = [1, 2, 3];

/// One message as read back, without its position (a rewrite changes the epoch).
#[derive(Clone, PartialEq, Eq)]
struct Msg {
    seq: u64,
    key: Vec<u8>,
    time_ms: u64,
    data: Vec<u8>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {:?} @{} {:?}",
            self.seq,
            String::from_utf8_lossy(&self.key),
            self.time_ms,
            String::from_utf8_lossy(&self.data)
        )
    }
}

fn read_messages(store: &Vellum, id: &str) -> Vec<Msg> {
    read_all(store, id)
        .into_iter()
        .map(|m| Msg {
            seq: m.seq,
            key: m.key,
            time_ms: m.time_ms,
            data: m.data,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Place {
    Live,
    Archived(String),
    Gone,
}

/// Everything observable about the channel under test.
#[derive(Debug, Clone, PartialEq)]
struct ChannelState {
    place: Place,
    messages: Vec<Msg>,
    metadata: Option<Metadata>,
    first_seq: u64,
    next_seq: u64,
}

impl ChannelState {
    /// What differs between `self` and `other`, field by field.
    fn differences(&self, other: &ChannelState) -> String {
        let mut out = Vec::new();
        if self.place != other.place {
            out.push(format!("place {:?} vs {:?}", self.place, other.place));
        }
        if self.first_seq != other.first_seq {
            out.push(format!(
                "first_seq {} vs {}",
                self.first_seq, other.first_seq
            ));
        }
        if self.next_seq != other.next_seq {
            out.push(format!("next_seq {} vs {}", self.next_seq, other.next_seq));
        }
        if self.metadata != other.metadata {
            out.push(format!(
                "metadata {:?} vs {:?}",
                self.metadata, other.metadata
            ));
        }
        if self.messages != other.messages {
            out.push(format!(
                "messages {:?} vs {:?}",
                self.messages, other.messages
            ));
        }
        out.join("; ")
    }

    fn gone() -> Self {
        ChannelState {
            place: Place::Gone,
            messages: Vec::new(),
            metadata: None,
            first_seq: 0,
            next_seq: 0,
        }
    }
}

/// The live channel's content.
fn live_state(store: &Vellum) -> ChannelState {
    let info = store.info(ID).unwrap();
    ChannelState {
        place: Place::Live,
        messages: read_messages(store, ID),
        metadata: Some(store.metadata(ID).unwrap()),
        first_seq: info.first_seq,
        next_seq: info.next_seq,
    }
}

/// What a reopened store holds for the channel. An archived channel is restored to
/// read its content, so call this only on a store that is about to be thrown away.
fn observe(store: &Vellum, disk: &SimStorage, what: &str) -> ChannelState {
    // The first use of the channel finishes an archive or restore that a crash cut
    // between its two directory syncs (docs/format.md §4.3); after it, one name is left.
    let exists = store.exists(ID).unwrap();
    let live_file = disk.stat(&live_path(ID)).unwrap().is_some();
    let archived_file = disk.stat(&archive_path(ID)).unwrap().is_some();
    assert!(
        !(live_file && archived_file),
        "{what}: both a live and an archived file of the channel survived (a later remove \
         would resurrect the archived copy)"
    );
    if exists {
        return live_state(store);
    }
    if store.is_archived(ID).unwrap() {
        let info = store.info(ID).unwrap();
        let reason = info
            .archived
            .clone()
            .expect("an archived channel has a reason");
        store
            .restore(ID)
            .unwrap_or_else(|e| panic!("{what}: restoring to inspect the archived copy: {e}"));
        let restored = live_state(store);
        assert_eq!(
            (info.messages, info.first_seq, info.next_seq),
            (
                restored.messages.len() as u64,
                restored.first_seq,
                restored.next_seq
            ),
            "{what}: the archived copy's summary disagrees with its content"
        );
        return ChannelState {
            place: Place::Archived(reason),
            ..restored
        };
    }
    ChannelState::gone()
}

/// The setup an operation runs on, and what it knew before the operation.
struct Setup {
    store: Vellum,
    before: ChannelState,
    neighbour: Vec<Msg>,
    /// The highest seq ever acknowledged in the channel under test.
    max_seq: u64,
    /// The epoch of the live file before the operation (names the pre-trim copy).
    epoch: u64,
}

/// Where the channel's latest writes are when the operation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Journal {
    /// Only in the journal: the operation's forced checkpoint moves them into the file
    /// (and starts a new journal file) before the rewrite proper.
    Holding,
    /// Already checkpointed: the operation's steps are the rewrite's alone, and nothing
    /// runs in the background, so every run takes exactly the same steps.
    Empty,
}

/// Builds the same store every time: the channel under test with metadata amendments
/// between its messages, part of it checkpointed into its file and the rest only in the
/// journal (or all of it checkpointed), a neighbour written alongside, and (for restore
/// and remove-archived) the channel archived.
fn setup(sim: &SimStorage, archived: bool, journal: Journal) -> Setup {
    // The data directory exists durably beforehand, as a provisioned one does (a crash
    // right after Vellum creates it is torn_tail_is_truncated_and_reported.rs's business).
    provision(sim);
    let store = open(sim);
    let initial = json!({"channel": ID, "owners": [owner('O')], "validateKey": "vk"});
    let initial = Metadata::from_object(initial.as_object().unwrap().clone());
    store.create(ID, initial).unwrap();
    let mut max_seq = 0;
    let mut epoch = 0;
    for i in 0..MESSAGES {
        let data = format!("message {i} {}", "x".repeat(i * 7));
        let key = format!("key-{i}");
        let ack = store
            .append_batch(ID, &[NewMessage::with_key(data.as_bytes(), key.as_bytes())])
            .unwrap()
            .remove(0);
        max_seq = ack.seq;
        epoch = ack.position.epoch;
        store
            .append(NEIGHBOUR, format!("neighbour {i}").as_bytes())
            .unwrap();
        match i {
            1 => assert!(store.amend(ID, "ADD_OWNERS", &json!([owner('P')])).unwrap()),
            // Part of the channel is cold (in its file), the rest only in the journal.
            // The second checkpoint, of an empty journal, waits out any background work
            // the first one started, so the steps counted below are the operation's own.
            2 => {
                store.checkpoint().unwrap();
                store.checkpoint().unwrap();
            }
            3 => assert!(
                store
                    .amend(ID, "ALLOW_LINE_DELETION", &json!([true]))
                    .unwrap()
            ),
            4 => assert!(store.amend(ID, "RESTRICT_ACCESS", &json!([true])).unwrap()),
            _ => {}
        }
    }
    let mut before = live_state(&store);
    assert_eq!(before.messages.len(), MESSAGES);
    if archived {
        store.archive(ID, REASON).unwrap();
        before.place = Place::Archived(REASON.into());
    }
    if archived || journal == Journal::Empty {
        // As above: the last checkpoint finds an empty journal and starts nothing.
        store.checkpoint().unwrap();
        store.checkpoint().unwrap();
    }
    let neighbour = read_messages(&store, NEIGHBOUR);
    Setup {
        store,
        before,
        neighbour,
        max_seq,
        epoch,
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Clear,
    TrimToSeq(u64),
    TrimToKey(usize),
    DeleteBySeq(u64),
    DeleteByKey(usize),
    Remove,
    Archive,
    Restore,
    RemoveArchived,
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

impl Op {
    fn needs_archived_setup(self) -> bool {
        matches!(self, Op::Restore | Op::RemoveArchived)
    }

    fn run(self, store: &Vellum) -> Result<()> {
        match self {
            Op::Clear => store.clear(ID),
            Op::TrimToSeq(seq) => store.trim(ID, &Selector::Seq(seq)),
            Op::TrimToKey(i) => store.trim(ID, &Selector::Key(key(i))),
            Op::DeleteBySeq(seq) => store.delete_message(ID, &Selector::Seq(seq)),
            Op::DeleteByKey(i) => store.delete_message(ID, &Selector::Key(key(i))),
            Op::Remove => store.remove(ID),
            Op::Archive => store.archive(ID, REASON),
            Op::Restore => store.restore(ID),
            Op::RemoveArchived => store.remove_archived(ID),
        }
    }

    /// The state the operation leads to from `old`.
    fn expected(self, old: &ChannelState) -> ChannelState {
        let mut new = old.clone();
        let trim_to = |new: &mut ChannelState, seq: u64| {
            new.messages.retain(|m| m.seq >= seq);
            new.first_seq = seq;
        };
        match self {
            Op::Clear => {
                new.messages.clear();
                new.first_seq = old.next_seq;
            }
            Op::TrimToSeq(seq) => trim_to(&mut new, seq),
            Op::TrimToKey(i) => {
                let seq = old.messages.iter().find(|m| m.key == key(i)).unwrap().seq;
                trim_to(&mut new, seq);
            }
            // Seqs never go back: deleting a message, even the last, keeps next_seq.
            Op::DeleteBySeq(seq) => new.messages.retain(|m| m.seq != seq),
            Op::DeleteByKey(i) => new.messages.retain(|m| m.key != key(i)),
            Op::Remove | Op::RemoveArchived => new = ChannelState::gone(),
            Op::Archive => new.place = Place::Archived(REASON.into()),
            Op::Restore => new.place = Place::Live,
        }
        new
    }
}

/// Runs `op` on a fresh setup and returns how many mutating storage steps it took.
fn count_steps(op: Op, journal: Journal) -> u64 {
    let sim = SimStorage::new();
    let setup = setup(&sim, op.needs_archived_setup(), journal);
    let start = sim.mutating_ops();
    op.run(&setup.store)
        .unwrap_or_else(|e| panic!("{op:?} fails without any crash: {e}"));
    let steps = sim.mutating_ops() - start;
    let expected = op.expected(&setup.before);
    setup.store.close();
    // The operation did what the model says, without a crash.
    let image = sim.crash(CrashMode::DropUnsynced);
    let after = open(&image);
    let state = observe(&after, &image, "no crash");
    assert!(
        state == expected,
        "{op:?} without a crash: found vs expected: {}",
        state.differences(&expected)
    );
    steps
}

/// Checks the store reopened on one post-crash image.
fn check_outcome(op: Op, setup: &Setup, op_ok: bool, disk: &SimStorage, what: &str) {
    let store = open(disk);
    let old = &setup.before;
    let new = op.expected(old);
    let state = observe(&store, disk, what);
    if op_ok {
        assert!(
            state == new,
            "{what}: {op:?} returned Ok, yet after the crash it is not done: found vs new: {}",
            state.differences(&new)
        );
    } else {
        assert!(
            state == *old || state == new,
            "{what}: the channel is neither its old nor its new state\n\
             found vs old: {}\nfound vs new: {}",
            state.differences(old),
            state.differences(&new)
        );
    }
    if state == new && matches!(op, Op::TrimToSeq(_) | Op::TrimToKey(_)) {
        // A trim that happened left its pre-trim copy, holding every old message.
        let copy = PathBuf::from(format!("{ROOT}/trimmed/cr/{ID}.{}.vlog", setup.epoch));
        let bytes = disk
            .read_file(&copy)
            .unwrap_or_else(|| panic!("{what}: trimmed, but {} is missing", copy.display()));
        for m in &old.messages {
            assert!(
                bytes.windows(m.data.len()).any(|w| w == m.data),
                "{what}: the pre-trim copy lacks message {}",
                m.seq
            );
        }
    }
    assert_eq!(
        read_messages(&store, NEIGHBOUR),
        setup.neighbour,
        "{what}: the neighbouring channel changed"
    );
    // The observation restored an archived channel: it is live now unless it is gone.
    let ack = store
        .append(ID, b"after the crash")
        .unwrap_or_else(|e| panic!("{what}: append after reopening: {e}"));
    let after = read_messages(&store, ID);
    if state.place == Place::Gone {
        assert_eq!(ack.seq, 0, "{what}: a removed channel starts afresh");
        assert_eq!(
            after.len(),
            1,
            "{what}: a removed channel came back: {after:?}"
        );
        assert_eq!(store.metadata(ID).unwrap(), Metadata::new(), "{what}");
    } else {
        assert!(
            ack.seq > setup.max_seq,
            "{what}: append got seq {} but seq {} was acknowledged before",
            ack.seq,
            setup.max_seq
        );
        assert_eq!(ack.seq, state.next_seq, "{what}");
        assert_eq!(after[..after.len() - 1], state.messages[..], "{what}");
    }
    let last = after.last().unwrap();
    assert_eq!(
        (last.seq, &last.key, &last.data[..]),
        (ack.seq, &ack.key, &b"after the crash"[..]),
        "{what}"
    );
}

/// Runs `op` on a fresh setup that dies after `k` more storage steps, then checks the
/// outcome of several crashes of it. Returns whether the operation returned `Ok`.
fn crash_after(op: Op, journal: Journal, k: u64, steps: u64) -> bool {
    let sim = SimStorage::new();
    let setup = setup(&sim, op.needs_archived_setup(), journal);
    sim.crash_after_ops(k);
    let result = op.run(&setup.store);
    let mut modes = vec![CrashMode::DropUnsynced];
    if k.is_multiple_of(2) || result.is_ok() {
        modes.extend(TORN_SEEDS.map(|seed| CrashMode::Torn { seed }));
    }
    let images: Vec<_> = modes.iter().map(|&mode| (mode, sim.crash(mode))).collect();
    // Its close fails harmlessly against the dead storage.
    setup.store.close();
    for (mode, image) in images {
        let what =
            format!("{op:?} (journal {journal:?}), crash after {k} of {steps} steps ({mode:?})");
        check_outcome(op, &setup, result.is_ok(), &image, &what);
    }
    result.is_ok()
}

/// The whole sweep for one operation: a crash after each of its steps.
fn crash_at_every_step(op: Op) {
    // With every write checkpointed, the steps are the same in every run: each one is
    // the crash point of exactly one run.
    let steps = count_steps(op, Journal::Empty);
    assert!(steps > 0, "{op:?} took no storage steps");
    assert_eq!(
        count_steps(op, Journal::Empty),
        steps,
        "{op:?}: the same setup took another number of steps"
    );
    for k in 0..=steps {
        let ok = crash_after(op, Journal::Empty, k, steps);
        assert_eq!(
            ok,
            k == steps,
            "{op:?} returned {} with {k} of its {steps} storage steps allowed",
            if ok { "Ok" } else { "an error" }
        );
    }
    if op.needs_archived_setup() {
        return; // an archived channel has nothing in the journal
    }
    // With writes in the journal, the forced checkpoint comes first. Its steps are as
    // deterministic; background work it starts (if any) may interleave with the rest,
    // so the sweep goes on until the operation completes.
    let steps = count_steps(op, Journal::Holding);
    let mut k = 0;
    while !crash_after(op, Journal::Holding, k, steps) || k < steps {
        k += 1;
        assert!(
            k <= 2 * steps + 50,
            "{op:?} still fails with {k} storage steps allowed; it took {steps} without a crash"
        );
    }
}

#[test]
fn clear_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::Clear);
}

#[test]
fn trim_by_seq_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::TrimToSeq(3));
}

#[test]
fn trim_by_key_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::TrimToKey(2));
}

#[test]
fn deleting_a_middle_message_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::DeleteBySeq(2));
}

#[test]
fn deleting_the_last_message_is_all_or_nothing_and_never_reuses_its_seq() {
    crash_at_every_step(Op::DeleteByKey(MESSAGES - 1));
}

#[test]
fn remove_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::Remove);
}

#[test]
fn archive_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::Archive);
}

#[test]
fn restore_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::Restore);
}

#[test]
fn remove_archived_is_all_or_nothing_at_every_crash_point() {
    crash_at_every_step(Op::RemoveArchived);
}
