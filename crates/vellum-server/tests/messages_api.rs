//! The two fixed endpoints through the router (`oneshot`), their errors, and one
//! end-to-end exchange over a real socket.

mod common;

use axum::http::StatusCode;
use common::*;
use vellum::{Options, Vellum};

#[tokio::test]
async fn appended_messages_read_back_as_ndjson() {
    let app = TestApp::new();
    let answer = app.send(post_message("chan", b"hello", None)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let ack = answer.json();
    assert_eq!(ack["seq"], 0);
    assert_eq!(ack["durability"], "fsynced");
    assert!(ack["time_ms"].as_u64().unwrap() > 0);
    let content_key = ack["key"].as_str().unwrap().to_string();
    assert_eq!(content_key.len(), 32);
    let answer = app.send(post_message("chan", b"world", Some("k-1"))).await;
    assert_eq!(
        (answer.status, answer.json()["key"].as_str().unwrap()),
        (StatusCode::CREATED, "k-1")
    );
    app.send(post_message("chan", b"third", None)).await;

    let answer = app.send(get("/v1/channels/chan/messages")).await;
    assert_eq!(
        (answer.status, answer.content_type.as_str()),
        (StatusCode::OK, "application/x-ndjson")
    );
    assert_eq!(
        answer.lines(),
        vec![
            (0, content_key.clone(), b"hello".to_vec()),
            (1, "k-1".into(), b"world".to_vec()),
            (2, answer.lines()[2].1.clone(), b"third".to_vec()),
        ]
    );
    let from = |q: &str| get(&format!("/v1/channels/chan/messages?{q}"));
    let seqs = |answer: &Answer| answer.lines().iter().map(|l| l.0).collect::<Vec<_>>();
    assert_eq!(seqs(&app.send(from("from_seq=1&limit=1")).await), vec![1]);
    assert_eq!(seqs(&app.send(from("after_key=k-1")).await), vec![2]);
    assert_eq!(
        seqs(
            &app.send(from(&format!("after_key={content_key}&limit=1")))
                .await
        ),
        vec![1]
    );
    assert_eq!(seqs(&app.send(from("last=2")).await), vec![1, 2]);
}

#[tokio::test]
async fn bad_requests_answer_the_error_shape_and_change_nothing() {
    let app = TestApp::new();
    app.send(post_message("chan", b"kept", None)).await;
    let cases = [
        (
            post_message("..", b"x", None),
            StatusCode::BAD_REQUEST,
            "invalid_channel_id",
        ),
        (
            post_message("bad%2Fid", b"x", None),
            StatusCode::BAD_REQUEST,
            "invalid_channel_id",
        ),
        (
            post_message("chan", &[7u8; 1025], None),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            post_message("chan", &[7u8; 100_000], None),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            get("/v1/channels/chan/messages?from_seq=abc"),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            post_message("chan", b"x", Some(&"k".repeat(65))),
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
        let answer = app.send(request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code.to_string()),
            "{what}"
        );
    }
    app.store.archive("chan", "test").unwrap();
    let answer = app.send(post_message("chan", b"x", None)).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (StatusCode::GONE, "channel_archived")
    );
    app.store.restore("chan").unwrap();
    assert_eq!(app.messages("chan"), vec![(0, b"kept".to_vec())]);
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
        ..vellum_server::Config::default()
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
        ..vellum_server::Config::default()
    };
    let err = vellum_server::serve(config, async {}).await.unwrap_err();
    assert!(err.to_string().contains("without access tokens"), "{err}");
}

#[test]
fn limits_the_engine_cannot_honour_are_refused_by_the_config() {
    let mut config = vellum_server::Config::default();
    config.limits.message_bytes_max = vellum::MESSAGE_BYTES_CEILING + 1;
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("message_bytes_max"), "{err}");
    config.limits.message_bytes_max = 0;
    assert!(config.validate().is_err());
}

#[test]
fn the_eviction_section_reaches_the_engine_and_zero_ages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vellum.toml");
    std::fs::write(
        &path,
        "[eviction]\ninterval_s = 10\narchive_retention_s = 60\n",
    )
    .unwrap();
    let config = vellum_server::Config::from_toml_file(&path).unwrap();
    config.validate().unwrap();
    let eviction = config.engine_options().eviction.unwrap();
    assert_eq!(eviction.interval, std::time::Duration::from_secs(10));
    assert_eq!(
        eviction.archive_retention,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(eviction.inactive_after, None);
    let mut zero = config.clone();
    zero.eviction.inactive_after_s = Some(0);
    assert!(zero.validate().is_err());
    let mut zero = config;
    zero.eviction.interval_s = 0;
    assert!(zero.validate().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_trickles_its_request_head_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Serving::start(|limits| limits.header_read_timeout_ms = 200);
    let addr = server.addr;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Half a request head, then nothing.
    socket
        .write_all(b"POST /v1/channels/slow/messages HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut answer),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a trickling connection open for 10 s"
    );
    assert!(!String::from_utf8_lossy(&answer).contains("201"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_a_freed_place_is_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Serving::start(|limits| limits.connections_max = 2);
    let addr = server.addr;
    let health = |mut socket: tokio::net::TcpStream| async move {
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    // Three connections for two places: which one is refused depends on the order the
    // server's accept tasks run in, so ask on all three, keeping them open meanwhile
    // (keep-alive: the served ones hold their places throughout).
    async fn ask(socket: &mut tokio::net::TcpStream) -> std::io::Result<String> {
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let (mut answer, mut chunk) = (Vec::new(), [0u8; 512]);
        loop {
            let n = socket.read(&mut chunk).await?;
            answer.extend_from_slice(&chunk[..n]);
            if n == 0 || answer.ends_with(b"ok\n") {
                return Ok(String::from_utf8_lossy(&answer).into_owned());
            }
        }
    }
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let answers = futures_util::future::join_all(sockets.iter_mut().map(ask)).await;
    let served = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.as_ref().map_or(true, |a| a.is_empty()))
        .count();
    assert_eq!((served, refused), (2, 1), "{answers:?}");
    drop(sockets);
    // Places are freed as connections close; a new one is served again.
    let mut served = false;
    for _ in 0..100 {
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        if health(socket)
            .await
            .is_ok_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served);
    server.stop().await;
}

/// `serve_on` a loopback port with some limits changed, until `stop`.
struct Serving {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Serving {
    fn start(limits: impl FnOnce(&mut vellum_server::Limits)) -> Serving {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = vellum_server::Config {
            data_dir: dir.path().to_path_buf(),
            listen: addr,
            ..vellum_server::Config::default()
        };
        limits(&mut config.limits);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(vellum_server::serve_on(listener, config, async {
            let _ = stopped.await;
        }));
        Serving {
            addr,
            stop,
            server,
            _dir: dir,
        }
    }

    /// Shuts down cleanly, as on SIGTERM.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}
