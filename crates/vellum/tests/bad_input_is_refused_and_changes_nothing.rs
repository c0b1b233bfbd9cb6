//! Proves that bad input gets its typed error and changes nothing: for each bad input the
//! test asserts the exact `Error` variant, then that every channel's messages, metadata,
//! info and presence are as before, and that the bytes of every file under the data
//! directory (walked on the simulated filesystem) are identical before and after — also
//! after a checkpoint, which would write out anything the refused call had queued.

mod common;

use common::{ROOT, open_with, owner, read_all};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vellum::storage::{SimStorage, Storage};
use vellum::{
    ChannelInfo, Error, InvalidId, Message, Metadata, MetadataError, NewMessage, Options, Position,
    ReadFrom, ReadRequest, Selector, Vellum,
};

const MESSAGE_MAX: usize = 4096;
const BATCH_MAX: usize = 8;

/// A channel with history: trimmed once (first seq 2), owned, line deletion off.
const VICTIM: &str = "victim";
/// A channel whose metadata allows deleting lines.
const DELETABLE: &str = "deletable";
/// An archived channel.
const ARCHIVED: &str = "archived";
/// An id nothing ever used.
const MISSING: &str = "missing";
const CHANNELS: [&str; 4] = [VICTIM, DELETABLE, ARCHIVED, MISSING];

fn options() -> Options {
    Options {
        message_bytes_max: MESSAGE_MAX,
        batch_messages_max: BATCH_MAX,
        ..common::options()
    }
}

struct Fixture {
    sim: SimStorage,
    store: Vellum,
    /// The position of a message of `VICTIM`, issued before its trim.
    stale: Position,
    /// A current position of `VICTIM` (its seq 3).
    current: Position,
}

fn fixture() -> Fixture {
    let sim = SimStorage::new();
    let store = open_with(&sim, options());
    let Value::Object(map) = json!({ "owners": [owner('a')] }) else {
        unreachable!()
    };
    store.create(VICTIM, Metadata::from_object(map)).unwrap();
    let mut acks = Vec::new();
    for i in 0..6 {
        let key = format!("key-{i}");
        let data = format!("message {i}");
        acks.extend(
            store
                .append_batch(
                    VICTIM,
                    &[NewMessage::with_key(data.as_bytes(), key.as_bytes())],
                )
                .unwrap(),
        );
    }
    store
        .amend(VICTIM, "RESTRICT_ACCESS", &json!([true]))
        .unwrap();
    store.trim(VICTIM, &Selector::Seq(2)).unwrap();
    store.append(VICTIM, b"after the trim").unwrap();
    let current = read_all(&store, VICTIM)
        .into_iter()
        .find(|m| m.seq == 3)
        .unwrap()
        .position;

    for i in 0..4 {
        store
            .append(DELETABLE, format!("line {i}").as_bytes())
            .unwrap();
    }
    store
        .amend(DELETABLE, "ALLOW_LINE_DELETION", &json!([true]))
        .unwrap();

    store.append(ARCHIVED, b"old news").unwrap();
    store.archive(ARCHIVED, "ARCHIVED_BY_TEST").unwrap();

    Fixture {
        sim,
        store,
        stale: acks[4].position,
        current,
    }
}

/// Every file under `dir`, recursively, with its bytes.
fn walk(sim: &SimStorage, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for name in sim.list_dir(dir).unwrap() {
        let path = dir.join(name);
        match sim.stat(&path).unwrap() {
            Some(stat) if stat.is_dir => walk(sim, &path, out),
            Some(_) => {
                out.insert(path.clone(), sim.read_file(&path).unwrap());
            }
            None => {}
        }
    }
}

/// What a channel looks like from outside (access times excepted: reads change them).
#[derive(Debug, PartialEq)]
struct Channel {
    exists: bool,
    archived: bool,
    info: Option<ChannelInfo>,
    messages: Option<Vec<Message>>,
    metadata: Option<Value>,
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    channels: BTreeMap<&'static str, Channel>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

fn channel(store: &Vellum, id: &str) -> Channel {
    let exists = store.exists(id).unwrap();
    Channel {
        exists,
        archived: store.is_archived(id).unwrap(),
        info: store.info(id).ok().map(|info| ChannelInfo {
            accessed_ms: 0,
            ..info
        }),
        messages: exists.then(|| read_all(store, id)),
        metadata: exists.then(|| Value::Object(store.metadata(id).unwrap().into_object())),
    }
}

/// Lets background work settle: the first checkpoint writes out anything committed,
/// the second runs only after the checkpoint thread finished preparing the next
/// journal file (it prepares between checkpoints), and finds nothing to do.
fn quiesce(store: &Vellum) {
    store.checkpoint().unwrap();
    store.checkpoint().unwrap();
}

fn snapshot(fx: &Fixture) -> Snapshot {
    quiesce(&fx.store);
    let channels = CHANNELS
        .iter()
        .map(|id| (*id, channel(&fx.store, id)))
        .collect();
    let mut files = BTreeMap::new();
    walk(&fx.sim, Path::new(ROOT), &mut files);
    Snapshot { channels, files }
}

/// Runs `op`, which must fail with an error `expected` accepts, and checks that the
/// channels and the files are exactly as before.
#[track_caller]
fn refused<T: std::fmt::Debug>(
    fx: &Fixture,
    op: impl FnOnce(&Vellum) -> vellum::Result<T>,
    expected: impl FnOnce(&Error) -> bool,
) {
    let before = snapshot(fx);
    assert_eq!(before, snapshot(fx), "the fixture is quiescent");
    match op(&fx.store) {
        Ok(value) => panic!("bad input was accepted: {value:?}"),
        Err(e) => assert!(expected(&e), "wrong error: {e:?}"),
    }
    let after = snapshot(fx);
    assert_eq!(
        before.channels, after.channels,
        "the refused call changed a channel"
    );
    let changed: Vec<_> = before
        .files
        .keys()
        .chain(after.files.keys())
        .filter(|path| before.files.get(*path) != after.files.get(*path))
        .collect();
    assert!(
        changed.is_empty(),
        "the refused call changed files: {changed:?}"
    );
}

/// Every entry point, called with `id`, must answer `InvalidId(expected)`.
fn every_call_refuses_the_id(id: &str, expected: InvalidId) {
    let fx = fixture();
    let is = |e: &Error| matches!(e, Error::InvalidId(got) if *got == expected);
    let called = Arc::new(AtomicBool::new(false));
    refused(&fx, |s| s.create(id, Metadata::new()), is);
    refused(&fx, |s| s.append(id, b"x"), is);
    refused(&fx, |s| s.append_batch(id, &[NewMessage::new(b"x")]), is);
    let flag = called.clone();
    refused(
        &fx,
        |s| {
            s.append_with(id, &[NewMessage::new(b"x")], move |_| {
                flag.store(true, Ordering::SeqCst)
            })
        },
        is,
    );
    refused(&fx, |s| s.read(id, &ReadRequest::all()).map(|_| ()), is);
    refused(&fx, |s| s.metadata(id), is);
    refused(&fx, |s| s.amend(id, "RESTRICT_ACCESS", &json!([true])), is);
    refused(&fx, |s| s.clear(id), is);
    refused(&fx, |s| s.trim(id, &Selector::Seq(0)), is);
    refused(&fx, |s| s.delete_message(id, &Selector::Seq(0)), is);
    refused(&fx, |s| s.remove(id), is);
    refused(&fx, |s| s.archive(id, "why"), is);
    refused(&fx, |s| s.restore(id), is);
    refused(&fx, |s| s.remove_archived(id), is);
    refused(&fx, |s| s.exists(id), is);
    refused(&fx, |s| s.is_archived(id), is);
    refused(&fx, |s| s.info(id), is);
    refused(&fx, |s| s.size(id), is);
    assert!(
        !called.load(Ordering::SeqCst),
        "append_with's callback ran for a refused batch"
    );
}

#[test]
fn empty_id_is_refused() {
    every_call_refuses_the_id("", InvalidId::Empty);
}

#[test]
fn dot_dot_id_is_refused() {
    every_call_refuses_the_id("..", InvalidId::LeadingDot);
}

#[test]
fn id_with_a_slash_is_refused() {
    every_call_refuses_the_id("a/b", InvalidId::BadCharacter('/'));
    every_call_refuses_the_id("vi/../../escape", InvalidId::BadCharacter('/'));
}

#[test]
fn id_with_a_leading_dot_is_refused() {
    every_call_refuses_the_id(".hidden", InvalidId::LeadingDot);
}

#[test]
fn id_of_129_characters_is_refused() {
    every_call_refuses_the_id(&"a".repeat(129), InvalidId::TooLong(129));
}

#[test]
fn non_ascii_id_is_refused() {
    every_call_refuses_the_id("café", InvalidId::BadCharacter('é'));
}

#[test]
fn message_over_message_bytes_max_is_refused() {
    let fx = fixture();
    let big = vec![7u8; MESSAGE_MAX + 1];
    let too_large = |e: &Error| matches!(e, Error::MessageTooLarge { len, max } if *len == MESSAGE_MAX + 1 && *max == MESSAGE_MAX);
    refused(&fx, |s| s.append(VICTIM, &big), too_large);
    refused(&fx, |s| s.append(MISSING, &big), too_large);
    refused(
        &fx,
        |s| s.append_batch(DELETABLE, &[NewMessage::with_key(&big, b"k")]),
        too_large,
    );
    // The limit itself is allowed.
    fx.store.append(VICTIM, &big[..MESSAGE_MAX]).unwrap();
}

#[test]
fn key_over_64_bytes_is_refused() {
    let fx = fixture();
    let key = [b'k'; 65];
    let too_long = |e: &Error| matches!(e, Error::KeyTooLong { len: 65, max: 64 });
    refused(
        &fx,
        |s| s.append_batch(VICTIM, &[NewMessage::with_key(b"data", &key)]),
        too_long,
    );
    refused(
        &fx,
        |s| s.append_batch(MISSING, &[NewMessage::with_key(b"data", &key)]),
        too_long,
    );
    fx.store
        .append_batch(VICTIM, &[NewMessage::with_key(b"data", &key[..64])])
        .unwrap();
}

#[test]
fn empty_batch_is_refused() {
    let fx = fixture();
    refused(
        &fx,
        |s| s.append_batch(VICTIM, &[]),
        |e| matches!(e, Error::EmptyBatch),
    );
    refused(
        &fx,
        |s| s.append_batch(MISSING, &[]),
        |e| matches!(e, Error::EmptyBatch),
    );
}

#[test]
fn batch_over_batch_messages_max_is_refused() {
    let fx = fixture();
    let batch = vec![NewMessage::new(b"m"); BATCH_MAX + 1];
    let too_large = |e: &Error| matches!(e, Error::BatchTooLarge { len, max } if *len == BATCH_MAX + 1 && *max == BATCH_MAX);
    refused(&fx, |s| s.append_batch(VICTIM, &batch), too_large);
    refused(&fx, |s| s.append_batch(MISSING, &batch), too_large);
    fx.store.append_batch(VICTIM, &batch[..BATCH_MAX]).unwrap();
}

#[test]
fn batch_whose_third_message_is_oversized_writes_nothing() {
    let fx = fixture();
    let big = vec![1u8; MESSAGE_MAX + 1];
    let batch = [
        NewMessage::new(b"first"),
        NewMessage::with_key(b"second", b"k2"),
        NewMessage::new(&big),
        NewMessage::new(b"fourth"),
    ];
    let too_large = |e: &Error| matches!(e, Error::MessageTooLarge { .. });
    refused(&fx, |s| s.append_batch(VICTIM, &batch), too_large);
    // Nor does it create a channel that did not exist.
    refused(&fx, |s| s.append_batch(MISSING, &batch), too_large);
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    refused(
        &fx,
        |s| s.append_with(VICTIM, &batch, move |_| flag.store(true, Ordering::SeqCst)),
        too_large,
    );
    assert!(!called.load(Ordering::SeqCst));
}

#[test]
fn read_from_an_unknown_key_is_key_not_found() {
    let fx = fixture();
    let not_found =
        |e: &Error| matches!(e, Error::KeyNotFound { channel } if channel.as_str() == VICTIM);
    refused(
        &fx,
        |s| {
            s.read(VICTIM, &ReadFrom::Key(b"no-such-key".to_vec()).into())
                .map(|_| ())
        },
        not_found,
    );
    // A key that existed before the trim is gone with its message.
    refused(
        &fx,
        |s| {
            s.read(VICTIM, &ReadFrom::Key(b"key-0".to_vec()).into())
                .map(|_| ())
        },
        not_found,
    );
}

#[test]
fn trim_to_an_unknown_key_is_key_not_found() {
    let fx = fixture();
    refused(
        &fx,
        |s| s.trim(VICTIM, &Selector::Key(b"no-such-key".to_vec())),
        |e| matches!(e, Error::KeyNotFound { .. }),
    );
    refused(
        &fx,
        |s| s.trim(VICTIM, &Selector::Key(b"key-1".to_vec())),
        |e| matches!(e, Error::KeyNotFound { .. }),
    );
}

#[test]
fn trim_to_an_unknown_seq_is_seq_not_found() {
    let fx = fixture();
    for seq in [0, 1, 7, 100, u64::MAX] {
        refused(
            &fx,
            |s| s.trim(VICTIM, &Selector::Seq(seq)),
            |e| matches!(e, Error::SeqNotFound { seq: got, .. } if *got == seq),
        );
    }
}

#[test]
fn delete_when_line_deletion_is_off_is_forbidden() {
    let fx = fixture();
    refused(
        &fx,
        |s| s.delete_message(VICTIM, &Selector::Seq(3)),
        |e| matches!(e, Error::Forbidden { channel } if channel.as_str() == VICTIM),
    );
    refused(
        &fx,
        |s| s.delete_message(VICTIM, &Selector::Key(b"key-3".to_vec())),
        |e| matches!(e, Error::Forbidden { .. }),
    );
}

#[test]
fn delete_of_an_unknown_seq_or_key_is_not_found() {
    let fx = fixture();
    for seq in [4, 5, 1000] {
        refused(
            &fx,
            |s| s.delete_message(DELETABLE, &Selector::Seq(seq)),
            |e| matches!(e, Error::SeqNotFound { seq: got, .. } if *got == seq),
        );
    }
    refused(
        &fx,
        |s| s.delete_message(DELETABLE, &Selector::Key(b"nope".to_vec())),
        |e| matches!(e, Error::KeyNotFound { .. }),
    );
}

#[test]
fn position_issued_before_a_trim_is_stale() {
    let fx = fixture();
    refused(
        &fx,
        |s| {
            s.read(VICTIM, &ReadFrom::Position(fx.stale).into())
                .map(|_| ())
        },
        |e| matches!(e, Error::StalePosition { channel } if channel.as_str() == VICTIM),
    );
}

#[test]
fn position_off_a_message_boundary_is_stale() {
    let fx = fixture();
    let stale = |e: &Error| matches!(e, Error::StalePosition { .. });
    for offset in [0, 1, fx.current.offset + 1, fx.current.offset - 1, u64::MAX] {
        let position = Position {
            offset,
            ..fx.current
        };
        refused(
            &fx,
            |s| {
                s.read(VICTIM, &ReadFrom::Position(position).into())
                    .map(|_| ())
            },
            stale,
        );
    }
    let other_epoch = Position {
        epoch: fx.current.epoch + 1,
        ..fx.current
    };
    refused(
        &fx,
        |s| {
            s.read(VICTIM, &ReadFrom::Position(other_epoch).into())
                .map(|_| ())
        },
        stale,
    );
    // The position of another channel's message means nothing here.
    let other = read_all(&fx.store, DELETABLE)[1].position;
    refused(
        &fx,
        |s| {
            s.read(VICTIM, &ReadFrom::Position(other).into())
                .map(|_| ())
        },
        stale,
    );
}

#[test]
fn read_from_a_seq_below_the_trimmed_start_is_trimmed() {
    let fx = fixture();
    for seq in [0, 1] {
        refused(
            &fx,
            |s| s.read(VICTIM, &ReadFrom::Seq(seq).into()).map(|_| ()),
            |e| matches!(e, Error::Trimmed { requested, first_seq: 2, .. } if *requested == seq),
        );
    }
}

#[test]
fn restore_over_a_live_channel_is_a_conflict() {
    let fx = fixture();
    refused(
        &fx,
        |s| s.restore(VICTIM),
        |e| matches!(e, Error::RestoreConflict { channel } if channel.as_str() == VICTIM),
    );
}

#[test]
fn restore_or_remove_archived_without_an_archive_is_not_archived() {
    let fx = fixture();
    let not_archived = |e: &Error| matches!(e, Error::NotArchived { .. });
    refused(&fx, |s| s.restore(MISSING), not_archived);
    refused(&fx, |s| s.remove_archived(MISSING), not_archived);
    // A live channel is not archived either: remove_archived must leave it alone.
    refused(&fx, |s| s.remove_archived(VICTIM), not_archived);
}

#[test]
fn writes_to_an_archived_channel_are_refused_as_archived() {
    let fx = fixture();
    let archived = |e: &Error| {
        matches!(e, Error::Archived { channel, reason }
            if channel.as_str() == ARCHIVED && reason == "ARCHIVED_BY_TEST")
    };
    refused(&fx, |s| s.append(ARCHIVED, b"x"), archived);
    refused(
        &fx,
        |s| s.append_batch(ARCHIVED, &[NewMessage::new(b"a"), NewMessage::new(b"b")]),
        archived,
    );
    refused(&fx, |s| s.create(ARCHIVED, Metadata::new()), archived);
    refused(
        &fx,
        |s| s.amend(ARCHIVED, "RESTRICT_ACCESS", &json!([true])),
        archived,
    );
    refused(
        &fx,
        |s| s.read(ARCHIVED, &ReadRequest::all()).map(|_| ()),
        archived,
    );
    refused(&fx, |s| s.metadata(ARCHIVED), archived);
}

#[test]
fn rewrites_of_an_archived_channel_are_refused_as_archived() {
    let fx = fixture();
    let archived = |e: &Error| matches!(e, Error::Archived { .. });
    refused(&fx, |s| s.clear(ARCHIVED), archived);
    refused(&fx, |s| s.trim(ARCHIVED, &Selector::Seq(0)), archived);
    refused(
        &fx,
        |s| s.delete_message(ARCHIVED, &Selector::Seq(0)),
        archived,
    );
    refused(&fx, |s| s.remove(ARCHIVED), archived);
    refused(&fx, |s| s.archive(ARCHIVED, "again"), archived);
}

#[test]
fn amend_of_a_missing_channel_is_not_found() {
    let fx = fixture();
    let not_found =
        |e: &Error| matches!(e, Error::NotFound { channel } if channel.as_str() == MISSING);
    refused(
        &fx,
        |s| s.amend(MISSING, "RESTRICT_ACCESS", &json!([true])),
        not_found,
    );
    refused(
        &fx,
        |s| s.amend(MISSING, "ADD_OWNERS", &json!([owner('z')])),
        not_found,
    );
}

#[test]
fn rewrites_and_reads_of_a_missing_channel_are_not_found() {
    let fx = fixture();
    let not_found = |e: &Error| matches!(e, Error::NotFound { .. });
    refused(&fx, |s| s.clear(MISSING), not_found);
    refused(&fx, |s| s.trim(MISSING, &Selector::Seq(0)), not_found);
    refused(
        &fx,
        |s| s.delete_message(MISSING, &Selector::Seq(0)),
        not_found,
    );
    refused(&fx, |s| s.remove(MISSING), not_found);
    refused(&fx, |s| s.archive(MISSING, "why"), not_found);
    refused(
        &fx,
        |s| s.read(MISSING, &ReadRequest::all()).map(|_| ()),
        not_found,
    );
    refused(&fx, |s| s.metadata(MISSING), not_found);
    refused(&fx, |s| s.info(MISSING), not_found);
}

#[test]
fn unknown_metadata_command_is_refused() {
    let fx = fixture();
    for command in ["DROP_TABLE", "toString", "restrict_access", ""] {
        refused(
            &fx,
            |s| s.amend(VICTIM, command, &json!([true])),
            |e| matches!(e, Error::Metadata(MetadataError::UnknownCommand(c)) if c == command),
        );
    }
    refused(
        &fx,
        |s| s.amend(VICTIM, "UPDATE_EXPIRATION", &json!([1])),
        |e| matches!(e, Error::Metadata(MetadataError::NotImplemented(_))),
    );
}

#[test]
fn invalid_command_arguments_are_refused() {
    let fx = fixture();
    let invalid = |e: &Error| matches!(e, Error::Metadata(MetadataError::InvalidArguments { .. }));
    refused(
        &fx,
        |s| s.amend(VICTIM, "ALLOW_LINE_DELETION", &json!("yes")),
        invalid,
    );
    refused(
        &fx,
        |s| s.amend(VICTIM, "RESTRICT_ACCESS", &json!([1])),
        invalid,
    );
    refused(
        &fx,
        |s| s.amend(VICTIM, "RESTRICT_ACCESS", &json!([])),
        invalid,
    );
    refused(
        &fx,
        |s| s.amend(VICTIM, "ADD_OWNERS", &json!(owner('b'))),
        invalid,
    );
    refused(&fx, |s| s.amend(VICTIM, "ADD_ALLOWED", &json!({})), invalid);
    refused(&fx, |s| s.amend(VICTIM, "ADD_MAILBOX", &json!(5)), invalid);
    // A command that needs an `owners` array on a channel without one.
    refused(
        &fx,
        |s| s.amend(DELETABLE, "ADD_OWNERS", &json!([owner('b')])),
        |e| matches!(e, Error::Metadata(MetadataError::NoOwners { .. })),
    );
}

#[test]
fn create_of_an_existing_channel_is_already_exists() {
    let fx = fixture();
    let exists =
        |e: &Error| matches!(e, Error::AlreadyExists { channel } if channel.as_str() == VICTIM);
    refused(&fx, |s| s.create(VICTIM, Metadata::new()), exists);
    let Value::Object(map) = json!({ "owners": [owner('z')], "restricted": false }) else {
        unreachable!()
    };
    refused(
        &fx,
        |s| s.create(VICTIM, Metadata::from_object(map)),
        exists,
    );
    refused(
        &fx,
        |s| s.create(DELETABLE, Metadata::new()),
        |e| matches!(e, Error::AlreadyExists { .. }),
    );
}

#[test]
fn options_out_of_range_are_refused_before_the_directory_is_touched() {
    let sim = SimStorage::new();
    for options in [
        vellum::Options {
            message_bytes_max: vellum::MESSAGE_BYTES_CEILING + 1,
            ..options()
        },
        vellum::Options {
            message_bytes_max: 0,
            ..options()
        },
        vellum::Options {
            open_files_max: 1,
            ..options()
        },
    ] {
        let opened = Vellum::open_with_storage(std::sync::Arc::new(sim.clone()), ROOT, options);
        assert!(matches!(opened, Err(vellum::Error::InvalidOptions(_))));
        assert!(
            sim.list_dir(std::path::Path::new(ROOT)).is_err(),
            "the directory was made"
        );
    }
}
