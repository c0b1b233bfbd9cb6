//! The CryptPad import parser: any channel log (and any dedicated metadata log, after a
//! 0xFF byte in the input) imports without panicking — or is refused with a typed error
//! — and exports back byte for byte (or the export names the channel it skipped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;
use vellum::storage::{SimStorage, Storage};
use vellum::{Options, Vellum};

const ID: &str = "0123456789abcdef0123456789abcdef";

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fuzz_target!(|input: &[u8]| {
    let (log, metadata) = match input.iter().position(|&b| b == 0xFF) {
        Some(at) => (&input[..at], Some(&input[at + 1..])),
        None => (input, None),
    };
    // On tmpfs where there is one: the export syncs every file it writes.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let (source, out) = (dir.path().join("datastore"), dir.path().join("out"));
    let shard = &ID[..2];
    write(&source.join(shard).join(format!("{ID}.ndjson")), log);
    if let Some(metadata) = metadata {
        write(
            &source.join(shard).join(format!("{ID}.metadata.ndjson")),
            metadata,
        );
    }
    let sim = SimStorage::new();
    sim.create_dir_all(Path::new("/data")).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    // A small journal: the default 64 MiB file, zero-filled in memory at every open,
    // held this target to ~20 executions a second.
    let options = Options {
        eviction: None,
        journal_bytes_max: 1 << 20,
        ..Options::default()
    };
    let store = Vellum::open_with_storage(Arc::new(sim), "/data", options).unwrap();
    if vellum::cryptpad::import_cryptpad(&store, &source, None, &|_| {}).is_err() {
        return;
    }
    let report = vellum::cryptpad::export_cryptpad(&store, &out, None, &|_| {})
        .expect("exporting what was imported");
    let exported = out.join(shard).join(format!("{ID}.ndjson"));
    if report.skipped.total > 0 {
        assert!(!exported.exists(), "a skipped channel was written");
        return;
    }
    assert_eq!(
        std::fs::read(&exported).ok().as_deref(),
        Some(log),
        "channel log changed"
    );
    let exported_metadata = out.join(shard).join(format!("{ID}.metadata.ndjson"));
    assert_eq!(
        std::fs::read(&exported_metadata).ok().as_deref(),
        metadata,
        "metadata log changed"
    );
});
