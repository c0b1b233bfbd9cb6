//! Prometheus metrics at `/metrics`: request counts and latency histograms recorded as
//! requests finish, engine figures (appends, fsyncs, group commits, open files, store
//! bytes and garbage, compactions) read from the engine at each scrape.

use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets, seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// How often recorded latencies are folded into their histograms (until then each is
/// kept as a raw sample, so this bounds their memory).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(2);

/// The process-wide recorder (metrics' macros record into one global recorder).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("buckets are non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder (an embedding application's) wins; this handle then
        // renders only what is recorded here, which is nothing.
        let _ = metrics::set_global_recorder(recorder);
        let upkept = handle.clone();
        std::thread::Builder::new()
            .name("vellum-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkept.run_upkeep();
                }
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

/// A method as a label without allocating.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A matched route as a label: the router's routes are few and fixed, so each is
/// interned once and labels never allocate afterwards.
pub fn route_label(route: Option<&str>) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let Some(route) = route else {
        return "unknown";
    };
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(interned) = routes.read().get(route) {
        return interned;
    }
    let mut routes = routes.write();
    match routes.get(route) {
        Some(interned) => interned,
        None => {
            let interned: &'static str = Box::leak(route.to_string().into_boxed_str());
            routes.insert(interned);
            interned
        }
    }
}

pub fn request_done(
    method: &'static str,
    route: &'static str,
    status: StatusCode,
    elapsed: Duration,
) {
    counter!("vellum_http_requests_total",
        "method" => method, "route" => route, "status" => status_label(status))
    .increment(1);
    histogram!("vellum_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
}

/// A status code as a label without allocating.
fn status_label(status: StatusCode) -> &'static str {
    const CODES: [(u16, &str); 17] = [
        (101, "101"),
        (200, "200"),
        (201, "201"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (410, "410"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (500, "500"),
        (503, "503"),
        (504, "504"),
    ];
    CODES
        .iter()
        .find(|(code, _)| *code == status.as_u16())
        .map_or("other", |(_, label)| label)
}

pub fn appended(messages: usize) {
    counter!("vellum_appended_messages_total").increment(messages as u64);
}

/// `GET /metrics`.
pub async fn scrape(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let s = app.blocking(|s| Ok(s.stats())).await?;
    let store = &s.message_store;
    gauge!("vellum_open_files").set(s.open_files as f64);
    gauge!("vellum_cached_channels").set(s.cached_channels as f64);
    gauge!("vellum_lost_ranges").set(s.lost_ranges as f64);
    counter!("vellum_commit_groups_total").absolute(s.commit.groups);
    counter!("vellum_commit_jobs_total").absolute(s.commit.jobs);
    counter!("vellum_fsyncs_total", "file" => "journal").absolute(s.commit.journal_syncs);
    counter!("vellum_fsyncs_total", "file" => "store").absolute(store.syncs);
    counter!("vellum_checkpoints_total").absolute(s.commit.checkpoints);
    gauge!("vellum_store_messages").set(store.messages as f64);
    gauge!("vellum_store_live_bytes").set(store.live_bytes as f64);
    gauge!("vellum_store_file_bytes").set(store.file_bytes as f64);
    gauge!("vellum_store_garbage_fraction").set(store.garbage_fraction);
    gauge!("vellum_store_segments").set(store.segments as f64);
    gauge!("vellum_store_open_segment_files").set(store.open_segment_files as f64);
    gauge!("vellum_store_index_bytes").set(store.index_bytes as f64);
    counter!("vellum_store_compactions_total").absolute(store.compactions);
    counter!("vellum_store_bytes_rewritten_total").absolute(store.bytes_rewritten);
    gauge!("vellum_subscribers").set(app.traffic.subscribers(&app.limits) as f64);
    gauge!("vellum_subscribed_channels").set(app.hub.channels() as f64);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    ))
}
