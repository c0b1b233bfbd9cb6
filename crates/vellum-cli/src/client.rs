//! `vellum channel …`: the channel operations against a running server's HTTP API.

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use std::io::{Read, Write};
use ureq::http;

#[derive(Args)]
pub struct ChannelArgs {
    /// The server.
    #[arg(
        long,
        env = "VELLUM_URL",
        default_value = "http://127.0.0.1:8787",
        global = true
    )]
    url: String,
    /// A bearer token, if the server has tokens.
    #[arg(long, env = "VELLUM_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: ChannelCommand,
}

/// Where a read or tail starts.
#[derive(Args)]
struct From {
    /// The first message with seq ≥ N.
    #[arg(long, conflicts_with_all = ["after_key", "last"])]
    from_seq: Option<u64>,
    /// The messages after the one with this key.
    #[arg(long, conflicts_with = "last")]
    after_key: Option<String>,
    /// The last N messages.
    #[arg(long)]
    last: Option<usize>,
}

impl From {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(seq) = self.from_seq {
            query.push(("from_seq", seq.to_string()));
        }
        if let Some(key) = &self.after_key {
            query.push(("after_key", key.clone()));
        }
        if let Some(n) = self.last {
            query.push(("last", n.to_string()));
        }
        query
    }
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Append one message (DATA, or standard input when DATA is absent).
    Append {
        id: String,
        data: Option<String>,
        /// The message's key (default: a hash of its content).
        #[arg(long)]
        key: Option<String>,
    },
    /// Print history as ndjson lines ({"seq","key","time_ms","data" (base64)}).
    Read {
        id: String,
        #[command(flatten)]
        from: From,
        #[arg(long)]
        limit: Option<usize>,
        /// Print each message's bytes and a newline instead of JSON lines.
        #[arg(long)]
        data: bool,
    },
    /// Print history, then each new message as it is acknowledged, until interrupted.
    Tail {
        id: String,
        #[command(flatten)]
        from: From,
    },
    /// Size, message count, seqs and times.
    Info { id: String },
    /// List live channels (or archived ones), one JSON line each.
    List {
        #[arg(long)]
        archived: bool,
    },
    /// Print the folded metadata, or apply a CryptPad command to it.
    Metadata {
        id: String,
        /// A command such as RESTRICT_ACCESS, with --args.
        #[arg(long, requires = "args")]
        command: Option<String>,
        /// The command's argument as JSON, e.g. '[true]'.
        #[arg(long)]
        args: Option<String>,
    },
    /// Drop every message before the one named (which is kept).
    Trim {
        id: String,
        #[arg(long, required_unless_present = "key", conflicts_with = "key")]
        seq: Option<u64>,
        #[arg(long)]
        key: Option<String>,
    },
    /// Drop every message, keep the metadata.
    Clear { id: String },
    /// Remove the channel and its metadata (with --archived: an archived channel).
    Rm {
        id: String,
        #[arg(long)]
        archived: bool,
    },
    /// Move the channel to the archive.
    Archive {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Bring an archived channel back.
    Restore { id: String },
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = format!("{}{path}", self.base.trim_end_matches('/'));
        for (i, (name, value)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.push_str(&percent_encode(value));
        }
        url
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the server's code.
    fn send(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<http::Response<ureq::Body>> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(self.url(path, query));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let (content_type, bytes) = body.unwrap_or(("application/octet-stream", Vec::new()));
        let request = request.header("content-type", content_type).body(bytes)?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("talking to {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) if v["error"]["code"].is_string() => bail!(
                    "{} ({status}): {}",
                    v["error"]["code"].as_str().unwrap_or_default(),
                    v["error"]["message"].as_str().unwrap_or_default()
                ),
                _ => bail!("{status}: {text}"),
            }
        }
        Ok(response)
    }

    fn json(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let mut response = self.send(method, path, &[], body, &[])?;
        println!("{}", response.body_mut().read_to_string()?);
        Ok(())
    }

    /// Copies a streamed answer to standard output.
    fn stream(&self, path: &str, query: &[(&str, String)], decode: bool) -> anyhow::Result<()> {
        let response = self.send(http::Method::GET, path, query, None, &[])?;
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut out = std::io::stdout().lock();
        if !decode {
            std::io::copy(&mut reader, &mut out)?;
            return Ok(());
        }
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut reader, &mut line)? > 0 {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap_or_default())?;
            out.write_all(&data)?;
            out.write_all(b"\n")?;
            line.clear();
        }
        Ok(())
    }
}

pub fn run(args: ChannelArgs) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let client = Client {
        agent,
        base: args.url,
        token: args.token,
    };
    let channel = |id: &str| format!("/v1/channels/{id}");
    use http::Method as M;
    match args.command {
        ChannelCommand::Append { id, data, key } => {
            let bytes = match data {
                Some(data) => data.into_bytes(),
                None => {
                    let mut bytes = Vec::new();
                    std::io::stdin().read_to_end(&mut bytes)?;
                    bytes
                }
            };
            let headers: Vec<(&str, String)> = key.map(|k| ("vellum-key", k)).into_iter().collect();
            let path = format!("{}/messages", channel(&id));
            let mut response = client.send(
                M::POST,
                &path,
                &[],
                Some(("application/octet-stream", bytes)),
                &headers,
            )?;
            println!("{}", response.body_mut().read_to_string()?);
            Ok(())
        }
        ChannelCommand::Read {
            id,
            from,
            limit,
            data,
        } => {
            let mut query = from.query();
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            client.stream(&format!("{}/messages", channel(&id)), &query, data)
        }
        ChannelCommand::Tail { id, from } => tail(&client, &id, &from.query()),
        ChannelCommand::Info { id } => client.json(M::GET, &channel(&id), None),
        ChannelCommand::List { archived } => client.stream(
            if archived {
                "/v1/archive"
            } else {
                "/v1/channels"
            },
            &[],
            false,
        ),
        ChannelCommand::Metadata { id, command, args } => {
            let path = format!("{}/metadata", channel(&id));
            match command {
                None => client.json(M::GET, &path, None),
                Some(command) => {
                    let args: serde_json::Value =
                        serde_json::from_str(args.as_deref().unwrap_or("null"))
                            .context("--args must be JSON")?;
                    client.json(
                        M::POST,
                        &path,
                        Some(serde_json::json!({ "command": command, "args": args })),
                    )
                }
            }
        }
        ChannelCommand::Trim { id, seq, key } => {
            let body = match (seq, key) {
                (Some(seq), _) => serde_json::json!({ "seq": seq }),
                (None, key) => serde_json::json!({ "key": key }),
            };
            client.json(M::POST, &format!("{}/trim", channel(&id)), Some(body))
        }
        ChannelCommand::Clear { id } => {
            client.json(M::POST, &format!("{}/clear", channel(&id)), None)
        }
        ChannelCommand::Rm { id, archived } => {
            let path = if archived {
                format!("/v1/archive/{id}")
            } else {
                channel(&id)
            };
            client.json(M::DELETE, &path, None)
        }
        ChannelCommand::Archive { id, reason } => client.json(
            M::POST,
            &format!("{}/archive", channel(&id)),
            Some(serde_json::json!({ "reason": reason })),
        ),
        ChannelCommand::Restore { id } => {
            client.json(M::POST, &format!("/v1/archive/{id}/restore"), None)
        }
    }
}

/// Follows a subscription, printing each frame as a line.
fn tail(client: &Client, id: &str, query: &[(&str, String)]) -> anyhow::Result<()> {
    let url = client.url(&format!("/v1/channels/{id}/subscribe"), query);
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("tail speaks plain ws:// only; give an http:// --url");
    };
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{rest}"))?;
    if let Some(token) = &client.token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (mut socket, _) =
        tungstenite::connect(request).with_context(|| format!("subscribing at {url}"))?;
    let mut out = std::io::stdout().lock();
    loop {
        match socket.read()? {
            tungstenite::Message::Text(text) => {
                writeln!(out, "{text}")?;
                out.flush()?;
            }
            // A normal close (the channel was removed or archived, the server
            // stops) ends the tail; any other is an error.
            tungstenite::Message::Close(frame) => {
                let Some(frame) = frame else {
                    return Ok(());
                };
                if frame.code == tungstenite::protocol::frame::coding::CloseCode::Normal
                    || frame.code == tungstenite::protocol::frame::coding::CloseCode::Away
                {
                    eprintln!("subscription ended: {}", frame.reason);
                    return Ok(());
                }
                bail!("subscription closed: {}", frame.reason);
            }
            _ => {}
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
