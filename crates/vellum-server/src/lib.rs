//! Vellum's HTTP + WebSocket API: an axum router over the synchronous engine. Engine
//! calls that may touch the disk run on tokio's blocking pool; appends are queued
//! there and awaited without holding a thread through the fsync.
//!
//! Map: `config` (what `vellum serve` reads), `serve` (listening, TLS, shutdown),
//! `auth` (bearer tokens and scopes), `traffic` (in-flight limit, timeout, request
//! metrics), `messages`, `channels`, `admin` (the endpoints), `hub` + `subscribe`
//! (live delivery over WebSocket), `openapi` (the document at `/v1/openapi.json`),
//! `error` (the one error shape).

mod admin;
mod auth;
mod channels;
mod config;
mod connections;
mod error;
mod hub;
mod messages;
mod metrics;
mod openapi;
mod serve;
mod subscribe;
mod traffic;
mod wire;
mod writers;

pub use auth::required_scope;
pub use config::{Config, Eviction, Limits, Scope, Sync, TlsConfig, TokenConfig};
pub use error::ApiError;
pub use openapi::document as openapi_document;
pub use serve::{serve, serve_on, shutdown_signal};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use std::sync::Arc;
use vellum::Vellum;

/// What every handler shares: one `Arc`, so the per-request clones axum makes cost one
/// atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Arc<Vellum>,
    hub: Arc<hub::Hub>,
    auth: Arc<auth::Auth>,
    limits: Arc<Limits>,
    traffic: Arc<traffic::Traffic>,
    writers: Arc<writers::Writers>,
}

impl AppState {
    pub fn new(store: Arc<Vellum>, config: &Config) -> AppState {
        // Install the recorder before the first request records anything.
        metrics::handle();
        AppState(Arc::new(Shared {
            hub: Arc::new(hub::Hub::new(&config.limits)),
            auth: Arc::new(auth::Auth::new(&config.tokens)),
            traffic: Arc::new(traffic::Traffic::new(&config.limits)),
            writers: Arc::new(writers::Writers::new(store.clone())),
            limits: Arc::new(config.limits.clone()),
            store,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Runs an engine call on the blocking pool (it may wait for the disk).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Vellum) -> vellum::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || call(&store)).await??)
    }
}

/// The API's routes.
pub fn app(state: AppState) -> Router {
    let message_limit = DefaultBodyLimit::max(state.limits.message_bytes_max);
    let json_limit = DefaultBodyLimit::max(state.limits.json_body_bytes_max);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/openapi.json", get(openapi::serve_document))
        .route(
            "/v1/channels/{id}/messages",
            post(messages::append)
                .get(messages::read)
                .layer(message_limit),
        )
        .route("/v1/channels/{id}/messages/{seq}", delete(messages::delete))
        .route(
            "/v1/channels/{id}/keys/{key}",
            delete(messages::delete_by_key),
        )
        .route("/v1/channels/{id}/batch", post(messages::append_batch))
        .route("/v1/channels/{id}/subscribe", get(subscribe::subscribe))
        .route("/v1/publish", post(messages::publish))
        .route("/v1/channels", get(channels::list_live))
        .route(
            "/v1/channels/{id}",
            get(channels::info)
                .put(channels::create)
                .delete(channels::remove),
        )
        .route(
            "/v1/channels/{id}/metadata",
            get(channels::metadata).post(channels::amend),
        )
        .route("/v1/channels/{id}/clear", post(channels::clear))
        .route("/v1/channels/{id}/trim", post(channels::trim))
        .route("/v1/channels/{id}/archive", post(channels::archive))
        .route("/v1/archive", get(channels::list_archived))
        .route(
            "/v1/archive/{id}",
            get(channels::archived_info).delete(channels::remove_archived),
        )
        .route("/v1/archive/{id}/restore", post(channels::restore))
        .route("/v1/stats", get(admin::stats))
        .route("/v1/store/compaction", post(admin::compact))
        .route("/v1/verify", post(admin::verify))
        .fallback(|| async { ApiError::not_found_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(json_limit)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            traffic::observe,
        ))
        .with_state(state)
}
