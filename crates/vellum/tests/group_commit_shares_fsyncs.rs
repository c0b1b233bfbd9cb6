//! Proves that group commit shares journal fsyncs between concurrent writers without
//! giving up durability or order (docs/format.md §3.2): 8 threads each append 200
//! messages, spread over 50 channels, through the blocking `append` on a real directory
//! with `SyncPolicy::Fsync`. Every append is acknowledged `Durability::Fsynced`; every
//! channel reads back exactly the acknowledged messages, at the acknowledged seqs, with
//! each thread's messages in the order it appended them (before and after a reopen); and
//! the store ran fewer journal fsyncs than there were appends. No timing is asserted.

use std::collections::BTreeMap;
use vellum::{Durability, Options, ReadRequest, SyncPolicy, Vellum};

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 200;
const CHANNELS: usize = 50;

fn channel(n: usize) -> String {
    format!("c{n:02}-group")
}

fn options() -> Options {
    Options {
        sync: SyncPolicy::Fsync,
        eviction: None,
        ..Options::default()
    }
}

/// One acknowledged append.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    thread: usize,
    index: usize,
    seq: u64,
    data: Vec<u8>,
}

fn data(thread: usize, index: usize) -> Vec<u8> {
    format!("thread {thread} append {index}").into_bytes()
}

/// Checks every channel against the acknowledgements, per channel, in seq order.
fn check_channels(store: &Vellum, acks: &BTreeMap<String, Vec<Ack>>, when: &str) {
    let mut total = 0;
    for (id, acked) in acks {
        let mut by_seq = acked.clone();
        by_seq.sort_by_key(|a| a.seq);
        let read: Vec<(u64, Vec<u8>)> = store
            .read(id, &ReadRequest::all())
            .unwrap_or_else(|e| panic!("{when}: reading {id}: {e}"))
            .map(|m| {
                let m = m.unwrap_or_else(|e| panic!("{when}: reading {id}: {e}"));
                (m.seq, m.data)
            })
            .collect();
        let expected: Vec<(u64, Vec<u8>)> =
            by_seq.iter().map(|a| (a.seq, a.data.clone())).collect();
        assert_eq!(
            read, expected,
            "{when}: {id} does not hold exactly its acknowledged messages"
        );
        let seqs: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (0..read.len() as u64).collect::<Vec<_>>(),
            "{when}: {id}: seqs are not 0, 1, 2, …"
        );
        // Each thread waited for one append before the next: its messages keep its order.
        for thread in 0..THREADS {
            let order: Vec<usize> = by_seq
                .iter()
                .filter(|a| a.thread == thread)
                .map(|a| a.index)
                .collect();
            assert!(
                order.is_sorted(),
                "{when}: {id}: thread {thread}'s messages are out of order: {order:?}"
            );
        }
        total += read.len();
    }
    assert_eq!(total, THREADS * APPENDS_PER_THREAD, "{when}");
}

#[test]
fn concurrent_appends_share_fsyncs_and_keep_per_channel_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Vellum::open(dir.path(), options()).unwrap();
    let per_thread: Vec<Vec<(String, Ack, Durability)>> = std::thread::scope(|scope| {
        let store = &store;
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    (0..APPENDS_PER_THREAD)
                        .map(|index| {
                            // Each thread walks the channels with its own stride and start.
                            let id = channel((thread * 7 + index * (thread + 1)) % CHANNELS);
                            let data = data(thread, index);
                            let ack = store
                                .append(&id, &data)
                                .unwrap_or_else(|e| panic!("append to {id}: {e}"));
                            let durability = ack.durability;
                            let ack = Ack {
                                thread,
                                index,
                                seq: ack.seq,
                                data,
                            };
                            (id, ack, durability)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut acks: BTreeMap<String, Vec<Ack>> = BTreeMap::new();
    for (id, ack, durability) in per_thread.into_iter().flatten() {
        assert_eq!(
            durability,
            Durability::Fsynced,
            "{id} seq {} was acknowledged before its journal sync",
            ack.seq
        );
        acks.entry(id).or_default().push(ack);
    }
    assert_eq!(acks.len(), CHANNELS, "every channel was written");
    let appends = (THREADS * APPENDS_PER_THREAD) as u64;
    let stats = store.stats().commit;
    assert!(
        stats.journal_syncs < appends,
        "{} journal syncs for {appends} appends: concurrent appends did not share fsyncs",
        stats.journal_syncs
    );
    assert!(stats.journal_syncs > 0, "the journal was never synced");
    check_channels(&store, &acks, "before reopening");
    drop(store);
    let store = Vellum::open(dir.path(), options()).unwrap();
    check_channels(&store, &acks, "after reopening");
}
