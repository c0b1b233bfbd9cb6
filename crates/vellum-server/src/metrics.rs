//! Prometheus metrics at `/metrics`: request counts and latency histograms recorded as
//! requests finish, engine figures (appends, fsyncs, group commits, open files, store
//! bytes and garbage, compactions) read from the engine at each scrape.

use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets, seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

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
        handle
    })
}

pub fn request_done(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [("method", method.to_string()), ("route", route.to_string())];
    counter!(
        "vellum_http_requests_total",
        &[
            ("method", method.to_string()),
            ("route", route.to_string()),
            ("status", status.to_string()),
        ]
    )
    .increment(1);
    histogram!("vellum_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
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
