//! Running the server: open the store, listen (TLS when configured), stop cleanly.

use crate::config::Config;
use crate::connections::ConnectionLimit;
use crate::{AppState, app};
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use std::sync::Arc;
use std::time::Duration;
use vellum::Vellum;

/// How long shutdown waits for requests in flight before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Opens the data directory, listens on `config.listen`, and serves until `shutdown`
/// completes; then stops accepting, finishes the requests in flight, ends the
/// subscriptions and closes the store cleanly.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.listen))?;
    serve_on(listener, config, shutdown).await
}

/// [`serve`] on a listener already bound (tests bind port 0).
pub async fn serve_on(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let addr = listener.local_addr()?;
    anyhow::ensure!(
        addr.ip().is_loopback() || !config.tokens.is_empty(),
        "refusing to listen on {addr} without access tokens"
    );
    listener.set_nonblocking(true)?;
    let data_dir = config.data_dir.clone();
    let options = config.engine_options();
    let store = tokio::task::spawn_blocking(move || Vellum::open(data_dir, options))
        .await?
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let state = AppState::new(store.clone(), &config);
    let hub = state.hub.clone();
    let router = app(state);
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight, then closing the store");
        hub.close_all();
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let service = router.into_make_service();
    tracing::info!(
        %addr,
        data = %config.data_dir.display(),
        tls = config.tls.is_some(),
        tokens = config.tokens.len(),
        "vellum serving"
    );
    // Innermost, before TLS: a connection over the bound costs no handshake.
    let accept = ConnectionLimit::new(NoDelayAcceptor::new(), config.limits.connections_max);
    match &config.tls {
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| anyhow::anyhow!("loading TLS certificate and key: {e}"))?;
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(accept);
            let mut server = axum_server::from_tcp(listener).acceptor(tls);
            limit_header_time(server.http_builder(), config.limits.header_read_timeout());
            server.handle(handle).serve(service).await?;
        }
        None => {
            let mut server = axum_server::from_tcp(listener).acceptor(accept);
            limit_header_time(server.http_builder(), config.limits.header_read_timeout());
            server.handle(handle).serve(service).await?;
        }
    }
    tokio::task::spawn_blocking(move || store.close()).await?;
    tracing::info!("store closed cleanly");
    Ok(())
}

/// A connection that has not sent a whole request head within `timeout` of being
/// ready for one is closed: idle or trickling connections cannot pile up.
fn limit_header_time(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// Completes on SIGINT or SIGTERM: what `vellum serve` shuts down on.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
