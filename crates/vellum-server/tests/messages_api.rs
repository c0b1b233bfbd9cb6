//! The two fixed endpoints through the router (`oneshot`), their errors, and one
//! end-to-end exchange over a real socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;
use vellum::{Options, Vellum};

fn store(dir: &tempfile::TempDir) -> Arc<Vellum> {
    Arc::new(
        Vellum::open(
            dir.path(),
            Options {
                message_bytes_max: 1024,
                eviction: None,
                ..Options::default()
            },
        )
        .unwrap(),
    )
}

async fn send(store: &Arc<Vellum>, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let response = vellum_server::router(store.clone())
        .oneshot(request)
        .await
        .unwrap();
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
    (status, content_type, body)
}

fn post(id: &str, body: &[u8], key: Option<&str>) -> Request<Body> {
    let mut request = Request::post(format!("/v1/channels/{id}/messages"));
    if let Some(key) = key {
        request = request.header("Vellum-Key", key);
    }
    request.body(Body::from(body.to_vec())).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

fn error_code(body: &[u8]) -> String {
    json(body)["error"]["code"].as_str().unwrap().to_string()
}

/// The ndjson lines of a read, as (seq, key, data).
fn lines(body: &[u8]) -> Vec<(u64, String, Vec<u8>)> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap())
                .unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["key"].as_str().unwrap().to_string(),
                data,
            )
        })
        .collect()
}

#[tokio::test]
async fn appended_messages_read_back_as_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (status, _, body) = send(&store, post("chan", b"hello", None)).await;
    assert_eq!(status, StatusCode::CREATED);
    let ack = json(&body);
    assert_eq!(ack["seq"], 0);
    assert_eq!(ack["durability"], "fsynced");
    assert!(ack["time_ms"].as_u64().unwrap() > 0);
    let content_key = ack["key"].as_str().unwrap().to_string();
    assert_eq!(content_key.len(), 32);
    let (status, _, body) = send(&store, post("chan", b"world", Some("k-1"))).await;
    assert_eq!(
        (status, json(&body)["key"].as_str().unwrap()),
        (StatusCode::CREATED, "k-1")
    );
    send(&store, post("chan", b"third", None)).await;

    let (status, content_type, body) = send(&store, get("/v1/channels/chan/messages")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/x-ndjson")
    );
    assert_eq!(
        lines(&body),
        vec![
            (0, content_key.clone(), b"hello".to_vec()),
            (1, "k-1".into(), b"world".to_vec()),
            (2, lines(&body)[2].1.clone(), b"third".to_vec()),
        ]
    );
    let from = |q: &str| get(&format!("/v1/channels/chan/messages?{q}"));
    let seqs = |body: &[u8]| lines(body).iter().map(|l| l.0).collect::<Vec<_>>();
    assert_eq!(
        seqs(&send(&store, from("from_seq=1&limit=1")).await.2),
        vec![1]
    );
    assert_eq!(seqs(&send(&store, from("after_key=k-1")).await.2), vec![2]);
    assert_eq!(
        seqs(
            &send(&store, from(&format!("after_key={content_key}&limit=1")))
                .await
                .2
        ),
        vec![1]
    );
    assert_eq!(seqs(&send(&store, from("last=2")).await.2), vec![1, 2]);
}

#[tokio::test]
async fn bad_requests_answer_the_error_shape_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    send(&store, post("chan", b"kept", None)).await;
    let cases = [
        (
            post("..", b"x", None),
            StatusCode::BAD_REQUEST,
            "invalid_channel_id",
        ),
        (
            post("bad%2Fid", b"x", None),
            StatusCode::BAD_REQUEST,
            "invalid_channel_id",
        ),
        (
            post("chan", &[7u8; 1025], None),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            post("chan", &[7u8; 100_000], None),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            get("/v1/channels/chan/messages?from_seq=abc"),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            post("chan", b"x", Some(&"k".repeat(65))),
            StatusCode::BAD_REQUEST,
            "key_too_long",
        ),
        (
            get("/v1/channels/missing/messages"),
            StatusCode::NOT_FOUND,
            "channel_not_found",
        ),
        (
            get("/v1/channels/chan/messages?after_key=nope"),
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            get("/v1/channels/chan/messages?last=1&from_seq=0"),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (get("/v1/no/such/route"), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (got, _, body) = send(&store, request).await;
        assert_eq!(
            (got, error_code(&body)),
            (status, code.to_string()),
            "{what}"
        );
    }
    store.archive("chan", "test").unwrap();
    let (status, _, body) = send(&store, post("chan", b"x", None)).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::GONE, "channel_archived")
    );
    store.restore("chan").unwrap();
    let (_, _, body) = send(&store, get("/v1/channels/chan/messages")).await;
    assert_eq!(
        lines(&body).iter().map(|l| l.2.clone()).collect::<Vec<_>>(),
        vec![b"kept".to_vec()]
    );
}

#[tokio::test]
async fn serves_over_a_real_socket_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = vellum_server::Config {
        data_dir: dir.path().to_path_buf(),
        listen: addr,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vellum_server::serve(config, async {
        let _ = stopped.await;
    }));
    // A plain HTTP/1.1 exchange on a raw socket: no client library needed.
    let exchange = |request: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..100 {
            if let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await {
                socket.write_all(request.as_bytes()).await.unwrap();
                let mut response = String::new();
                socket.read_to_string(&mut response).await.unwrap();
                return response;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the server never listened");
    };
    let response = exchange(format!(
        "POST /v1/channels/net/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let response = exchange(format!(
        "GET /v1/channels/net/messages HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"data\":\"aGVsbG8=\""), "{response}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // Closed cleanly: the data directory opens again with the message in it.
    let store = Vellum::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        store
            .read("net", &vellum::ReadRequest::all())
            .unwrap()
            .count(),
        1
    );
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = vellum_server::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "0.0.0.0:0".parse().unwrap(),
    };
    let err = vellum_server::serve(config, async {}).await.unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}
