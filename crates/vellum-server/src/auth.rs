//! Bearer tokens with scopes. With no tokens configured every request is allowed
//! (and `serve` only listens on loopback); with tokens, every route but `/healthz`
//! and `/v1/openapi.json` needs one whose scopes include the route's.

use crate::config::{Scope, TokenConfig};
use crate::{ApiError, AppState};
use axum::http::{Method, StatusCode, header};
use std::collections::HashMap;

pub struct Auth {
    /// Token digests (BLAKE3) → scopes: a lookup by digest takes the same time
    /// whatever prefix of a token a guesser has right.
    tokens: HashMap<[u8; 32], Vec<Scope>>,
}

impl Auth {
    pub fn new(tokens: &[TokenConfig]) -> Auth {
        Auth {
            tokens: tokens
                .iter()
                .map(|t| {
                    (
                        *blake3::hash(t.token.as_bytes()).as_bytes(),
                        t.scopes.clone(),
                    )
                })
                .collect(),
        }
    }

    fn check(&self, authorization: Option<&[u8]>, needed: Scope) -> Result<(), ApiError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let Some(value) = authorization else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this server needs a bearer token (Authorization: Bearer <token>)",
            ));
        };
        let token = value.strip_prefix(b"Bearer ").ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
        let scopes = self
            .tokens
            .get(blake3::hash(token).as_bytes())
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "unknown token"))?;
        if scopes.contains(&needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "this request needs a token with the `{}` scope",
                    needed.name()
                ),
            ))
        }
    }
}

/// The scope a route needs, or `None` for an open one. Unknown routes need `read`,
/// so a caller without a token learns nothing about which routes exist.
pub fn required_scope(method: &Method, route: Option<&str>) -> Option<Scope> {
    let Some(route) = route else {
        return Some(Scope::Read);
    };
    let admin = [
        "/metrics",
        "/v1/channels/{id}/archive",
        "/v1/archive/{id}/restore",
        "/v1/store/compaction",
        "/v1/verify",
    ];
    match (method, route) {
        (_, "/healthz" | "/v1/openapi.json") => None,
        (_, r) if admin.contains(&r) => Some(Scope::Admin),
        (&Method::DELETE, "/v1/channels/{id}" | "/v1/archive/{id}") => Some(Scope::Admin),
        (&Method::GET | &Method::HEAD, _) => Some(Scope::Read),
        _ => Some(Scope::Write),
    }
}

/// Refuses a request whose token lacks the route's scope.
pub fn authorize(
    app: &AppState,
    method: &Method,
    route: Option<&str>,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    match required_scope(method, route) {
        Some(needed) => app.auth.check(
            headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
            needed,
        ),
        None => Ok(()),
    }
}
