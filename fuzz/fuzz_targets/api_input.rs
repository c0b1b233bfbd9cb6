//! The HTTP API's input parsing, through the real router: any method, path, query,
//! content type and body gets an answer — never a panic, never a 500 — and every
//! error is the one JSON shape with a code.
#![no_main]

use axum::body::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use vellum::storage::{SimStorage, Storage};
use vellum::{Options, Vellum};
use vellum_server::{AppState, Config};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const CONTENT_TYPES: [Option<&str>; 3] = [None, Some("application/json"), Some("text/plain")];

fn app() -> &'static (tokio::runtime::Runtime, AppState) {
    static APP: OnceLock<(tokio::runtime::Runtime, AppState)> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/data")).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let mut config = Config::default();
        config.limits.message_bytes_max = 4096;
        config.limits.json_body_bytes_max = 16 * 1024;
        let options = Options {
            eviction: None,
            ..config.engine_options()
        };
        let store = Arc::new(Vellum::open_with_storage(Arc::new(sim), "/data", options).unwrap());
        store.append("fuzz", b"a message to find").unwrap();
        let state = runtime.block_on(async { AppState::new(store, &config) });
        (runtime, state)
    })
}

fuzz_target!(|input: &[u8]| {
    let [selector, rest @ ..] = input else {
        return;
    };
    let (target, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let mut request = axum::http::Request::builder()
        .method(METHODS[usize::from(selector % 5)])
        .uri(format!("/v1/{target}"));
    if let Some(content_type) = CONTENT_TYPES[usize::from(selector / 5 % 3)] {
        request = request.header("content-type", content_type);
    }
    if selector / 15 % 2 == 1 {
        request = request.header("vellum-key", "fuzz-key");
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return; // Not a request hyper would ever hand the router.
    };
    let (runtime, state) = app();
    runtime.block_on(async {
        let response = vellum_server::app(state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.as_u16() != 500,
            "500 for {target:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() && !target.contains("subscribe") {
            let error: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status} without a JSON error ({e}): {bytes:?}"));
            assert!(
                error["error"]["code"].is_string(),
                "{status} without a code: {error}"
            );
        }
    });
});
