//! Every kind of bad request — malformed ids, oversized bodies, bad JSON, bad queries,
//! unknown routes and methods, missing, unknown and under-scoped tokens — answers the
//! one error shape with its stable code and status, and leaves the data exactly as it
//! was (checked against a snapshot of everything after each request).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;

/// Everything a bad request could have changed.
fn snapshot(app: &TestApp) -> String {
    let mut out = String::new();
    for scope in [vellum::Scope::Live, vellum::Scope::Archived] {
        for info in app.store.list(scope).unwrap() {
            let info = info.unwrap();
            out += &format!(
                "{} {:?} {} {}\n",
                info.id, info.archived, info.messages, info.next_seq
            );
            if info.archived.is_none() {
                out += &format!("{:?}\n", app.store.metadata(info.id.as_str()).unwrap());
                out += &format!("{:?}\n", app.messages(info.id.as_str()));
            }
        }
    }
    out
}

async fn seeded(app: &TestApp) {
    for i in 0..3 {
        app.store
            .append("live", format!("m{i}").as_bytes())
            .unwrap();
    }
    app.store.append("cold", b"c").unwrap();
    app.store.archive("cold", "old").unwrap();
}

fn raw(method: &str, uri: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

async fn expect_all(app: &TestApp, cases: Vec<(Request<Body>, StatusCode, &str)>) {
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let before = snapshot(app);
        let answer = app.send(request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code.to_string()),
            "{what}"
        );
        assert!(
            !answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{what}"
        );
        assert_eq!(snapshot(app), before, "{what} changed the data");
    }
}

#[tokio::test]
async fn malformed_ids_are_refused_on_every_route() {
    let app = TestApp::new();
    seeded(&app).await;
    let json = Some("application/json");
    let mut cases = Vec::new();
    for bad in ["..", ".hidden", "a%2Fb", "a%00b", &"x".repeat(200)] {
        let c = format!("/v1/channels/{bad}");
        cases.extend([
            (
                raw("POST", &format!("{c}/messages"), None, "x"),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("GET", &format!("{c}/messages"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw(
                    "POST",
                    &format!("{c}/batch"),
                    json,
                    r#"{"messages":[{"data":"eA=="}]}"#,
                ),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("GET", &format!("{c}/subscribe"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("PUT", &c, None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("GET", &c, None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("DELETE", &c, None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("GET", &format!("{c}/metadata"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw(
                    "POST",
                    &format!("{c}/metadata"),
                    json,
                    r#"{"command":"ADD_OWNERS","args":[]}"#,
                ),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("POST", &format!("{c}/clear"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("POST", &format!("{c}/trim"), json, r#"{"seq":1}"#),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("POST", &format!("{c}/archive"), json, r#"{"reason":"r"}"#),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("DELETE", &format!("{c}/messages/1"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("GET", &format!("/v1/archive/{bad}"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("POST", &format!("/v1/archive/{bad}/restore"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
            (
                raw("DELETE", &format!("/v1/archive/{bad}"), None, ""),
                StatusCode::BAD_REQUEST,
                "invalid_channel_id",
            ),
        ]);
    }
    cases.push((
        post_json(
            "/v1/publish",
            json!({ "channels": ["live", ".."], "data": "eA==" }),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_channel_id",
    ));
    expect_all(&app, cases).await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::new();
    seeded(&app).await;
    let big_b64 = to_b64(&[1u8; 2000]);
    expect_all(
        &app,
        vec![
            (
                post_message("live", &[7u8; 1025], None),
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
            ),
            (
                post_message("live", &[7u8; 1 << 20], None),
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
            ),
            // Under the JSON body limit, but one decoded message is over the message limit.
            (
                post_json(
                    "/v1/channels/live/batch",
                    json!({ "messages": [{ "data": to_b64(b"ok") }, { "data": big_b64 }] }),
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
            ),
            (
                post_json(
                    "/v1/publish",
                    json!({ "channels": ["live"], "data": big_b64 }),
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
            ),
            // Over the JSON body limit.
            (
                post_json(
                    "/v1/channels/live/batch",
                    json!({ "messages": [{ "data": to_b64(&[1u8; 9000]) }] }),
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                post_message("live", b"x", Some(&"k".repeat(65))),
                StatusCode::BAD_REQUEST,
                "key_too_long",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_json_and_bad_queries_are_refused() {
    let app = TestApp::new();
    seeded(&app).await;
    let json = Some("application/json");
    expect_all(
        &app,
        vec![
            (
                raw("POST", "/v1/channels/live/batch", json, "{not json"),
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/batch",
                    json,
                    r#"{"messages":"no"}"#,
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_json",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/batch",
                    json,
                    r#"{"messages":[],"extra":1}"#,
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_json",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/batch",
                    None,
                    r#"{"messages":[]}"#,
                ),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_content_type",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/batch",
                    json,
                    r#"{"messages":[]}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_batch",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/batch",
                    json,
                    r#"{"messages":[{"data":"***"}]}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_base64",
            ),
            (
                raw(
                    "POST",
                    "/v1/publish",
                    json,
                    r#"{"channels":[],"data":"eA=="}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_batch",
            ),
            (
                raw(
                    "POST",
                    "/v1/publish",
                    json,
                    r#"{"channels":["live","live"],"data":"eA=="}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_batch",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/trim",
                    json,
                    r#"{"seq":1,"key":"k"}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                raw("POST", "/v1/channels/live/trim", json, r#"{}"#),
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                raw("POST", "/v1/channels/live/trim", json, r#"{"seq":99}"#),
                StatusCode::NOT_FOUND,
                "seq_not_found",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/metadata",
                    json,
                    r#"{"command":"NO_SUCH","args":[]}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_metadata",
            ),
            (
                raw(
                    "POST",
                    "/v1/channels/live/metadata",
                    json,
                    r#"{"command":"ADD_OWNERS","args":"x"}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_metadata",
            ),
            (
                raw("PUT", "/v1/channels/fresh", None, "[1,2]"),
                StatusCode::BAD_REQUEST,
                "bad_metadata",
            ),
            (
                raw("POST", "/v1/channels/live/archive", json, r#"{"why":"x"}"#),
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_json",
            ),
            (
                get("/v1/channels/live/messages?from_seq=-1"),
                StatusCode::BAD_REQUEST,
                "bad_query",
            ),
            (
                get("/v1/channels/live/messages?frm_seq=1"),
                StatusCode::BAD_REQUEST,
                "bad_query",
            ),
            (
                get("/v1/channels/live/messages?after_key=base64%3A%25%25"),
                StatusCode::BAD_REQUEST,
                "bad_base64",
            ),
            (
                raw("DELETE", "/v1/channels/live/messages/abc", None, ""),
                StatusCode::BAD_REQUEST,
                "bad_path",
            ),
            (
                get("/v1/channels/live/subscribe"),
                StatusCode::BAD_REQUEST,
                "not_websocket",
            ),
            (
                get("/v1/channels/cold/messages"),
                StatusCode::GONE,
                "channel_archived",
            ),
            (
                post_empty("/v1/archive/live/restore"),
                StatusCode::CONFLICT,
                "restore_conflict",
            ),
            (
                post_empty("/v1/archive/nobody/restore"),
                StatusCode::NOT_FOUND,
                "channel_not_archived",
            ),
            (get("/v1/nothing/here"), StatusCode::NOT_FOUND, "not_found"),
            (
                raw("PATCH", "/v1/channels/live/messages", None, ""),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused() {
    let app = TestApp::with_tokens();
    seeded(&app).await;
    let json = Some("application/json");
    expect_all(
        &app,
        vec![
            (
                post_message("live", b"x", None),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                get("/v1/channels/live/messages"),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                with_token(get("/v1/channels/live/messages"), "not-a-token-at-all"),
                StatusCode::UNAUTHORIZED,
                "bad_token",
            ),
            (
                get("/v1/nothing/here"),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                {
                    let mut r = get("/v1/channels");
                    r.headers_mut()
                        .insert("authorization", "Basic YTpi".parse().unwrap());
                    r
                },
                StatusCode::UNAUTHORIZED,
                "bad_token",
            ),
            (
                with_token(post_message("live", b"x", None), READER),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
            (
                with_token(raw("POST", "/v1/channels/live/clear", None, ""), READER),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
            (
                with_token(raw("DELETE", "/v1/channels/live", None, ""), WRITER),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
            (
                with_token(
                    raw(
                        "POST",
                        "/v1/channels/live/archive",
                        json,
                        r#"{"reason":"r"}"#,
                    ),
                    WRITER,
                ),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
            (
                with_token(raw("POST", "/v1/archive/cold/restore", None, ""), WRITER),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
            (
                with_token(raw("POST", "/v1/store/compaction", None, ""), WRITER),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
            (
                with_token(get("/metrics"), READER),
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            ),
        ],
    )
    .await;
    // The right scopes pass, and the open routes need no token.
    let ok = app
        .send(with_token(post_message("live", b"y", None), WRITER))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let read = app
        .send(with_token(get("/v1/channels/live/messages"), READER))
        .await;
    assert_eq!(read.lines().len(), 4);
    assert_eq!(
        app.send(with_token(get("/metrics"), ADMIN)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.send(get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(
        app.send(get("/v1/openapi.json")).await.status,
        StatusCode::OK
    );
    let answer = app.send(get("/v1/channels")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.streams_max = 1;
    let app = TestApp::with_config(dir, config);
    seeded(&app).await;
    // Hold the one stream open by not reading its body.
    let held = tower::ServiceExt::oneshot(app.router(), get("/v1/channels/live/messages"))
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let refused = app.send(get("/v1/channels/live/messages")).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
    drop(held);
}
