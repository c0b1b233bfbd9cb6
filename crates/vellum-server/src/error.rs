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

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found_route() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// Too much work in flight, or a limit on subscribers reached: try again later.
    pub fn overloaded(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// A rejected body (too large, not JSON, wrong shape) in the shared error shape.
    pub fn from_rejection(status: StatusCode, text: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "bad_content_type",
            _ => "bad_json",
        };
        ApiError::new(status, code, text)
    }
}

/// The error shape, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `channel_archived`, `invalid_channel_id`, `bad_json`, …
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::from_rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "message_too_large"
        } else {
            "bad_request"
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request("bad_query", r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request("bad_path", r.body_text())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
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
            // Offline import/export only; never met by a request.
            Error::ImportBadName { .. }
            | Error::ImportLineTooLong { .. }
            | Error::ExportTargetNotEmpty { .. } => (S::BAD_REQUEST, "bad_import"),
            Error::InvalidOptions(_) | Error::Io { .. } => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
