//! Vellum's HTTP API: an axum router over the synchronous engine (each engine call
//! runs on tokio's blocking pool). This is the first slice of issue 4: appending and
//! reading messages, health, and the error shape every endpoint shares.

mod error;

pub use error::ApiError;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use vellum::{NewMessage, Options, ReadFrom, ReadRequest, Vellum};

/// Lines of a history read buffered between the engine and the socket, at most.
const READ_LINES_IN_FLIGHT: usize = 64;

/// How `vellum serve` runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("vellum-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
        }
    }
}

/// The API's routes over `store`.
pub fn router(store: Arc<Vellum>) -> Router {
    let body_limit = store.options().message_bytes_max;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/v1/channels/{id}/messages",
            post(append)
                .get(read)
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(store)
}

/// Opens the data directory and serves until `shutdown` completes, then finishes the
/// requests in flight and closes the store cleanly.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.listen.ip().is_loopback(),
        "refusing to listen on {}: access tokens are not implemented yet, so only loopback addresses are served",
        config.listen
    );
    let data_dir = config.data_dir.clone();
    let store =
        tokio::task::spawn_blocking(move || Vellum::open(data_dir, Options::default())).await??;
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, data = %config.data_dir.display(), "vellum serving");
    axum::serve(listener, router(store.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    tokio::task::spawn_blocking(move || store.close()).await?;
    Ok(())
}

#[derive(serde::Serialize)]
struct Appended {
    seq: u64,
    key: String,
    offset: u64,
    time_ms: u64,
    durability: &'static str,
}

/// `POST /v1/channels/{id}/messages`: the body is one message; `Vellum-Key` sets its key.
async fn append(
    State(store): State<Arc<Vellum>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        let code = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "message_too_large",
            _ => "bad_request",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    })?;
    let key = headers
        .get("vellum-key")
        .map(|value| value.as_bytes().to_vec());
    let ack = tokio::task::spawn_blocking(move || {
        let message = match &key {
            Some(key) => NewMessage::with_key(&body, key),
            None => NewMessage::new(&body),
        };
        store
            .append_batch(&id, &[message])
            .map(|mut acks| acks.pop().expect("one receipt"))
    })
    .await
    .map_err(ApiError::internal)??;
    let reply = Appended {
        seq: ack.seq,
        key: String::from_utf8_lossy(&ack.key).into_owned(),
        offset: ack.position.offset,
        time_ms: ack.time_ms,
        durability: ack.durability.as_str(),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

/// Where a read starts and how many messages it returns.
#[derive(serde::Deserialize)]
struct ReadQuery {
    from_seq: Option<u64>,
    /// Messages after the one with this key (CryptPad's `lastKnownHash`).
    after_key: Option<String>,
    /// The last N messages.
    last: Option<usize>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    seq: u64,
    key: std::borrow::Cow<'a, str>,
    time_ms: u64,
    data: String,
}

/// `GET /v1/channels/{id}/messages`: streams `application/x-ndjson`, one message a line.
async fn read(
    State(store): State<Arc<Vellum>>,
    Path(id): Path<String>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", rejection.body_text())
    })?;
    let starts = [
        query.from_seq.is_some(),
        query.after_key.is_some(),
        query.last.is_some(),
    ];
    if starts.iter().filter(|s| **s).count() > 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "give at most one of from_seq, after_key and last",
        ));
    }
    let skip_first = query.after_key.is_some();
    let from = match (query.from_seq, query.after_key, query.last) {
        (Some(seq), ..) => ReadFrom::Seq(seq),
        (_, Some(key), _) => ReadFrom::Key(key.into_bytes()),
        (.., Some(n)) => ReadFrom::Last(n),
        _ => ReadFrom::Start,
    };
    let request = ReadRequest {
        from,
        to_seq: None,
        limit: query
            .limit
            .map(|n| n.saturating_add(usize::from(skip_first))),
    };
    // Open the read (and meet its errors) before answering 200.
    let history = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.read(&id, &request))
            .await
            .map_err(ApiError::internal)??
    };
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(READ_LINES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut skip = skip_first;
        let _ = history.for_each_ref(|m| {
            if std::mem::take(&mut skip) {
                return std::ops::ControlFlow::Continue(());
            }
            let line = Line {
                seq: m.seq,
                key: String::from_utf8_lossy(m.key),
                time_ms: m.time_ms,
                data: base64::engine::general_purpose::STANDARD.encode(m.data),
            };
            let mut bytes = serde_json::to_vec(&line).expect("a line serializes");
            bytes.push(b'\n');
            // A client that went away stops the read.
            match tx.blocking_send(Ok(Bytes::from(bytes))) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(_) => std::ops::ControlFlow::Break(()),
            }
        });
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Completes on SIGINT or SIGTERM: what `vellum serve` shuts down on.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight, then closing the store");
}
