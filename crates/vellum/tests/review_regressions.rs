//! Regressions for bugs a code review found: an oversized batch once panicked the commit
//! thread (and hung the store); concurrent metadata amendments once overwrote each
//! other in memory (a lost update).

mod common;

use common::{open, options};
use serde_json::json;
use std::sync::Arc;
use vellum::storage::SimStorage;
use vellum::{Error, Metadata, NewMessage};

#[test]
fn a_batch_too_big_for_one_journal_entry_is_refused_and_the_store_keeps_working() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let big = vec![7u8; 8 * 1024 * 1024];
    let batch = [
        NewMessage::new(&big),
        NewMessage::new(&big),
        NewMessage::new(&big),
    ];
    match store.append_batch("big", &batch) {
        Err(Error::BatchBytesTooLarge { bytes, max }) => assert!(bytes > max),
        other => panic!("expected BatchBytesTooLarge, got {other:?}"),
    }
    assert!(
        !store.exists("big").unwrap(),
        "nothing of the batch was written"
    );
    let ack = store.append("big", &big).unwrap();
    assert_eq!(ack.seq, 0);
    store.close();
}

#[test]
fn metadata_over_its_limit_is_refused() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let mut map = serde_json::Map::new();
    map.insert("blob".into(), json!("x".repeat(2 * 1024 * 1024)));
    assert!(matches!(
        store.create("meta", Metadata::from_object(map)),
        Err(Error::MetadataTooLarge { .. })
    ));
    assert!(!store.exists("meta").unwrap());
}

#[test]
fn concurrent_amendments_all_take_effect() {
    let sim = SimStorage::new();
    let store = Arc::new(
        vellum::Vellum::open_with_storage(Arc::new(sim.clone()), common::ROOT, options()).unwrap(),
    );
    let mut map = serde_json::Map::new();
    map.insert("owners".into(), json!([]));
    store.create("owned", Metadata::from_object(map)).unwrap();
    const THREADS: usize = 8;
    const EACH: usize = 10;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    // A 44-character key, unique per (thread, i).
                    let key = format!("{t:02}{i:02}{}", "k".repeat(40));
                    assert!(store.amend("owned", "ADD_OWNERS", &json!([key])).unwrap());
                }
            });
        }
    });
    let owners = store.metadata("owned").unwrap().owners().len();
    assert_eq!(owners, THREADS * EACH, "an amendment was lost in memory");
    drop(store);
    let store = open(&sim);
    assert_eq!(
        store.metadata("owned").unwrap().owners().len(),
        THREADS * EACH
    );
}

/// `close()` while writers are mid-append once left a writer that held a queue
/// reservation waiting forever. Every writer must return (acknowledged or `Closed`),
/// and every acknowledged append must survive a crash right after the close. Each append
/// goes to a new channel, so the writer spends longest (loading the channel) between
/// reserving queue space and queuing its write.
#[test]
fn close_during_concurrent_appends_returns_every_writer_and_keeps_every_ack() {
    use std::sync::mpsc;
    use std::time::Duration;
    use vellum::storage::CrashMode;

    for round in 0..20u64 {
        let sim = SimStorage::new();
        let store = Arc::new(open(&sim));
        let (done_tx, done_rx) = mpsc::channel();
        const WRITERS: usize = 6;
        for w in 0..WRITERS {
            let (store, done_tx) = (store.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let mut acked = 0u64;
                loop {
                    let channel = format!("w{w}-{acked}");
                    match store.append(&channel, channel.as_bytes()) {
                        Ok(ack) => {
                            assert_eq!(ack.seq, 0);
                            acked += 1;
                        }
                        Err(Error::Closed) => break,
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
                done_tx.send((w, acked)).unwrap();
            });
        }
        drop(done_tx);
        // Let the writers get going, then close under them.
        while store.stats().commit.jobs < 20 * (round + 1) {
            std::thread::yield_now();
        }
        store.close();
        let mut results = Vec::new();
        for _ in 0..WRITERS {
            results.push(
                done_rx
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a writer never returned after close()"),
            );
        }
        drop(store);
        let reopened = open(&sim.crash(CrashMode::DropUnsynced));
        for (w, acked) in results {
            for n in 0..acked {
                let channel = format!("w{w}-{n}");
                let got = common::read_all(&reopened, &channel);
                assert_eq!(got.len(), 1, "{channel} was acknowledged");
                assert_eq!(got[0].data, channel.as_bytes());
            }
        }
    }
}
