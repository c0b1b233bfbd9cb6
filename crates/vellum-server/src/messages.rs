//! Messages: append one, append a batch, publish to several channels, read history
//! (streamed ndjson), delete one.

use crate::error::{ApiError, ErrorBody};
use crate::wire::{self, Line};
use crate::writers::Answer;
use crate::{AppState, hub};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::ops::ControlFlow;
use vellum::{NewMessage, ReadFrom, ReadRequest, Selector, TryQueued};

/// Lines of a history read buffered between the engine and the socket, at most.
const READ_LINES_IN_FLIGHT: usize = 64;

/// A message to append: its body and optional key.
pub type Outgoing = (Bytes, Option<Vec<u8>>);

impl AppState {
    /// Appends `messages` to `channel` as one atomic batch and waits for the
    /// acknowledgement without holding a thread through the fsync. Subscribers get the
    /// messages as soon as they are acknowledged, in seq order (acknowledgements run in
    /// commit order on the engine's commit thread).
    pub(crate) async fn append_messages(
        &self,
        channel: String,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<vellum::Appended>, ApiError> {
        let (answer, waiting) = Answer::new();
        let acknowledge = {
            let (hub, channel, answer) = (self.hub.clone(), channel.clone(), answer.clone());
            let bodies: Vec<Bytes> = messages.iter().map(|(data, _)| data.clone()).collect();
            move |result: vellum::Result<Vec<vellum::Appended>>| {
                if let Ok(receipts) = &result {
                    hub.delivered(&channel, receipts, &bodies);
                }
                answer.send(result);
            }
        };
        // On the event loop when that cannot wait (a warm channel, room in the queue);
        // on a writer thread otherwise.
        let queued = self
            .store
            .try_append_with(&channel, &new_messages(&messages), acknowledge)?;
        if let TryQueued::WouldWait(acknowledge) = queued {
            self.writers
                .submit(answer, move |store, _| {
                    store.append_with(&channel, &new_messages(&messages), acknowledge)
                })
                .await?;
        }
        let receipts = waiting.answer().await?;
        crate::metrics::appended(receipts.len());
        Ok(receipts)
    }
}

fn new_messages(messages: &[Outgoing]) -> Vec<NewMessage<'_>> {
    messages
        .iter()
        .map(|(data, key)| NewMessage {
            data,
            key: key.as_deref(),
        })
        .collect()
}

/// `POST /v1/channels/{id}/messages`: the raw body is one message; `Vellum-Key` sets its key.
#[utoipa::path(post, path = "/v1/channels/{id}/messages", tag = "messages",
    params(("id" = String, Path, description = "Channel id"),
           ("Vellum-Key" = Option<String>, Header, description = "The message's key (≤ 64 bytes); default: a hash of its content")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The message"),
    responses((status = 201, body = wire::Appended, description = "Acknowledged under the sync policy"),
              (status = 400, body = ErrorBody), (status = 410, body = ErrorBody, description = "Archived"),
              (status = 413, body = ErrorBody)))]
pub async fn append(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let body = body?;
    let key = match headers.get("vellum-key") {
        Some(value) => Some(wire::key_bytes(value.to_str().map_err(|_| {
            ApiError::bad_request("bad_key", "Vellum-Key must be visible ASCII")
        })?)?),
        None => None,
    };
    let receipts = app.append_messages(id, vec![(body, key)]).await?;
    let receipt = wire::Appended::from(&receipts[0]);
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

/// `POST /v1/channels/{id}/batch`: several messages, all or none, in order.
#[utoipa::path(post, path = "/v1/channels/{id}/batch", tag = "messages",
    params(("id" = String, Path, description = "Channel id")),
    request_body = wire::Batch,
    responses((status = 201, body = wire::BatchAppended), (status = 400, body = ErrorBody),
              (status = 410, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn append_batch(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    batch: Result<Json<wire::Batch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Json(batch) = batch?;
    let mut messages = Vec::with_capacity(batch.messages.len());
    for m in batch.messages {
        let key = m.key.as_deref().map(wire::key_bytes).transpose()?;
        messages.push((Bytes::from(wire::decode_data(&m.data)?), key));
    }
    let receipts = app.append_messages(id, messages).await?;
    let reply = wire::BatchAppended {
        messages: receipts.iter().map(wire::Appended::from).collect(),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

/// `POST /v1/publish`: one message to several channels, all or none; a large body is
/// stored once and referenced from each channel.
#[utoipa::path(post, path = "/v1/publish", tag = "messages", request_body = wire::Publish,
    responses((status = 201, body = wire::PublishedAll), (status = 400, body = ErrorBody),
              (status = 410, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn publish(
    State(app): State<AppState>,
    publish: Result<Json<wire::Publish>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(publish) = publish?;
    let data = Bytes::from(wire::decode_data(&publish.data)?);
    let channels = publish.channels;
    let hub = app.hub.clone();
    let names = channels.clone();
    let receipts = app
        .writers
        .write(move |store, done| {
            let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
            let body = data.clone();
            let targets = channels.clone();
            store.publish_with(&refs, &data, move |result| {
                if let Ok(receipts) = &result {
                    for (channel, receipt) in targets.iter().zip(receipts) {
                        hub.delivered(
                            channel,
                            std::slice::from_ref(receipt),
                            std::slice::from_ref(&body),
                        );
                    }
                }
                done(result);
            })
        })
        .await?;
    crate::metrics::appended(receipts.len());
    let reply = wire::PublishedAll {
        messages: names
            .into_iter()
            .zip(&receipts)
            .map(|(channel, r)| wire::Published {
                channel,
                appended: r.into(),
            })
            .collect(),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

/// Where a read starts and how many messages it returns.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// The first message with a seq ≥ this one.
    pub from_seq: Option<u64>,
    /// The messages after the one with this key (CryptPad's `lastKnownHash`).
    pub after_key: Option<String>,
    /// The last N messages.
    pub last: Option<usize>,
    /// Stop after the message with this seq.
    pub to_seq: Option<u64>,
    /// At most this many messages.
    pub limit: Option<usize>,
}

impl ReadQuery {
    /// The engine request, and whether its first message is to be skipped (`after_key`
    /// reads from the key inclusive, then drops that message).
    pub fn request(self) -> Result<(ReadRequest, bool), ApiError> {
        let starts = [
            self.from_seq.is_some(),
            self.after_key.is_some(),
            self.last.is_some(),
        ];
        if starts.iter().filter(|s| **s).count() > 1 {
            return Err(ApiError::bad_request(
                "bad_query",
                "give at most one of from_seq, after_key and last",
            ));
        }
        let skip_first = self.after_key.is_some();
        let from = match (self.from_seq, self.after_key, self.last) {
            (Some(seq), ..) => ReadFrom::Seq(seq),
            (_, Some(key), _) => ReadFrom::Key(wire::key_bytes(&key)?),
            (.., Some(n)) => ReadFrom::Last(n),
            _ => ReadFrom::Start,
        };
        let request = ReadRequest {
            from,
            to_seq: self.to_seq,
            limit: self
                .limit
                .map(|n| n.saturating_add(usize::from(skip_first))),
        };
        Ok((request, skip_first))
    }
}

/// `GET /v1/channels/{id}/messages`: streams `application/x-ndjson`, one message a line.
#[utoipa::path(get, path = "/v1/channels/{id}/messages", tag = "messages",
    params(("id" = String, Path, description = "Channel id"), ReadQuery),
    responses((status = 200, body = Line, content_type = "application/x-ndjson",
               description = "One JSON line per message"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Stale position"),
              (status = 410, body = ErrorBody, description = "Archived, or the position was trimmed")))]
pub async fn read(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Query(query) = query?;
    let (request, skip_first) = query.request()?;
    let permit = app.traffic.stream_permit()?;
    // Open the read (and meet its errors) before answering 200.
    let store = app.store.clone();
    let history = tokio::task::spawn_blocking(move || store.read(&id, &request)).await??;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(READ_LINES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut skip = skip_first;
        let outcome = history.for_each_ref(|m| {
            if std::mem::take(&mut skip) {
                return ControlFlow::Continue(());
            }
            let mut line = Line::of(m.seq, m.key, m.time_ms, m.data).to_json();
            line.push(b'\n');
            // A client that went away stops the read.
            match tx.blocking_send(Ok(Bytes::from(line))) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        });
        // An error after the head was sent can only cut the stream: the client sees
        // a body that ends early, never a misaligned or corrupt line.
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "history read failed midway");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        crate::traffic::body_holding(permit, rx),
    )
        .into_response())
}

/// `DELETE /v1/channels/{id}/messages/{seq}`: deletes one message (only when the
/// channel's metadata allows line deletion).
#[utoipa::path(delete, path = "/v1/channels/{id}/messages/{seq}", tag = "messages",
    params(("id" = String, Path, description = "Channel id"), ("seq" = u64, Path, description = "The message's seq")),
    responses((status = 200, body = wire::Done), (status = 403, body = ErrorBody, description = "Line deletion not allowed"),
              (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((id, seq)) = path?;
    delete_selected(app, id, Selector::Seq(seq)).await
}

/// `DELETE /v1/channels/{id}/keys/{key}`: deletes the message with this key.
#[utoipa::path(delete, path = "/v1/channels/{id}/keys/{key}", tag = "messages",
    params(("id" = String, Path, description = "Channel id"), ("key" = String, Path, description = "The message's key")),
    responses((status = 200, body = wire::Done), (status = 403, body = ErrorBody, description = "Line deletion not allowed"),
              (status = 404, body = ErrorBody)))]
pub async fn delete_by_key(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((id, key)) = path?;
    let key = wire::key_bytes(&key)?;
    delete_selected(app, id, Selector::Key(key)).await
}

async fn delete_selected(app: AppState, id: String, which: Selector) -> Result<Response, ApiError> {
    let store = app.store.clone();
    let (channel, deleted) = (id.clone(), which.clone());
    tokio::task::spawn_blocking(move || store.delete_message(&channel, &deleted)).await??;
    app.hub.notify(&id, hub::Event::Deleted(which));
    Ok(Json(wire::DONE).into_response())
}
