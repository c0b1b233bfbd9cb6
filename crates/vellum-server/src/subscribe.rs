//! `GET /v1/channels/{id}/subscribe`: a WebSocket that sends history from a position,
//! then each message as it is acknowledged, one JSON text frame per message (the same
//! shape as a history line). Rewrites arrive as `{"event": …}` frames.
//!
//! The subscription joins the channel's live queue before it reads history, and skips
//! live messages the history already had, so nothing falls between the two. A
//! subscriber that falls `subscriber_lag_messages_max` messages behind, or whose socket
//! takes longer than the send timeout, is closed with code 1008 and a reason saying
//! where to resume.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::hub::Event;
use crate::messages::ReadQuery;
use crate::wire::Line;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::ops::ControlFlow;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use vellum::{Error, ReadRequest};

/// History frames buffered between the engine and the socket, at most.
const HISTORY_FRAMES_IN_FLIGHT: usize = 64;

/// The most bytes a client may send us in one frame (it has nothing to say but close).
const CLIENT_FRAME_BYTES_MAX: usize = 4096;

/// Where a subscription starts (at most one; default: the oldest message). It has no
/// end: `limit` and `to_seq` are refused.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SubscribeQuery {
    /// The first message with a seq ≥ this one.
    pub from_seq: Option<u64>,
    /// The messages after the one with this key.
    pub after_key: Option<String>,
    /// The last N messages, then live ones.
    pub last: Option<usize>,
}

#[utoipa::path(get, path = "/v1/channels/{id}/subscribe", tag = "messages",
    params(("id" = String, Path, description = "Channel id"), SubscribeQuery),
    responses((status = 101, description = "WebSocket: history, then live messages, one JSON text frame each"),
              (status = 400, body = ErrorBody), (status = 410, body = ErrorBody, description = "Archived"),
              (status = 503, body = ErrorBody, description = "Too many subscribers")))]
pub async fn subscribe(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Query(query) = query?;
    vellum::ChannelId::new(&id).map_err(Error::from)?;
    let (request, skip_first) = ReadQuery {
        from_seq: query.from_seq,
        after_key: query.after_key,
        last: query.last,
        to_seq: None,
        limit: None,
    }
    .request()?;
    let upgrade = upgrade.map_err(|r| ApiError::bad_request("not_websocket", r.body_text()))?;
    let permit = app.traffic.subscriber_permit()?;
    let store = app.store.clone();
    let channel = id.clone();
    if tokio::task::spawn_blocking(move || store.is_archived(&channel)).await?? {
        let info = {
            let store = app.store.clone();
            let channel = id.clone();
            tokio::task::spawn_blocking(move || store.info(&channel)).await??
        };
        return Err(Error::Archived {
            channel: info.id,
            reason: info.archived.unwrap_or_default(),
        }
        .into());
    }
    Ok(upgrade
        .max_message_size(CLIENT_FRAME_BYTES_MAX)
        .on_upgrade(move |mut socket| async move {
            let _permit = permit;
            let mut live = app.hub.subscribe(&id);
            let end = deliver(&app, &id, request, skip_first, &mut socket, &mut live).await;
            app.hub.unsubscribe(&id, live);
            if let Some((code, reason)) = end {
                let timeout = app.limits.subscriber_send_timeout();
                let reason: String = reason.chars().take(120).collect();
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ =
                    tokio::time::timeout(timeout, socket.send(Message::Close(Some(frame)))).await;
            }
        }))
}

/// Why a subscription ended: a close frame to send, or `None` when the client left.
type End = Option<(u16, String)>;

async fn deliver(
    app: &AppState,
    id: &str,
    request: ReadRequest,
    skip_first: bool,
    socket: &mut WebSocket,
    live: &mut tokio::sync::broadcast::Receiver<Event>,
) -> End {
    // The first seq not yet sent: live messages below it were in the history, or
    // come before the position asked for.
    let mut next_seq = match send_history(app, id, request, skip_first, socket).await {
        Ok(last) => last,
        Err(end) => return end,
    };
    loop {
        let event = tokio::select! {
            event = live.recv() => event,
            incoming = socket.recv() => match incoming {
                // Pings are answered by the socket itself; anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            },
        };
        let is_message = matches!(event, Ok(Event::Message(_)));
        let frame = match event {
            Ok(Event::Message(m)) if m.seq < next_seq => continue,
            Ok(Event::Message(m)) => {
                next_seq = m.seq + 1;
                Message::Text(m.frame())
            }
            Ok(Event::Cleared) => event_frame(serde_json::json!({ "event": "cleared" })),
            Ok(Event::Trimmed(to)) => {
                event_frame(serde_json::json!({ "event": "trimmed", "to": selector_json(&to) }))
            }
            Ok(Event::Deleted(which)) => event_frame(
                serde_json::json!({ "event": "deleted", "message": selector_json(&which) }),
            ),
            Ok(Event::Ended(why)) => {
                return Some((close_code::NORMAL, format!("channel {why}")));
            }
            Err(RecvError::Lagged(missed)) => {
                return Some((
                    close_code::POLICY,
                    format!(
                        "too slow: {missed} messages behind; resubscribe with from_seq={}",
                        next_seq
                    ),
                ));
            }
            Err(RecvError::Closed) => {
                return Some((close_code::AWAY, "server shutting down".into()));
            }
        };
        // Should this frame not get through, the subscriber resumes at it.
        let resume_seq = match &frame {
            Message::Text(_) if is_message => next_seq - 1,
            _ => next_seq,
        };
        if let Err(end) = send(
            socket,
            frame,
            resume_seq,
            app.limits.subscriber_send_timeout(),
        )
        .await
        {
            return end;
        }
    }
}

/// Sends the history `request` names; returns the first seq it did not send.
async fn send_history(
    app: &AppState,
    id: &str,
    request: ReadRequest,
    skip_first: bool,
    socket: &mut WebSocket,
) -> Result<u64, End> {
    let mut next_seq = match request.from {
        vellum::ReadFrom::Seq(seq) => seq,
        _ => 0,
    };
    let store = app.store.clone();
    let channel = id.to_string();
    let opened = tokio::task::spawn_blocking(move || store.read(&channel, &request)).await;
    let history = match opened {
        Ok(Ok(history)) => history,
        // Nothing written yet: the subscription waits for the first message.
        Ok(Err(Error::NotFound { .. })) => return Ok(next_seq),
        Ok(Err(e)) => {
            let e = ApiError::from(e);
            return Err(Some((
                close_code::ERROR,
                format!("{}: {}", e.code(), e.message()),
            )));
        }
        Err(e) => return Err(Some((close_code::ERROR, e.to_string()))),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, String)>(HISTORY_FRAMES_IN_FLIGHT);
    let reader = tokio::task::spawn_blocking(move || {
        let mut skip = skip_first;
        history.for_each_ref(|m| {
            if std::mem::take(&mut skip) {
                return ControlFlow::Continue(());
            }
            let line = Line::of(m.seq, m.key, m.time_ms, m.data);
            let text = serde_json::to_string(&line).expect("a line serializes");
            match tx.blocking_send((m.seq, text)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        })
    });
    while let Some((seq, text)) = rx.recv().await {
        next_seq = seq + 1;
        send(
            socket,
            Message::Text(text.into()),
            seq,
            app.limits.subscriber_send_timeout(),
        )
        .await?;
    }
    match reader.await {
        Ok(Ok(())) => Ok(next_seq),
        Ok(Err(e)) => {
            let e = ApiError::from(e);
            Err(Some((
                close_code::ERROR,
                format!("{}: {}", e.code(), e.message()),
            )))
        }
        Err(e) => Err(Some((close_code::ERROR, e.to_string()))),
    }
}

/// Sends one frame, closing a subscriber whose socket does not take it in time (the
/// close reason names `resume_seq`, where a new subscription should start).
async fn send(
    socket: &mut WebSocket,
    frame: Message,
    resume_seq: u64,
    timeout: Duration,
) -> Result<(), End> {
    match tokio::time::timeout(timeout, socket.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some((
            close_code::POLICY,
            format!("too slow: a frame waited {timeout:?}; resubscribe with from_seq={resume_seq}"),
        ))),
    }
}

fn event_frame(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

fn selector_json(selector: &vellum::Selector) -> serde_json::Value {
    match selector {
        vellum::Selector::Seq(seq) => serde_json::json!({ "seq": seq }),
        vellum::Selector::Key(key) => serde_json::json!({ "key": crate::wire::key_text(key) }),
    }
}
