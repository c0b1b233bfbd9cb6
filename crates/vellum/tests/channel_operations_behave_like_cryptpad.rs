//! Proves, operation by operation, that a channel behaves as CryptPad's history keeper
//! expects: reads from the start, a seq, a key (inclusive: a client asking from its last
//! known message gets it again), the last N, a range and a position; batch appends that
//! stay contiguous and ordered under concurrent writers; metadata amendments logged only
//! when they change the state; clear (keeps metadata, continues seqs); trim (keeps the
//! selected message and everything after, collapses the metadata log, keeps a copy under
//! `trimmed/`); delete of exactly one message; remove then append (a fresh channel);
//! archive / restore / remove-archived; list, info, size and exists; snapshot reads that
//! neither appends nor a concurrent trim disturb; and the eviction pass (expiry,
//! inactivity, retention of archives and trim copies).

mod common;

use common::{
    ROOT, archive_path, content_key, live_path, open, open_with, options, owner, read_all,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vellum::storage::{SimStorage, Storage};
use vellum::{
    ChannelInfo, Error, EvictionOptions, Message, Metadata, NewMessage, Options, ReadFrom,
    ReadRequest, Scope, Selector, Vellum,
};

fn read(store: &Vellum, id: &str, request: ReadRequest) -> vellum::Result<Vec<Message>> {
    store.read(id, &request)?.collect()
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn datas(messages: &[Message]) -> Vec<Vec<u8>> {
    messages.iter().map(|m| m.data.clone()).collect()
}

fn meta(store: &Vellum, id: &str) -> Value {
    Value::Object(store.metadata(id).expect("metadata").into_object())
}

fn create(store: &Vellum, id: &str, metadata: Value) {
    let Value::Object(map) = metadata else {
        panic!("metadata must be an object")
    };
    store
        .create(id, Metadata::from_object(map))
        .expect("creating the channel");
}

/// Appends `n` messages `"<prefix><i>"` and returns their acknowledgements.
fn fill(store: &Vellum, id: &str, prefix: &str, n: usize) -> Vec<vellum::Appended> {
    (0..n)
        .map(|i| {
            store
                .append(id, format!("{prefix}{i}").as_bytes())
                .expect("append")
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Spins (no sleep) until the wall clock has moved past `ms`, so that a pass that
/// compares times at millisecond resolution sees everything done so far as the past.
fn wait_for_clock_past(ms: u64) {
    while now_ms() <= ms + 1 {
        std::hint::spin_loop();
    }
}

#[test]
fn read_from_start_returns_every_message_in_order_with_its_seq_and_key() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let acks = fill(&store, "reader", "m", 20);
    let all = read_all(&store, "reader");
    assert_eq!(seqs(&all), (0..20).collect::<Vec<_>>());
    for (i, (m, ack)) in all.iter().zip(&acks).enumerate() {
        assert_eq!(m.data, format!("m{i}").as_bytes());
        assert_eq!(m.key, ack.key);
        assert_eq!(
            m.key,
            content_key(&m.data),
            "default key is the content hash"
        );
        assert_eq!(m.position, ack.position);
        assert_eq!(m.time_ms, ack.time_ms);
    }
}

#[test]
fn read_from_seq_starts_at_the_first_message_at_or_above_it() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, "by-seq", "m", 10);
    let from = |seq| seqs(&read(&store, "by-seq", ReadFrom::Seq(seq).into()).unwrap());
    assert_eq!(from(0), (0..10).collect::<Vec<_>>());
    assert_eq!(from(7), vec![7, 8, 9]);
    assert_eq!(from(9), vec![9]);
    assert_eq!(from(10), Vec::<u64>::new(), "nothing at or after next_seq");
    // A hole (a deleted message) makes the read start at the next one.
    store
        .amend("by-seq", "ALLOW_LINE_DELETION", &json!([true]))
        .unwrap();
    store.delete_message("by-seq", &Selector::Seq(4)).unwrap();
    assert_eq!(from(4), vec![5, 6, 7, 8, 9]);
}

#[test]
fn read_from_key_includes_the_message_with_that_key() {
    let sim = SimStorage::new();
    let store = open(&sim);
    store.append("by-key", b"zero").unwrap();
    store
        .append_batch(
            "by-key",
            &[
                NewMessage::with_key(b"one", b"k-one"),
                NewMessage::with_key(b"two", b"k-two"),
            ],
        )
        .unwrap();
    let three = store.append("by-key", b"three").unwrap();
    store.append("by-key", b"four").unwrap();

    // A client that last saw "k-two" gets it again, then what followed.
    let got = read(&store, "by-key", ReadFrom::Key(b"k-two".to_vec()).into()).unwrap();
    assert_eq!(datas(&got), [&b"two"[..], b"three", b"four"]);
    // The content-hash key of a message appended without a key works the same way.
    assert_eq!(three.key, content_key(b"three"));
    let got = read(&store, "by-key", ReadFrom::Key(three.key.clone()).into()).unwrap();
    assert_eq!(seqs(&got), vec![3, 4]);
}

#[test]
fn read_from_key_starts_at_the_first_message_holding_a_repeated_key() {
    let sim = SimStorage::new();
    let store = open(&sim);
    for (i, key) in [&b"a"[..], b"dup", b"b", b"dup", b"c"].iter().enumerate() {
        store
            .append_batch(
                "dups",
                &[NewMessage::with_key(format!("{i}").as_bytes(), key)],
            )
            .unwrap();
    }
    let got = read(&store, "dups", ReadFrom::Key(b"dup".to_vec()).into()).unwrap();
    assert_eq!(seqs(&got), vec![1, 2, 3, 4]);
}

#[test]
fn read_last_n_returns_the_newest_n_messages() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, "last", "m", 10);
    let last = |n| seqs(&read(&store, "last", ReadFrom::Last(n).into()).unwrap());
    assert_eq!(last(0), Vec::<u64>::new());
    assert_eq!(last(1), vec![9]);
    assert_eq!(last(3), vec![7, 8, 9]);
    assert_eq!(last(10), (0..10).collect::<Vec<_>>());
    assert_eq!(last(1000), (0..10).collect::<Vec<_>>());
}

#[test]
fn read_range_stops_after_to_seq_and_at_the_limit() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, "range", "m", 10);
    let range = |from, to_seq, limit| {
        seqs(
            &read(
                &store,
                "range",
                ReadRequest {
                    from,
                    to_seq,
                    limit,
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(range(ReadFrom::Seq(2), Some(5), None), vec![2, 3, 4, 5]);
    assert_eq!(range(ReadFrom::Start, Some(0), None), vec![0]);
    assert_eq!(range(ReadFrom::Seq(2), Some(5), Some(2)), vec![2, 3]);
    assert_eq!(range(ReadFrom::Seq(6), Some(5), None), Vec::<u64>::new());
    assert_eq!(range(ReadFrom::Start, None, Some(3)), vec![0, 1, 2]);
    assert_eq!(range(ReadFrom::Last(4), Some(7), None), vec![6, 7]);
    assert_eq!(range(ReadFrom::Seq(8), Some(100), None), vec![8, 9]);
    let history = store
        .read(
            "range",
            &ReadRequest {
                from: ReadFrom::Seq(1),
                to_seq: Some(4),
                limit: None,
            },
        )
        .unwrap();
    assert_eq!(history.remaining(), 4);
}

#[test]
fn read_from_position_includes_the_message_at_it() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let acks = fill(&store, "pos", "m", 8);
    let got = read(&store, "pos", ReadFrom::Position(acks[5].position).into()).unwrap();
    assert_eq!(seqs(&got), vec![5, 6, 7]);
    // Positions stay valid across a reopen (same epoch, same offsets).
    drop(store);
    let store = open(&sim);
    let got = read(&store, "pos", ReadFrom::Position(acks[2].position).into()).unwrap();
    assert_eq!(seqs(&got), (2..8).collect::<Vec<_>>());
    assert_eq!(got[0].position, acks[2].position);
}

#[test]
fn batch_appends_are_contiguous_and_ordered_even_with_a_concurrent_writer() {
    let sim = SimStorage::new();
    let store = open(&sim);
    const BATCHES: usize = 40;
    const BATCH: usize = 5;
    const SINGLES: usize = 100;
    let (batch_acks, single_acks) = std::thread::scope(|s| {
        let batches = s.spawn(|| {
            (0..BATCHES)
                .map(|b| {
                    let datas: Vec<Vec<u8>> = (0..BATCH)
                        .map(|i| format!("batch{b}-{i}").into_bytes())
                        .collect();
                    let messages: Vec<NewMessage<'_>> =
                        datas.iter().map(|d| NewMessage::new(d)).collect();
                    store.append_batch("batches", &messages).unwrap()
                })
                .collect::<Vec<_>>()
        });
        let singles = s.spawn(|| {
            (0..SINGLES)
                .map(|i| {
                    store
                        .append("batches", format!("single{i}").as_bytes())
                        .unwrap()
                })
                .collect::<Vec<_>>()
        });
        (batches.join().unwrap(), singles.join().unwrap())
    });
    for acks in &batch_acks {
        let first = acks[0].seq;
        assert_eq!(
            seqs_of(acks),
            (first..first + BATCH as u64).collect::<Vec<_>>(),
            "a batch gets contiguous seqs"
        );
    }
    let all = read_all(&store, "batches");
    assert_eq!(
        seqs(&all),
        (0..(BATCHES * BATCH + SINGLES) as u64).collect::<Vec<_>>()
    );
    for (b, acks) in batch_acks.iter().enumerate() {
        let at = acks[0].seq as usize;
        for i in 0..BATCH {
            assert_eq!(all[at + i].data, format!("batch{b}-{i}").as_bytes());
        }
    }
    // Each writer's messages keep the order it wrote them in.
    let singles: Vec<_> = all
        .iter()
        .filter(|m| m.data.starts_with(b"single"))
        .map(|m| m.data.clone())
        .collect();
    let expected: Vec<_> = (0..SINGLES)
        .map(|i| format!("single{i}").into_bytes())
        .collect();
    assert_eq!(singles, expected);
    assert_eq!(
        seqs_of(&single_acks),
        all.iter()
            .filter(|m| m.data.starts_with(b"single"))
            .map(|m| m.seq)
            .collect::<Vec<_>>()
    );
}

fn seqs_of(acks: &[vellum::Appended]) -> Vec<u64> {
    acks.iter().map(|a| a.seq).collect()
}

#[test]
fn metadata_amendment_is_logged_only_when_it_changes_state() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let (a, b) = (owner('a'), owner('b'));
    create(&store, "amend", json!({ "owners": [a] }));
    store.append("amend", b"hello").unwrap();
    let size = store.size("amend").unwrap();

    assert!(store.amend("amend", "ADD_OWNERS", &json!([b])).unwrap());
    let grown = store.size("amend").unwrap();
    assert!(grown > size, "a change is logged: {size} -> {grown}");

    // The same command again changes nothing: not logged, size unchanged.
    assert!(!store.amend("amend", "ADD_OWNERS", &json!([b])).unwrap());
    assert_eq!(store.size("amend").unwrap(), grown);
    // Setting an absent flag to false is a change (the field appears), once.
    assert!(
        store
            .amend("amend", "ALLOW_LINE_DELETION", &json!([false]))
            .unwrap()
    );
    let after_flag = store.size("amend").unwrap();
    assert!(after_flag > grown);
    assert!(
        !store
            .amend("amend", "ALLOW_LINE_DELETION", &json!([false]))
            .unwrap()
    );
    assert_eq!(store.size("amend").unwrap(), after_flag);

    assert!(
        store
            .amend("amend", "RESTRICT_ACCESS", &json!([true]))
            .unwrap()
    );
    let expected = json!({
        "owners": [a, b],
        "deleteLines": false,
        "restricted": true,
        "allowed": [],
    });
    assert_eq!(meta(&store, "amend"), expected);
    let size = store.size("amend").unwrap();
    drop(store);
    let store = open(&sim);
    assert_eq!(
        meta(&store, "amend"),
        expected,
        "the fold survives a reopen"
    );
    assert_eq!(store.size("amend").unwrap(), size);
    assert_eq!(datas(&read_all(&store, "amend")), [b"hello"]);
}

#[test]
fn clear_drops_messages_keeps_metadata_and_continues_seqs() {
    let sim = SimStorage::new();
    let store = open(&sim);
    create(&store, "clear", json!({ "owners": [owner('c')] }));
    store
        .amend("clear", "ALLOW_LINE_DELETION", &json!([true]))
        .unwrap();
    let acks = fill(&store, "clear", "m", 5);
    let metadata = meta(&store, "clear");
    store.clear("clear").unwrap();

    assert!(read_all(&store, "clear").is_empty());
    assert_eq!(meta(&store, "clear"), metadata);
    let info = store.info("clear").unwrap();
    assert_eq!((info.messages, info.first_seq, info.next_seq), (0, 5, 5));
    assert!(matches!(
        read(&store, "clear", ReadFrom::Seq(2).into()),
        Err(Error::Trimmed {
            requested: 2,
            first_seq: 5,
            ..
        })
    ));
    assert!(matches!(
        read(&store, "clear", ReadFrom::Position(acks[4].position).into()),
        Err(Error::StalePosition { .. })
    ));
    assert_eq!(store.append("clear", b"after").unwrap().seq, 5);

    drop(store);
    let store = open(&sim);
    assert_eq!(meta(&store, "clear"), metadata);
    let all = read_all(&store, "clear");
    assert_eq!(
        (seqs(&all), datas(&all)),
        (vec![5], vec![b"after".to_vec()])
    );
    assert_eq!(store.append("clear", b"next").unwrap().seq, 6);
}

#[test]
fn trim_keeps_the_selected_message_and_everything_after() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let acks = fill(&store, "trim", "m", 10);

    store.trim("trim", &Selector::Seq(3)).unwrap();
    let all = read_all(&store, "trim");
    assert_eq!(seqs(&all), (3..10).collect::<Vec<_>>());
    for m in &all {
        assert_eq!(m.data, format!("m{}", m.seq).as_bytes());
        assert_eq!(m.key, acks[m.seq as usize].key);
        assert_eq!(m.time_ms, acks[m.seq as usize].time_ms);
    }

    store
        .trim("trim", &Selector::Key(acks[6].key.clone()))
        .unwrap();
    assert_eq!(seqs(&read_all(&store, "trim")), (6..10).collect::<Vec<_>>());
    let info = store.info("trim").unwrap();
    assert_eq!((info.messages, info.first_seq, info.next_seq), (4, 6, 10));
    assert!(matches!(
        read(&store, "trim", ReadFrom::Seq(5).into()),
        Err(Error::Trimmed { first_seq: 6, .. })
    ));
    assert_eq!(store.append("trim", b"m10").unwrap().seq, 10);

    drop(store);
    let store = open(&sim);
    assert_eq!(seqs(&read_all(&store, "trim")), (6..11).collect::<Vec<_>>());
}

#[test]
fn trim_collapses_the_metadata_log_into_its_folded_state() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let owners: Vec<String> = "abcdefgh".chars().map(owner).collect();
    create(&store, "collapse-1", json!({ "owners": [owners[0]] }));
    for (i, o) in owners.iter().enumerate().skip(1) {
        store
            .append("collapse-1", format!("m{i}").as_bytes())
            .unwrap();
        assert!(
            store
                .amend("collapse-1", "ADD_OWNERS", &json!([o]))
                .unwrap()
        );
        assert!(
            store
                .amend("collapse-1", "RESTRICT_ACCESS", &json!([i % 2 == 0]))
                .unwrap()
        );
    }
    let folded = meta(&store, "collapse-1");
    let kept = read(&store, "collapse-1", ReadFrom::Seq(4).into()).unwrap();
    store.trim("collapse-1", &Selector::Seq(4)).unwrap();
    assert_eq!(meta(&store, "collapse-1"), folded);

    // A twin built from the folded state and the kept messages has exactly the same size:
    // the trimmed file holds one metadata line, not the log of amendments.
    create(&store, "collapse-2", folded.clone());
    let copies: Vec<NewMessage<'_>> = kept
        .iter()
        .map(|m| NewMessage::with_key(&m.data, &m.key))
        .collect();
    store.append_batch("collapse-2", &copies).unwrap();
    assert_eq!(
        store.size("collapse-1").unwrap(),
        store.size("collapse-2").unwrap()
    );
    drop(store);
    let store = open(&sim);
    assert_eq!(meta(&store, "collapse-1"), folded);
    assert_eq!(datas(&read_all(&store, "collapse-1")), datas(&kept));
}

#[test]
fn trim_leaves_the_pre_trim_file_under_trimmed() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let acks = fill(&store, "kept-copy", "m", 6);
    store.checkpoint().unwrap();
    let before = sim.read_file(&live_path("kept-copy")).expect("live file");
    store.trim("kept-copy", &Selector::Seq(2)).unwrap();
    let copy = PathBuf::from(format!(
        "{ROOT}/trimmed/ke/kept-copy.{}.vlog",
        acks[0].position.epoch
    ));
    assert_eq!(
        sim.read_file(&copy).as_deref(),
        Some(&before[..]),
        "the pre-trim file is kept byte for byte at {}",
        copy.display()
    );
    assert_eq!(
        sim.list_dir(Path::new(&format!("{ROOT}/trimmed/ke")))
            .unwrap(),
        [format!("kept-copy.{}.vlog", acks[0].position.epoch)]
    );
}

#[test]
fn delete_message_removes_exactly_one_message() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let acks = fill(&store, "delete", "m", 6);
    store
        .amend("delete", "ALLOW_LINE_DELETION", &json!([true]))
        .unwrap();
    store.delete_message("delete", &Selector::Seq(2)).unwrap();
    assert_eq!(seqs(&read_all(&store, "delete")), vec![0, 1, 3, 4, 5]);
    store
        .delete_message("delete", &Selector::Key(acks[4].key.clone()))
        .unwrap();
    let all = read_all(&store, "delete");
    assert_eq!(seqs(&all), vec![0, 1, 3, 5]);
    for m in &all {
        assert_eq!(m.data, format!("m{}", m.seq).as_bytes());
    }
    let info = store.info("delete").unwrap();
    assert_eq!((info.messages, info.first_seq, info.next_seq), (4, 0, 6));
    assert_eq!(store.append("delete", b"m6").unwrap().seq, 6);
    drop(store);
    let store = open(&sim);
    assert_eq!(seqs(&read_all(&store, "delete")), vec![0, 1, 3, 5, 6]);
}

#[test]
fn deleting_the_newest_message_never_lets_its_seq_be_reused() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, "del-last", "m", 3);
    store
        .amend("del-last", "ALLOW_LINE_DELETION", &json!([true]))
        .unwrap();
    store.delete_message("del-last", &Selector::Seq(2)).unwrap();
    assert_eq!(seqs(&read_all(&store, "del-last")), vec![0, 1]);
    assert_eq!(
        store.info("del-last").unwrap().next_seq,
        3,
        "next_seq must not go back to the deleted message's seq"
    );
    let next = store.append("del-last", b"after").unwrap();
    assert_eq!(next.seq, 3, "seq 2 was already given to a message");
}

#[test]
fn remove_then_append_starts_a_fresh_channel() {
    let sim = SimStorage::new();
    let store = open(&sim);
    create(&store, "fresh", json!({ "owners": [owner('f')] }));
    let acks = fill(&store, "fresh", "old", 4);
    store.remove("fresh").unwrap();
    assert!(!store.exists("fresh").unwrap());
    assert!(!store.is_archived("fresh").unwrap());
    assert!(matches!(
        store.read("fresh", &ReadRequest::all()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(store.info("fresh"), Err(Error::NotFound { .. })));

    let first = store.append("fresh", b"new").unwrap();
    assert_eq!(first.seq, 0);
    assert_eq!(meta(&store, "fresh"), json!({}));
    assert_ne!(first.position.epoch, acks[0].position.epoch);
    assert!(matches!(
        read(&store, "fresh", ReadFrom::Position(acks[1].position).into()),
        Err(Error::StalePosition { .. })
    ));
    drop(store);
    let store = open(&sim);
    let all = read_all(&store, "fresh");
    assert_eq!((seqs(&all), datas(&all)), (vec![0], vec![b"new".to_vec()]));
    assert_eq!(meta(&store, "fresh"), json!({}));
}

#[test]
fn archived_channel_answers_archived_with_its_reason() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, "arch", "m", 3);
    store.archive("arch", "OWNER_DELETED").unwrap();
    let is_archived_with_reason =
        |e: Error| matches!(e, Error::Archived { ref reason, .. } if reason == "OWNER_DELETED");
    assert!(is_archived_with_reason(
        store.read("arch", &ReadRequest::all()).err().unwrap()
    ));
    assert!(is_archived_with_reason(store.metadata("arch").unwrap_err()));
    assert!(store.is_archived("arch").unwrap());
    assert!(!store.exists("arch").unwrap());
    let info = store.info("arch").unwrap();
    assert_eq!(info.archived.as_deref(), Some("OWNER_DELETED"));
    assert_eq!(info.messages, 3);
    assert!(sim.read_file(&archive_path("arch")).is_some());
    assert!(sim.read_file(&live_path("arch")).is_none());
    drop(store);
    let store = open(&sim);
    assert!(is_archived_with_reason(
        store.read("arch", &ReadRequest::all()).err().unwrap()
    ));
    assert!(is_archived_with_reason(
        store.append("arch", b"x").unwrap_err()
    ));
}

#[test]
fn restore_brings_an_archived_channel_back_byte_identical() {
    let sim = SimStorage::new();
    let store = open(&sim);
    create(
        &store,
        "restore",
        json!({ "owners": [owner('r')], "mailbox": "x" }),
    );
    let mut batch = Vec::new();
    for i in 0..30u32 {
        batch.push(vec![i as u8; (i * 37) as usize]);
    }
    let messages: Vec<NewMessage<'_>> = batch.iter().map(|d| NewMessage::new(d)).collect();
    store.append_batch("restore", &messages).unwrap();
    store
        .amend("restore", "RESTRICT_ACCESS", &json!([true]))
        .unwrap();
    let before = read_all(&store, "restore");
    let metadata = meta(&store, "restore");
    let info = store.info("restore").unwrap();

    store.archive("restore", "reason").unwrap();
    store.restore("restore").unwrap();
    assert!(store.exists("restore").unwrap());
    assert!(!store.is_archived("restore").unwrap());
    assert_eq!(
        read_all(&store, "restore"),
        before,
        "byte-identical, same positions"
    );
    assert_eq!(meta(&store, "restore"), metadata);
    let restored = store.info("restore").unwrap();
    assert_eq!(
        (restored.messages, restored.first_seq, restored.next_seq),
        (info.messages, info.first_seq, info.next_seq)
    );
    assert_eq!(store.append("restore", b"more").unwrap().seq, 30);
    drop(store);
    let store = open(&sim);
    let all = read_all(&store, "restore");
    assert_eq!(&all[..30], &before[..]);
    assert_eq!(all[30].data, b"more");
}

#[test]
fn remove_archived_deletes_the_archived_copy_for_good() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, "gone", "m", 2);
    store.archive("gone", "bye").unwrap();
    store.remove_archived("gone").unwrap();
    assert!(!store.is_archived("gone").unwrap());
    assert!(!store.exists("gone").unwrap());
    assert!(sim.read_file(&archive_path("gone")).is_none());
    assert!(matches!(
        store.restore("gone"),
        Err(Error::NotArchived { .. })
    ));
    assert_eq!(store.list(Scope::Archived).unwrap().count(), 0);
    // The id is free again: an append starts a fresh channel.
    assert_eq!(store.append("gone", b"again").unwrap().seq, 0);
    drop(store);
    let store = open(&sim);
    assert!(!store.is_archived("gone").unwrap());
    assert_eq!(datas(&read_all(&store, "gone")), [b"again"]);
}

fn listed(store: &Vellum, scope: Scope) -> Vec<ChannelInfo> {
    let mut infos: Vec<ChannelInfo> = store
        .list(scope)
        .unwrap()
        .collect::<vellum::Result<_>>()
        .unwrap();
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    infos
}

#[test]
fn list_reports_live_and_archived_channels_with_sizes_and_message_counts() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let ids = ["la", "lb-one", "lb-two", "z"];
    for (n, id) in ids.iter().enumerate() {
        fill(&store, id, "m", n + 1);
    }
    store.archive("lb-two", "because").unwrap();

    let live = listed(&store, Scope::Live);
    let names: Vec<&str> = live.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(names, ["la", "lb-one", "z"]);
    for info in &live {
        let n = ids.iter().position(|id| *id == info.id.as_str()).unwrap() as u64 + 1;
        assert_eq!(info.messages, n);
        assert_eq!(info.next_seq, n);
        assert_eq!(info.archived, None);
        assert_eq!(info.size_bytes, store.size(info.id.as_str()).unwrap());
        assert!(info.size_bytes > 0);
    }
    let archived = listed(&store, Scope::Archived);
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].id.as_str(), "lb-two");
    assert_eq!(archived[0].messages, 3);
    assert_eq!(archived[0].archived.as_deref(), Some("because"));
    assert_eq!(
        archived[0].size_bytes,
        sim.read_file(&archive_path("lb-two")).unwrap().len() as u64
    );

    drop(store);
    let store = open(&sim);
    assert_eq!(
        listed(&store, Scope::Live)
            .iter()
            .map(|i| (i.id.to_string(), i.messages, i.size_bytes))
            .collect::<Vec<_>>(),
        live.iter()
            .map(|i| (i.id.to_string(), i.messages, i.size_bytes))
            .collect::<Vec<_>>()
    );
    assert_eq!(listed(&store, Scope::Archived).len(), 1);
}

#[test]
fn info_size_and_exists_describe_a_channel() {
    let sim = SimStorage::new();
    let store = open(&sim);
    assert!(!store.exists("info").unwrap());
    assert!(matches!(store.info("info"), Err(Error::NotFound { .. })));
    assert!(matches!(store.size("info"), Err(Error::NotFound { .. })));
    let before = now_ms();
    fill(&store, "info", "message-", 4);
    assert!(store.exists("info").unwrap());
    let info = store.info("info").unwrap();
    assert_eq!(info.id.as_str(), "info");
    assert_eq!((info.messages, info.first_seq, info.next_seq), (4, 0, 4));
    assert!(info.created_ms >= before && info.created_ms <= now_ms());
    assert_eq!(info.archived, None);
    assert_eq!(store.size("info").unwrap(), info.size_bytes);
    store.checkpoint().unwrap();
    assert_eq!(
        info.size_bytes,
        sim.read_file(&live_path("info")).unwrap().len() as u64,
        "size is the channel file's size"
    );
    let grown = store.append("info", b"one more").unwrap();
    assert!(store.size("info").unwrap() > info.size_bytes);
    assert_eq!(store.info("info").unwrap().next_seq, grown.seq + 1);
}

#[test]
fn a_reader_does_not_see_appends_made_while_it_iterates() {
    let sim = SimStorage::new();
    let store = open(&sim);
    // Enough bytes that the reader needs several large reads, and that the appends below
    // push the channel's tail out to its file while the reader is still at it.
    let payload = |i: usize| vec![(i % 251) as u8; 1500 + i % 500];
    for i in 0..300 {
        store.append("snap", &payload(i)).unwrap();
    }
    let mut history = store.read("snap", &ReadRequest::all()).unwrap();
    assert_eq!(history.remaining(), 300);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(history.next().unwrap().unwrap());
    }
    for i in 300..600 {
        store.append("snap", &payload(i)).unwrap();
    }
    seen.extend(history.map(|m| m.unwrap()));
    assert_eq!(seqs(&seen), (0..300).collect::<Vec<_>>());
    for m in &seen {
        assert_eq!(m.data, payload(m.seq as usize));
    }
    assert_eq!(read_all(&store, "snap").len(), 600);
}

#[test]
fn a_reader_keeps_reading_the_old_content_while_a_trim_runs() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let payload = |i: usize| vec![(i % 253) as u8; 1200 + i % 700];
    for i in 0..400 {
        store.append("snap-trim", &payload(i)).unwrap();
    }
    let mut history = store.read("snap-trim", &ReadRequest::all()).unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(history.next().unwrap().unwrap());
    }
    std::thread::scope(|s| {
        s.spawn(|| store.trim("snap-trim", &Selector::Seq(350)).unwrap())
            .join()
            .unwrap();
    });
    assert_eq!(
        seqs(&read_all(&store, "snap-trim")),
        (350..400).collect::<Vec<_>>()
    );
    seen.extend(history.map(|m| m.unwrap()));
    assert_eq!(seqs(&seen), (0..400).collect::<Vec<_>>());
    for m in &seen {
        assert_eq!(m.data, payload(m.seq as usize), "seq {}", m.seq);
    }
}

fn eviction_options(eviction: EvictionOptions) -> Options {
    Options {
        eviction: Some(eviction),
        ..options()
    }
}

#[test]
fn eviction_archives_a_channel_whose_expire_time_has_passed() {
    let sim = SimStorage::new();
    let store = open_with(
        &sim,
        eviction_options(EvictionOptions {
            interval: Duration::from_secs(3600),
            inactive_after: None,
            archive_retention: None,
        }),
    );
    create(&store, "expired", json!({ "expire": now_ms() - 1000 }));
    store.append("expired", b"short-lived").unwrap();
    create(&store, "later", json!({ "expire": now_ms() + 3_600_000 }));
    store.append("later", b"long-lived").unwrap();
    store.append("never", b"forever").unwrap();
    // Channel files are written at checkpoints; the test of a channel not yet written
    // out is `eviction_sees_an_expired_channel_created_since_the_last_checkpoint`.
    store.checkpoint().unwrap();

    let report = store.evict_now().unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(report.inactive, 0);
    assert!(store.is_archived("expired").unwrap());
    assert!(matches!(
        store.read("expired", &ReadRequest::all()),
        Err(Error::Archived { ref reason, .. }) if reason == "EXPIRED"
    ));
    assert_eq!(datas(&read_all(&store, "later")), [b"long-lived"]);
    assert_eq!(datas(&read_all(&store, "never")), [b"forever"]);
    store.restore("expired").unwrap();
    assert_eq!(datas(&read_all(&store, "expired")), [b"short-lived"]);
}

#[test]
fn eviction_archives_inactive_channels() {
    let sim = SimStorage::new();
    let patient = EvictionOptions {
        interval: Duration::from_secs(3600),
        inactive_after: Some(Duration::from_secs(3600)),
        archive_retention: None,
    };
    let store = open_with(&sim, eviction_options(patient));
    // Several channels, so that the pass takes more than one millisecond.
    const IDLE: usize = 20;
    let ids: Vec<String> = (0..IDLE).map(|i| format!("idle-{i}")).collect();
    for id in &ids {
        store.append(id, id.as_bytes()).unwrap();
    }
    assert_eq!(
        store.evict_now().unwrap().inactive,
        0,
        "active within the hour"
    );
    assert!(store.exists("idle-1").unwrap());
    drop(store);

    let store = open_with(
        &sim,
        eviction_options(EvictionOptions {
            inactive_after: Some(Duration::ZERO),
            ..patient
        }),
    );
    wait_for_clock_past(now_ms());
    let report = store.evict_now().unwrap();
    assert_eq!(report.inactive, IDLE as u64);
    assert_eq!(report.expired, 0);
    for id in &ids {
        assert!(store.is_archived(id).unwrap());
        assert!(matches!(
            store.read(id, &ReadRequest::all()),
            Err(Error::Archived { ref reason, .. }) if reason == "INACTIVE"
        ));
    }
}

#[test]
fn eviction_deletes_archives_and_trim_copies_past_retention() {
    let sim = SimStorage::new();
    let keep = EvictionOptions {
        interval: Duration::from_secs(3600),
        inactive_after: None,
        archive_retention: Some(Duration::from_secs(3600)),
    };
    let store = open_with(&sim, eviction_options(keep));
    fill(&store, "old-archive", "m", 2);
    store.archive("old-archive", "done").unwrap();
    fill(&store, "trimmed-one", "m", 4);
    store.trim("trimmed-one", &Selector::Seq(2)).unwrap();
    let trim_dir = PathBuf::from(format!("{ROOT}/trimmed/tr"));
    assert_eq!(sim.list_dir(&trim_dir).unwrap().len(), 1);

    let report = store.evict_now().unwrap();
    assert_eq!(
        (report.archives_deleted, report.trim_copies_deleted),
        (0, 0)
    );
    assert!(store.is_archived("old-archive").unwrap());
    drop(store);

    let store = open_with(
        &sim,
        eviction_options(EvictionOptions {
            archive_retention: Some(Duration::ZERO),
            ..keep
        }),
    );
    let report = store.evict_now().unwrap();
    assert_eq!(
        (report.archives_deleted, report.trim_copies_deleted),
        (1, 1)
    );
    assert!(!store.is_archived("old-archive").unwrap());
    assert!(sim.read_file(&archive_path("old-archive")).is_none());
    assert!(sim.list_dir(&trim_dir).unwrap().is_empty());
    // Live channels are untouched by retention.
    assert_eq!(seqs(&read_all(&store, "trimmed-one")), vec![2, 3]);
}

#[test]
fn an_eviction_pass_does_not_count_as_an_access() {
    let sim = SimStorage::new();
    let patient = EvictionOptions {
        interval: Duration::from_secs(3600),
        inactive_after: Some(Duration::from_secs(3600)),
        archive_retention: None,
    };
    let store = open_with(&sim, eviction_options(patient));
    store.append("untouched", b"a").unwrap();
    drop(store);
    let store = open_with(&sim, eviction_options(patient));
    // The first info loads the channel (a real read); the second must report the same.
    store.info("untouched").unwrap();
    let accessed = store.info("untouched").unwrap().accessed_ms;
    wait_for_clock_past(accessed);
    assert_eq!(store.evict_now().unwrap().inactive, 0);
    assert_eq!(
        store.info("untouched").unwrap().accessed_ms,
        accessed,
        "the pass's own header read refreshed the access time that inactivity is judged by"
    );
}

#[test]
fn list_includes_a_channel_created_since_the_last_checkpoint() {
    let sim = SimStorage::new();
    let store = open(&sim);
    store.append("listed-early", b"hello").unwrap();
    assert!(store.exists("listed-early").unwrap());
    let live = listed(&store, Scope::Live);
    assert_eq!(
        live.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["listed-early"],
        "a live, acknowledged channel is missing from list(Live)"
    );
    assert_eq!(live[0].messages, 1);
}

#[test]
fn eviction_sees_an_expired_channel_created_since_the_last_checkpoint() {
    let sim = SimStorage::new();
    let store = open_with(
        &sim,
        eviction_options(EvictionOptions {
            interval: Duration::from_secs(3600),
            inactive_after: None,
            archive_retention: None,
        }),
    );
    create(
        &store,
        "expired-early",
        json!({ "expire": now_ms() - 1000 }),
    );
    store.append("expired-early", b"short-lived").unwrap();
    let report = store.evict_now().unwrap();
    assert_eq!(
        report.expired, 1,
        "the expired channel was not seen by the pass"
    );
    assert!(store.is_archived("expired-early").unwrap());
}
