//! One error shape for every endpoint: `{"error": {"code", "message"}}` with a stable
//! code and the HTTP status that fits it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vellum::Error;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            Error::InvalidId(_) => (S::BAD_REQUEST, "invalid_channel_id"),
            Error::MessageTooLarge { .. } | Error::BatchBytesTooLarge { .. } => {
                (S::PAYLOAD_TOO_LARGE, "message_too_large")
            }
            Error::KeyTooLong { .. } => (S::BAD_REQUEST, "key_too_long"),
            Error::BatchTooLarge { .. } | Error::EmptyBatch | Error::DuplicateChannel { .. } => {
                (S::BAD_REQUEST, "bad_batch")
            }
            Error::NotFound { .. } => (S::NOT_FOUND, "channel_not_found"),
            Error::AlreadyExists { .. } => (S::CONFLICT, "channel_exists"),
            Error::Archived { .. } => (S::GONE, "channel_archived"),
            Error::NotArchived { .. } => (S::NOT_FOUND, "channel_not_archived"),
            Error::RestoreConflict { .. } => (S::CONFLICT, "restore_conflict"),
            Error::KeyNotFound { .. } => (S::NOT_FOUND, "key_not_found"),
            Error::SeqNotFound { .. } => (S::NOT_FOUND, "seq_not_found"),
            Error::Trimmed { .. } => (S::GONE, "trimmed"),
            Error::StalePosition { .. } => (S::CONFLICT, "stale_position"),
            Error::Forbidden { .. } => (S::FORBIDDEN, "forbidden"),
            Error::Metadata(_) | Error::MetadataTooLarge { .. } => (S::BAD_REQUEST, "bad_metadata"),
            Error::Poisoned { .. } => (S::SERVICE_UNAVAILABLE, "store_poisoned"),
            Error::Closed => (S::SERVICE_UNAVAILABLE, "closed"),
            Error::UnknownMessage { .. } => (S::NOT_FOUND, "message_not_found"),
            Error::TooFewReferences { .. } | Error::TooManyReferences { .. } => {
                (S::CONFLICT, "bad_references")
            }
            Error::Corrupted { .. } => (S::INTERNAL_SERVER_ERROR, "corrupted"),
            Error::InvalidOptions(_) | Error::Io { .. } => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
