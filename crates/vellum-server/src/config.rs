//! How `vellum serve` is configured: a TOML file, overridden by environment variables
//! and flags (the binary merges those; this is the shape they fill).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vellum::{EvictionOptions, Options, SyncPolicy};

/// Everything `vellum serve` needs. `Config::default()` is the no-configuration server:
/// `./vellum-data` on 127.0.0.1:8787, Fsync, no tokens, no TLS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sync: Sync,
    /// With `sync = "interval"`: the most milliseconds between fsyncs.
    pub sync_interval_ms: u64,
    /// Bearer tokens and what each may do. None: every request is allowed, and only
    /// loopback addresses are served.
    pub tokens: Vec<TokenConfig>,
    pub tls: Option<TlsConfig>,
    pub limits: Limits,
    pub eviction: Eviction,
}

/// The engine's background pass (CryptPad's eviction): expiry of channels whose
/// metadata says so, archiving of inactive channels, deletion of old archives.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Eviction {
    /// Seconds between passes.
    pub interval_s: u64,
    /// Archive live channels neither written nor read for this many seconds (reason
    /// `INACTIVE`). Off by default.
    pub inactive_after_s: Option<u64>,
    /// Delete archived channels and pre-trim copies older than this many seconds.
    /// Off by default: archives are kept until removed.
    pub archive_retention_s: Option<u64>,
}

impl Default for Eviction {
    fn default() -> Self {
        Eviction {
            interval_s: 3600,
            inactive_after_s: None,
            archive_retention_s: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("vellum-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            sync: Sync::Fsync,
            sync_interval_ms: 100,
            tokens: Vec::new(),
            tls: None,
            limits: Limits::default(),
            eviction: Eviction::default(),
        }
    }
}

/// The sync policy by name (the engine's `SyncPolicy`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    Fsync,
    Interval,
    Buffered,
}

impl Sync {
    pub fn from_name(name: &str) -> Option<Sync> {
        match name {
            "fsync" => Some(Sync::Fsync),
            "interval" => Some(Sync::Interval),
            "buffered" => Some(Sync::Buffered),
            _ => None,
        }
    }
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub scopes: Vec<Scope>,
}

/// What a token may do. `admin` implies nothing else: give a token every scope it needs.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads, listings, info, metadata, stats, subscriptions.
    Read,
    /// Appends, batches, publishes, metadata amendments, clear, trim, deleting a message.
    Write,
    /// Remove, archive, restore, compaction, verify, `/metrics`.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        match name {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// PEM files for TLS (rustls).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Limits on what one client can make the server hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest message (also the largest request body for one message).
    pub message_bytes_max: usize,
    /// The largest JSON request body (batches, publishes, metadata).
    pub json_body_bytes_max: usize,
    /// A request that has not produced its response head after this long answers 503.
    pub request_timeout_ms: u64,
    /// A connection that has not sent a whole request head this long after it was
    /// ready for one (idle keep-alive included) is closed.
    pub header_read_timeout_ms: u64,
    /// Requests being handled at once; beyond it a request answers 503 at once.
    pub requests_in_flight_max: usize,
    /// Open connections (subscribers included); one beyond it is closed at once.
    pub connections_max: usize,
    /// Streamed responses (history reads, listings) at once; each holds a thread
    /// of the blocking pool while its client reads.
    pub streams_max: usize,
    /// WebSocket subscribers at once.
    pub subscribers_max: usize,
    /// Live messages queued for one channel's subscribers; a subscriber this far behind
    /// is closed ("too slow").
    pub subscriber_lag_messages_max: usize,
    /// A subscriber whose socket has not taken a frame after this long is closed
    /// ("too slow").
    pub subscriber_send_timeout_ms: u64,
    /// The engine's cap on open channel files.
    pub open_files_max: usize,
    /// The message store's cap on open segment files.
    pub open_segments_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: 8 * 1024 * 1024,
            json_body_bytes_max: 16 * 1024 * 1024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 30_000,
            requests_in_flight_max: 4096,
            connections_max: 16_384,
            streams_max: 256,
            subscribers_max: 10_000,
            subscriber_lag_messages_max: 1024,
            subscriber_send_timeout_ms: 10_000,
            open_files_max: 1024,
            open_segments_max: 128,
        }
    }
}

impl Limits {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn subscriber_send_timeout(&self) -> Duration {
        Duration::from_millis(self.subscriber_send_timeout_ms)
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors (a typo must not pass silently).
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Refuses configurations that would be unsafe or cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.listen.ip().is_loopback() || !self.tokens.is_empty(),
            "refusing to listen on {} without access tokens: configure tokens or listen on a loopback address",
            self.listen
        );
        for token in &self.tokens {
            anyhow::ensure!(
                token.token.len() >= 16,
                "a token must be at least 16 characters"
            );
            anyhow::ensure!(!token.scopes.is_empty(), "a token needs at least one scope");
        }
        anyhow::ensure!(
            self.sync != Sync::Interval || self.sync_interval_ms > 0,
            "sync_interval_ms must be positive"
        );
        let l = &self.limits;
        anyhow::ensure!(
            (1..=vellum::MESSAGE_BYTES_CEILING).contains(&l.message_bytes_max),
            "message_bytes_max must be 1 to {} bytes",
            vellum::MESSAGE_BYTES_CEILING
        );
        anyhow::ensure!(l.open_files_max >= 2, "open_files_max must be at least 2");
        anyhow::ensure!(
            l.requests_in_flight_max > 0
                && l.open_segments_max > 0
                && l.subscribers_max > 0
                && l.connections_max > 0
                && l.streams_max > 0
                && l.subscriber_lag_messages_max > 0
                && l.request_timeout_ms > 0
                && l.header_read_timeout_ms > 0
                && l.subscriber_send_timeout_ms > 0,
            "limits must be positive"
        );
        anyhow::ensure!(
            self.eviction.interval_s > 0
                && self.eviction.inactive_after_s != Some(0)
                && self.eviction.archive_retention_s != Some(0),
            "eviction interval and ages must be positive"
        );
        Ok(())
    }

    /// The engine options this configuration asks for.
    pub fn engine_options(&self) -> Options {
        Options {
            sync: match self.sync {
                Sync::Fsync => SyncPolicy::Fsync,
                Sync::Interval => {
                    SyncPolicy::Interval(Duration::from_millis(self.sync_interval_ms))
                }
                Sync::Buffered => SyncPolicy::Buffered,
            },
            message_bytes_max: self.limits.message_bytes_max,
            open_files_max: self.limits.open_files_max,
            store: vellum::StoreOptions {
                open_segments_max: self.limits.open_segments_max,
                ..vellum::StoreOptions::default()
            },
            eviction: Some(EvictionOptions {
                interval: Duration::from_secs(self.eviction.interval_s),
                inactive_after: self.eviction.inactive_after_s.map(Duration::from_secs),
                archive_retention: self.eviction.archive_retention_s.map(Duration::from_secs),
            }),
            ..Options::default()
        }
    }
}
