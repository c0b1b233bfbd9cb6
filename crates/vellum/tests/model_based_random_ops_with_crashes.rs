//! Proves, by seeded random testing against a model, that what Vellum acknowledges is
//! what it keeps: over a simulated filesystem, random appends (single and batches, with
//! and without client keys), creates, metadata amendments, clears, trims, deletes,
//! removes, archives, restores and removals of archives are run, interleaved with random
//! reads (from the start, a seq, a key, the last N, a range, a position), clean
//! reopens, crashes between operations (dropping unsynced writes, or tearing them),
//! crashes in the middle of an operation, and crashes in the middle of the recovery that
//! follows a crash. After every operation and every reopen, the store must match the
//! model: acknowledged ⇒ present, byte-identical and in order; seqs strictly increasing
//! and never reused across clear, trim and delete; positions from before a rewrite
//! answer `StalePosition`; metadata folded as CryptPad folds it; the right typed error
//! for every refused operation, which changes nothing; a channel live, archived or
//! absent (its files under `channels/` and `archive/` agreeing); `list` naming exactly the
//! live and the archived channels; no damaged range after a crash that kept exactly the
//! synced state, and no recovery at all after a clean close. An operation interrupted by
//! a crash may or may not have happened, but only wholly: the store must then match
//! exactly the model before it or exactly the model after it, never a mix.
//!
//! Faults too (docs/format.md §5): an operation runs with a failure armed — a failed or
//! short write, a failed fsync of a file or a directory, a failed set_len, rename,
//! remove, create or read, with EIO or ENOSPC, once or from then on, anywhere or in one
//! directory. A failed write or fsync of a file holding acknowledged data (journal,
//! channel file, store segment) must leave the store refusing writes (`Poisoned`) until
//! reopened; reads must still answer, from the state before or after the operation
//! (never a half); after the reopen (clean, or by a power failure) the operation is done
//! or not done, wholly, and done if it was acknowledged. The message store is compacted
//! at random points. And bit rot: a copy of the disk with one bit flipped anywhere (a
//! channel file, an archived one, a journal file, a store segment or snapshot) is opened
//! beside the run: whatever it returns must be what was acknowledged, byte for byte, and
//! whatever it no longer returns must be reported (a lost range, a `Corrupted` error,
//! or damage found by `verify`).
//!
//! `VELLUM_MODEL_SEEDS=<n>` runs more seeds, `VELLUM_MODEL_OPS=<n>` longer runs, and
//! `VELLUM_MODEL_SEED=<seed>` one seed only. A failure names its seed and operation index
//! and lists the operations before it; the store's background threads (journal
//! preparation) can shift a crash point by a step, so a seed replays nearly, not always
//! exactly, the same way: keep a failure as a script (see the regressions at the end).

mod common;

use common::{ROOT, archive_path, content_key, live_path};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use vellum::storage::{CrashMode, Fault, FaultKind, SimStorage, Storage};
use vellum::{
    Appended, Durability, Error, LostRange, Metadata, MetadataError, NewMessage, Options, Position,
    ReadFrom, ReadRequest, Scope, Selector, Vellum,
};

/// The channels the operations pick from: two sharing a shard, a one-character id, and
/// a CryptPad-like id.
const IDS: [&str; 4] = [
    "model-a",
    "model-b",
    "x",
    "Zq3+mEwZJm0bLu9G4vA7Kk2lqB-bQ8yH7nJ5sTcP1w==",
];
/// Seeds run by default, split between `PARTS` tests.
const SEEDS: u64 = 2000;
const PARTS: u64 = 4;
/// Messages at least this long keep their bodies in the message store.
const EMBED_BYTES_MAX: usize = 1500;
const OPS: usize = 150;
/// A seed run that takes longer than this is reported as hung.
const SEED_TIMEOUT: Duration = Duration::from_secs(120);

fn options() -> Options {
    Options {
        // Small, so that journal files rotate (and checkpoints run) during a run.
        journal_bytes_max: 64 * 1024,
        // About a fifth of the messages have their bodies in the message store, whose
        // small segments roll and get compacted (in the background) during a run.
        embed_bytes_max: EMBED_BYTES_MAX,
        store: vellum::StoreOptions {
            segment_bytes_max: 4 * 1024,
            ..vellum::StoreOptions::default()
        },
        ..common::options()
    }
}

fn owner_key(i: usize) -> String {
    common::owner(char::from(b'A' + i as u8))
}

// ---------------------------------------------------------------------------------------
// The model.

/// One message. Its position is known once acknowledged or read, until a rewrite.
#[derive(Clone)]
struct Msg {
    seq: u64,
    key: Vec<u8>,
    data: Vec<u8>,
    position: Option<Position>,
    /// Its body lives in the message store (it was appended at least
    /// `EMBED_BYTES_MAX` long and no archive has inlined it since).
    stored: bool,
}

impl PartialEq for Msg {
    fn eq(&self, other: &Self) -> bool {
        (self.seq, &self.key, &self.data) == (other.seq, &other.key, &other.data)
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = if self.data.len() > 12 {
            format!("{} bytes {:02x?}…", self.data.len(), &self.data[..6])
        } else {
            format!("{:?}", String::from_utf8_lossy(&self.data))
        };
        write!(
            f,
            "#{} key {:?} {data}",
            self.seq,
            String::from_utf8_lossy(&self.key)
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Chan {
    messages: Vec<Msg>,
    metadata: Map<String, Value>,
    first_seq: u64,
    next_seq: u64,
}

impl Chan {
    fn new(metadata: Map<String, Value>) -> Self {
        Chan {
            messages: Vec::new(),
            metadata,
            first_seq: 0,
            next_seq: 0,
        }
    }

    /// Forgets every position: a rewrite gave the channel a new epoch.
    fn rewritten(&mut self, stale: &mut Vec<Position>) {
        for m in &mut self.messages {
            if let Some(p) = m.position.take() {
                stale.push(p);
            }
        }
    }

    fn select(&self, which: &Selector) -> Result<usize, Fail> {
        match which {
            Selector::Seq(seq) => self
                .messages
                .iter()
                .position(|m| m.seq == *seq)
                .ok_or(Fail::SeqNotFound(*seq)),
            Selector::Key(key) => self
                .messages
                .iter()
                .position(|m| m.key == *key)
                .ok_or(Fail::KeyNotFound),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Slot {
    Absent,
    Live(Chan),
    Archived(Chan, String),
}

#[derive(Clone, Debug, PartialEq)]
struct Model {
    slots: BTreeMap<&'static str, Slot>,
    /// Positions issued before a rewrite or a removal of each channel.
    stale: BTreeMap<&'static str, Vec<Position>>,
}

impl Model {
    fn new() -> Self {
        Model {
            slots: IDS.iter().map(|id| (*id, Slot::Absent)).collect(),
            stale: IDS.iter().map(|id| (*id, Vec::new())).collect(),
        }
    }
}

/// A refusal, as the model predicts it.
#[derive(Clone, Debug, PartialEq)]
enum Fail {
    NotFound,
    Archived(String),
    AlreadyExists,
    RestoreConflict,
    NotArchived,
    SeqNotFound(u64),
    KeyNotFound,
    Trimmed { requested: u64, first_seq: u64 },
    StalePosition,
    Forbidden,
    Meta(MetaFail),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MetaFail {
    UnknownCommand,
    InvalidArguments,
    NoOwners,
    BadState,
}

/// The typed refusal an engine error is, or `None` for an I/O-level failure.
fn classify(e: &Error) -> Option<Fail> {
    Some(match e {
        Error::NotFound { .. } => Fail::NotFound,
        Error::Archived { reason, .. } => Fail::Archived(reason.clone()),
        Error::AlreadyExists { .. } => Fail::AlreadyExists,
        Error::RestoreConflict { .. } => Fail::RestoreConflict,
        Error::NotArchived { .. } => Fail::NotArchived,
        Error::SeqNotFound { seq, .. } => Fail::SeqNotFound(*seq),
        Error::KeyNotFound { .. } => Fail::KeyNotFound,
        Error::Trimmed {
            requested,
            first_seq,
            ..
        } => Fail::Trimmed {
            requested: *requested,
            first_seq: *first_seq,
        },
        Error::StalePosition { .. } => Fail::StalePosition,
        Error::Forbidden { .. } => Fail::Forbidden,
        Error::Metadata(m) => Fail::Meta(match m {
            MetadataError::UnknownCommand(_) => MetaFail::UnknownCommand,
            MetadataError::InvalidArguments { .. } => MetaFail::InvalidArguments,
            MetadataError::NoOwners { .. } => MetaFail::NoOwners,
            MetadataError::BadState { .. } => MetaFail::BadState,
            other => panic!("unexpected metadata error {other:?}"),
        }),
        _ => return None,
    })
}

// CryptPad's metadata commands, as far as the operations below use them.

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn valid_key(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 44)
}

fn strip_owners_from_allowed(meta: &mut Map<String, Value>) {
    let owners = meta.get("owners").and_then(Value::as_array).cloned();
    if let (Some(owners), Some(Value::Array(allowed))) = (owners, meta.get_mut("allowed")) {
        allowed.retain(|a| !owners.contains(a));
    }
}

/// Applies one command to `meta`: whether it changed, or why it was refused.
fn amend_model(
    meta: &Map<String, Value>,
    command: &str,
    args: &Value,
) -> Result<(bool, Map<String, Value>), MetaFail> {
    let mut next = meta.clone();
    let list = || args.as_array().ok_or(MetaFail::InvalidArguments);
    match command {
        "ALLOW_LINE_DELETION" | "RESTRICT_ACCESS" => {
            let field = if command == "RESTRICT_ACCESS" {
                "restricted"
            } else {
                "deleteLines"
            };
            let Some(Value::Bool(on)) = list()?.first() else {
                return Err(MetaFail::InvalidArguments);
            };
            if next.get(field) == Some(&Value::Bool(*on)) {
                return Ok((false, next));
            }
            next.insert(field.into(), Value::Bool(*on));
            if field == "restricted" && *on && !next.get("allowed").is_some_and(Value::is_array) {
                next.insert("allowed".into(), json!([]));
            }
        }
        "ADD_OWNERS" => {
            let args = list()?;
            let Some(Value::Array(owners)) = next.get_mut("owners") else {
                return Err(MetaFail::NoOwners);
            };
            for arg in args {
                if valid_key(arg) && !owners.contains(arg) {
                    owners.push(arg.clone());
                }
            }
            strip_owners_from_allowed(&mut next);
        }
        "RM_OWNERS" => {
            let args = list()?;
            let Some(Value::Array(owners)) = next.get_mut("owners") else {
                return Err(MetaFail::NoOwners);
            };
            for arg in args {
                if let Some(i) = owners.iter().position(|o| o == arg) {
                    owners.remove(i);
                }
            }
            let ownerless = next
                .get("owners")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if ownerless && truthy(next.get("restricted")) {
                next.insert("restricted".into(), Value::Bool(false));
            }
        }
        "ADD_ALLOWED" => {
            let args = list()?;
            let mut allowed = match next.get("allowed") {
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            let before = allowed.len();
            for arg in args {
                if !valid_key(arg) {
                    continue;
                }
                let Some(Value::Array(owners)) = next.get("owners") else {
                    // `meta.owners.indexOf` throws in the JS.
                    return Err(MetaFail::BadState);
                };
                if owners.contains(arg) || allowed.contains(arg) {
                    continue;
                }
                allowed.push(arg.clone());
            }
            if allowed.len() > before {
                next.insert("allowed".into(), Value::Array(allowed));
            }
        }
        _ => return Err(MetaFail::UnknownCommand),
    }
    let changed = next != *meta;
    Ok((changed, if changed { next } else { meta.clone() }))
}

// ---------------------------------------------------------------------------------------
// Operations.

#[derive(Clone, Debug)]
struct NewMsg {
    data: Vec<u8>,
    key: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
enum Op {
    Append(&'static str, Vec<NewMsg>),
    Create(&'static str, Map<String, Value>),
    Amend(&'static str, &'static str, Value),
    Clear(&'static str),
    Trim(&'static str, Selector),
    Delete(&'static str, Selector),
    Remove(&'static str),
    Archive(&'static str, String),
    Restore(&'static str),
    RemoveArchived(&'static str),
    /// One message to several channels, all or none.
    Publish(Vec<&'static str>, Vec<u8>),
}

impl Op {
    fn channel(&self) -> &'static str {
        match self {
            Op::Append(id, _)
            | Op::Create(id, _)
            | Op::Amend(id, ..)
            | Op::Clear(id)
            | Op::Trim(id, _)
            | Op::Delete(id, _)
            | Op::Remove(id)
            | Op::Archive(id, _)
            | Op::Restore(id)
            | Op::RemoveArchived(id) => id,
            Op::Publish(ids, _) => ids[0],
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::Publish(ids, data) => format!("publish {}B to {ids:?}", data.len()),
            Op::Append(id, batch) => {
                let parts: Vec<String> = batch
                    .iter()
                    .map(|m| match &m.key {
                        Some(k) => {
                            format!("{}B key {:?}", m.data.len(), String::from_utf8_lossy(k))
                        }
                        None => format!("{}B", m.data.len()),
                    })
                    .collect();
                format!("append {id} [{}]", parts.join(", "))
            }
            other => format!("{other:?}"),
        }
    }
}

/// What a successful operation returned.
#[derive(Debug)]
enum Done {
    Appended(Vec<Appended>),
    Amended(bool),
    Unit,
}

/// The model's prediction for `op`: the next model and the result, or the refusal.
fn predict(model: &Model, op: &Op) -> (Model, Result<Option<bool>, Fail>) {
    if let Op::Publish(ids, data) = op {
        return predict_publish(model, ids, data);
    }
    let mut next = model.clone();
    let id = op.channel();
    let slot = next.slots.get_mut(id).unwrap();
    let stale = next.stale.get_mut(id).unwrap();
    let live = |slot: &mut Slot| -> Result<(), Fail> {
        match slot {
            Slot::Live(_) => Ok(()),
            Slot::Archived(_, reason) => Err(Fail::Archived(reason.clone())),
            Slot::Absent => Err(Fail::NotFound),
        }
    };
    let result: Result<Option<bool>, Fail> = (|| match op {
        Op::Append(_, batch) => {
            match slot {
                Slot::Archived(_, reason) => return Err(Fail::Archived(reason.clone())),
                Slot::Absent => *slot = Slot::Live(Chan::new(Map::new())),
                Slot::Live(_) => {}
            }
            let Slot::Live(chan) = slot else {
                unreachable!()
            };
            for m in batch {
                chan.messages.push(Msg {
                    seq: chan.next_seq,
                    key: m.key.clone().unwrap_or_else(|| content_key(&m.data)),
                    data: m.data.clone(),
                    position: None,
                    stored: m.data.len() >= EMBED_BYTES_MAX,
                });
                chan.next_seq += 1;
            }
            Ok(None)
        }
        Op::Create(_, metadata) => match slot {
            Slot::Live(_) => Err(Fail::AlreadyExists),
            Slot::Archived(_, reason) => Err(Fail::Archived(reason.clone())),
            Slot::Absent => {
                *slot = Slot::Live(Chan::new(metadata.clone()));
                Ok(None)
            }
        },
        Op::Amend(_, command, args) => {
            match slot {
                Slot::Archived(_, reason) => return Err(Fail::Archived(reason.clone())),
                Slot::Absent => return Err(Fail::NotFound),
                Slot::Live(_) => {}
            }
            let Slot::Live(chan) = slot else {
                unreachable!()
            };
            let (changed, metadata) =
                amend_model(&chan.metadata, command, args).map_err(Fail::Meta)?;
            chan.metadata = metadata;
            Ok(Some(changed))
        }
        Op::Clear(_) => {
            live(slot)?;
            let Slot::Live(chan) = slot else {
                unreachable!()
            };
            chan.rewritten(stale);
            chan.messages.clear();
            chan.first_seq = chan.next_seq;
            Ok(None)
        }
        Op::Trim(_, which) => {
            live(slot)?;
            let Slot::Live(chan) = slot else {
                unreachable!()
            };
            let keep = chan.select(which)?;
            chan.rewritten(stale);
            chan.first_seq = chan.messages[keep].seq;
            chan.messages.drain(..keep);
            Ok(None)
        }
        Op::Delete(_, which) => {
            live(slot)?;
            let Slot::Live(chan) = slot else {
                unreachable!()
            };
            if !truthy(chan.metadata.get("deleteLines")) {
                return Err(Fail::Forbidden);
            }
            let victim = chan.select(which)?;
            chan.rewritten(stale);
            chan.messages.remove(victim);
            Ok(None)
        }
        Op::Remove(_) => {
            live(slot)?;
            let Slot::Live(chan) = slot else {
                unreachable!()
            };
            chan.rewritten(stale);
            *slot = Slot::Absent;
            Ok(None)
        }
        Op::Archive(_, reason) => {
            live(slot)?;
            let Slot::Live(mut chan) = std::mem::replace(slot, Slot::Absent) else {
                unreachable!()
            };
            // Stored bodies are inlined first: a rewrite, which moves every message.
            if chan.messages.iter().any(|m| m.stored) {
                chan.rewritten(stale);
                for m in &mut chan.messages {
                    m.stored = false;
                }
            }
            *slot = Slot::Archived(chan, reason.clone());
            Ok(None)
        }
        Op::Restore(_) => match std::mem::replace(slot, Slot::Absent) {
            Slot::Live(chan) => {
                *slot = Slot::Live(chan);
                Err(Fail::RestoreConflict)
            }
            Slot::Absent => Err(Fail::NotArchived),
            Slot::Archived(chan, _) => {
                *slot = Slot::Live(chan);
                Ok(None)
            }
        },
        Op::RemoveArchived(_) => match std::mem::replace(slot, Slot::Absent) {
            Slot::Archived(mut chan, _) => {
                chan.rewritten(stale);
                Ok(None)
            }
            other => {
                *slot = other;
                Err(Fail::NotArchived)
            }
        },
        Op::Publish(..) => unreachable!("predicted by predict_publish"),
    })();
    match result {
        Ok(v) => (next, Ok(v)),
        Err(fail) => (model.clone(), Err(fail)),
    }
}

/// The model after only the first step of `op`, when it is an archive that inlines
/// stored bodies (a rewrite that keeps every message); `None` for any other op.
fn inlined_before_archive(before: &Model, op: &Op) -> Option<Model> {
    let Op::Archive(id, _) = op else {
        return None;
    };
    let mut inlined = before.clone();
    let stale = inlined.stale.get_mut(id).unwrap();
    let Some(Slot::Live(chan)) = inlined.slots.get_mut(id) else {
        return None;
    };
    if !chan.messages.iter().any(|m| m.stored) {
        return None;
    }
    chan.rewritten(stale);
    for m in &mut chan.messages {
        m.stored = false;
    }
    Some(inlined)
}

/// A publish: refused when a channel is archived (the first in id order, as the store
/// takes their locks), else one message appended to every channel, created if missing.
fn predict_publish(
    model: &Model,
    ids: &[&'static str],
    data: &[u8],
) -> (Model, Result<Option<bool>, Fail>) {
    let mut next = model.clone();
    let mut sorted = ids.to_vec();
    sorted.sort();
    for id in sorted {
        if let Slot::Archived(_, reason) = &model.slots[id] {
            return (next, Err(Fail::Archived(reason.clone())));
        }
    }
    for id in ids {
        let slot = next.slots.get_mut(id).unwrap();
        if let Slot::Absent = slot {
            *slot = Slot::Live(Chan::new(Map::new()));
        }
        let Slot::Live(chan) = slot else {
            unreachable!()
        };
        chan.messages.push(Msg {
            seq: chan.next_seq,
            key: content_key(data),
            data: data.to_vec(),
            position: None,
            stored: data.len() >= EMBED_BYTES_MAX,
        });
        chan.next_seq += 1;
    }
    (next, Ok(None))
}

/// The server's append: queued at once when nothing has to wait, else as usual.
fn append_like_the_server(
    store: &Vellum,
    id: &str,
    messages: &[NewMessage<'_>],
) -> vellum::Result<Vec<vellum::Appended>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let done = move |r| drop(tx.send(r));
    if let vellum::TryQueued::WouldWait(done) = store.try_append_with(id, messages, done)? {
        store.append_with(id, messages, done)?;
    }
    rx.recv().map_err(|_| vellum::Error::Closed)?
}

fn execute(store: &Vellum, op: &Op) -> vellum::Result<Done> {
    Ok(match op {
        Op::Append(id, batch) => {
            let messages: Vec<NewMessage<'_>> = batch
                .iter()
                .map(|m| NewMessage {
                    data: &m.data,
                    key: m.key.as_deref(),
                })
                .collect();
            if messages.len() == 1 && messages[0].key.is_none() {
                Done::Appended(vec![store.append(id, messages[0].data)?])
            } else if messages.len().is_multiple_of(2) {
                Done::Appended(append_like_the_server(store, id, &messages)?)
            } else {
                Done::Appended(store.append_batch(id, &messages)?)
            }
        }
        Op::Create(id, metadata) => {
            store.create(id, Metadata::from_object(metadata.clone()))?;
            Done::Unit
        }
        Op::Amend(id, command, args) => Done::Amended(store.amend(id, command, args)?),
        Op::Clear(id) => Done::Unit.tap(store.clear(id))?,
        Op::Trim(id, which) => Done::Unit.tap(store.trim(id, which))?,
        Op::Delete(id, which) => Done::Unit.tap(store.delete_message(id, which))?,
        Op::Remove(id) => Done::Unit.tap(store.remove(id))?,
        Op::Archive(id, reason) => Done::Unit.tap(store.archive(id, reason))?,
        Op::Restore(id) => Done::Unit.tap(store.restore(id))?,
        Op::RemoveArchived(id) => Done::Unit.tap(store.remove_archived(id))?,
        Op::Publish(ids, data) => Done::Appended(store.publish(ids, data)?),
    })
}

impl Done {
    fn tap(self, r: vellum::Result<()>) -> vellum::Result<Done> {
        r.map(|()| self)
    }
}

/// Checks a successful result against the prediction, and records the positions the
/// acknowledgements issued into `next`.
fn check_done(
    done: &Done,
    predicted: Option<bool>,
    next: &mut Model,
    op: &Op,
) -> Result<(), String> {
    match (done, op) {
        (Done::Appended(acks), Op::Append(id, batch)) => {
            let Slot::Live(chan) = next.slots.get_mut(id).unwrap() else {
                return Err("append acknowledged, model has no live channel".into());
            };
            let first = chan.messages.len() - batch.len();
            if acks.len() != batch.len() {
                return Err(format!("{} acks for {} messages", acks.len(), batch.len()));
            }
            let mut epoch = None;
            for (ack, m) in acks.iter().zip(&mut chan.messages[first..]) {
                if (ack.seq, &ack.key) != (m.seq, &m.key) {
                    return Err(format!(
                        "ack #{} key {:?}, model expects #{} key {:?}",
                        ack.seq,
                        String::from_utf8_lossy(&ack.key),
                        m.seq,
                        String::from_utf8_lossy(&m.key)
                    ));
                }
                if ack.durability != Durability::Fsynced {
                    return Err(format!("ack durability {:?} under Fsync", ack.durability));
                }
                if *epoch.get_or_insert(ack.position.epoch) != ack.position.epoch {
                    return Err("one batch, two epochs".into());
                }
                m.position = Some(ack.position);
            }
            Ok(())
        }
        (Done::Appended(acks), Op::Publish(ids, _)) => {
            if acks.len() != ids.len() {
                return Err(format!(
                    "{} acks for a publish to {} channels",
                    acks.len(),
                    ids.len()
                ));
            }
            for (ack, id) in acks.iter().zip(ids) {
                let Slot::Live(chan) = next.slots.get_mut(id).unwrap() else {
                    return Err(format!("publish acknowledged, model has no live {id}"));
                };
                let m = chan.messages.last_mut().expect("the published message");
                if (ack.seq, &ack.key) != (m.seq, &m.key) || ack.durability != Durability::Fsynced {
                    return Err(format!(
                        "publish ack {ack:?} for {id}, model expects #{}",
                        m.seq
                    ));
                }
                m.position = Some(ack.position);
            }
            Ok(())
        }
        (Done::Amended(changed), Op::Amend(..)) => match predicted {
            Some(p) if p == *changed => Ok(()),
            _ => Err(format!(
                "amend returned changed={changed}, model says {predicted:?}"
            )),
        },
        (Done::Unit, _) => Ok(()),
        _ => Err(format!("unexpected result {done:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// Checking the store against the model.

fn read(
    store: &Vellum,
    id: &str,
    request: &ReadRequest,
) -> vellum::Result<(usize, Vec<vellum::Message>)> {
    let history = store.read(id, request)?;
    let remaining = history.remaining();
    Ok((remaining, history.collect::<vellum::Result<_>>()?))
}

/// Compares messages as read with the model's, in order, and learns their positions.
fn compare_messages(what: &str, got: &[vellum::Message], want: &[Msg]) -> Result<(), String> {
    let ok = got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            (g.seq, &g.key, &g.data) == (w.seq, &w.key, &w.data)
                && w.position.is_none_or(|p| p == g.position)
        });
    if ok {
        return Ok(());
    }
    let mut s = format!(
        "{what}: read {} messages, model has {}\n",
        got.len(),
        want.len()
    );
    for i in 0..got.len().max(want.len()) {
        let g = got.get(i).map(|g| {
            format!(
                "{:?} @{:?}",
                Msg {
                    seq: g.seq,
                    key: g.key.clone(),
                    data: g.data.clone(),
                    position: None,
                    stored: false,
                },
                (g.position.epoch, g.position.offset)
            )
        });
        let w = want
            .get(i)
            .map(|w| format!("{w:?} @{:?}", w.position.map(|p| (p.epoch, p.offset))));
        let mark = if g.as_deref().map(|g| g.split(" @").next())
            == w.as_deref().map(|w| w.split(" @").next())
        {
            " "
        } else {
            "!"
        };
        let _ = writeln!(s, " {mark} store {g:?}\n   model {w:?}");
    }
    Err(s)
}

/// The messages a read must return, or its refusal.
fn expect_read(chan: &Chan, stale: &[Position], request: &ReadRequest) -> Result<Vec<Msg>, Fail> {
    let msgs = &chan.messages;
    let start = match &request.from {
        ReadFrom::Start => 0,
        ReadFrom::Seq(seq) => {
            if *seq < chan.first_seq {
                return Err(Fail::Trimmed {
                    requested: *seq,
                    first_seq: chan.first_seq,
                });
            }
            msgs.iter()
                .position(|m| m.seq >= *seq)
                .unwrap_or(msgs.len())
        }
        ReadFrom::Key(key) => msgs
            .iter()
            .position(|m| m.key == *key)
            .ok_or(Fail::KeyNotFound)?,
        ReadFrom::Last(n) => msgs.len().saturating_sub(*n),
        ReadFrom::Position(p) => {
            if stale.contains(p) {
                return Err(Fail::StalePosition);
            }
            msgs.iter()
                .position(|m| m.position == Some(*p))
                .ok_or(Fail::StalePosition)?
        }
    };
    let mut stop = msgs.len();
    if let Some(to) = request.to_seq {
        stop = stop.min(msgs.iter().position(|m| m.seq > to).unwrap_or(msgs.len()));
    }
    if let Some(limit) = request.limit {
        stop = stop.min(start + limit);
    }
    Ok(msgs[start..stop.max(start)].to_vec())
}

fn check_read(
    store: &Vellum,
    model: &Model,
    id: &'static str,
    request: &ReadRequest,
) -> Result<(), String> {
    let expected = match &model.slots[id] {
        Slot::Live(chan) => expect_read(chan, &model.stale[id], request),
        Slot::Archived(_, reason) => Err(Fail::Archived(reason.clone())),
        Slot::Absent => Err(Fail::NotFound),
    };
    let got = read(store, id, request);
    let what = format!("read {id} {request:?}");
    match (got, expected) {
        (Ok((remaining, got)), Ok(want)) => {
            if remaining != want.len() {
                return Err(format!(
                    "{what}: remaining() {remaining}, expected {}",
                    want.len()
                ));
            }
            compare_messages(&what, &got, &want)
        }
        (Err(e), Err(fail)) if classify(&e) == Some(fail.clone()) => Ok(()),
        (got, want) => Err(format!(
            "{what}: store {:?}, model {want:?}",
            got.map(|(_, m)| m.len())
        )),
    }
}

/// Checks one channel fully against the model; on success, learns the positions read.
fn check_channel(
    store: &Vellum,
    sim: &SimStorage,
    model: &mut Model,
    id: &'static str,
) -> Result<(), String> {
    let exists = store.exists(id).map_err(|e| format!("exists({id}): {e}"))?;
    let archived = store
        .is_archived(id)
        .map_err(|e| format!("is_archived({id}): {e}"))?;
    let archive_file = sim
        .stat(&archive_path(id))
        .map_err(|e| e.to_string())?
        .is_some();
    let live_file = sim
        .stat(&live_path(id))
        .map_err(|e| e.to_string())?
        .is_some();
    let info = store.info(id);
    let stale = model.stale[id].clone();
    match model.slots.get_mut(id).unwrap() {
        Slot::Live(chan) => {
            if !exists || archived || archive_file {
                return Err(format!(
                    "{id} should be live only: exists {exists}, archived {archived}, archive file {archive_file}"
                ));
            }
            let (_, got) =
                read(store, id, &ReadRequest::all()).map_err(|e| format!("read {id}: {e}"))?;
            compare_messages(&format!("{id} (whole channel)"), &got, &chan.messages)?;
            for (g, m) in got.iter().zip(&mut chan.messages) {
                m.position = Some(g.position);
            }
            let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
            if !seqs.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!("{id}: seqs not increasing: {seqs:?}"));
            }
            let metadata = store
                .metadata(id)
                .map_err(|e| format!("metadata {id}: {e}"))?
                .into_object();
            if metadata != chan.metadata {
                return Err(format!(
                    "{id}: metadata {}, model {}",
                    Value::Object(metadata),
                    Value::Object(chan.metadata.clone())
                ));
            }
            let info = info.map_err(|e| format!("info {id}: {e}"))?;
            let want = (got.len() as u64, chan.first_seq, chan.next_seq, None);
            let have = (
                info.messages,
                info.first_seq,
                info.next_seq,
                info.archived.clone(),
            );
            if have != want {
                return Err(format!(
                    "{id}: info (messages, first_seq, next_seq, archived) {have:?}, model {want:?}"
                ));
            }
            let size = store.size(id).map_err(|e| e.to_string())?;
            if size != info.size_bytes {
                return Err(format!("{id}: size {size} != info {}", info.size_bytes));
            }
            // Positions from before a rewrite are refused, never misread.
            for p in stale.iter().rev().take(3) {
                check_read(store, model, id, &ReadFrom::Position(*p).into())?;
            }
        }
        Slot::Archived(chan, reason) => {
            if exists || !archived || !archive_file || live_file {
                return Err(format!(
                    "{id} should be archived only: exists {exists}, archived {archived}, archive file {archive_file}, live file {live_file}"
                ));
            }
            let info = info.map_err(|e| format!("info {id}: {e}"))?;
            let want = (
                chan.messages.len() as u64,
                chan.first_seq,
                chan.next_seq,
                Some(reason.clone()),
            );
            let have = (info.messages, info.first_seq, info.next_seq, info.archived);
            if have != want {
                return Err(format!(
                    "{id}: archived info (messages, first_seq, next_seq, reason) {have:?}, model {want:?}"
                ));
            }
            let reason = reason.clone();
            match store.read(id, &ReadRequest::all()) {
                Err(Error::Archived { reason: r, .. }) if r == reason => {}
                other => return Err(format!("read archived {id}: {:?}", other.map(|_| ()))),
            }
        }
        Slot::Absent => {
            if exists || archived || archive_file || live_file {
                return Err(format!(
                    "{id} should be absent: exists {exists}, archived {archived}, archive file {archive_file}, live file {live_file}"
                ));
            }
            match info {
                Err(Error::NotFound { .. }) => {}
                other => return Err(format!("info of absent {id}: {other:?}")),
            }
            match store.read(id, &ReadRequest::all()) {
                Err(Error::NotFound { .. }) => {}
                other => return Err(format!("read absent {id}: {:?}", other.map(|_| ()))),
            }
        }
    }
    Ok(())
}

fn check_all(store: &Vellum, sim: &SimStorage, model: &mut Model) -> Result<(), String> {
    for id in IDS {
        check_channel(store, sim, model, id)?;
    }
    // Every stored body a channel file references is held, at least once per record.
    // (A poisoned store cannot checkpoint, so cannot check; its reopen will.)
    let refs = match store.check_references() {
        Ok(refs) => refs,
        Err(Error::Poisoned { .. }) => return Ok(()),
        Err(e) => return Err(format!("checking references: {e}")),
    };
    if !refs.is_safe() {
        return Err(format!("message store references: {refs:?}"));
    }
    Ok(())
}

/// `list(Live)` and `list(Archived)` name exactly the model's live and archived channels.
fn check_lists(store: &Vellum, model: &Model) -> Result<(), String> {
    for scope in [Scope::Live, Scope::Archived] {
        let mut got: Vec<(String, u64)> = store
            .list(scope)
            .map_err(|e| e.to_string())?
            .map(|i| i.map(|i| (i.id.to_string(), i.messages)))
            .collect::<vellum::Result<_>>()
            .map_err(|e| format!("list {scope:?}: {e}"))?;
        got.sort();
        let mut want: Vec<(String, u64)> = model
            .slots
            .iter()
            .filter_map(|(id, slot)| match (slot, scope) {
                (Slot::Live(c), Scope::Live) | (Slot::Archived(c, _), Scope::Archived) => {
                    Some((id.to_string(), c.messages.len() as u64))
                }
                _ => None,
            })
            .collect();
        want.sort();
        if got != want {
            return Err(format!("list {scope:?}: store {got:?}, model {want:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Generating operations.

struct Gen {
    rng: StdRng,
    /// Data appended before, reused now and then (equal content, equal default key).
    seen: Vec<Vec<u8>>,
}

const CLIENT_KEYS: [&str; 4] = ["k-alpha", "k-beta", "k-gamma", "k-delta"];

impl Gen {
    fn id(&mut self) -> &'static str {
        IDS[self.rng.random_range(0..IDS.len())]
    }

    fn data(&mut self) -> Vec<u8> {
        if !self.seen.is_empty() && self.rng.random_ratio(1, 10) {
            return self.seen[self.rng.random_range(0..self.seen.len())].clone();
        }
        let len = match self.rng.random_range(0..10) {
            0 => 0,
            1..=6 => self.rng.random_range(1..200),
            _ => self.rng.random_range(200..=2000),
        };
        let mut data = vec![0u8; len];
        self.rng.fill(&mut data[..]);
        self.seen.push(data.clone());
        data
    }

    fn new_msg(&mut self) -> NewMsg {
        let data = self.data();
        let key = match self.rng.random_range(0..10) {
            0..=5 => None,
            6..=8 => Some(CLIENT_KEYS[self.rng.random_range(0..CLIENT_KEYS.len())].into()),
            _ => {
                let len = self.rng.random_range(1..=64);
                Some(
                    (0..len)
                        .map(|_| self.rng.random_range(b'!'..=b'~'))
                        .collect(),
                )
            }
        };
        NewMsg { data, key }
    }

    fn keys_arg(&mut self) -> Value {
        let n = self.rng.random_range(0..=3);
        let keys: Vec<Value> = (0..n)
            .map(|_| match self.rng.random_range(0..6) {
                0 => json!("not-a-key"),
                i => json!(owner_key(i - 1)),
            })
            .collect();
        Value::Array(keys)
    }

    /// A selector: mostly a message that exists, sometimes one that does not.
    fn selector(&mut self, model: &Model, id: &str) -> Selector {
        let messages = match &model.slots[id] {
            Slot::Live(chan) => chan.messages.clone(),
            _ => Vec::new(),
        };
        if !messages.is_empty() && self.rng.random_ratio(4, 5) {
            let m = &messages[self.rng.random_range(0..messages.len())];
            if self.rng.random_bool(0.5) {
                Selector::Seq(m.seq)
            } else {
                Selector::Key(m.key.clone())
            }
        } else if self.rng.random_bool(0.5) {
            Selector::Seq(self.rng.random_range(0..40))
        } else {
            Selector::Key(b"no-such-key".to_vec())
        }
    }

    fn op(&mut self, model: &Model) -> Op {
        let id = self.id();
        match self.rng.random_range(0..100) {
            0..=23 => Op::Append(id, vec![self.new_msg()]),
            24..=29 => {
                let mut ids = IDS.to_vec();
                ids.shuffle(&mut self.rng);
                ids.truncate(self.rng.random_range(2..=IDS.len()));
                Op::Publish(ids, self.data())
            }
            30..=44 => {
                let n = self.rng.random_range(1..=5);
                Op::Append(id, (0..n).map(|_| self.new_msg()).collect())
            }
            45..=48 => {
                let metadata = match self.rng.random_range(0..4) {
                    0 => json!({}),
                    1 => json!({ "owners": [owner_key(0)] }),
                    2 => {
                        json!({ "owners": [owner_key(1), owner_key(2)], "restricted": true, "allowed": [] })
                    }
                    _ => json!({ "owners": [], "deleteLines": true }),
                };
                let Value::Object(map) = metadata else {
                    unreachable!()
                };
                Op::Create(id, map)
            }
            49..=62 => {
                let (command, args) = match self.rng.random_range(0..12) {
                    0..=2 => ("ALLOW_LINE_DELETION", json!([self.rng.random_bool(0.8)])),
                    3..=4 => ("RESTRICT_ACCESS", json!([self.rng.random_bool(0.5)])),
                    5..=6 => ("ADD_OWNERS", self.keys_arg()),
                    7 => ("RM_OWNERS", self.keys_arg()),
                    8..=9 => ("ADD_ALLOWED", self.keys_arg()),
                    10 => ("NO_SUCH_COMMAND", json!([true])),
                    _ => ("ALLOW_LINE_DELETION", json!("yes")),
                };
                Op::Amend(id, command, args)
            }
            63..=66 => Op::Clear(id),
            67..=73 => Op::Trim(id, self.selector(model, id)),
            74..=82 => {
                // Deleting needs ALLOW_LINE_DELETION: mostly turn it on first.
                let allowed = match &model.slots[id] {
                    Slot::Live(chan) => truthy(chan.metadata.get("deleteLines")),
                    _ => true,
                };
                if !allowed && self.rng.random_ratio(2, 3) {
                    Op::Amend(id, "ALLOW_LINE_DELETION", json!([true]))
                } else {
                    Op::Delete(id, self.selector(model, id))
                }
            }
            83..=85 => Op::Remove(id),
            86..=91 => Op::Archive(
                id,
                ["EXPIRED", "OWNER_DELETED", "test reason ü"][self.rng.random_range(0..3)].into(),
            ),
            92..=96 => Op::Restore(id),
            _ => Op::RemoveArchived(id),
        }
    }

    fn read_request(&mut self, model: &Model, id: &str) -> ReadRequest {
        let (chan, stale) = match &model.slots[id] {
            Slot::Live(chan) => (chan.clone(), model.stale[id].clone()),
            _ => (Chan::new(Map::new()), Vec::new()),
        };
        let pick = |rng: &mut StdRng| {
            (!chan.messages.is_empty())
                .then(|| chan.messages[rng.random_range(0..chan.messages.len())].clone())
        };
        let from = match self.rng.random_range(0..7) {
            0 => ReadFrom::Start,
            1 => ReadFrom::Seq(self.rng.random_range(0..chan.next_seq + 3)),
            2 => match pick(&mut self.rng) {
                Some(m) if self.rng.random_ratio(5, 6) => ReadFrom::Key(m.key),
                _ => ReadFrom::Key(b"unknown key".to_vec()),
            },
            3 => ReadFrom::Last(self.rng.random_range(0..chan.messages.len() + 3)),
            4 | 5 => match pick(&mut self.rng).and_then(|m| m.position) {
                Some(p) if self.rng.random_ratio(3, 4) => ReadFrom::Position(p),
                // Not a message boundary.
                Some(p) => ReadFrom::Position(Position {
                    offset: p.offset + 1,
                    ..p
                }),
                None => ReadFrom::Start,
            },
            _ => match stale.last() {
                Some(p) => ReadFrom::Position(*p),
                None => ReadFrom::Start,
            },
        };
        let to_seq = self
            .rng
            .random_ratio(1, 4)
            .then(|| self.rng.random_range(0..chan.next_seq + 2));
        let limit = self
            .rng
            .random_ratio(1, 4)
            .then(|| self.rng.random_range(0..6));
        ReadRequest {
            from,
            to_seq,
            limit,
        }
    }
}

/// One step of a run.
#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Read(&'static str, ReadRequest),
    /// Close cleanly and reopen.
    Reopen,
    /// Power loss between operations, then reopen.
    Crash(CrashMode),
    /// Power loss as `first` says; the reopen's recovery runs `budget` storage steps
    /// and dies, the power fails again as `second` says, then the store is reopened.
    CrashDuringRecovery {
        first: CrashMode,
        budget: u64,
        second: CrashMode,
    },
    /// `op` runs `budget` storage steps (from a quiet store if `quiet`), then the
    /// process dies, the power fails as `mode` says, and the store is reopened.
    CrashDuring {
        op: Op,
        budget: u64,
        quiet: bool,
        mode: CrashMode,
    },
    /// `op` runs with `fault` armed; the store is then closed — cleanly if `crash` is
    /// `None`, else by a power failure — and reopened.
    FailDuring {
        op: Op,
        fault: Fault,
        crash: Option<CrashMode>,
    },
    /// Compacts the message store now (it also compacts on its own, in the background).
    Compact,
    /// Everything checkpointed, a copy of the disk gets one bit flipped (in the
    /// `file`-th file, modulo their number, at byte `at` modulo its length) and is
    /// opened beside the run, which goes on with the undamaged original.
    BitRot {
        file: u64,
        at: u64,
        bit: u8,
    },
}

/// Which operations a generated fault fails: mostly writes and syncs.
const FAULT_KINDS: [FaultKind; 11] = [
    FaultKind::Write,
    FaultKind::Write,
    FaultKind::SyncData,
    FaultKind::SyncData,
    FaultKind::SyncData,
    FaultKind::SyncDir,
    FaultKind::SetLen,
    FaultKind::Rename,
    FaultKind::Remove,
    FaultKind::Create,
    FaultKind::Read,
];
/// Where a generated fault strikes (`None`: anywhere).
const FAULT_PLACES: [Option<&str>; 7] = [
    None,
    None,
    Some("/journal/"),
    Some("/channels/"),
    Some("/store/"),
    Some("/archive/"),
    Some("/tmp/"),
];

impl Gen {
    fn crash_mode(&mut self) -> CrashMode {
        if self.rng.random_bool(0.5) {
            CrashMode::DropUnsynced
        } else {
            CrashMode::Torn {
                seed: self.rng.random(),
            }
        }
    }

    fn fault(&mut self) -> Fault {
        Fault {
            path_contains: FAULT_PLACES[self.rng.random_range(0..FAULT_PLACES.len())]
                .map(str::to_string),
            after: match self.rng.random_range(0..4) {
                0..=1 => 0,
                2 => self.rng.random_range(1..4),
                _ => self.rng.random_range(4..20),
            },
            error: if self.rng.random_bool(0.5) {
                ErrorKind::Other
            } else {
                ErrorKind::StorageFull
            },
            persistent: self.rng.random_ratio(1, 4),
            ..Fault::new(FAULT_KINDS[self.rng.random_range(0..FAULT_KINDS.len())])
        }
    }

    fn step(&mut self, model: &Model) -> Step {
        match self.rng.random_range(0..100) {
            0..=11 => {
                let id = self.id();
                Step::Read(id, self.read_request(model, id))
            }
            12..=14 => Step::Reopen,
            15..=16 => Step::Crash(self.crash_mode()),
            17..=18 => Step::CrashDuringRecovery {
                first: self.crash_mode(),
                budget: self.rng.random_range(0..40),
                second: self.crash_mode(),
            },
            19..=24 => {
                let op = self.op(model);
                // Mostly a few steps in; sometimes deep into a rewrite's dozens of steps.
                let budget = match self.rng.random_range(0..10) {
                    0..=4 => self.rng.random_range(0..6),
                    5..=7 => self.rng.random_range(6..20),
                    _ => self.rng.random_range(20..60),
                };
                // Half the time from a quiet store (everything checkpointed, the next
                // journal file prepared), half the time with tails and journal entries
                // still to write.
                let quiet = self.rng.random_bool(0.5);
                Step::CrashDuring {
                    op,
                    budget,
                    quiet,
                    mode: self.crash_mode(),
                }
            }
            25..=31 => Step::FailDuring {
                op: self.op(model),
                fault: self.fault(),
                crash: self.rng.random_bool(0.5).then(|| self.crash_mode()),
            },
            32 => Step::Compact,
            33 => Step::BitRot {
                file: self.rng.random(),
                at: self.rng.random(),
                bit: self.rng.random_range(0..8),
            },
            _ => Step::Op(self.op(model)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// One run.

/// What a run exercised, so that a quiet model (nothing ever succeeding, no crash ever
/// interrupting anything) shows in the totals.
#[derive(Default, Debug, Clone)]
struct Tally {
    accepted: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
    reads: u64,
    reopens: u64,
    crashes: u64,
    interrupted_done: u64,
    interrupted_not_done: u64,
    interrupted_acknowledged: u64,
    /// Operations run with a fault armed, and how many times faults fired in them.
    faults_armed: u64,
    faults_fired: u64,
    /// Writes refused with `Poisoned` after a failed write or sync.
    refused_while_poisoned: u64,
    compactions: u64,
    /// Bits flipped at rest; of them, how many changed what a read returns (each of
    /// those reported), and how many were reported although no read differed.
    bit_flips: u64,
    bit_flips_detected: u64,
    bit_flips_reported_only: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, n) in other.accepted {
            *self.accepted.entry(k).or_default() += n;
        }
        for (k, n) in other.refused {
            *self.refused.entry(k).or_default() += n;
        }
        self.reads += other.reads;
        self.reopens += other.reopens;
        self.crashes += other.crashes;
        self.interrupted_done += other.interrupted_done;
        self.interrupted_not_done += other.interrupted_not_done;
        self.interrupted_acknowledged += other.interrupted_acknowledged;
        self.faults_armed += other.faults_armed;
        self.faults_fired += other.faults_fired;
        self.refused_while_poisoned += other.refused_while_poisoned;
        self.compactions += other.compactions;
        self.bit_flips += other.bit_flips;
        self.bit_flips_detected += other.bit_flips_detected;
        self.bit_flips_reported_only += other.bit_flips_reported_only;
    }
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Append(_, b) if b.len() == 1 => "append",
        Op::Append(..) => "append batch",
        Op::Create(..) => "create",
        Op::Amend(..) => "amend",
        Op::Clear(_) => "clear",
        Op::Trim(..) => "trim",
        Op::Delete(..) => "delete",
        Op::Remove(_) => "remove",
        Op::Archive(..) => "archive",
        Op::Restore(_) => "restore",
        Op::RemoveArchived(_) => "remove archived",
        Op::Publish(..) => "publish",
    }
}

struct Run {
    tally: Tally,
    /// How the last reopen came about: a crash of this kind, or a clean close (`None`).
    last_crash: Option<CrashMode>,
    /// A crash has kept part of an unsynced write: an archived file may end in part of
    /// a restore's marker (nothing repairs archived files until they are restored).
    torn_crash_seen: bool,
    /// "seed N" or "script NAME", for the failure report.
    label: String,
    /// How to run this again.
    rerun: String,
    src: Gen,
    sim: SimStorage,
    store: Option<Vellum>,
    model: Model,
    /// Where the run is, for the failure report and the watchdog.
    progress: Arc<Mutex<String>>,
    log: Vec<String>,
}

impl Run {
    fn store(&self) -> &Vellum {
        self.store.as_ref().unwrap()
    }

    fn fail(&self, step: usize, what: &str) -> ! {
        let recent: Vec<&String> = self.log.iter().rev().take(12).rev().collect();
        let mut history = String::new();
        for line in recent {
            let _ = writeln!(history, "    {line}");
        }
        panic!(
            "model test failed: {} at op {step}: {what}\n  last operations:\n{history}  {}",
            self.label, self.rerun
        );
    }

    fn open(&mut self, step: usize, why: &str) {
        match Vellum::open_with_storage(Arc::new(self.sim.clone()), ROOT, options()) {
            Ok(store) => self.store = Some(store),
            Err(e) => self.fail(step, &format!("reopening ({why}) failed: {e}")),
        }
        // The store prepares its next journal file in the background after opening; a
        // checkpoint runs after that, so the storage steps of the next operations are
        // the operations' own (a seed replays the same way).
        if let Err(e) = self.store().checkpoint() {
            self.fail(
                step,
                &format!("checkpoint after opening ({why}) failed: {e}"),
            );
        }
    }

    /// After a crash that kept exactly the synced state, nothing can be damaged: every
    /// synced journal entry and channel record is whole.
    fn check_nothing_lost(&self, step: usize) {
        if self.last_crash != Some(CrashMode::DropUnsynced) {
            return;
        }
        let store = self.store();
        let archive = Path::new(ROOT).join("archive");
        let lost: Vec<LostRange> = (store.recovery_report().lost.iter().cloned())
            .chain(store.lost_ranges())
            .filter(|range| !(self.torn_crash_seen && range.path.starts_with(&archive)))
            .collect();
        if !lost.is_empty() {
            self.fail(
                step,
                &format!(
                    "damaged ranges after a crash that dropped only unsynced writes: {lost:?}"
                ),
            );
        }
    }

    /// Simulates power loss, then opens the surviving disk.
    fn crash(&mut self, step: usize, mode: CrashMode) {
        let after = self.sim.crash(mode);
        drop(self.store.take());
        self.sim = after;
        self.last_crash = Some(mode);
        self.torn_crash_seen |= matches!(mode, CrashMode::Torn { .. });
        self.open(step, &format!("after {mode:?}"));
    }

    fn quiesce(&mut self, step: usize) {
        for _ in 0..2 {
            if let Err(e) = self.store().checkpoint() {
                self.fail(step, &format!("checkpoint failed: {e}"));
            }
        }
    }

    fn run_step(&mut self, step: usize, what: Step) {
        match what {
            Step::Read(id, request) => {
                self.log.push(format!("{step}: read {id} {request:?}"));
                self.tally.reads += 1;
                if let Err(e) = check_read(self.store(), &self.model, id, &request) {
                    self.fail(step, &e);
                }
            }
            Step::Reopen => {
                self.log.push(format!("{step}: close and reopen"));
                self.last_crash = None;
                self.tally.reopens += 1;
                drop(self.store.take());
                self.open(step, "clean");
                let report = self.store().recovery_report();
                if report.entries_replayed != 0 || !report.lost.is_empty() {
                    let report = format!("{report:?}");
                    self.fail(step, &format!("a clean reopen had to recover: {report}"));
                }
                self.check_everything(step);
                if !self.store().lost_ranges().is_empty() {
                    let lost = format!("{:?}", self.store().lost_ranges());
                    self.fail(step, &format!("damage found after a clean close: {lost}"));
                }
            }
            Step::Crash(mode) => {
                self.log
                    .push(format!("{step}: crash ({mode:?}) and reopen"));
                self.tally.crashes += 1;
                self.crash(step, mode);
                self.check_everything(step);
            }
            Step::CrashDuringRecovery {
                first,
                budget,
                second,
            } => {
                self.log.push(format!(
                    "{step}: crash ({first:?}), reopen dying after {budget} steps, crash ({second:?}), reopen"
                ));
                *self.progress.lock().unwrap() =
                    format!("{} op {step}: crash during recovery", self.label);
                self.tally.crashes += 1;
                let after = self.sim.crash(first);
                drop(self.store.take());
                after.crash_after_ops(budget);
                let dying = Vellum::open_with_storage(Arc::new(after.clone()), ROOT, options());
                let again = after.crash(second);
                drop(dying);
                self.sim = again;
                self.torn_crash_seen |= [first, second]
                    .iter()
                    .any(|mode| matches!(mode, CrashMode::Torn { .. }));
                self.last_crash = Some(if matches!(first, CrashMode::Torn { .. }) {
                    first
                } else {
                    second
                });
                self.open(step, "after a crash during recovery");
                self.check_everything(step);
            }
            Step::CrashDuring {
                op,
                budget,
                quiet,
                mode,
            } => {
                if quiet {
                    self.quiesce(step);
                }
                self.crash_during(step, &op, budget, mode);
            }
            Step::FailDuring { op, fault, crash } => self.fail_during(step, &op, fault, crash),
            Step::Compact => {
                self.log.push(format!("{step}: compact the message store"));
                self.tally.compactions += 1;
                if let Err(e) = self.store().compact_message_store() {
                    self.fail(step, &format!("compaction failed: {e}"));
                }
                self.check_everything(step);
            }
            Step::BitRot { file, at, bit } => self.bit_rot(step, file, at, bit),
            Step::Op(op) => self.run_op(step, &op),
        }
    }
    fn check_everything(&mut self, step: usize) {
        let mut model = self.model.clone();
        if let Err(e) = check_all(self.store(), &self.sim, &mut model) {
            self.fail(step, &e);
        }
        self.check_nothing_lost(step);
        if let Err(e) = check_lists(self.store(), &model) {
            self.fail(step, &e);
        }
        self.model = model;
    }

    fn run_op(&mut self, step: usize, op: &Op) {
        self.log.push(format!("{step}: {}", op.describe()));
        *self.progress.lock().unwrap() = format!("{} op {step}: {}", self.label, op.describe());
        let id = op.channel();
        let size_before = self.store().size(id).ok();
        let (mut next, predicted) = predict(&self.model, op);
        let result = execute(self.store(), op);
        match (result, predicted) {
            (Ok(done), Ok(p)) => {
                if let Err(e) = check_done(&done, p, &mut next, op) {
                    self.fail(step, &e);
                }
                *self.tally.accepted.entry(kind(op)).or_default() += 1;
                if p == Some(false) && self.store().size(id).ok() != size_before {
                    self.fail(step, "an amendment that changed nothing was logged");
                }
                self.model = next;
            }
            (Err(e), Err(fail)) if classify(&e) == Some(fail.clone()) => {
                *self.tally.refused.entry(kind(op)).or_default() += 1;
                if self.store().size(id).ok() != size_before {
                    self.fail(step, &format!("a refused operation ({e}) changed the size"));
                }
            }
            (Ok(done), Err(fail)) => self.fail(
                step,
                &format!("store accepted ({done:?}), model refuses: {fail:?}"),
            ),
            (Err(e), predicted) => self.fail(
                step,
                &format!("store refused: {e:?}, model predicts {predicted:?}"),
            ),
        }
        let mut model = self.model.clone();
        let touched = match op {
            Op::Publish(ids, _) => ids.clone(),
            _ => vec![id],
        };
        for id in touched {
            if let Err(e) = check_channel(self.store(), &self.sim, &mut model, id) {
                self.fail(step, &e);
            }
        }
        self.model = model;
    }

    /// Lets `op` run `budget` storage steps, then the process dies and the power fails.
    fn crash_during(&mut self, step: usize, op: &Op, budget: u64, mode: CrashMode) {
        *self.progress.lock().unwrap() = format!(
            "{} op {step}: crash after {budget} steps of {}",
            self.label,
            op.describe()
        );
        let (mut after, predicted) = predict(&self.model, op);
        let before = self.model.clone();
        self.sim.crash_after_ops(budget);
        let result = execute(self.store(), op);
        let acknowledged = self.acknowledged(step, &result, &predicted, &mut after, op);
        self.crash(step, mode);
        self.log.push(format!(
            "{step}: {} with a crash after {budget} steps ({}), then {mode:?}",
            op.describe(),
            outcome(&result)
        ));
        self.tally.crashes += 1;
        self.settle(step, op, before, after, acknowledged);
        self.check_nothing_lost(step);
    }

    /// Runs `op` with `fault` armed. A failed write or sync of a file that holds
    /// acknowledged data (journal, channel file, store segment) must leave the store
    /// refusing writes; reads must still answer, from the state before or after `op`.
    /// Then the store is closed (cleanly, or by a power failure) and reopened.
    fn fail_during(&mut self, step: usize, op: &Op, fault: Fault, crash: Option<CrashMode>) {
        *self.progress.lock().unwrap() =
            format!("{} op {step}: {} with {fault:?}", self.label, op.describe());
        let (mut after, predicted) = predict(&self.model, op);
        let before = self.model.clone();
        self.sim.inject(fault.clone());
        let result = execute(self.store(), op);
        let (fired, times) = self.sim.fired_faults();
        self.sim.clear_faults();
        self.log.push(format!(
            "{step}: {} with {fault:?} ({}; fired {times}: {fired:?}), then {}",
            op.describe(),
            outcome(&result),
            crash.map_or("a clean close".to_string(), |m| format!("{m:?}"))
        ));
        self.tally.faults_armed += 1;
        self.tally.faults_fired += times;
        let acknowledged = self.acknowledged(step, &result, &predicted, &mut after, op);
        // Journal files, channel files, store segments — not the next journal file
        // being zero-filled in the background (a failure there is retried, and the
        // file is synced again when it starts) nor a compaction's output: neither
        // holds anything until renamed.
        let holds_data = |path: &std::path::Path| {
            let path = path.to_string_lossy();
            (path.contains("/journal/") && !path.ends_with("preparing.tmp"))
                || path.contains("/channels/")
                || (path.contains("/store/") && path.ends_with(".seg"))
        };
        let must_refuse = fired.iter().any(|(kind, path)| {
            matches!(kind, FaultKind::Write | FaultKind::SyncData) && holds_data(path)
        });
        if must_refuse {
            // A fault met by a background thread (checkpoint, store flusher) poisons
            // when that thread handles it: a checkpoint waits for the thread first.
            let _ = self.store().checkpoint();
            match self.store().append(PROBE, b"a write after a failed write or sync") {
                Err(Error::Poisoned { .. }) => self.tally.refused_while_poisoned += 1,
                other => self.fail(
                    step,
                    &format!("after a failed write or sync ({fired:?}) an append answered {other:?}, not Poisoned"),
                ),
            }
        }
        // Reads answer from before or after `op` (each channel on its own: a failed
        // store may have reserved seqs, which only reads ignore), or after an
        // archive's first step (bodies inlined, new positions).
        let inlined = inlined_before_archive(&before, op);
        for id in IDS {
            let all = ReadRequest::all();
            let mut states = [Some(&after), inlined.as_ref(), Some(&before)]
                .into_iter()
                .flatten();
            let mut last = Ok(());
            if !states.any(|model| {
                last = check_read(self.store(), model, id, &all);
                last.is_ok()
            }) && let Err(e) = last
            {
                self.fail(step, &format!("after a fault, before reopening: {e}"));
            }
        }
        match crash {
            Some(mode) => {
                self.tally.crashes += 1;
                self.crash(step, mode);
            }
            None => {
                drop(self.store.take());
                self.last_crash = None;
                self.open(step, "after a fault");
            }
        }
        self.settle(step, op, before, after, acknowledged);
        self.check_nothing_lost(step);
    }

    /// Whether `op` was acknowledged, checking what it returned against the model.
    fn acknowledged(
        &self,
        step: usize,
        result: &vellum::Result<Done>,
        predicted: &Result<Option<bool>, Fail>,
        after: &mut Model,
        op: &Op,
    ) -> bool {
        match (result, predicted) {
            (Ok(done), Ok(p)) => {
                if let Err(e) = check_done(done, *p, after, op) {
                    self.fail(step, &e);
                }
                true
            }
            (Ok(done), Err(fail)) => self.fail(
                step,
                &format!("store accepted ({done:?}), model refuses: {fail:?}"),
            ),
            (Err(e), Err(fail)) if classify(e) == Some(fail.clone()) => false,
            (Err(e), _) if classify(e).is_some() => self.fail(
                step,
                &format!("store refused: {e:?}, model predicts {predicted:?}"),
            ),
            (Err(_), _) => false,
        }
    }

    /// Which of `after` (first) and `before` the store holds, wholly; the model it
    /// matched (with the positions read) and whether that is `after`.
    fn which_state(&self, before: &Model, after: &Model, op: &Op) -> Result<(Model, bool), String> {
        let mut done = after.clone();
        let against_done = match check_all(self.store(), &self.sim, &mut done) {
            Ok(()) => return Ok((done, true)),
            Err(e) => e,
        };
        let mut not_done = before.clone();
        let mut checked = check_all(self.store(), &self.sim, &mut not_done);
        if checked.is_err()
            && let Some(mut inlined) = inlined_before_archive(before, op)
        {
            // An archive inlines stored bodies with a rewrite first: a crash after it
            // leaves the channel live, same messages, new positions.
            checked = check_all(self.store(), &self.sim, &mut inlined);
            not_done = inlined;
        }
        match checked {
            Ok(()) => Ok((not_done, false)),
            Err(e) => Err(format!(
                "the store is neither before nor after the operation\n  \
                 against 'done': {against_done}\n  against 'not done': {e}"
            )),
        }
    }

    /// After `op` was interrupted and the store reopened: acknowledged ⇒ done;
    /// otherwise done or not done, wholly.
    fn settle(&mut self, step: usize, op: &Op, before: Model, after: Model, acknowledged: bool) {
        if acknowledged {
            self.tally.interrupted_acknowledged += 1;
        }
        match self.which_state(&before, &after, op) {
            Ok((model, true)) => {
                if before != after {
                    self.tally.interrupted_done += 1;
                }
                self.model = model;
            }
            Ok((_, false)) if acknowledged => self.fail(
                step,
                &format!("an acknowledged operation is lost: {}", op.describe()),
            ),
            Ok((model, false)) => {
                self.tally.interrupted_not_done += 1;
                self.model = model;
            }
            Err(e) => self.fail(step, &e),
        }
        if let Err(e) = check_lists(self.store(), &self.model) {
            self.fail(step, &e);
        }
    }

    /// Flips one bit at rest in a copy of the disk and opens the copy: whatever it
    /// returns is byte-identical to what was acknowledged, and whatever it no longer
    /// returns is reported (a lost range, a `Corrupted` error, or damage found by
    /// `verify`). The run goes on with the undamaged original.
    fn bit_rot(&mut self, step: usize, file: u64, at: u64, bit: u8) {
        self.quiesce(step);
        let copy = self.sim.copy_after_crash(CrashMode::DropUnsynced);
        let files: Vec<(std::path::PathBuf, u64)> = files_under(&copy, std::path::Path::new(ROOT))
            .into_iter()
            .filter(|(path, len)| *len > 0 && !path.ends_with("LOCK"))
            .collect();
        let Some((path, len)) = files
            .get((file % files.len().max(1) as u64) as usize)
            .cloned()
        else {
            return;
        };
        let offset = at % len;
        self.log.push(format!(
            "{step}: flip bit {bit} of byte {offset} of {} in a copy",
            path.display()
        ));
        *self.progress.lock().unwrap() = format!("{} op {step}: bit rot", self.label);
        copy.flip_bit(&path, offset, bit);
        self.tally.bit_flips += 1;
        let store = match Vellum::open_with_storage(Arc::new(copy), ROOT, options()) {
            Ok(store) => store,
            Err(Error::Corrupted { .. }) => {
                self.tally.bit_flips_detected += 1;
                return;
            }
            Err(e) => self.fail(
                step,
                &format!(
                    "opening a copy with a flipped bit in {}: {e}",
                    path.display()
                ),
            ),
        };
        let differs = match read_despite_rot(&store, &self.model) {
            Ok(differs) => differs,
            Err(e) => self.fail(
                step,
                &format!("after a bit flip in {}: {e}", path.display()),
            ),
        };
        let verified = store.verify(&mut |_| {});
        let reported = !store.lost_ranges().is_empty()
            || differs == Some(true)
            || match &verified {
                Ok(report) => !report.damage.is_empty() || !report.lost_ranges.is_empty(),
                Err(Error::Corrupted { .. }) => true,
                Err(e) => self.fail(step, &format!("verify after a bit flip: {e}")),
            };
        match differs {
            None => {
                if reported {
                    self.tally.bit_flips_reported_only += 1;
                }
            }
            Some(_) if reported => self.tally.bit_flips_detected += 1,
            Some(_) => self.fail(
                step,
                &format!(
                    "a bit flip in {} byte {offset} changed what the store returns, unreported",
                    path.display()
                ),
            ),
        }
    }
}

/// How an operation ended, for the log.
fn outcome(result: &vellum::Result<Done>) -> String {
    match result {
        Ok(_) => "acknowledged".to_string(),
        Err(e) => format!("failed: {e}"),
    }
}

/// A channel outside the model, for probing whether the store takes writes.
const PROBE: &str = "model-probe";

/// Every file under `dir`, with its length.
fn files_under(sim: &SimStorage, dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    for name in sim.list_dir(dir).unwrap_or_default() {
        let path = dir.join(name);
        match sim.stat(&path) {
            Ok(Some(stat)) if stat.is_dir => found.extend(files_under(sim, &path)),
            Ok(Some(stat)) => found.push((path, stat.len)),
            _ => {}
        }
    }
    found
}

/// Reads every channel of a store whose disk may be damaged. A message returned must be
/// the model's message of that seq, byte for byte, in order; an error must be
/// `Corrupted`. Answers `None` if everything matched the model, `Some(true)` if a read
/// or metadata failed with `Corrupted` (reported), `Some(false)` if something was
/// missing or different without an error (to be reported elsewhere).
fn read_despite_rot(store: &Vellum, model: &Model) -> Result<Option<bool>, String> {
    let mut differs: Option<bool> = None;
    let mut note = |errored: bool| differs = Some(differs == Some(true) || errored);
    for (id, slot) in &model.slots {
        let chan = match slot {
            Slot::Live(chan) => chan,
            Slot::Archived(chan, _) => {
                match store.info(id) {
                    Ok(info) if info.messages == chan.messages.len() as u64 => {}
                    Ok(_) => note(false),
                    Err(Error::Corrupted { .. }) => note(true),
                    Err(e) => return Err(format!("info of archived {id}: {e}")),
                }
                continue;
            }
            Slot::Absent => continue,
        };
        let history = match store.read(id, &ReadRequest::all()) {
            Ok(history) => history,
            Err(Error::Corrupted { .. }) => {
                note(true);
                continue;
            }
            Err(Error::NotFound { .. }) => {
                note(false);
                continue;
            }
            Err(e) => return Err(format!("read {id}: {e}")),
        };
        let mut want = chan.messages.iter();
        let mut returned = 0;
        for m in history {
            match m {
                Ok(m) => {
                    returned += 1;
                    let Some(expected) = want.by_ref().find(|w| w.seq >= m.seq) else {
                        return Err(format!("{id}: seq {} returned, never acknowledged", m.seq));
                    };
                    if (expected.seq, &expected.key, &expected.data) != (m.seq, &m.key, &m.data) {
                        return Err(format!(
                            "{id}: returned #{} key {:?} ({} bytes), acknowledged {expected:?}",
                            m.seq,
                            String::from_utf8_lossy(&m.key),
                            m.data.len()
                        ));
                    }
                }
                Err(Error::Corrupted { .. }) => {
                    note(true);
                    break;
                }
                Err(e) => return Err(format!("read {id}: {e}")),
            }
        }
        if returned != chan.messages.len() {
            note(false);
        }
        match store.metadata(id).map(Metadata::into_object) {
            Ok(metadata) if metadata == chan.metadata => {}
            Ok(_) => note(false),
            Err(Error::Corrupted { .. }) => note(true),
            Err(e) => return Err(format!("metadata {id}: {e}")),
        }
    }
    Ok(differs)
}

fn run_seed(seed: u64, ops: usize, progress: Arc<Mutex<String>>) -> Tally {
    let sim = SimStorage::new();
    let mut run = Run {
        tally: Tally::default(),
        last_crash: None,
        torn_crash_seen: false,
        label: format!("seed {seed}"),
        rerun: format!("rerun with VELLUM_MODEL_SEED={seed}"),
        src: Gen {
            rng: StdRng::seed_from_u64(seed),
            seen: Vec::new(),
        },
        sim,
        store: None,
        model: Model::new(),
        progress,
        log: Vec::new(),
    };
    run.open(0, "first open");
    for step in 0..ops {
        let next = run.src.step(&run.model);
        run.run_step(step, next);
    }
    run.check_everything(ops);
    run.tally
}

/// Runs a fixed list of steps (a regression found by a seed, kept as a script).
fn run_script(name: &str, steps: Vec<Step>) {
    let mut run = Run {
        tally: Tally::default(),
        last_crash: None,
        torn_crash_seen: false,
        label: format!("script {name}"),
        rerun: "a scripted regression".into(),
        src: Gen {
            rng: StdRng::seed_from_u64(0),
            seen: Vec::new(),
        },
        sim: SimStorage::new(),
        store: None,
        model: Model::new(),
        progress: Arc::new(Mutex::new(name.to_string())),
        log: vec![format!("script {name}")],
    };
    run.open(0, "first open");
    let count = steps.len();
    for (step, what) in steps.into_iter().enumerate() {
        run.run_step(step, what);
    }
    run.check_everything(count);
}

/// Runs each seed on its own thread, so that a hang is reported with its seed.
fn run_seeds(seeds: impl IntoIterator<Item = u64>, ops: usize) {
    let mut failures = Vec::new();
    let mut total = Tally::default();
    for seed in seeds {
        let progress = Arc::new(Mutex::new(format!("seed {seed}: starting")));
        let (tx, rx) = mpsc::channel();
        let watched = progress.clone();
        std::thread::Builder::new()
            .name(format!("model-seed-{seed}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(|| run_seed(seed, ops, watched));
                let _ = tx.send(result.map_err(|panic| {
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())
                }));
            })
            .unwrap();
        match rx.recv_timeout(SEED_TIMEOUT) {
            Ok(Ok(tally)) => total.add(tally),
            Ok(Err(message)) => failures.push(message),
            Err(_) => panic!(
                "model test hung for {SEED_TIMEOUT:?}: {}",
                progress.lock().unwrap()
            ),
        }
    }
    eprintln!("model test exercised: {total:#?}");
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

/// Runs the `part`-th quarter of the seeds (all four tests run side by side), or, with
/// `VELLUM_MODEL_SEED`, that one seed in the first part.
fn run_part(part: u64) {
    let ops = env_u64("VELLUM_MODEL_OPS").map_or(OPS, |n| n as usize);
    match env_u64("VELLUM_MODEL_SEED") {
        Some(seed) if part == 0 => run_seeds([seed], ops),
        Some(_) => {}
        None => {
            let seeds = env_u64("VELLUM_MODEL_SEEDS").unwrap_or(SEEDS);
            run_seeds((0..seeds).filter(|seed| seed % PARTS == part), ops);
        }
    }
}

#[test]
fn random_operations_with_crashes_and_faults_match_the_model_part_1() {
    run_part(0);
}

#[test]
fn random_operations_with_crashes_and_faults_match_the_model_part_2() {
    run_part(1);
}

#[test]
fn random_operations_with_crashes_and_faults_match_the_model_part_3() {
    run_part(2);
}

#[test]
fn random_operations_with_crashes_and_faults_match_the_model_part_4() {
    run_part(3);
}

// ---------------------------------------------------------------------------------------
// Regressions found by seeds, kept as scripts (a seed's operations change whenever the
// generator does; a script does not).

fn append(id: &'static str, data: &str) -> Step {
    Step::Op(Op::Append(
        id,
        vec![NewMsg {
            data: data.as_bytes().to_vec(),
            key: None,
        }],
    ))
}

/// Found as seed 0 (and most seeds) on efaa1bc: the data directory's own entry was never
/// synced, so a crash lost the whole store, acknowledged writes included.
#[test]
fn regression_a_crash_right_after_the_first_writes_keeps_them() {
    run_script(
        "first writes then crash",
        vec![
            append("model-a", "one"),
            append("x", "two"),
            Step::Crash(CrashMode::DropUnsynced),
        ],
    );
}

/// Found as seed 1 on efaa1bc: opening the store started the new journal file under the
/// name of the old, empty one, then deleted the old files, new one included; appends
/// acknowledged after a clean reopen went to an unlinked file and a crash lost them.
#[test]
fn regression_an_append_acknowledged_after_a_clean_reopen_survives_a_crash() {
    run_script(
        "append, reopen, append, crash",
        vec![
            append("model-a", "before the reopen"),
            Step::Reopen,
            append("model-a", "after the reopen"),
            append("model-b", "another channel"),
            Step::Crash(CrashMode::DropUnsynced),
            append("model-a", "after the crash"),
            Step::Crash(CrashMode::Torn { seed: 7 }),
        ],
    );
}

/// Found as seed 36 on efaa1bc: deleting the newest message lowered `next_seq`, so the
/// next append reused the deleted message's seq.
#[test]
fn regression_deleting_the_newest_message_never_reuses_its_seq() {
    run_script(
        "delete the newest message, append",
        vec![
            append("x", "zero"),
            append("x", "one"),
            append("x", "two"),
            Step::Op(Op::Amend("x", "ALLOW_LINE_DELETION", json!([true]))),
            Step::Op(Op::Delete("x", Selector::Seq(2))),
            append("x", "three"),
            Step::Op(Op::Delete("x", Selector::Seq(3))),
            Step::Reopen,
            append("x", "four"),
            Step::Op(Op::Delete("x", Selector::Seq(4))),
            Step::Crash(CrashMode::DropUnsynced),
            append("x", "five"),
        ],
    );
}

/// An archive or a restore interrupted at any step is wholly done or wholly not done:
/// never a channel both live and archived (archive and restore rename a file between two
/// directories and sync both; a crash between the syncs can keep both names).
#[test]
fn regression_an_archive_or_restore_interrupted_anywhere_is_all_or_nothing() {
    for budget in 0..40 {
        for mode in [CrashMode::DropUnsynced, CrashMode::Torn { seed: budget }] {
            run_script(
                &format!("archive interrupted after {budget} steps, {mode:?}"),
                vec![
                    append("model-a", "one"),
                    append("model-b", "neighbour"),
                    Step::CrashDuring {
                        op: Op::Archive("model-a", "EXPIRED".into()),
                        budget,
                        quiet: true,
                        mode,
                    },
                    Step::Op(Op::Remove("model-a")),
                    Step::Op(Op::RemoveArchived("model-a")),
                    append("model-a", "fresh"),
                ],
            );
            run_script(
                &format!("restore interrupted after {budget} steps, {mode:?}"),
                vec![
                    append("model-a", "one"),
                    Step::Op(Op::Archive("model-a", "OWNER_DELETED".into())),
                    Step::CrashDuring {
                        op: Op::Restore("model-a"),
                        budget,
                        quiet: true,
                        mode,
                    },
                    Step::Op(Op::Restore("model-a")),
                    Step::Op(Op::Remove("model-a")),
                    Step::Op(Op::RemoveArchived("model-a")),
                ],
            );
        }
    }
}

fn fail_with(op: Op, kind: FaultKind, place: &str, crash: Option<CrashMode>) -> Step {
    Step::FailDuring {
        op,
        fault: Fault {
            path_contains: Some(place.to_string()),
            ..Fault::new(kind)
        },
        crash,
    }
}

/// The scenario of seed 34 (the script guards it; the seed itself failed on the old
/// code): a journal write failed, the store was closed without a power loss,
/// and the reopen replayed a channel into a shard directory the dead process had
/// created but never made durable — then retired the journal. A later power loss took
/// the directory, and an acknowledged channel with it. Opening now starts with a
/// `syncfs`, and replay syncs `channels/` for every shard it writes.
#[test]
fn regression_recovery_makes_durable_what_a_dead_process_left() {
    run_script(
        "replay into a shard directory left unsynced",
        vec![
            append("model-b", "acknowledged before the failure"),
            fail_with(
                Op::Append(
                    "x",
                    vec![NewMsg {
                        data: b"meets a failed journal write".to_vec(),
                        key: None,
                    }],
                ),
                FaultKind::Write,
                "/journal/",
                None,
            ),
            append("model-a", "after the reopen"),
            Step::Crash(CrashMode::Torn { seed: 1 }),
        ],
    );
}

/// The scenario of seed 185 (the script guards it; the seed itself failed on the old
/// code): a trim renamed its new file into place, its directory sync
/// failed, the store was closed and reopened (showing the trimmed channel), then a power
/// loss brought the untrimmed file back: a state seen, then unseen.
#[test]
fn regression_a_trim_whose_directory_sync_failed_stays_as_reopened() {
    run_script(
        "trim, failed directory sync, reopen, power loss",
        vec![
            append("model-b", "zero"),
            append("model-b", "one"),
            append("model-b", "two"),
            fail_with(
                Op::Trim("model-b", Selector::Seq(1)),
                FaultKind::SyncDir,
                "/channels/",
                None,
            ),
            Step::Crash(CrashMode::DropUnsynced),
        ],
    );
}

/// Found as seed 855: an archive whose read of the channel's stored-body references
/// failed took the failure for "no stored bodies" and archived the file without
/// inlining them (an archived channel must be self-contained), keeping its epoch.
#[test]
fn regression_an_archive_that_cannot_read_its_references_fails() {
    run_script(
        "archive with a failed read",
        vec![
            Step::Op(Op::Append(
                "model-a",
                vec![NewMsg {
                    data: vec![7; EMBED_BYTES_MAX + 100],
                    key: None,
                }],
            )),
            append("model-a", "small"),
            fail_with(
                Op::Archive("model-a", "EXPIRED".into()),
                FaultKind::Read,
                "/channels/",
                None,
            ),
            Step::Op(Op::Restore("model-a")),
            Step::Op(Op::Archive("model-a", "EXPIRED".into())),
            Step::Op(Op::Restore("model-a")),
        ],
    );
}

/// Found as seed 3770 of 4,000: a restore whose marker sync failed left part of its
/// marker in the archived file through a power loss (nothing repairs archived files);
/// a later restore appended its marker after those bytes, and loading the restored
/// channel cut the file there as damage, marker included. A restore now writes its
/// marker right after the last intact record (saving and reporting what follows).
#[test]
fn regression_a_restore_after_a_failed_one_puts_its_marker_after_the_intact_records() {
    for seed in 0..16 {
        run_script(
            "restore, failed marker sync, torn power loss, power loss, restore",
            vec![
                append("x", "zero"),
                append("x", "one"),
                Step::Op(Op::Archive("x", "EXPIRED".into())),
                fail_with(
                    Op::Restore("x"),
                    FaultKind::SyncData,
                    "/archive/",
                    Some(CrashMode::Torn { seed }),
                ),
                Step::Crash(CrashMode::DropUnsynced),
                Step::Op(Op::Restore("x")),
                append("x", "two"),
            ],
        );
    }
}
