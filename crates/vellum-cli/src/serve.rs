//! `vellum serve`: settings from a TOML file, then environment variables, then flags
//! (each overriding the one before).

use anyhow::{Context, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use vellum_server::{Config, Scope, Sync, TlsConfig, TokenConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings (see README); environment variables and
    /// flags override it.
    #[arg(long, env = "VELLUM_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory, created if missing [default: ./vellum-data].
    #[arg(long, env = "VELLUM_DATA")]
    data: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1:8787]; beyond loopback only with tokens.
    #[arg(long, env = "VELLUM_LISTEN")]
    listen: Option<SocketAddr>,
    /// When appends are acknowledged: after fsync, after write with an fsync every
    /// --sync-interval-ms, or after write only [default: fsync].
    #[arg(long, env = "VELLUM_SYNC", value_parser = ["fsync", "interval", "buffered"])]
    sync: Option<String>,
    #[arg(long, env = "VELLUM_SYNC_INTERVAL_MS")]
    sync_interval_ms: Option<u64>,
    /// A bearer token and its scopes, as TOKEN:SCOPE[,SCOPE…] with scopes read, write,
    /// admin. Repeatable; in the environment, separated by spaces.
    #[arg(long = "token", env = "VELLUM_TOKENS", value_delimiter = ' ')]
    tokens: Vec<String>,
    /// A PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "VELLUM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "VELLUM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The largest message, in bytes [default: 8 MiB].
    #[arg(long, env = "VELLUM_MESSAGE_BYTES_MAX")]
    message_bytes_max: Option<usize>,
    /// WebSocket subscribers at once [default: 10000].
    #[arg(long, env = "VELLUM_SUBSCRIBERS_MAX")]
    subscribers_max: Option<usize>,
    /// Requests handled at once [default: 4096].
    #[arg(long, env = "VELLUM_REQUESTS_IN_FLIGHT_MAX")]
    requests_in_flight_max: Option<usize>,
    /// Channel files kept open at once [default: 1024].
    #[arg(long, env = "VELLUM_OPEN_FILES_MAX")]
    open_files_max: Option<usize>,
    /// Seconds between eviction passes [default: 3600].
    #[arg(long, env = "VELLUM_EVICTION_INTERVAL_S")]
    eviction_interval_s: Option<u64>,
    /// Archive channels unused for this many seconds [default: never].
    #[arg(long, env = "VELLUM_INACTIVE_AFTER_S")]
    inactive_after_s: Option<u64>,
    /// Delete archives and pre-trim copies older than this many seconds [default: never].
    #[arg(long, env = "VELLUM_ARCHIVE_RETENTION_S")]
    archive_retention_s: Option<u64>,
}

impl ServeArgs {
    pub fn config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(data) = self.data {
            config.data_dir = data;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(sync) = self.sync {
            config.sync = Sync::from_name(&sync).context("unknown sync policy")?;
        }
        if let Some(ms) = self.sync_interval_ms {
            config.sync_interval_ms = ms;
        }
        for token in self.tokens.iter().filter(|t| !t.is_empty()) {
            config.tokens.push(parse_token(token)?);
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(TlsConfig { cert, key });
        }
        let limits = &mut config.limits;
        if let Some(n) = self.message_bytes_max {
            limits.message_bytes_max = n;
        }
        if let Some(n) = self.subscribers_max {
            limits.subscribers_max = n;
        }
        if let Some(n) = self.requests_in_flight_max {
            limits.requests_in_flight_max = n;
        }
        if let Some(n) = self.open_files_max {
            limits.open_files_max = n;
        }
        let eviction = &mut config.eviction;
        if let Some(s) = self.eviction_interval_s {
            eviction.interval_s = s;
        }
        if self.inactive_after_s.is_some() {
            eviction.inactive_after_s = self.inactive_after_s;
        }
        if self.archive_retention_s.is_some() {
            eviction.archive_retention_s = self.archive_retention_s;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `TOKEN:read,write`.
fn parse_token(text: &str) -> anyhow::Result<TokenConfig> {
    let Some((token, scopes)) = text.rsplit_once(':') else {
        bail!("a token is TOKEN:SCOPE[,SCOPE…] (scopes: read, write, admin)");
    };
    let scopes = scopes
        .split(',')
        .map(|s| Scope::from_name(s).with_context(|| format!("unknown scope {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TokenConfig {
        token: token.to_string(),
        scopes,
    })
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    tokio::runtime::Runtime::new()?.block_on(vellum_server::serve(
        config,
        vellum_server::shutdown_signal(),
    ))
}
