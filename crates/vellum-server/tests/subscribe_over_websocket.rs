//! WebSocket subscriptions over a real socket: history from the asked position, then
//! each message as it is acknowledged, rewrites as events, the end of the channel as a
//! close; and a subscriber that cannot keep up is cut off instead of growing memory.

mod common;

use axum::http::StatusCode;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Serves `app`'s router on a loopback port; returns the address.
async fn listen(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn subscribe(addr: std::net::SocketAddr, path: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    socket
}

/// The next text frame as JSON.
async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .unwrap();
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

fn seq_and_data(v: &serde_json::Value) -> (u64, Vec<u8>) {
    (v["seq"].as_u64().unwrap(), b64(v["data"].as_str().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_then_live_then_events_then_close() {
    let app = TestApp::new();
    for i in 0..3 {
        app.send(post_message(
            "live",
            format!("h{i}").as_bytes(),
            Some(&format!("k{i}")),
        ))
        .await;
    }
    let addr = listen(&app).await;
    let mut all = subscribe(addr, "/v1/channels/live/subscribe").await;
    let mut after = subscribe(addr, "/v1/channels/live/subscribe?after_key=k1").await;
    for i in 0..3 {
        assert_eq!(
            seq_and_data(&next_json(&mut all).await),
            (i, format!("h{i}").into_bytes())
        );
    }
    assert_eq!(
        seq_and_data(&next_json(&mut after).await),
        (2, b"h2".to_vec())
    );
    for i in 3..6 {
        app.send(post_message("live", format!("l{i}").as_bytes(), None))
            .await;
    }
    app.send(post_json(
        "/v1/channels/live/batch",
        json!({ "messages": [{ "data": to_b64(b"b6") }, { "data": to_b64(b"b7") }] }),
    ))
    .await;
    for socket in [&mut all, &mut after] {
        let live: Vec<_> = [
            next_json(socket).await,
            next_json(socket).await,
            next_json(socket).await,
            next_json(socket).await,
            next_json(socket).await,
        ]
        .iter()
        .map(seq_and_data)
        .collect();
        assert_eq!(
            live,
            vec![
                (3, b"l3".to_vec()),
                (4, b"l4".to_vec()),
                (5, b"l5".to_vec()),
                (6, b"b6".to_vec()),
                (7, b"b7".to_vec()),
            ]
        );
    }
    app.send(post_json("/v1/channels/live/trim", json!({ "seq": 6 })))
        .await;
    assert_eq!(
        next_json(&mut all).await,
        json!({ "event": "trimmed", "to": { "seq": 6 } })
    );
    app.send(post_empty("/v1/channels/live/clear")).await;
    assert_eq!(next_json(&mut all).await, json!({ "event": "cleared" }));
    app.send(delete("/v1/channels/live")).await;
    // Skip the events `all` has had; then the close.
    let close = loop {
        match all.next().await.unwrap().unwrap() {
            Message::Close(close) => break close.unwrap(),
            _ => continue,
        }
    };
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason.as_str(), "channel removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_a_channel_not_yet_written_waits_for_its_first_message_or_its_position() {
    let app = TestApp::new();
    let addr = listen(&app).await;
    let mut socket = subscribe(addr, "/v1/channels/later/subscribe").await;
    // The socket is up once the server answers the handshake; give the subscription
    // a moment to join the queue by round-tripping a ping.
    socket.send(Message::Ping(vec![1].into())).await.unwrap();
    loop {
        if let Message::Pong(_) = socket.next().await.unwrap().unwrap() {
            break;
        }
    }
    app.send(post_message("later", b"first", None)).await;
    assert_eq!(
        seq_and_data(&next_json(&mut socket).await),
        (0, b"first".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.message_bytes_max = 64 * 1024;
    config.limits.json_body_bytes_max = 8 * 1024 * 1024;
    config.limits.subscriber_lag_messages_max = 4;
    config.limits.subscriber_send_timeout_ms = 300;
    let app = TestApp::with_config(dir, config);
    let addr = listen(&app).await;
    let mut socket = subscribe(addr, "/v1/channels/flood/subscribe").await;
    socket.send(Message::Ping(vec![1].into())).await.unwrap();
    while !matches!(socket.next().await.unwrap().unwrap(), Message::Pong(_)) {}
    // 32 MiB of messages, more than the socket buffers hold, while the client reads nothing.
    let body = to_b64(&vec![9u8; 60 * 1024]);
    let total = 512;
    for _ in 0..total / 32 {
        let messages: Vec<_> = (0..32).map(|_| json!({ "data": body })).collect();
        let answer = app
            .send(post_json(
                "/v1/channels/flood/batch",
                json!({ "messages": messages }),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Now read: some messages, then the end, well before all of them.
    let mut received = 0;
    let mut closed_with = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        match frame {
            Ok(Message::Text(_)) => received += 1,
            Ok(Message::Close(close)) => {
                closed_with = close;
                break;
            }
            Ok(_) => {}
            // Cut mid-frame: the server dropped the socket.
            Err(_) => break,
        }
    }
    assert!(
        received < total,
        "received all {received} messages; never cut off"
    );
    if let Some(close) = closed_with {
        assert_eq!(u16::from(close.code), 1008);
        assert!(close.reason.contains("too slow"), "{}", close.reason);
    }
    // The server let go of the subscription.
    let mut subscribed = 1;
    for _ in 0..100 {
        subscribed = app.send(get("/v1/stats")).await.json()["subscribed_channels"]
            .as_u64()
            .unwrap();
        if subscribed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(subscribed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_an_archived_channel_is_refused_before_the_upgrade() {
    let app = TestApp::new();
    app.store.append("cold", b"x").unwrap();
    app.store.archive("cold", "old").unwrap();
    let addr = listen(&app).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/channels/cold/subscribe"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), StatusCode::GONE);
        }
        other => panic!("{other}"),
    }
}
