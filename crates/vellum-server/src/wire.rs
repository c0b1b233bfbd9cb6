//! The JSON the API speaks: request and response bodies, and how engine values map to
//! them. Message bodies travel as base64 inside JSON; keys as text (a key that is not
//! UTF-8 travels as `base64:` + its base64).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn encode_data(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn decode_data(text: &str) -> Result<Vec<u8>, crate::ApiError> {
    STANDARD
        .decode(text)
        .map_err(|e| crate::ApiError::bad_request("bad_base64", format!("data is not base64: {e}")))
}

/// A key as text: itself when UTF-8, else `base64:` and its base64.
pub fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with("base64:") => text.to_string(),
        _ => format!("base64:{}", STANDARD.encode(key)),
    }
}

/// The inverse of [`key_text`].
pub fn key_bytes(text: &str) -> Result<Vec<u8>, crate::ApiError> {
    match text.strip_prefix("base64:") {
        Some(encoded) => STANDARD.decode(encoded).map_err(|e| {
            crate::ApiError::bad_request("bad_base64", format!("key is not base64: {e}"))
        }),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// The acknowledgement of one appended message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Appended {
    pub seq: u64,
    pub key: String,
    /// Byte offset in the channel's file (valid until the channel is next rewritten).
    pub offset: u64,
    pub time_ms: u64,
    /// `fsynced` or `written`, per the server's sync policy.
    pub durability: &'static str,
}

impl From<&vellum::Appended> for Appended {
    fn from(a: &vellum::Appended) -> Self {
        Appended {
            seq: a.seq,
            key: key_text(&a.key),
            offset: a.position.offset,
            time_ms: a.time_ms,
            durability: a.durability.as_str(),
        }
    }
}

/// One message of a read (an ndjson line) or of a subscription (a text frame).
#[derive(Debug, Serialize, ToSchema)]
pub struct Line {
    pub seq: u64,
    pub key: String,
    pub time_ms: u64,
    /// The message, base64.
    pub data: String,
}

impl Line {
    pub fn of(seq: u64, key: &[u8], time_ms: u64, data: &[u8]) -> Line {
        Line {
            seq,
            key: key_text(key),
            time_ms,
            data: encode_data(data),
        }
    }

    /// The line as JSON, without a newline.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a line serializes")
    }
}

/// One message of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    /// The message, base64.
    pub data: String,
    /// Its key (≤ 64 bytes); by default a hash of the content.
    pub key: Option<String>,
}

/// `POST /v1/channels/{id}/batch`: appended all or none, in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub messages: Vec<BatchMessage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAppended {
    pub messages: Vec<Appended>,
}

/// `POST /v1/publish`: one message to several channels, all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub channels: Vec<String>,
    /// The message, base64.
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub channel: String,
    #[serde(flatten)]
    pub appended: Appended,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedAll {
    pub messages: Vec<Published>,
}

/// `POST /v1/channels/{id}/metadata`: one CryptPad metadata command.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Amend {
    /// `ADD_OWNERS`, `RM_OWNERS`, `RESET_OWNERS`, `ADD_PENDING_OWNERS`, `RM_PENDING_OWNERS`,
    /// `RESTRICT_ACCESS`, `ADD_ALLOWED`, `RM_ALLOWED`, `RESET_ALLOWED`, `ADD_MAILBOX`,
    /// `RM_MAILBOX`, `ALLOW_LINE_DELETION`, `UPDATE_EXPIRATION`, …
    pub command: String,
    /// The command's argument, as CryptPad gives it.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Amended {
    /// Whether the command changed the state (only then is it logged).
    pub changed: bool,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// Where a trim cuts: the message with this seq or key is kept, everything before it goes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trim {
    pub seq: Option<u64>,
    pub key: Option<String>,
}

/// `POST /v1/channels/{id}/archive`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    pub reason: String,
}

/// What `info` and `list` report about a channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelInfo {
    pub id: String,
    pub size_bytes: u64,
    pub messages: u64,
    pub first_seq: u64,
    pub next_seq: u64,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub accessed_ms: u64,
    /// Why it was archived, for an archived channel.
    pub archived: Option<String>,
}

impl From<vellum::ChannelInfo> for ChannelInfo {
    fn from(i: vellum::ChannelInfo) -> Self {
        ChannelInfo {
            id: i.id.to_string(),
            size_bytes: i.size_bytes,
            messages: i.messages,
            first_seq: i.first_seq,
            next_seq: i.next_seq,
            created_ms: i.created_ms,
            modified_ms: i.modified_ms,
            accessed_ms: i.accessed_ms,
            archived: i.archived,
        }
    }
}

/// A rewrite or removal that has nothing else to say.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    pub ok: bool,
}

pub const DONE: Done = Done { ok: true };
