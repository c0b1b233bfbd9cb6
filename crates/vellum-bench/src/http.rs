//! A keep-alive HTTP/1.1 client connection to the server under test (hyper).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use std::net::SocketAddr;

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection (TCP_NODELAY).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request (a raw body) and reads the whole answer.
pub async fn send(
    sender: &mut Sender,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    finish(sender, request, body).await
}

/// Sends one request with a JSON body and reads the whole answer.
pub async fn send_json(
    sender: &mut Sender,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    finish(sender, request, Bytes::from(body.to_string())).await
}

async fn finish(
    sender: &mut Sender,
    request: hyper::http::request::Builder,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}
