//! `w4` recovery: 1,000,000 messages of 1 KiB, each published to 2 of 1,000 channels
//! (stored once, referenced twice); close cleanly and reopen; then abort without a
//! clean close and reopen. Reference counts must be right after both.
//!
//! The writing happens in child processes (this executable again, see [`child`]), so
//! the abort is a real one: the process dies with its journal and message store open.
//! Every message goes to the message store: `embed_bytes_max` is 1 KiB here.

use crate::BenchOptions;
use crate::stats::per_second;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use vellum::{Options, ReadRequest, Vellum};

pub const MESSAGES: usize = 1_000_000;
pub const CHANNELS: usize = 1_000;
pub const MESSAGE_BYTES: usize = 1024;
/// Publishing threads (each publish waits for its acknowledgement).
const PUBLISHERS: usize = 64;
/// Messages the aborted process gets acknowledged before it dies.
const BEFORE_ABORT: usize = 2_000;
const CRASH_CHANNELS: usize = 10;

#[derive(Debug, Clone, serde::Serialize)]
pub struct W4Report {
    pub workload: &'static str,
    pub durability: &'static str,
    pub messages: usize,
    pub publishes_per_s: f64,
    pub clean_open_s: f64,
    pub crash_open_s: f64,
    /// Journal entries the crash open replayed.
    pub crash_entries_replayed: u64,
    pub crash_segments_scanned: usize,
}

fn store_options() -> Options {
    Options {
        embed_bytes_max: MESSAGE_BYTES,
        eviction: None,
        ..Options::default()
    }
}

/// The phases that run in a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Publish the workload's messages, then close cleanly.
    Fill,
    /// Publish a few more, print what was acknowledged, then abort.
    Abort,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Fill => "w4-fill",
            Phase::Abort => "w4-abort",
        }
    }
}

pub fn run(options: &BenchOptions, exe: &Path) -> anyhow::Result<W4Report> {
    let dir = options.temp_dir()?;
    let messages = options.scaled(MESSAGES, 2_000);
    let spawn = |phase: Phase| -> anyhow::Result<String> {
        let output = Command::new(exe)
            .args(["bench-child", phase.name(), "--scale"])
            .arg(options.scale.to_string())
            .arg("--dir")
            .arg(dir.path())
            .output()?;
        // The fill closes and exits; the abort phase dies on purpose.
        let expected = (phase == Phase::Fill) == output.status.success();
        anyhow::ensure!(
            expected,
            "{} exited with {}: {}",
            phase.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    };

    let filled = spawn(Phase::Fill)?;
    let publishes_per_s: f64 = filled.trim().parse()?;

    let started = Instant::now();
    let store = Vellum::open(dir.path(), store_options())?;
    let clean_open_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        store.store_recovery().clean,
        "the clean close left no snapshot"
    );
    let check = store.check_references()?;
    anyhow::ensure!(check.is_exact(), "counts after a clean reopen: {check:?}");
    anyhow::ensure!(
        check.references == 2 * messages as u64,
        "references missing: {check:?}"
    );
    drop(store);

    let acked: BTreeMap<String, usize> = serde_json::from_str(&spawn(Phase::Abort)?)?;
    let started = Instant::now();
    let store = Vellum::open(dir.path(), store_options())?;
    let crash_open_s = started.elapsed().as_secs_f64();
    let recovery = store.store_recovery().clone();
    anyhow::ensure!(!recovery.clean, "the abort left a snapshot");
    anyhow::ensure!(recovery.missing_count == 0, "bodies missing: {recovery:?}");
    let check = store.check_references()?;
    anyhow::ensure!(check.is_exact(), "counts after the abort: {check:?}");
    for (channel, count) in &acked {
        let read = store.read(channel, &ReadRequest::all())?.count();
        anyhow::ensure!(
            read >= *count,
            "{channel}: {read} messages, {count} acknowledged"
        );
    }
    let crash_entries_replayed = store.recovery_report().entries_replayed;
    drop(store);
    Ok(W4Report {
        workload: "w4",
        durability: "fsync",
        messages,
        publishes_per_s,
        clean_open_s,
        crash_open_s,
        crash_entries_replayed,
        crash_segments_scanned: recovery.segments_scanned,
    })
}

/// Two distinct channels of `names` for message `i`.
fn pair<'a>(names: &'a [String], rng: &mut impl Rng) -> [&'a str; 2] {
    let a = rng.random_range(0..names.len());
    let b = (a + 1 + rng.random_range(0..names.len() - 1)) % names.len();
    [&names[a], &names[b]]
}

/// Publishes `count` messages of random bytes from `PUBLISHERS` threads; returns how
/// many each channel had acknowledged.
fn publish(
    store: &Vellum,
    names: &[String],
    count: usize,
    seed: u64,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let next = AtomicUsize::new(0);
    let acked = parking_lot::Mutex::new(BTreeMap::<String, usize>::new());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..PUBLISHERS)
            .map(|t| {
                let (next, acked) = (&next, &acked);
                s.spawn(move || -> anyhow::Result<()> {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + t as u64);
                    let mut data = vec![0u8; MESSAGE_BYTES];
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        rng.fill(&mut data[..]);
                        let channels = pair(names, &mut rng);
                        store.publish(&channels, &data)?;
                        let mut acked = acked.lock();
                        for c in channels {
                            *acked.entry(c.to_string()).or_default() += 1;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a publisher")?;
        }
        Ok(())
    })?;
    Ok(acked.into_inner())
}

/// The child process's part: `Fill` prints publishes per second; `Abort` prints the
/// acknowledged count per channel as JSON, then aborts.
pub fn child(phase: Phase, options: &BenchOptions) -> anyhow::Result<()> {
    let dir = options.dir.as_deref().expect("the parent passes --dir");
    let store = Vellum::open(dir, store_options())?;
    match phase {
        Phase::Fill => {
            let messages = options.scaled(MESSAGES, 2_000);
            let names: Vec<String> = (0..CHANNELS)
                .map(|i| format!("w4-channel-{i:04}"))
                .collect();
            let started = Instant::now();
            publish(&store, &names, messages, 1)?;
            let rate = per_second(messages, started.elapsed());
            store.close();
            println!("{rate}");
            Ok(())
        }
        Phase::Abort => {
            let names: Vec<String> = (0..CRASH_CHANNELS)
                .map(|i| format!("w4-crash-{i:02}"))
                .collect();
            let acked = publish(&store, &names, BEFORE_ABORT, 2)?;
            println!("{}", serde_json::to_string(&acked)?);
            use std::io::Write;
            std::io::stdout().flush()?;
            // Dies with the journal and the message store open: no close, no snapshot.
            std::process::abort();
        }
    }
}
