//! The OpenAPI 3 document, generated from the handlers' annotations and served at
//! `/v1/openapi.json`.

use crate::{admin, channels, error, messages, subscribe, wire};
use axum::Json;
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Vellum", description = "A durable message store: channel logs and a shared message store. \
Errors share one shape: {\"error\": {\"code\", \"message\"}}. With tokens configured, send \
`Authorization: Bearer <token>`; scopes: read, write, admin."),
    paths(
        messages::append, messages::read, messages::append_batch, messages::publish,
        messages::delete, messages::delete_by_key, subscribe::subscribe,
        channels::create, channels::info, channels::remove, channels::metadata, channels::amend,
        channels::clear, channels::trim, channels::archive, channels::archived_info,
        channels::restore, channels::remove_archived, channels::list_live, channels::list_archived,
        admin::stats, admin::compact, admin::verify,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, wire::Appended, wire::Line, wire::Batch,
        wire::BatchMessage, wire::BatchAppended, wire::Publish, wire::Published,
        wire::PublishedAll, wire::Amend, wire::Amended, wire::Trim, wire::Archive,
        wire::ChannelInfo, wire::Done, admin::Stats, admin::StoreFigures, admin::Verified,
        admin::DamageFound,
    )),
    tags((name = "messages"), (name = "channels"), (name = "archive"), (name = "store")),
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /v1/openapi.json`.
pub async fn serve_document() -> Json<serde_json::Value> {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    Json(
        DOCUMENT
            .get_or_init(|| serde_json::to_value(document()).expect("the document serializes"))
            .clone(),
    )
}
