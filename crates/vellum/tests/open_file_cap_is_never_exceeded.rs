//! Proves that `open_files_max` bounds the channel files a store holds open: with a cap of
//! 64, touching 100,000 channels (one append each, plus reads of earlier channels) never
//! has more than 64 open as the store counts them (`stats().open_files_peak`), and every
//! channel still reads back its message, before and after a reopen. Counting every handle
//! the engine opens on a channel file (a storage wrapper), a checkpoint with a full cache
//! and the recovery of a journal covering hundreds of channels stay within the cap too.

mod common;

use common::ROOT;
use common::counted::Counter;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use vellum::storage::{CrashMode, FileStat, OpenMode, SimStorage, Storage, StorageFile};
use vellum::{Options, ReadRequest, SyncPolicy, Vellum};

const CAP: usize = 64;

/// One filesystem for the engine, kept as one `SimStorage` per channel shard directory
/// (`<root>/channels/<xx>`) plus one for everything else. A `SimStorage` scans all its
/// directory entries whenever a file handle closes, which 100,000 files in one instance
/// make far too slow; split by shard, each instance stays small. Renames and links stay
/// within one instance (this test needs no other), and `list_dir` of `channels/` merges
/// the shards.
#[derive(Clone)]
struct ShardedStorage {
    main: SimStorage,
    shards: Arc<Mutex<BTreeMap<String, SimStorage>>>,
    counter: Arc<Counter>,
}

impl ShardedStorage {
    fn new(counter: &Arc<Counter>) -> Self {
        ShardedStorage {
            main: SimStorage::new(),
            shards: Arc::default(),
            counter: counter.clone(),
        }
    }

    /// The shard directory name when `path` is a shard directory or lies inside one.
    fn shard_of(path: &Path) -> Option<String> {
        let rest = path.strip_prefix(Path::new(ROOT).join("channels")).ok()?;
        let first = rest.components().next()?;
        Some(first.as_os_str().to_str()?.to_owned())
    }

    fn route(&self, path: &Path) -> SimStorage {
        match Self::shard_of(path) {
            Some(shard) => self
                .shards
                .lock()
                .unwrap()
                .entry(shard)
                .or_insert_with(|| {
                    // The parents exist (and are durable) in the one filesystem modelled.
                    let sim = SimStorage::new();
                    let channels = Path::new(ROOT).join("channels");
                    sim.create_dir_all(&channels).unwrap();
                    for dir in [Path::new("/"), Path::new(ROOT), &channels] {
                        sim.sync_dir(dir).unwrap();
                    }
                    sim
                })
                .clone(),
            None => self.main.clone(),
        }
    }

    /// Power loss on every instance at once.
    fn crash(&self, mode: CrashMode) -> ShardedStorage {
        let shards = self
            .shards
            .lock()
            .unwrap()
            .iter()
            .map(|(name, sim)| (name.clone(), sim.crash(mode)))
            .collect();
        ShardedStorage {
            main: self.main.crash(mode),
            shards: Arc::new(Mutex::new(shards)),
            counter: self.counter.clone(),
        }
    }
}

fn same_instance(from: &Path, to: &Path) -> io::Result<()> {
    if ShardedStorage::shard_of(from) == ShardedStorage::shard_of(to) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the test storage links and renames within one shard only",
        ))
    }
}

impl Storage for ShardedStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.route(path).open(path, mode)?;
        if Self::shard_of(path).is_none() {
            return Ok(file);
        }
        Ok(self.counter.count(file))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        same_instance(from, to)?;
        self.route(from).rename(from, to)
    }
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        same_instance(original, link)?;
        self.route(original).hard_link(original, link)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.route(path).remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.route(path).create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if path == Path::new(ROOT).join("channels") {
            // The shard directories' entries live in the shards' instances.
            for sim in self.shards.lock().unwrap().values() {
                sim.sync_dir(path)?;
            }
        }
        self.route(path).sync_dir(path)
    }
    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        for sim in self.shards.lock().unwrap().values() {
            sim.sync_filesystem(path)?;
        }
        self.route(path).sync_filesystem(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = self.route(path).list_dir(path)?;
        if path == Path::new(ROOT).join("channels") {
            for (name, sim) in self.shards.lock().unwrap().iter() {
                if sim.stat(&path.join(name))?.is_some() {
                    names.push(name.clone());
                }
            }
            names.sort();
            names.dedup();
        }
        Ok(names)
    }
    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        self.route(path).stat(path)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        self.route(path).lock_exclusive(path)
    }
}

fn open(storage: &ShardedStorage, sync: SyncPolicy) -> Vellum {
    storage.counter.reset_peak();
    let options = Options {
        eviction: None,
        open_files_max: CAP,
        sync,
        // Checkpoints every few thousand appends, so they also run under the cap.
        journal_bytes_max: 1 << 20,
        ..Options::default()
    };
    Vellum::open_with_storage(Arc::new(storage.clone()), ROOT, options).expect("opening the store")
}

/// Spread over 1,024 shard directories, with ids of different lengths.
fn id(i: usize) -> String {
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let (a, b) = (DIGITS[i % 32] as char, DIGITS[(i / 32) % 32] as char);
    format!("{a}{b}-{i}")
}

fn message(i: usize) -> Vec<u8> {
    format!("message of channel {i}").into_bytes()
}

fn read_back(store: &Vellum, i: usize) {
    let messages: Vec<_> = store
        .read(&id(i), &ReadRequest::all())
        .unwrap_or_else(|e| panic!("reading channel {}: {e}", id(i)))
        .collect::<vellum::Result<_>>()
        .unwrap();
    assert_eq!(messages.len(), 1, "channel {}", id(i));
    assert_eq!(messages[0].seq, 0);
    assert_eq!(messages[0].data, message(i), "channel {}", id(i));
}

#[test]
fn touching_100000_channels_never_holds_more_than_64_files_open() {
    const CHANNELS: usize = 100_000;
    let counter = Arc::new(Counter::default());
    let storage = ShardedStorage::new(&counter);
    let store = open(&storage, SyncPolicy::Buffered);
    for i in 0..CHANNELS {
        let ack = store.append(&id(i), &message(i)).unwrap();
        assert_eq!(ack.seq, 0);
        // Now and then, read a channel written long ago (long evicted from the cache).
        if i % 97 == 96 {
            read_back(&store, (i * 7919) % i);
        }
    }
    let peak = store.stats().open_files_peak;
    assert!(peak <= CAP, "{peak} channel files were open at once");
    assert!(peak >= CAP / 2, "the cache was barely used: peak {peak}");

    for i in 0..CHANNELS {
        read_back(&store, i);
    }
    let peak = store.stats().open_files_peak;
    assert!(peak <= CAP, "{peak} channel files were open at once");
    drop(store);

    let store = open(&storage, SyncPolicy::Buffered);
    for i in (0..CHANNELS).rev() {
        read_back(&store, i);
    }
    let stats = store.stats();
    assert!(
        stats.open_files_peak <= CAP,
        "{} open",
        stats.open_files_peak
    );
    assert!(
        stats.open_files <= CAP && stats.cached_channels <= CAP,
        "{stats:?}"
    );
}

#[test]
fn a_checkpoint_with_a_full_cache_stays_within_the_cap() {
    // The store's own count covers the files its cache holds; the filesystem also sees
    // any other handle the engine opens on a channel file, e.g. to sync it.
    const CHANNELS: usize = 3 * CAP;
    let counter = Arc::new(Counter::default());
    let storage = ShardedStorage::new(&counter);
    let store = open(&storage, SyncPolicy::Fsync);
    for i in 0..CHANNELS {
        store.append(&id(i), &message(i)).unwrap();
    }
    store.checkpoint().unwrap();
    assert!(store.stats().open_files_peak <= CAP);
    assert!(
        counter.peak() <= CAP,
        "{} handles on channel files were open at once (open_files_max is {CAP})",
        counter.peak()
    );
    for i in 0..CHANNELS {
        read_back(&store, i);
    }
}

#[test]
fn recovery_replays_a_journal_of_many_channels_within_the_cap() {
    const CHANNELS: usize = 600;
    let counter = Arc::new(Counter::default());
    let storage = ShardedStorage::new(&counter);
    let store = open(&storage, SyncPolicy::Fsync);
    for i in 0..CHANNELS {
        store.append(&id(i), &message(i)).unwrap();
    }
    // Power loss: the acknowledged appends live in the synced journal only.
    let after = storage.crash(CrashMode::DropUnsynced);
    drop(store);

    let store = open(&after, SyncPolicy::Fsync);
    assert!(store.recovery_report().entries_replayed >= CHANNELS as u64);
    assert!(
        counter.peak() <= CAP,
        "recovery held {} channel files open at once (open_files_max is {CAP})",
        counter.peak()
    );
    for i in 0..CHANNELS {
        read_back(&store, i);
    }
    assert!(store.stats().open_files_peak <= CAP);
    assert!(counter.peak() <= CAP, "{} handles open", counter.peak());
}
