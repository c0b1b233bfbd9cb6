//! Proves that an import refuses what it cannot carry over faithfully — an id the
//! store already holds (live or archived, and not imported from the same files), a
//! channel file name with an invalid id or in another id's shard directory, an
//! unreadable file, a line over `message_bytes_max` — with a typed error, before it
//! changes anything: the data directory is byte for byte what it was, and no channel
//! of the datastore was imported, not even those met before the bad one.

mod common;

use common::cryptpad::{Datastore, Facts, Tree, generate};
use common::{ROOT, open, open_with, options, provision};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vellum::cryptpad::import_cryptpad;
use vellum::storage::{SimStorage, Storage};
use vellum::{Error, Options, Selector, Vellum};

/// Every file of the data directory, with its bytes — but the journal's: a checkpoint
/// starts a new journal file and the checkpoint thread prepares the next one in the
/// background, whatever else happens. Channel writes reach channel files by a checkpoint.
fn disk(sim: &SimStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from(ROOT)];
    while let Some(dir) = stack.pop() {
        for name in sim.list_dir(&dir).unwrap() {
            let path = dir.join(name);
            if path == Path::new(ROOT).join("journal") {
                continue;
            }
            if sim.stat(&path).unwrap().unwrap().is_dir {
                stack.push(path);
            } else {
                out.insert(path.clone(), sim.read_file(&path).unwrap());
            }
        }
    }
    out
}

fn import(store: &Vellum, ds: &Datastore) -> vellum::Result<vellum::cryptpad::ImportReport> {
    import_cryptpad(store, &ds.live(), Some(&ds.archive()), &|_| {})
}

/// A store and a datastore of a few channels.
fn setup(options: Options) -> (SimStorage, Vellum, Datastore, Facts) {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open_with(&sim, options);
    let mut ds = Datastore::new(21);
    let facts = generate(&mut ds, 10);
    (sim, store, ds, facts)
}

/// Runs the import, expects it refused, and checks that nothing changed.
#[track_caller]
fn refused(sim: &SimStorage, store: &Vellum, ds: &Datastore, facts: &Facts) -> Error {
    store.checkpoint().unwrap();
    let before = disk(sim);
    let err = import(store, ds).expect_err("the import should be refused");
    store.checkpoint().unwrap();
    assert!(
        disk(sim) == before,
        "a refused import changed the data directory ({err})"
    );
    for (id, _) in &facts.plain {
        assert!(!store.is_archived(id).unwrap());
    }
    assert!(
        !store.exists(&facts.legacy_only).unwrap(),
        "a channel was imported"
    );
    assert!(
        !store.is_archived(&facts.archived[0].0).unwrap(),
        "a channel was imported"
    );
    err
}

/// The datastore's channel whose id sorts last: met last, after every other was checked.
fn last_plain(facts: &Facts) -> String {
    facts.plain.iter().map(|(id, _)| id.clone()).max().unwrap()
}

#[test]
fn an_existing_live_channel_is_refused() {
    let (sim, store, ds, facts) = setup(options());
    let id = last_plain(&facts);
    store.append(&id, b"mine").unwrap();
    match refused(&sim, &store, &ds, &facts) {
        Error::AlreadyExists { channel } => assert_eq!(channel.as_str(), id),
        other => panic!("{other}"),
    }
    assert_eq!(common::read_all(&store, &id).len(), 1);
}

#[test]
fn an_existing_archived_channel_is_refused() {
    let (sim, store, ds, facts) = setup(options());
    let id = facts.archived[2].0.clone();
    store.append(&id, b"mine").unwrap();
    store.archive(&id, "mine").unwrap();
    match refused(&sim, &store, &ds, &facts) {
        Error::Archived { channel, reason } => {
            assert_eq!((channel.as_str(), reason.as_str()), (id.as_str(), "mine"))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_channel_file_with_an_invalid_id_is_refused() {
    let (sim, store, mut ds, facts) = setup(options());
    ds.put(
        Tree::Live,
        "zz/zz$not-an-id.ndjson",
        b"[0,null,\"MSG\",\"x\",\"y\",1]\n",
    );
    match refused(&sim, &store, &ds, &facts) {
        Error::ImportBadName { path, .. } => assert!(path.ends_with("zz/zz$not-an-id.ndjson")),
        other => panic!("{other}"),
    }
}

#[test]
fn a_channel_file_in_another_ids_shard_is_refused() {
    let (sim, store, mut ds, facts) = setup(options());
    let id = common::cryptpad::id("ab");
    ds.put(Tree::Archive, &format!("zz/{id}.metadata.ndjson"), b"{}\n");
    match refused(&sim, &store, &ds, &facts) {
        Error::ImportBadName { reason, .. } => assert!(reason.contains("\"ab\""), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn an_unreadable_file_is_refused() {
    let (sim, store, ds, facts) = setup(options());
    // A directory where a channel log should be: reading it fails (as root, permissions would not).
    let id = common::cryptpad::id("zzunreadable");
    std::fs::create_dir_all(ds.live().join(Datastore::rel(&id, ".ndjson"))).unwrap();
    match refused(&sim, &store, &ds, &facts) {
        Error::Io { context, .. } => assert!(context.contains(&id), "{context}"),
        other => panic!("{other}"),
    }
}

#[test]
fn a_line_over_the_message_limit_is_refused_naming_its_file_and_line() {
    let max = 16 * 1024;
    let (sim, store, mut ds, facts) = setup(Options {
        message_bytes_max: max,
        ..options()
    });
    let id = common::cryptpad::id("zzhuge");
    let huge = common::cryptpad::msg(&id, &"A".repeat(max), 1);
    let log = common::cryptpad::lines(&[
        common::cryptpad::msg(&id, "small", 1),
        common::cryptpad::msg(&id, "small too", 2),
        huge,
    ]);
    ds.put(Tree::Live, &Datastore::rel(&id, ".ndjson"), &log);
    match refused(&sim, &store, &ds, &facts) {
        Error::ImportLineTooLong {
            path,
            line,
            max: limit,
        } => {
            assert!(path.ends_with(Datastore::rel(&id, ".ndjson")));
            assert_eq!((line, limit), (3, max));
        }
        other => panic!("{other}"),
    }
    // A torn tail is bounded the same way.
    std::fs::write(
        ds.live().join(Datastore::rel(&id, ".ndjson")),
        vec![b'x'; max + 1],
    )
    .unwrap();
    match refused(&sim, &store, &ds, &facts) {
        Error::ImportLineTooLong { line: 1, .. } => {}
        other => panic!("{other}"),
    }
}

#[test]
fn a_rerun_skips_channels_changed_since_but_refuses_one_rewritten_since() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let mut ds = Datastore::new(22);
    let facts = generate(&mut ds, 10);
    let first = import(&store, &ds).unwrap();
    // Appended to since: still the import of these files.
    store.append(&facts.odd, b"later").unwrap();
    let again = import(&store, &ds).unwrap();
    assert_eq!(
        again.already_imported,
        first.channels + first.archived + first.trim_copies
    );
    // Trimmed since: the origin went with the rewrite; it is no longer these files.
    let (id, lines) = facts
        .plain
        .iter()
        .find(|(_, lines)| lines.len() >= 2)
        .unwrap();
    store
        .trim(id, &Selector::Seq(lines.len() as u64 - 1))
        .unwrap();
    store.checkpoint().unwrap();
    let before = disk(&sim);
    match import(&store, &ds) {
        Err(Error::AlreadyExists { channel }) => assert_eq!(channel.as_str(), id),
        other => panic!("{other:?}"),
    }
    assert!(disk(&sim) == before);
}
