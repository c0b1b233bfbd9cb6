//! The `vellum` command as a user runs it: `vellum serve` in its own process, the
//! `vellum channel …` commands against it (including `tail` following live messages),
//! tokens from a TOML config file, and the offline commands — which the data
//! directory's lock keeps out while the server runs.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use vellum_bench::server_process::ServerProcess;

const EXE: &str = env!("CARGO_BIN_EXE_vellum");

fn vellum(url: &str, args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .env("VELLUM_URL", url)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Runs a command that must succeed; its standard output.
fn ok(url: &str, args: &[&str]) -> String {
    let out = vellum(url, args);
    assert!(
        out.status.success(),
        "vellum {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; its standard error.
fn fails(url: &str, args: &[&str]) -> String {
    let out = vellum(url, args);
    assert!(!out.status.success(), "vellum {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn channel_commands_work_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(Path::new(EXE), &dir.path().join("data"), &[]).unwrap();
    let url = server.url();
    let url = url.as_str();
    let ack: serde_json::Value =
        serde_json::from_str(&ok(url, &["channel", "append", "pad", "hello"])).unwrap();
    assert_eq!(
        (ack["seq"].as_u64(), ack["durability"].as_str()),
        (Some(0), Some("fsynced"))
    );
    // From standard input, with a key.
    let mut append = Command::new(EXE)
        .args(["channel", "append", "pad", "--key", "k1"])
        .env("VELLUM_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    append
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(append.wait_with_output().unwrap().status.success());
    ok(url, &["channel", "append", "pad", "third"]);
    let lines = json_lines(&ok(url, &["channel", "read", "pad"]));
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["key"], "k1");
    assert_eq!(
        ok(
            url,
            &["channel", "read", "pad", "--data", "--after-key", "k1"]
        ),
        "third\n"
    );
    assert_eq!(
        ok(
            url,
            &[
                "channel", "read", "pad", "--data", "--last", "2", "--limit", "1"
            ]
        ),
        "from stdin\n"
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(url, &["channel", "info", "pad"])).unwrap();
    assert_eq!(info["messages"], 3);
    let amended: serde_json::Value = serde_json::from_str(&ok(
        url,
        &[
            "channel",
            "metadata",
            "pad",
            "--command",
            "RESTRICT_ACCESS",
            "--args",
            "[true]",
        ],
    ))
    .unwrap();
    assert_eq!(amended["changed"], true);
    let metadata: serde_json::Value =
        serde_json::from_str(&ok(url, &["channel", "metadata", "pad"])).unwrap();
    assert_eq!(metadata["restricted"], true);
    ok(url, &["channel", "trim", "pad", "--key", "k1"]);
    assert_eq!(
        ok(url, &["channel", "read", "pad", "--data"]),
        "from stdin\nthird\n"
    );
    ok(url, &["channel", "clear", "pad"]);
    assert_eq!(ok(url, &["channel", "read", "pad"]), "");
    ok(url, &["channel", "append", "pad", "again"]);
    ok(url, &["channel", "archive", "pad", "--reason", "done"]);
    let err = fails(url, &["channel", "read", "pad"]);
    assert!(
        err.contains("channel_archived") && err.contains("done"),
        "{err}"
    );
    let archived = json_lines(&ok(url, &["channel", "list", "--archived"]));
    assert_eq!(archived[0]["id"], "pad");
    ok(url, &["channel", "restore", "pad"]);
    assert_eq!(ok(url, &["channel", "read", "pad", "--data"]), "again\n");
    assert_eq!(json_lines(&ok(url, &["channel", "list"])).len(), 1);
    ok(url, &["channel", "rm", "pad"]);
    let err = fails(url, &["channel", "info", "pad"]);
    assert!(err.contains("channel_not_found"), "{err}");
    let err = fails(url, &["channel", "append", "..", "x"]);
    assert!(err.contains("invalid_channel_id"), "{err}");
    assert!(server.stop().unwrap(), "the server did not stop cleanly");
}

#[test]
fn tail_prints_history_then_live_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(Path::new(EXE), &dir.path().join("data"), &[]).unwrap();
    let url = server.url();
    ok(&url, &["channel", "append", "live", "before"]);
    let mut tail = Command::new(EXE)
        .args(["channel", "tail", "live"])
        .env("VELLUM_URL", &url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"], 0);
    ok(&url, &["channel", "append", "live", "after"]);
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (second["seq"].as_u64(), second["data"].as_str()),
        (Some(1), Some("YWZ0ZXI="))
    );
    // Removing the channel ends the tail, normally.
    ok(&url, &["channel", "rm", "live"]);
    let status = tail.wait().unwrap();
    assert!(status.success());
    drop(server);
}

#[test]
fn tokens_from_a_config_file_guard_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vellum.toml");
    std::fs::write(
        &config,
        r#"
sync = "fsync"

[[tokens]]
token = "write-token-0123456789"
scopes = ["read", "write"]

[limits]
message_bytes_max = 1000
"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let server = ServerProcess::start(
        Path::new(EXE),
        &dir.path().join("data"),
        &["--config", config],
    )
    .unwrap();
    let url = server.url();
    let err = fails(&url, &["channel", "append", "c", "x"]);
    assert!(err.contains("unauthorized"), "{err}");
    let token = ["--token", "write-token-0123456789"];
    ok(
        &url,
        &[&["channel", "append", "c", "x"][..], &token].concat(),
    );
    let big = "x".repeat(1001);
    let err = fails(
        &url,
        &[&["channel", "append", "c", &big][..], &token].concat(),
    );
    assert!(err.contains("message_too_large"), "{err}");
    let err = fails(&url, &[&["channel", "rm", "c"][..], &token].concat());
    assert!(err.contains("insufficient_scope"), "{err}");
    // A config with a typo is refused at start, naming the key.
    std::fs::write(dir.path().join("bad.toml"), "listen_on = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(EXE)
        .args(["serve", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_on"));
    drop(server);
}

#[test]
fn offline_commands_verify_stats_and_compact_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(Path::new(EXE), &data, &[]).unwrap();
    let url = server.url();
    ok(&url, &["channel", "append", "a", "one"]);
    ok(&url, &["channel", "append", "b", &"2".repeat(5000)]);
    ok(&url, &["channel", "archive", "a", "--reason", "cold"]);
    // The server holds the directory's lock.
    let data_arg = data.to_str().unwrap();
    let err = fails(&url, &["verify", "--data", data_arg]);
    assert!(err.contains("locked"), "{err}");
    assert!(server.stop().unwrap());
    let verified = ok(&url, &["verify", "--data", data_arg]);
    assert!(verified.contains("clean"), "{verified}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&url, &["stats", "--data", data_arg])).unwrap();
    assert_eq!(
        (
            stats["live_channels"].as_u64(),
            stats["archived_channels"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(stats["store"]["messages"], 1);
    let compacted = ok(&url, &["compact", "--data", data_arg]);
    assert!(compacted.contains("message store"), "{compacted}");
    // Damage an archived channel: verify names it and exits 2.
    let archived = walk(&data.join("archive"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("a.vlog"))
        .unwrap();
    let mut bytes = std::fs::read(&archived).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 0xff;
    std::fs::write(&archived, bytes).unwrap();
    let out = vellum(&url, &["verify", "--data", data_arg]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("damaged") && text.contains("a.vlog"),
        "{text}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
