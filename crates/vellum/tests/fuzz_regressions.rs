//! Regressions for what the fuzz targets (fuzz/README.md) found.

mod common;

use common::{open, provision};
use vellum::storage::SimStorage;
use vellum::{Metadata, MetadataFold};

/// Found by `metadata_fold`: a number that is not exactly a double (here 6e47 and a
/// tail of digits) parsed to a value one unit off from the correctly rounded one, so
/// metadata written and read back changed (5.9999999999999995e47 → 5.999999999999999e47)
/// — across a reopen too. Numbers now parse correctly rounded, as CryptPad's
/// `JSON.parse` does.
#[test]
fn metadata_numbers_read_back_exactly() {
    let line = br#"{"n":600000000000000000000000000000000000000000000014750227029560743222}"#;
    let mut fold = MetadataFold::new();
    fold.feed(line).unwrap();
    let folded = fold.finish();
    assert_eq!(
        Metadata::from_json(&folded.to_json()).unwrap(),
        folded,
        "a folded state changed through its JSON"
    );

    let sim = SimStorage::new();
    provision(&sim);
    let store = open(&sim);
    store.create("numbers", folded.clone()).unwrap();
    store.close();
    drop(store);
    let store = open(&sim);
    assert_eq!(store.metadata("numbers").unwrap(), folded);
}
