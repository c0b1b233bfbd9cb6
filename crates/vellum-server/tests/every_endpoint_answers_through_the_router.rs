//! Every endpoint beyond the two fixed ones, through the router (`oneshot`): what it
//! answers and what it changes, checked against the engine itself.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_batch_is_appended_in_order_with_its_keys() {
    let app = TestApp::new();
    let answer = app
        .send(post_json(
            "/v1/channels/pad/batch",
            json!({ "messages": [
                { "data": to_b64(b"one"), "key": "k1" },
                { "data": to_b64(b"two") },
                { "data": to_b64(&[0, 255]), "key": "base64://4=" },
            ]}),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let acks = answer.json()["messages"].as_array().unwrap().clone();
    let seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![0, 1, 2]);
    assert_eq!(acks[0]["key"], "k1");
    assert_eq!(acks[2]["key"], "base64://4=");
    assert_eq!(
        app.messages("pad"),
        vec![
            (0, b"one".to_vec()),
            (1, b"two".to_vec()),
            (2, vec![0, 255])
        ]
    );
    // A key that is not UTF-8 reads back in the same form, and selects the message.
    let read = app
        .send(get(
            "/v1/channels/pad/messages?after_key=base64%3A%2F%2F4%3D",
        ))
        .await;
    assert_eq!((read.status, read.lines().len()), (StatusCode::OK, 0));
    let read = app
        .send(get("/v1/channels/pad/messages?after_key=k1"))
        .await;
    assert_eq!(read.lines()[0].0, 1);
}

#[tokio::test]
async fn a_publish_reaches_every_channel_and_a_large_one_is_stored_once() {
    let app = TestApp::new();
    let small = app
        .send(post_json(
            "/v1/publish",
            json!({ "channels": ["a1", "b2"], "data": to_b64(b"hello") }),
        ))
        .await;
    assert_eq!(small.status, StatusCode::CREATED, "{}", small.json());
    let acks = small.json()["messages"].as_array().unwrap().clone();
    assert_eq!(acks[0]["channel"], "a1");
    assert_eq!(acks[1]["channel"], "b2");
    assert_eq!(acks[1]["seq"], 0);
    // Large bodies need a store that accepts them: reopen with a bigger limit.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.message_bytes_max = 64 * 1024;
    config.limits.json_body_bytes_max = 256 * 1024;
    let big_app = TestApp::with_config(dir, config);
    let body = vec![7u8; 10_000];
    let big = big_app
        .send(post_json(
            "/v1/publish",
            json!({ "channels": ["c1", "c2", "c3"], "data": to_b64(&body) }),
        ))
        .await;
    assert_eq!(big.status, StatusCode::CREATED);
    for channel in ["c1", "c2", "c3"] {
        assert_eq!(big_app.messages(channel), vec![(0, body.clone())]);
    }
    let stats = big_app.send(get("/v1/stats")).await.json();
    assert_eq!(stats["store"]["messages"], 1, "{stats}");
}

#[tokio::test]
async fn metadata_reads_and_amends_with_cryptpad_commands() {
    // CryptPad's keys are 44 characters (base64 of an ed25519 key).
    let alice = "a".repeat(44);
    let bob = "b".repeat(44);
    let app = TestApp::new();
    let created = app
        .send(
            Request::put("/v1/channels/meta")
                .body(Body::from(
                    json!({ "owners": [alice], "validateKey": "vk" }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let exists = app
        .send(
            Request::put("/v1/channels/meta")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (exists.status, exists.code().as_str()),
        (StatusCode::CONFLICT, "channel_exists")
    );
    let metadata = app.send(get("/v1/channels/meta/metadata")).await.json();
    assert_eq!(metadata["owners"], json!([alice]));
    let amend = |command: &str, args: serde_json::Value| {
        post_json(
            "/v1/channels/meta/metadata",
            json!({ "command": command, "args": args }),
        )
    };
    let added = app.send(amend("ADD_OWNERS", json!([bob]))).await.json();
    assert_eq!(added["changed"], true);
    assert_eq!(added["metadata"]["owners"], json!([alice, bob]));
    // A command that changes nothing is not logged, and says so.
    let again = app.send(amend("ADD_OWNERS", json!([bob]))).await.json();
    assert_eq!(again["changed"], false);
    assert_eq!(
        app.store.metadata("meta").unwrap().owners(),
        vec![alice.as_str(), bob.as_str()]
    );
}

#[tokio::test]
async fn clear_trim_and_delete_rewrite_the_channel() {
    let app = TestApp::new();
    for (i, key) in ["k0", "k1", "k2", "k3", "k4"].iter().enumerate() {
        app.send(post_message("rw", format!("m{i}").as_bytes(), Some(key)))
            .await;
    }
    let trimmed = app
        .send(post_json("/v1/channels/rw/trim", json!({ "key": "k1" })))
        .await;
    assert_eq!(trimmed.status, StatusCode::OK);
    let seqs = |app: &TestApp| app.messages("rw").iter().map(|m| m.0).collect::<Vec<_>>();
    assert_eq!(seqs(&app), vec![1, 2, 3, 4]);
    app.send(post_json("/v1/channels/rw/trim", json!({ "seq": 2 })))
        .await;
    assert_eq!(seqs(&app), vec![2, 3, 4]);
    // Deleting a line needs the metadata to allow it.
    let refused = app.send(delete("/v1/channels/rw/messages/3")).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    app.store
        .amend("rw", "ALLOW_LINE_DELETION", &json!([true]))
        .unwrap();
    assert_eq!(
        app.send(delete("/v1/channels/rw/messages/3")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(delete("/v1/channels/rw/keys/k4")).await.status,
        StatusCode::OK
    );
    assert_eq!(seqs(&app), vec![2]);
    let cleared = app.send(post_empty("/v1/channels/rw/clear")).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert!(app.messages("rw").is_empty());
    let info = app.send(get("/v1/channels/rw")).await.json();
    assert_eq!(
        (info["messages"].as_u64(), info["next_seq"].as_u64()),
        (Some(0), Some(5))
    );
}

#[tokio::test]
async fn archive_restore_and_remove_move_the_channel() {
    let app = TestApp::new();
    app.send(post_message("arc", b"kept", None)).await;
    app.send(post_message("gone", b"x", None)).await;
    let archived = app
        .send(post_json(
            "/v1/channels/arc/archive",
            json!({ "reason": "inactive" }),
        ))
        .await;
    assert_eq!(archived.status, StatusCode::OK);
    let read = app.send(get("/v1/channels/arc/messages")).await;
    assert_eq!(
        (read.status, read.code().as_str()),
        (StatusCode::GONE, "channel_archived")
    );
    assert!(
        read.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inactive")
    );
    let info = app.send(get("/v1/archive/arc")).await.json();
    assert_eq!(info["archived"], "inactive");
    let listed = app.send(get("/v1/archive")).await;
    assert_eq!(listed.content_type, "application/x-ndjson");
    let ids: Vec<_> = ndjson(&listed.body)
        .iter()
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("arc")]);
    let live: Vec<_> = ndjson(&app.send(get("/v1/channels")).await.body)
        .iter()
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(live, vec![json!("gone")]);
    // An archived channel takes no appends until it is restored.
    let refused = app.send(post_message("arc", b"new", None)).await;
    assert_eq!(refused.status, StatusCode::GONE);
    assert_eq!(
        app.send(post_empty("/v1/archive/arc/restore")).await.status,
        StatusCode::OK
    );
    assert_eq!(app.messages("arc"), vec![(0, b"kept".to_vec())]);
    assert_eq!(
        app.send(delete("/v1/channels/gone")).await.status,
        StatusCode::OK
    );
    assert!(!app.store.exists("gone").unwrap());
    app.store.archive("arc", "again").unwrap();
    assert_eq!(
        app.send(delete("/v1/archive/arc")).await.status,
        StatusCode::OK
    );
    assert!(!app.store.is_archived("arc").unwrap());
    let missing = app.send(get("/v1/archive/arc")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn store_operations_report_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.message_bytes_max = 64 * 1024;
    let app = TestApp::with_config(dir, config);
    for i in 0..4u8 {
        app.send(post_message("big", &[i; 5000], None)).await;
    }
    let stats = app.send(get("/v1/stats")).await.json();
    assert_eq!(stats["store"]["messages"], 4);
    assert!(stats["commit_groups"].as_u64().unwrap() >= 1);
    app.send(post_empty("/v1/channels/big/clear")).await;
    let compacted = app.send(post_empty("/v1/store/compaction")).await;
    assert_eq!(compacted.status, StatusCode::OK);
    assert_eq!(compacted.json()["messages"], 0);
    let verified = app.send(post_empty("/v1/verify")).await.json();
    assert_eq!(verified["clean"], true, "{verified}");
    assert_eq!(verified["live_channels"], 1);
}

#[tokio::test]
async fn verify_reports_damage_with_its_place() {
    let app = TestApp::new();
    app.send(post_message("dmg", b"0123456789abcdef", None))
        .await;
    app.store.checkpoint().unwrap();
    app.store.archive("dmg", "cold").unwrap();
    // Flip a byte in the archived file's last record.
    let path = walk(app.dir.path().join("archive").as_path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("dmg.vlog"))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let verified = app.send(post_empty("/v1/verify")).await.json();
    assert_eq!(verified["clean"], false, "{verified}");
    let damage = &verified["damage"][0];
    assert!(damage["path"].as_str().unwrap().ends_with("dmg.vlog"));
    assert!(damage["offset"].as_u64().unwrap() > 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = TestApp::new();
    let health = app.send(get("/healthz")).await;
    assert_eq!(
        (health.status, health.body.as_slice()),
        (StatusCode::OK, &b"ok\n"[..])
    );
    app.send(post_message("m", b"x", None)).await;
    let metrics = app.send(get("/metrics")).await;
    let text = String::from_utf8(metrics.body).unwrap();
    for name in [
        "vellum_http_requests_total",
        "vellum_http_request_duration_seconds_bucket",
        "vellum_appended_messages_total",
        "vellum_fsyncs_total",
        "vellum_commit_groups_total",
        "vellum_commit_jobs_total",
        "vellum_open_files",
        "vellum_store_file_bytes",
        "vellum_store_garbage_fraction",
        "vellum_store_compactions_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let doc = app.send(get("/v1/openapi.json")).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/channels/{id}/messages",
        "/v1/channels/{id}/batch",
        "/v1/channels/{id}/subscribe",
        "/v1/publish",
        "/v1/channels/{id}/metadata",
        "/v1/channels/{id}/trim",
        "/v1/archive/{id}/restore",
        "/v1/store/compaction",
        "/v1/verify",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
}
