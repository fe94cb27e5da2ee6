//! The daemon's HTTP server (axum): the OAuth redirect callback, liveness and readiness probes
//! and Prometheus metrics. It takes its shutdown signal as a parameter, so tests and the daemon
//! stop it the same way.

mod oauth_callback;
mod ops;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::grants::RabobankGrants;
use crate::settings::RABOBANK_CALLBACK_PATH;

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub pool: PgPool,
    /// Present when Rabobank is enabled (the callback answers 404 otherwise); a watch so a
    /// configuration reload reaches the callback too.
    pub rabobank: watch::Receiver<Option<Arc<RabobankGrants>>>,
    /// Renders the process's metrics for `/metrics` (from [`crate::metrics::install`]).
    pub metrics: PrometheusHandle,
    /// A run still `running` after this long makes `/readyz` answer 503 (`daemon.stuck_after`).
    pub stuck_after: Duration,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(RABOBANK_CALLBACK_PATH, get(oauth_callback::rabobank))
        .with_state(state)
}

/// Binds `listen`; returns the listener and its actual address (port 0 picks one).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the HTTP server to {listen} (server.listen)"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    Ok((listener, address))
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
