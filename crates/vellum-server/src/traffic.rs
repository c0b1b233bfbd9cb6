//! Every request passes here first: a bound on requests in flight (beyond it, 503 at
//! once rather than a queue that grows), the token check, a timeout to the response
//! head, and the request metrics. One middleware rather than a stack of them: this
//! runs for every request, so its cost is paid at the server's full request rate. Streams and subscribers have their own bounds, taken by their
//! handlers.

use crate::config::Limits;
use crate::{ApiError, AppState};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Traffic {
    in_flight: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    subscribers: Arc<Semaphore>,
    timeout: Duration,
}

impl Traffic {
    pub fn new(limits: &Limits) -> Traffic {
        Traffic {
            in_flight: Arc::new(Semaphore::new(limits.requests_in_flight_max)),
            streams: Arc::new(Semaphore::new(limits.streams_max)),
            subscribers: Arc::new(Semaphore::new(limits.subscribers_max)),
            timeout: limits.request_timeout(),
        }
    }

    /// A place for one more streamed response, held until the stream ends.
    pub fn stream_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("too many streamed responses in flight; retry later"))
    }

    /// A place for one more subscriber, held until its socket closes.
    pub fn subscriber_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.subscribers
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("too many subscribers; retry later"))
    }

    pub fn subscribers(&self, limits: &Limits) -> usize {
        limits.subscribers_max - self.subscribers.available_permits()
    }
}

/// Middleware: limit, timeout, metrics.
pub async fn observe(
    State(app): State<AppState>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = crate::metrics::method_label(request.method());
    let route = route.as_ref().map(MatchedPath::as_str);
    let allowed = crate::auth::authorize(&app, request.method(), route, request.headers());
    let route = crate::metrics::route_label(route);
    let response = match app.traffic.in_flight.clone().try_acquire_owned() {
        Err(_) => ApiError::overloaded("too many requests in flight; retry later").into_response(),
        Ok(_) if allowed.is_err() => allowed.expect_err("checked").into_response(),
        Ok(_permit) => match tokio::time::timeout(app.traffic.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("no response within {:?}", app.traffic.timeout),
            )
            .into_response(),
        },
    };
    let (status, elapsed) = (response.status(), started.elapsed());
    crate::metrics::request_done(method, route, status, elapsed);
    if status.is_server_error() {
        tracing::warn!(
            method,
            route,
            status = status.as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request failed"
        );
    } else {
        tracing::debug!(
            method,
            route,
            status = status.as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request"
        );
    }
    response
}

/// A streamed body from `lines` that holds `permit` until the body is dropped: a stream
/// counts against `streams_max` until its client has it all (or goes away).
pub fn body_holding(
    permit: OwnedSemaphorePermit,
    lines: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> axum::body::Body {
    use tokio_stream::StreamExt;
    let stream = tokio_stream::wrappers::ReceiverStream::new(lines).map(move |line| {
        let _held = &permit;
        line
    });
    axum::body::Body::from_stream(stream)
}
