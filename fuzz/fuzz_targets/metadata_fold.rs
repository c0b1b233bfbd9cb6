//! CryptPad's metadata fold: any log folds without panicking, the same way twice; a
//! command applied to the folded state changes it exactly when `apply` says so (a
//! refused or no-op command leaves it as it was); the state survives its JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vellum::{Metadata, MetadataFold};

fn fold(log: &[u8]) -> Metadata {
    let mut fold = MetadataFold::new();
    for line in log.split(|&b| b == b'\n') {
        let _ = fold.feed(line);
    }
    fold.finish()
}

fuzz_target!(|log: &[u8]| {
    let state = fold(log);
    assert_eq!(state, fold(log), "folding the same log twice differed");
    let again = Metadata::from_json(&state.to_json()).expect("a folded state's own JSON");
    assert_eq!(
        again, state,
        "the folded state does not survive its JSON form"
    );
    // Every line that is a command, applied once more to the result.
    for line in log.split(|&b| b == b'\n') {
        let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let (Some(Value::String(command)), Some(args)) = (items.first(), items.get(1)) else {
            continue;
        };
        let mut next = state.clone();
        match next.apply(command, args) {
            Ok(true) => assert_ne!(next, state, "{command}: reported a change, made none"),
            Ok(false) | Err(_) => {
                assert_eq!(next, state, "{command}: changed state it did not report")
            }
        }
    }
});
