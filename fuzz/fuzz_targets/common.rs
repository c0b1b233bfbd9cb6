//! A small store on the simulated filesystem, written once and copied for each input:
//! three channels, some bodies in the message store, one published to two channels.
#![allow(dead_code)] // Shared by several targets; each uses a part.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use vellum::storage::{CrashMode, SimStorage, Storage};
use vellum::{Options, ReadRequest, StoreOptions, Vellum};

pub const ROOT: &str = "/data";
pub const CHANNELS: [&str; 3] = ["fuzz-a", "fuzz-b", "fuzz-c"];

pub fn options() -> Options {
    Options {
        eviction: None,
        journal_bytes_max: 1 << 20,
        // Bodies of 64 bytes and more go to the store, whose segments roll at 2 KiB.
        embed_bytes_max: 64,
        store: StoreOptions {
            segment_bytes_max: 2048,
            ..StoreOptions::default()
        },
        ..Options::default()
    }
}

/// What every channel holds: (seq, data) in order.
pub type Contents = Vec<Vec<(u64, Vec<u8>)>>;

/// The disk after a clean close, and what each channel holds.
pub fn base() -> &'static (SimStorage, Contents) {
    static BASE: OnceLock<(SimStorage, Contents)> = OnceLock::new();
    BASE.get_or_init(|| {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new(ROOT)).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let store = open(&sim).expect("opening a new store");
        for i in 0..40u8 {
            let id = CHANNELS[usize::from(i) % CHANNELS.len()];
            let len = if i % 3 == 0 { 150 } else { 20 };
            store.append(id, &vec![i; len]).unwrap();
        }
        store.publish(&CHANNELS[..2], &[0xAB; 300]).unwrap();
        let contents = read_all(&store).expect("reading the base store");
        store.close();
        drop(store);
        (sim.copy_after_crash(CrashMode::DropUnsynced), contents)
    })
}

pub fn open(sim: &SimStorage) -> vellum::Result<Vellum> {
    Vellum::open_with_storage(Arc::new(sim.clone()), ROOT, options())
}

pub fn read_all(store: &Vellum) -> vellum::Result<Contents> {
    CHANNELS
        .iter()
        .map(|id| {
            store
                .read(id, &ReadRequest::all())?
                .map(|m| m.map(|m| (m.seq, m.data)))
                .collect()
        })
        .collect()
}

/// Every message `got` returns is the one the base store holds under its seq, byte for
/// byte (damage may take messages away, never change them).
pub fn assert_nothing_altered(got: &Contents, want: &Contents) {
    for (got, want) in got.iter().zip(want) {
        for (seq, data) in got {
            let original = want.iter().find(|(s, _)| s == seq);
            assert_eq!(
                original.map(|(_, d)| d),
                Some(data),
                "seq {seq} returned bytes that were never written"
            );
        }
    }
}

/// Every channel's messages up to the first error (a typed error is an allowed answer
/// for damaged data; a panic is not).
pub fn read_what_reads(store: &Vellum) -> Contents {
    CHANNELS
        .iter()
        .map(|id| match store.read(id, &ReadRequest::all()) {
            Ok(history) => history
                .map_while(|m| m.ok())
                .map(|m| (m.seq, m.data))
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect()
}

/// `original` changed as `input` says: its first byte picks replace / truncate /
/// overwrite / xor, the next two an offset, the rest the bytes.
pub fn patch(original: &[u8], input: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = input.split_first() else {
        return original.to_vec();
    };
    let (offset, bytes) = match rest {
        [a, b, bytes @ ..] => (
            usize::from(u16::from_le_bytes([*a, *b])) % (original.len() + 1),
            bytes,
        ),
        _ => (0, rest),
    };
    let mut out = original.to_vec();
    match mode % 4 {
        0 => out = rest.to_vec(),
        1 => out.truncate(offset),
        2 => {
            let end = (offset + bytes.len()).max(out.len());
            out.resize(end, 0);
            out[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        _ => {
            for (o, b) in out[offset..].iter_mut().zip(bytes) {
                *o ^= b;
            }
        }
    }
    out
}

/// The bytes of `original` that `patch(original, input)` may have changed (from the
/// start of the range to the end of the file, whatever it grew to).
pub fn patched_range(original: &[u8], input: &[u8]) -> std::ops::Range<usize> {
    let Some((&mode, rest)) = input.split_first() else {
        return 0..0;
    };
    let (offset, bytes) = match rest {
        [a, b, bytes @ ..] => (
            usize::from(u16::from_le_bytes([*a, *b])) % (original.len() + 1),
            bytes,
        ),
        _ => (0, rest),
    };
    match mode % 4 {
        0 => 0..usize::MAX,
        1 => offset..usize::MAX,
        _ => offset..offset + bytes.len(),
    }
}

/// Replaces the file at `path` (durably).
pub fn put(sim: &SimStorage, path: &str, bytes: &[u8]) {
    use vellum::storage::OpenMode;
    let file = sim
        .open(Path::new(path), OpenMode::CreateReadWrite)
        .expect("opening a file to replace");
    file.set_len(0).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file.sync_data().unwrap();
}
