//! Proves what `Interval` and `Buffered` promise: acknowledgements say `Written` (not
//! `Fsynced`); under `Interval` the journal is synced by the timer, so an acknowledged
//! message survives a crash once the interval has passed; under `Buffered` a crash may
//! lose the unsynced window but the store reopens clean (no error, no damaged message),
//! and a clean close makes everything durable.

mod common;

use common::{open_with, options, read_all};
use std::time::{Duration, Instant};
use vellum::storage::{CrashMode, SimStorage};
use vellum::{Durability, Options, SyncPolicy};

fn with_policy(sync: SyncPolicy) -> Options {
    Options { sync, ..options() }
}

/// Waits (bounded) until the store has synced its journal at least `syncs` times.
fn wait_for_syncs(store: &vellum::Vellum, syncs: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().commit.journal_syncs < syncs {
        assert!(Instant::now() < deadline, "the interval sync never ran");
        std::thread::yield_now();
    }
}

#[test]
fn interval_acknowledges_written_and_its_timer_makes_the_write_durable() {
    let sim = SimStorage::new();
    let store = open_with(
        &sim,
        with_policy(SyncPolicy::Interval(Duration::from_millis(5))),
    );
    let before = store.stats().commit.journal_syncs;
    let ack = store.append("timed", b"kept by the timer").unwrap();
    assert_eq!(ack.durability, Durability::Written);
    wait_for_syncs(&store, before + 1);
    let after_crash = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open_with(&after_crash, with_policy(SyncPolicy::Fsync));
    let messages = read_all(&store, "timed");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, b"kept by the timer");
    assert!(store.lost_ranges().is_empty());
}

#[test]
fn buffered_may_lose_the_unsynced_window_but_reopens_clean() {
    let sim = SimStorage::new();
    let store = open_with(&sim, with_policy(SyncPolicy::Buffered));
    for i in 0..50u32 {
        let ack = store
            .append("loose", format!("message {i}").as_bytes())
            .unwrap();
        assert_eq!(ack.durability, Durability::Written);
    }
    assert_eq!(
        store.stats().commit.journal_syncs,
        0,
        "Buffered never syncs the journal"
    );
    for seed in 0..5 {
        let after_crash = sim.crash(CrashMode::Torn { seed });
        let reopened = open_with(&after_crash, with_policy(SyncPolicy::Fsync));
        if reopened.exists("loose").unwrap() {
            // Whatever survived is a prefix of what was written, byte for byte.
            for (i, m) in read_all(&reopened, "loose").iter().enumerate() {
                assert_eq!(m.seq, i as u64);
                assert_eq!(m.data, format!("message {i}").as_bytes());
            }
        }
        drop(reopened);
    }
    drop(store);
}

#[test]
fn buffered_writes_are_durable_after_a_clean_close() {
    let sim = SimStorage::new();
    let store = open_with(&sim, with_policy(SyncPolicy::Buffered));
    for i in 0..20u32 {
        store.append("closed", format!("m{i}").as_bytes()).unwrap();
    }
    store.close();
    drop(store);
    let after_crash = sim.crash(CrashMode::DropUnsynced);
    let store = open_with(&after_crash, options());
    let messages = read_all(&store, "closed");
    assert_eq!(messages.len(), 20);
    assert_eq!(messages[19].data, b"m19");
}
