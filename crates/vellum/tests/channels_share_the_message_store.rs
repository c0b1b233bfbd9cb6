//! Channels as the message store's clients (docs/format.md §7.7): large bodies are
//! stored once and referenced; publish reaches many channels atomically; rewrites
//! release references; an unclean open recounts them from the channel files.

mod common;

use common::{Msg, ROOT, open_with, provision, read_all};
use std::path::Path;
use vellum::storage::{CrashMode, SimStorage, Storage};
use vellum::{Options, Selector, Vellum};

fn options() -> Options {
    Options {
        embed_bytes_max: 4096,
        ..common::options()
    }
}

fn big(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ n).collect()
}

fn messages(store: &Vellum, id: &str) -> Vec<Msg> {
    read_all(store, id).into_iter().map(Msg::from).collect()
}

#[track_caller]
fn assert_exact(store: &Vellum, what: &str) {
    let check = store.check_references().unwrap();
    assert!(check.is_exact(), "{what}: {check:?}");
}

/// Bytes of every file under `dir` on the simulated disk.
fn bytes_under(sim: &SimStorage, dir: &Path) -> u64 {
    let mut total = 0;
    for name in sim.list_dir(dir).unwrap_or_default() {
        let path = dir.join(&name);
        match sim.stat(&path).unwrap() {
            Some(stat) if stat.is_dir => total += bytes_under(sim, &path),
            Some(stat) => total += stat.len,
            None => {}
        }
    }
    total
}

#[test]
fn a_large_body_lives_in_the_store_and_reads_back() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open_with(&sim, options());
    let small = store.append("chan", b"small").unwrap();
    let large = big(1, 10_000);
    let ack = store.append("chan", &large).unwrap();
    assert_eq!(store.stats().message_store.messages, 1);
    assert_eq!(
        messages(&store, "chan"),
        vec![
            Msg(small.seq, small.key, b"small".to_vec()),
            Msg(ack.seq, ack.key.clone(), large.clone())
        ]
    );
    // The key is the content's, so reading from it works as for inline messages.
    let from_key = store
        .read(
            "chan",
            &vellum::ReadRequest::from(vellum::ReadFrom::Key(ack.key.clone())),
        )
        .unwrap()
        .map(|m| m.unwrap().data)
        .collect::<Vec<_>>();
    assert_eq!(from_key, vec![large.clone()]);
    assert_exact(&store, "after the append");
    drop(store);
    let store = open_with(&sim, options());
    assert!(store.store_recovery().clean);
    assert_eq!(messages(&store, "chan")[1].2, large);
    assert_exact(&store, "after a clean reopen");
}

#[test]
fn publishing_a_64_kib_message_to_100_channels_stores_its_body_once() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open_with(&sim, options());
    let names: Vec<String> = (0..100).map(|i| format!("fan-{i:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // The channels exist already: what the publish adds is the message.
    for name in &names {
        store.append(name, b"hello").unwrap();
    }
    store.checkpoint().unwrap();
    let channels_before = bytes_under(&sim, &Path::new(ROOT).join("channels"));
    let store_before = bytes_under(&sim, &Path::new(ROOT).join("store"));
    let body = big(7, 64 * 1024);
    let receipts = store.publish(&names, &body).unwrap();
    assert_eq!(receipts.len(), 100);
    assert!(receipts.iter().all(|r| r.seq == 1));
    store.checkpoint().unwrap();
    let stats = store.stats().message_store;
    assert_eq!(stats.messages, 1);
    let body_bytes = bytes_under(&sim, &Path::new(ROOT).join("store")) - store_before;
    let reference_bytes = bytes_under(&sim, &Path::new(ROOT).join("channels")) - channels_before;
    // The body once (plus its 24-byte record framing and a segment header).
    assert!(
        body_bytes <= 64 * 1024 + 64,
        "{body_bytes} bytes in the store"
    );
    let added = body_bytes + reference_bytes;
    let ratio = added as f64 / (64.0 * 1024.0);
    println!(
        "publish of 64 KiB to 100 channels: {body_bytes} B body + {reference_bytes} B references = {ratio:.3} x"
    );
    assert!(
        ratio <= 1.1,
        "{added} bytes on disk for one 64 KiB message to 100 channels ({ratio:.3} x)"
    );
    for name in &names {
        assert_eq!(messages(&store, name)[1].2, body, "{name}");
    }
    assert_exact(&store, "after the publish");
}

#[test]
fn a_publish_is_all_or_nothing_across_a_crash() {
    for seed in 0..30 {
        let sim = SimStorage::new();
        provision(&sim);
        let store = open_with(&sim, options());
        let names = ["pub-a", "pub-b", "pub-c", "pub-d"];
        for name in names {
            store.append(name, b"first").unwrap();
        }
        let body = big(3, 5000);
        let published = store.publish(&names, &body).is_ok();
        assert!(published);
        let image = sim.crash(CrashMode::Torn { seed });
        drop(store);
        let store = open_with(&image, options());
        let counts: Vec<usize> = names.iter().map(|n| messages(&store, n).len()).collect();
        // Acknowledged under Fsync: in every channel.
        assert_eq!(counts, vec![2; 4], "seed {seed}");
        assert_exact(&store, &format!("seed {seed}"));
    }
    // Unacknowledged (the storage dies during the publish): in all channels or none.
    for k in 0..40 {
        let sim = SimStorage::new();
        provision(&sim);
        let store = open_with(&sim, options());
        let names = ["pub-a", "pub-b", "pub-c"];
        for name in names {
            store.append(name, b"first").unwrap();
        }
        sim.crash_after_ops(k);
        let acked = store.publish(&names, &big(4, 6000)).is_ok();
        let image = sim.crash(CrashMode::DropUnsynced);
        drop(store);
        let store = open_with(&image, options());
        let counts: Vec<usize> = names.iter().map(|n| messages(&store, n).len()).collect();
        assert!(
            counts == vec![1; 3] || counts == vec![2; 3],
            "crash after {k}: {counts:?}"
        );
        if acked {
            assert_eq!(
                counts,
                vec![2; 3],
                "crash after {k}: acknowledged, then lost"
            );
        }
        assert_exact(&store, &format!("crash after {k}"));
    }
}

#[test]
fn rewrites_release_references_and_copies_keep_them() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open_with(&sim, options());
    for i in 0..6u8 {
        store.append("rw", &big(i, 5000)).unwrap();
    }
    store.publish(&["rw", "other"], &big(9, 5000)).unwrap();
    assert_eq!(store.stats().message_store.messages, 7);
    assert_exact(&store, "appended");
    // Trim keeps a pre-trim copy, which keeps every body it holds.
    store.trim("rw", &Selector::Seq(3)).unwrap();
    assert_eq!(store.stats().message_store.messages, 7);
    assert_exact(&store, "trimmed");
    store
        .amend("rw", "ALLOW_LINE_DELETION", &serde_json::json!([true]))
        .unwrap();
    store.delete_message("rw", &Selector::Seq(4)).unwrap();
    assert_exact(&store, "one deleted");
    store.clear("rw").unwrap();
    assert_exact(&store, "cleared");
    store.remove("other").unwrap();
    assert_exact(&store, "other removed");
    // An archived channel is self-contained: its bodies are inlined and released.
    store.append("arch", b"small").unwrap();
    store.append("arch", &big(11, 5000)).unwrap();
    let before = store.stats().message_store.messages;
    store.archive("arch", "test").unwrap();
    assert_eq!(store.stats().message_store.messages, before - 1);
    assert_exact(&store, "archived");
    store.restore("arch").unwrap();
    let restored = messages(&store, "arch");
    assert_eq!(
        (restored[0].2.as_slice(), restored[1].2.clone()),
        (&b"small"[..], big(11, 5000))
    );
    store.archive("arch", "test").unwrap();
    store.remove_archived("arch").unwrap();
    assert_exact(&store, "archive removed");
    // What is left: the bodies the pre-trim copy holds.
    let left = store.stats().message_store.messages;
    assert!(left > 0 && left < 8, "{left}");
    store.compact_message_store().unwrap();
    assert_exact(&store, "compacted");
}

#[test]
fn an_unclean_open_recounts_references_from_the_channel_files() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open_with(&sim, options());
    for i in 0..5u8 {
        store.append("keep", &big(i, 4096)).unwrap();
        store.append("drop", &big(i + 10, 4096)).unwrap();
    }
    store
        .publish(&["keep", "drop", "third"], &big(42, 8000))
        .unwrap();
    store.clear("drop").unwrap();
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open_with(&image, options());
    let recovery = store.store_recovery();
    assert!(!recovery.clean);
    assert_eq!(recovery.missing, vec![]);
    assert_exact(&store, "after the recount");
    assert_eq!(store.stats().message_store.messages, 6);
    assert_eq!(messages(&store, "keep").len(), 6);
    assert_eq!(messages(&store, "third")[0].2, big(42, 8000));
    assert!(messages(&store, "drop").is_empty());
}

#[test]
fn a_fan_out_message_reads_back_from_an_old_segment_beside_the_current_one() {
    let sim = SimStorage::new();
    provision(&sim);
    let opts = Options {
        store: vellum::StoreOptions {
            segment_bytes_max: 16 * 1024,
            ..vellum::StoreOptions::default()
        },
        ..options()
    };
    let store = open_with(&sim, opts.clone());
    let fan = big(1, 6000);
    store.publish(&["fan-a", "fan-b"], &fan).unwrap();
    // Enough other bodies to roll the store past the fan-out message's segment.
    for i in 0..10u8 {
        store.append("filler", &big(100 + i, 6000)).unwrap();
    }
    let newest = big(2, 7000);
    store.append("fan-a", &newest).unwrap();
    assert!(store.stats().message_store.segments >= 3);
    let read = |store: &Vellum| {
        (
            messages(store, "fan-a")
                .into_iter()
                .map(|m| m.2)
                .collect::<Vec<_>>(),
            messages(store, "fan-b")
                .into_iter()
                .map(|m| m.2)
                .collect::<Vec<_>>(),
        )
    };
    let want = (vec![fan.clone(), newest.clone()], vec![fan.clone()]);
    assert_eq!(read(&store), want);
    // And after compaction moves the old segment's survivors, and a clean reopen.
    store.clear("filler").unwrap();
    store.compact_message_store().unwrap();
    assert!(
        store.stats().message_store.compactions > 0
            || store.stats().message_store.segments_deleted > 0
    );
    assert_eq!(read(&store), want);
    assert_exact(&store, "compacted");
    drop(store);
    let store = open_with(&sim, opts);
    assert_eq!(read(&store), want);
}
