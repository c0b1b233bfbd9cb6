//! Channels: create, info, metadata, the rewrites (clear, trim), remove, archive,
//! restore, and the streamed listings.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::hub::Event;
use crate::wire::{self, ChannelInfo, DONE, Done};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use vellum::{Metadata, Scope, Selector};

/// Listing lines buffered between the engine and the socket, at most.
const LIST_LINES_IN_FLIGHT: usize = 64;

/// `PUT /v1/channels/{id}`: creates a channel with an initial metadata object (an
/// empty body: no metadata). A channel is also created by its first append.
#[utoipa::path(put, path = "/v1/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    request_body(content = Object, description = "The initial metadata object (optional)"),
    responses((status = 201, body = Done), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Exists"), (status = 410, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let body = body?;
    let metadata = if body.is_empty() {
        Metadata::new()
    } else {
        Metadata::from_json(&body).map_err(vellum::Error::from)?
    };
    app.blocking(move |s| s.create(&id, metadata)).await?;
    Ok((StatusCode::CREATED, Json(DONE)).into_response())
}

/// `GET /v1/channels/{id}`: size, message count, seqs and times.
#[utoipa::path(get, path = "/v1/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = ChannelInfo), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ChannelInfo>, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.blocking(move |s| s.info(&id)).await?.into()))
}

/// `DELETE /v1/channels/{id}`: the channel and its metadata are gone.
#[utoipa::path(delete, path = "/v1/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(id) = id?;
    let channel = id.clone();
    app.blocking(move |s| s.remove(&channel)).await?;
    app.hub.notify(&id, Event::Ended("removed"));
    Ok(Json(DONE))
}

/// `GET /v1/channels/{id}/metadata`: the folded metadata object.
#[utoipa::path(get, path = "/v1/channels/{id}/metadata", tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn metadata(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id?;
    let metadata = app.blocking(move |s| s.metadata(&id)).await?;
    Ok(Json(serde_json::Value::Object(metadata.into_object())))
}

/// `POST /v1/channels/{id}/metadata`: one CryptPad command, logged only if it changes
/// the state.
#[utoipa::path(post, path = "/v1/channels/{id}/metadata", tag = "channels",
    params(("id" = String, Path, description = "Channel id")), request_body = wire::Amend,
    responses((status = 200, body = wire::Amended), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn amend(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    amend: Result<Json<wire::Amend>, JsonRejection>,
) -> Result<Json<wire::Amended>, ApiError> {
    let Path(id) = id?;
    let Json(amend) = amend?;
    let (changed, metadata) = app
        .blocking(move |s| {
            let changed = s.amend(&id, &amend.command, &amend.args)?;
            Ok((changed, s.metadata(&id)?))
        })
        .await?;
    Ok(Json(wire::Amended {
        changed,
        metadata: serde_json::Value::Object(metadata.into_object()),
    }))
}

/// `POST /v1/channels/{id}/clear`: drops every message, keeps the metadata.
#[utoipa::path(post, path = "/v1/channels/{id}/clear", tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn clear(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(id) = id?;
    let channel = id.clone();
    app.blocking(move |s| s.clear(&channel)).await?;
    app.hub.notify(&id, Event::Cleared);
    Ok(Json(DONE))
}

/// `POST /v1/channels/{id}/trim`: drops every message before the one named (which is
/// kept), after copying the channel to the archive.
#[utoipa::path(post, path = "/v1/channels/{id}/trim", tag = "channels",
    params(("id" = String, Path, description = "Channel id")), request_body = wire::Trim,
    responses((status = 200, body = Done), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn trim(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    trim: Result<Json<wire::Trim>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(id) = id?;
    let Json(trim) = trim?;
    let to = match (trim.seq, trim.key) {
        (Some(seq), None) => Selector::Seq(seq),
        (None, Some(key)) => Selector::Key(wire::key_bytes(&key)?),
        _ => {
            return Err(ApiError::bad_request(
                "bad_json",
                "give exactly one of seq and key",
            ));
        }
    };
    let (channel, cut) = (id.clone(), to.clone());
    app.blocking(move |s| s.trim(&channel, &cut)).await?;
    app.hub.notify(&id, Event::Trimmed(to));
    Ok(Json(DONE))
}

/// `POST /v1/channels/{id}/archive`: moves the channel to the archive with a reason.
#[utoipa::path(post, path = "/v1/channels/{id}/archive", tag = "archive",
    params(("id" = String, Path, description = "Channel id")), request_body = wire::Archive,
    responses((status = 200, body = Done), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn archive(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    archive: Result<Json<wire::Archive>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(id) = id?;
    let Json(archive) = archive?;
    let channel = id.clone();
    app.blocking(move |s| s.archive(&channel, &archive.reason))
        .await?;
    app.hub.notify(&id, Event::Ended("archived"));
    Ok(Json(DONE))
}

/// `GET /v1/archive/{id}`: an archived channel's info (with why it was archived).
#[utoipa::path(get, path = "/v1/archive/{id}", tag = "archive",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = ChannelInfo), (status = 404, body = ErrorBody)))]
pub async fn archived_info(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ChannelInfo>, ApiError> {
    let Path(id) = id?;
    let info = app
        .blocking(move |s| {
            if !s.is_archived(&id)? {
                return Err(vellum::Error::NotArchived {
                    channel: vellum::ChannelId::new(&id)?,
                });
            }
            s.info(&id)
        })
        .await?;
    Ok(Json(info.into()))
}

/// `POST /v1/archive/{id}/restore`: back to live; refuses to clobber a live channel.
#[utoipa::path(post, path = "/v1/archive/{id}/restore", tag = "archive",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "A live channel has this id")))]
pub async fn restore(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(id) = id?;
    app.blocking(move |s| s.restore(&id)).await?;
    Ok(Json(DONE))
}

/// `DELETE /v1/archive/{id}`: deletes an archived channel for good.
#[utoipa::path(delete, path = "/v1/archive/{id}", tag = "archive",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody)))]
pub async fn remove_archived(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(id) = id?;
    app.blocking(move |s| s.remove_archived(&id)).await?;
    Ok(Json(DONE))
}

/// `GET /v1/channels`: every live channel's info, streamed as ndjson.
#[utoipa::path(get, path = "/v1/channels", tag = "channels",
    responses((status = 200, body = ChannelInfo, content_type = "application/x-ndjson",
               description = "One JSON line per channel")))]
pub async fn list_live(State(app): State<AppState>) -> Result<Response, ApiError> {
    list(app, Scope::Live).await
}

/// `GET /v1/archive`: every archived channel's info, streamed as ndjson.
#[utoipa::path(get, path = "/v1/archive", tag = "archive",
    responses((status = 200, body = ChannelInfo, content_type = "application/x-ndjson",
               description = "One JSON line per channel")))]
pub async fn list_archived(State(app): State<AppState>) -> Result<Response, ApiError> {
    list(app, Scope::Archived).await
}

async fn list(app: AppState, scope: Scope) -> Result<Response, ApiError> {
    let permit = app.traffic.stream_permit()?;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(LIST_LINES_IN_FLIGHT);
    let store = app.store.clone();
    // Meet an error listing the root before answering 200.
    let first = tokio::task::spawn_blocking(move || store.list(scope).map(|_| ())).await?;
    first?;
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || {
        let channels = match store.list(scope) {
            Ok(channels) => channels,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        for info in channels {
            let item = info
                .map_err(|e| std::io::Error::other(e.to_string()))
                .map(|info| {
                    let mut line =
                        serde_json::to_vec(&ChannelInfo::from(info)).expect("serializes");
                    line.push(b'\n');
                    Bytes::from(line)
                });
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        crate::traffic::body_holding(permit, rx),
    )
        .into_response())
}
