//! Proves that importing a CryptPad datastore and exporting it again gives back every
//! file byte for byte — channel logs, dedicated metadata logs with their amendments,
//! legacy metadata first lines, offset hints, placeholders, archived channels and
//! pre-trim copies, odd files included (empty lines, lines that are not JSON, torn last
//! lines, empty files) — and that in between the store serves them as CryptPad would:
//! the metadata folds as CryptPad folds it, a read from a client's `lastKnownHash`
//! returns that message and what follows, large bodies live in the message store. It
//! holds after a clean reopen and after a crash; a crash at any step of an import
//! leaves only whole channels, and running the import again finishes it.

mod common;

use common::cryptpad::{Datastore, Facts, T0, Tree, generate, key, read_tree};
use common::{ROOT, open, provision, read_all};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vellum::cryptpad::{
    ImportPhase, ImportProgress, ImportReport, export_cryptpad, import_cryptpad,
};
use vellum::storage::{CrashMode, SimStorage, Storage};
use vellum::{Metadata, MetadataFold, ReadFrom, ReadRequest, Vellum};

fn import(store: &Vellum, ds: &Datastore) -> vellum::Result<ImportReport> {
    import_cryptpad(store, &ds.live(), Some(&ds.archive()), &|_| {})
}

/// Exports `store` beside the datastore and checks every file against the original.
fn export_matches(store: &Vellum, ds: &Datastore, name: &str) {
    let (out, archive_out) = (
        ds.scratch(&format!("{name}-live")),
        ds.scratch(&format!("{name}-archive")),
    );
    let report = export_cryptpad(store, &out, Some(&archive_out), &|_| {}).unwrap();
    assert_eq!(report.skipped.total, 0, "{name}: {:?}", report.skipped);
    let mut got: BTreeMap<(Tree, PathBuf), Vec<u8>> = BTreeMap::new();
    for (tree, root) in [(Tree::Live, &out), (Tree::Archive, &archive_out)] {
        for (path, bytes) in read_tree(root) {
            got.insert((tree, path), bytes);
        }
    }
    let want = ds.round_trip_files();
    let names = |m: &BTreeMap<(Tree, PathBuf), Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(&want),
        "{name}: the exported files differ"
    );
    for (file, bytes) in &want {
        assert!(
            got[file] == *bytes,
            "{name}: {file:?} differs:\nwant {:?}\ngot  {:?}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&got[file])
        );
    }
}

/// CryptPad's `readMetadata` over the files, through the public fold: the channel's
/// first non-empty line when the dedicated log asks for it, then every dedicated line
/// CryptPad reads (the terminated ones).
fn cryptpad_fold(ds: &Datastore, id: &str) -> Metadata {
    let file = |suffix: &str| {
        ds.files
            .get(&(Tree::Live, PathBuf::from(Datastore::rel(id, suffix))))
    };
    let terminated = |bytes: &[u8]| -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        lines.pop(); // the tail, never read
        lines
    };
    let dedicated = file(".metadata.ndjson")
        .map(|b| terminated(b))
        .unwrap_or_default();
    let mut fold = MetadataFold::new();
    if vellum::cryptpad::channel_line_needed(dedicated.iter().map(Vec::as_slice))
        && let Some(first) = file(".ndjson")
            .map(|b| terminated(b))
            .unwrap_or_default()
            .into_iter()
            .find(|line| !line.is_empty())
    {
        let _ = fold.feed_channel_first_line(&first);
    }
    for line in &dedicated {
        let _ = fold.feed(line);
    }
    fold.finish()
}

/// What the store serves for the imported channels.
fn check_store(store: &Vellum, ds: &Datastore, facts: &Facts) {
    // Every live channel folds its metadata as CryptPad does.
    let mut live: Vec<&str> = facts.plain.iter().map(|(id, _)| id.as_str()).collect();
    live.extend(
        [
            &facts.legacy_only,
            &facts.legacy_and_commands,
            &facts.legacy_ignored,
            &facts.metadata_only,
            &facts.odd,
            &facts.no_final_newline,
            &facts.empty_log,
            &facts.empty_metadata,
            &facts.trimmed,
        ]
        .map(String::as_str),
    );
    for id in &live {
        assert_eq!(
            store.metadata(id).unwrap(),
            cryptpad_fold(ds, id),
            "metadata of {id}"
        );
    }
    // And as written out by hand for the interesting ones.
    let legacy = store.metadata(&facts.legacy_only).unwrap();
    assert_eq!(legacy.owners(), [key('a')]);
    assert_eq!(legacy.created_ms(), Some(T0));
    assert!(legacy.expire_ms().is_some());
    let both = store.metadata(&facts.legacy_and_commands).unwrap();
    assert_eq!(both.owners(), [key('a'), key('c')]);
    assert_eq!(
        both.allowed(),
        [key('b')],
        "ADD_OWNERS strips a new owner from the allow list"
    );
    assert!(both.restricted());
    let ignored = store.metadata(&facts.legacy_ignored).unwrap();
    assert_eq!(ignored.owners(), [key('d')]);
    assert_eq!(ignored.allowed(), [key('b')]);
    assert!(
        !ignored.as_object().contains_key("legacyOnly"),
        "a legacy line CryptPad skips is not folded"
    );
    let only = store.metadata(&facts.metadata_only).unwrap();
    assert!(only.restricted());
    assert_eq!(only.allowed(), [key('f')]);
    let odd = store.metadata(&facts.odd).unwrap();
    assert!(odd.delete_lines());
    assert!(!odd.restricted(), "a torn last command is not folded");

    // Messages: every terminated line but a legacy one, keyed by CryptPad's hash.
    for (id, lines) in &facts.plain {
        let messages = read_all(store, id);
        let data: Vec<&[u8]> = messages.iter().map(|m| &m.data[..]).collect();
        let want: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        assert_eq!(data, want, "messages of {id}");
        for (seq, (m, line)) in messages.iter().zip(lines).enumerate() {
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            let content = parsed[4].as_str().unwrap();
            assert_eq!(m.seq, seq as u64);
            assert_eq!(
                m.key,
                content.as_bytes()[..64.min(content.len())],
                "key of {id} #{seq}"
            );
            assert_eq!(m.time_ms, parsed[5].as_u64().unwrap());
        }
        // A client's lastKnownHash: that message again, then the rest.
        if lines.len() >= 3 {
            let from = lines.len() / 2;
            let hash = messages[from].key.clone();
            let read: Vec<_> = store
                .read(id, &ReadRequest::from(ReadFrom::Key(hash)))
                .unwrap()
                .collect::<vellum::Result<_>>()
                .unwrap();
            assert_eq!(
                read,
                messages[from..],
                "read of {id} from its lastKnownHash"
            );
        }
    }
    let legacy_messages = read_all(store, &facts.legacy_only);
    assert_eq!(
        legacy_messages.len(),
        1,
        "the legacy first line is metadata, not a message"
    );
    let odd_messages = read_all(store, &facts.odd);
    // "", "not json", msg, "", "[1,2,3]", object, bad utf8, non-ASCII, large: the torn tail is not one.
    assert_eq!(odd_messages.len(), 9);
    let large = &odd_messages[8];
    assert_eq!(large.data, facts.large_line.as_bytes());
    let from_large = store
        .read(
            &facts.odd,
            &ReadRequest::from(ReadFrom::Key(large.key.clone())),
        )
        .unwrap()
        .collect::<vellum::Result<Vec<_>>>()
        .unwrap();
    assert_eq!(from_large.len(), 1);
    assert_eq!(from_large[0].data, facts.large_line.as_bytes());
    // CryptPad never reads a last line without its newline, complete or not: neither do we.
    assert_eq!(read_all(store, &facts.no_final_newline).len(), 1);
    assert!(read_all(store, &facts.empty_log).is_empty());
    assert!(
        !store.exists(&facts.metadata_only).unwrap()
            || read_all(store, &facts.metadata_only).is_empty()
    );

    for (id, reason) in &facts.archived {
        assert!(store.is_archived(id).unwrap(), "{id} is archived");
        let info = store.info(id).unwrap();
        assert_eq!(
            info.archived.as_deref(),
            Some(reason.as_deref().unwrap_or("archived"))
        );
    }
    assert_eq!(
        read_all(store, &facts.trimmed).len(),
        1,
        "the live, trimmed channel"
    );
}

#[test]
fn import_then_export_gives_every_file_back() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let mut ds = Datastore::new(7);
    let facts = generate(&mut ds, 60);
    let phases = std::sync::Mutex::new(Vec::new());
    let report = import_cryptpad(
        &store,
        &ds.live(),
        Some(&ds.archive()),
        &|p: ImportProgress| phases.lock().unwrap().push(p),
    )
    .unwrap();
    let phases = phases.into_inner().unwrap();
    let last = *phases.last().unwrap();
    assert_eq!(last.phase, ImportPhase::Importing);
    assert_eq!(last.bytes, last.bytes_total);
    assert!(phases.iter().any(|p| p.phase == ImportPhase::Checking));

    assert_eq!(report.channels, facts.plain.len() as u64 + 9);
    assert_eq!(report.archived, facts.archived.len() as u64);
    assert_eq!(report.trim_copies, 1);
    assert_eq!(report.already_imported, 0);
    assert_eq!(
        report.stored_messages, 1,
        "the live 6000-byte message; archived bodies stay inline"
    );
    let skipped: Vec<PathBuf> = report
        .skipped
        .listed
        .iter()
        .map(|s| s.path.clone())
        .collect();
    let mut want: Vec<PathBuf> = ds
        .skipped
        .iter()
        .map(|(tree, rel)| ds.root(*tree).join(rel))
        .collect();
    let mut skipped_sorted = skipped.clone();
    skipped_sorted.sort();
    want.sort();
    assert_eq!(skipped_sorted, want);
    assert_eq!(
        sim.list_dir(Path::new(&format!("{ROOT}/tmp"))).unwrap(),
        Vec::<String>::new()
    );

    check_store(&store, &ds, &facts);
    assert!(store.check_references().unwrap().is_exact());
    let verified = store.verify(&mut |_| {}).unwrap();
    assert!(verified.damage.is_empty(), "{:?}", verified.damage);
    export_matches(&store, &ds, "first");

    // Clean reopen.
    drop(store);
    let store = open(&sim);
    check_store(&store, &ds, &facts);
    export_matches(&store, &ds, "reopened");

    // Crash: the import was durable when it returned.
    let image = sim.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = open(&image);
    check_store(&store, &ds, &facts);
    assert!(store.check_references().unwrap().is_exact());
    export_matches(&store, &ds, "after a crash");

    // Running the import again changes nothing: every channel is already there.
    let last = std::sync::Mutex::new(None);
    let again = import_cryptpad(
        &store,
        &ds.live(),
        Some(&ds.archive()),
        &|p: ImportProgress| *last.lock().unwrap() = Some(p),
    )
    .unwrap();
    let last = last.into_inner().unwrap().unwrap();
    assert_eq!(
        last.bytes, last.bytes_total,
        "the progress of a re-run reaches its end"
    );
    assert_eq!(
        again.already_imported,
        report.channels + report.archived + report.trim_copies
    );
    assert_eq!(
        (again.channels, again.archived, again.trim_copies),
        (0, 0, 0)
    );
    export_matches(&store, &ds, "after a re-run");
}

/// Runs an import on a fresh store that dies after `k` storage steps; returns the
/// image of the crash and whether the import returned `Ok`.
fn import_crashing_after(ds: &Datastore, k: Option<u64>) -> (SimStorage, bool, u64) {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let before = sim.mutating_ops();
    if let Some(k) = k {
        sim.crash_after_ops(k);
    }
    let ok = import(&store, ds).is_ok();
    let steps = sim.mutating_ops() - before;
    let image = sim.crash(CrashMode::DropUnsynced);
    store.close();
    (image, ok, steps)
}

#[test]
fn a_crash_at_any_step_of_an_import_leaves_whole_channels_and_a_rerun_finishes_it() {
    let mut ds = Datastore::new(11);
    let facts = generate(&mut ds, 6);
    let (_, ok, steps) = import_crashing_after(&ds, None);
    assert!(ok && steps > 0);
    let live_channels = facts.plain.len() as u64 + 9;
    let all = live_channels + facts.archived.len() as u64 + 1;
    // Every step when there are few; else a spread of them, the first and last included.
    let stride = (steps / 60).max(1);
    let mut resumed = 0;
    let crash_points: std::collections::BTreeSet<u64> = (0..steps)
        .step_by(stride as usize)
        .chain([steps - 1])
        .collect();
    for k in crash_points {
        // The store's background threads take steps too, so a late crash may find the
        // import done: the checks below hold either way.
        let (image, _, _) = import_crashing_after(&ds, Some(k));
        let store = open(&image);
        // Whatever is there is whole: a channel the crash let in has all its messages.
        for (id, lines) in &facts.plain {
            if store.exists(id).unwrap() {
                assert_eq!(
                    read_all(&store, id).len(),
                    lines.len(),
                    "crash after {k}: {id} is partial"
                );
            }
        }
        assert!(
            store.check_references().unwrap().is_safe(),
            "crash after {k}"
        );
        let report = import(&store, &ds).unwrap();
        assert_eq!(
            report.channels + report.archived + report.trim_copies + report.already_imported,
            all,
            "crash after {k}: {report:?}"
        );
        resumed += u64::from(report.already_imported > 0);
        check_store(&store, &ds, &facts);
        // The bodies a crashed attempt stored are recounted away at the unclean open.
        assert!(
            store.check_references().unwrap().is_exact(),
            "crash after {k}"
        );
        export_matches(&store, &ds, &format!("crash-after-{k}"));
        drop(store);
    }
    assert!(resumed > 0, "no crash left a channel imported");
}

#[test]
fn a_channel_made_in_vellum_exports_as_cryptpad_writes_one() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let ds = Datastore::new(3);
    let id = common::cryptpad::id("native");
    let mut metadata = serde_json::Map::new();
    metadata.insert("channel".into(), id.clone().into());
    metadata.insert("owners".into(), serde_json::json!([key('a')]));
    store.create(&id, Metadata::from_object(metadata)).unwrap();
    store
        .append(&id, b"[0,null,\"MSG\",\"x\",\"one\",1]")
        .unwrap();
    store.append(&id, &vec![b'y'; 5000]).unwrap();
    assert!(
        store
            .amend(&id, "RESTRICT_ACCESS", &serde_json::json!([true]))
            .unwrap()
    );
    store
        .archive(&common::cryptpad::id("other"), "x")
        .unwrap_err();

    let out = ds.scratch("out");
    let report = export_cryptpad(&store, &out, None, &|_| {}).unwrap();
    assert_eq!((report.channels, report.messages), (1, 2));
    let files = read_tree(&out);
    let log = [
        b"[0,null,\"MSG\",\"x\",\"one\",1]\n".as_slice(),
        &vec![b'y'; 5000],
        b"\n",
    ]
    .concat();
    assert_eq!(files[&PathBuf::from(Datastore::rel(&id, ".ndjson"))], log);
    let metadata = &files[&PathBuf::from(Datastore::rel(&id, ".metadata.ndjson"))];
    let text = String::from_utf8(metadata.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(&format!(r#"{{"channel":"{id}","owners":["#)));
    assert!(lines[1].starts_with(r#"["RESTRICT_ACCESS",[true],"#));
    assert_eq!(files.len(), 2);

    // A target that holds anything is refused.
    assert!(matches!(
        export_cryptpad(&store, &out, None, &|_| {}),
        Err(vellum::Error::ExportTargetNotEmpty { .. })
    ));
}

#[test]
fn a_channel_with_a_multi_line_message_is_skipped_not_split() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let ds = Datastore::new(3);
    let (split, whole) = (common::cryptpad::id("split"), common::cryptpad::id("whole"));
    store.append(&split, b"one line").unwrap();
    store.append(&split, b"line one\nline two").unwrap();
    store.append(&whole, b"single").unwrap();
    let out = ds.scratch("out");
    let report = export_cryptpad(&store, &out, None, &|_| {}).unwrap();
    assert_eq!((report.channels, report.messages), (1, 1));
    assert_eq!(report.skipped.total, 1);
    assert!(
        report.skipped.listed[0].reason.contains("seq 1"),
        "{:?}",
        report.skipped
    );
    let files = read_tree(&out);
    assert!(files.contains_key(&PathBuf::from(Datastore::rel(&whole, ".ndjson"))));
    // Nothing of the skipped channel is left behind.
    assert!(
        files.keys().all(|p| !p.to_string_lossy().contains("split")),
        "{:?}",
        files.keys()
    );
}

#[test]
fn an_append_after_a_torn_last_line_stays_readable_once_exported() {
    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    let mut ds = Datastore::new(5);
    let facts = generate(&mut ds, 0);
    import(&store, &ds).unwrap();
    let line = common::cryptpad::msg(&facts.odd, "after the import", T0);
    store.append(&facts.odd, line.as_bytes()).unwrap();
    let out = ds.scratch("out");
    export_cryptpad(&store, &out, None, &|_| {}).unwrap();
    let exported = &read_tree(&out)[&PathBuf::from(Datastore::rel(&facts.odd, ".ndjson"))];
    let original = &ds.files[&(
        Tree::Live,
        PathBuf::from(Datastore::rel(&facts.odd, ".ndjson")),
    )];
    // The torn line gets its newline: CryptPad would have glued the new line onto it.
    let want = [original.as_slice(), b"\n", line.as_bytes(), b"\n"].concat();
    assert_eq!(
        String::from_utf8_lossy(exported),
        String::from_utf8_lossy(&want)
    );
}
