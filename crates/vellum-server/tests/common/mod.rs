//! Helpers shared by the server tests: a store and router on a temporary directory,
//! requests through `oneshot`, and readers for the answers.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;
use vellum::Vellum;
use vellum_server::{AppState, Config, Scope, TokenConfig};

pub const READER: &str = "reader-token-0123456789";
pub const WRITER: &str = "writer-token-0123456789";
pub const ADMIN: &str = "admin-token-0123456789ab";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub store: Arc<Vellum>,
    pub config: Config,
    /// One state for every request, so they share the hub, limits and metrics.
    pub state: AppState,
}

/// A 1 KiB message limit, so the size errors are cheap to reach.
pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.limits.message_bytes_max = 1024;
    config.limits.json_body_bytes_max = 8 * 1024;
    config
}

impl TestApp {
    pub fn new() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        TestApp::with_config(dir, config)
    }

    /// Tokens: one per scope, and one with every scope.
    pub fn with_tokens() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.tokens = vec![
            TokenConfig {
                token: READER.into(),
                scopes: vec![Scope::Read],
            },
            TokenConfig {
                token: WRITER.into(),
                scopes: vec![Scope::Read, Scope::Write],
            },
            TokenConfig {
                token: ADMIN.into(),
                scopes: vec![Scope::Read, Scope::Write, Scope::Admin],
            },
        ];
        TestApp::with_config(dir, config)
    }

    pub fn with_config(dir: tempfile::TempDir, config: Config) -> TestApp {
        let options = vellum::Options {
            eviction: None,
            ..config.engine_options()
        };
        let store = Arc::new(Vellum::open(&config.data_dir, options).unwrap());
        let state = AppState::new(store.clone(), &config);
        TestApp {
            dir,
            store,
            config,
            state,
        }
    }

    pub fn router(&self) -> axum::Router {
        vellum_server::app(self.state.clone())
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// The channel's messages as the engine sees them: (seq, data).
    pub fn messages(&self, channel: &str) -> Vec<(u64, Vec<u8>)> {
        self.store
            .read(channel, &vellum::ReadRequest::all())
            .unwrap()
            .map(|m| {
                let m = m.unwrap();
                (m.seq, m.data.to_vec())
            })
            .collect()
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(&self.body)))
            .to_string()
    }

    /// The ndjson lines of a read, as (seq, key, data).
    pub fn lines(&self) -> Vec<(u64, String, Vec<u8>)> {
        ndjson(&self.body)
            .into_iter()
            .map(|v| {
                (
                    v["seq"].as_u64().unwrap(),
                    v["key"].as_str().unwrap().to_string(),
                    b64(v["data"].as_str().unwrap()),
                )
            })
            .collect()
    }
}

pub fn ndjson(body: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

pub fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

pub fn to_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn post_message(id: &str, body: &[u8], key: Option<&str>) -> Request<Body> {
    let mut request = Request::post(format!("/v1/channels/{id}/messages"));
    if let Some(key) = key {
        request = request.header("Vellum-Key", key);
    }
    request.body(Body::from(body.to_vec())).unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn post_json(uri: &str, json: serde_json::Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(json.to_string()))
        .unwrap()
}

pub fn post_empty(uri: &str) -> Request<Body> {
    Request::post(uri).body(Body::empty()).unwrap()
}

pub fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).unwrap()
}

pub fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
