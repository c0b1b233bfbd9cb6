//! `try_append_with` — the append an async server calls on its event loop — queues a
//! batch only when nothing has to wait: the channel is loaded already and its body is
//! inline. Otherwise it changes nothing and hands the callback back; the batch then
//! goes through `append_with` as usual. Bad input is refused either way, and what it
//! queues is acknowledged, durable and read back like any append (also after a crash).

mod common;

use common::*;
use std::sync::mpsc;
use vellum::storage::{CrashMode, SimStorage};
use vellum::{Error, NewMessage, TryQueued};

type Sent = mpsc::Sender<vellum::Result<Vec<vellum::Appended>>>;

fn callback(tx: &Sent) -> impl FnOnce(vellum::Result<Vec<vellum::Appended>>) + Send + 'static {
    let tx = tx.clone();
    move |r| drop(tx.send(r))
}

#[test]
fn a_loaded_channel_is_appended_at_once_and_a_cold_one_waits() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let (tx, rx) = mpsc::channel();
    // Never touched: loading it would read the disk.
    let cold = store
        .try_append_with("cold", &[NewMessage::new(b"x")], callback(&tx))
        .unwrap();
    let TryQueued::WouldWait(done) = cold else {
        panic!("a channel not in the cache was queued without loading it");
    };
    assert!(!store.exists("cold").unwrap());
    store
        .append_with("cold", &[NewMessage::new(b"x")], done)
        .unwrap();
    assert_eq!(rx.recv().unwrap().unwrap()[0].seq, 0);
    // Now loaded: queued at once, in order, acknowledged as any append.
    for i in 1..=3u8 {
        let queued = store
            .try_append_with("cold", &[NewMessage::with_key(&[i], b"k")], callback(&tx))
            .unwrap();
        assert!(matches!(queued, TryQueued::Queued));
    }
    let seqs: Vec<u64> = (0..3).map(|_| rx.recv().unwrap().unwrap()[0].seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // A body for the message store always takes the waiting path.
    let big = vec![1u8; options().embed_bytes_max];
    let stored = store
        .try_append_with("cold", &[NewMessage::new(&big)], callback(&tx))
        .unwrap();
    assert!(matches!(stored, TryQueued::WouldWait(_)));
    // Acknowledged ⇒ present after a crash.
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open(&image);
    let data: Vec<Vec<u8>> = read_all(&store, "cold")
        .into_iter()
        .map(|m| m.data.to_vec())
        .collect();
    assert_eq!(data, vec![b"x".to_vec(), vec![1], vec![2], vec![3]]);
}

#[test]
fn bad_input_is_refused_on_the_fast_path_too() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    store.append("warm", b"first").unwrap();
    let (tx, _rx) = mpsc::channel();
    let too_big = vec![0u8; options().message_bytes_max + 1];
    let long_key = [7u8; 65];
    let cases: Vec<(&str, Vec<NewMessage<'_>>)> = vec![
        ("../x", vec![NewMessage::new(b"a")]),
        ("warm", vec![]),
        ("warm", vec![NewMessage::new(&too_big)]),
        ("warm", vec![NewMessage::with_key(b"a", &long_key)]),
    ];
    for (channel, batch) in cases {
        let refused = store.try_append_with(channel, &batch, callback(&tx));
        assert!(
            matches!(
                refused,
                Err(Error::InvalidId(_)
                    | Error::EmptyBatch
                    | Error::MessageTooLarge { .. }
                    | Error::KeyTooLong { .. })
            ),
            "{channel}: {:?}",
            refused.map(|_| ())
        );
    }
    assert_eq!(read_all(&store, "warm").len(), 1);
}
