//! The daemon's HTTP server (axum): the OAuth redirect callback, RABOT customer links (the
//! admin endpoint that starts one and the redirects that end one), liveness and readiness probes
//! and Prometheus metrics. It takes its shutdown signal as a parameter, so tests and the daemon
//! stop it the same way.

mod links;
mod oauth_callback;
mod ops;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::events::Control;
use crate::grants::RabobankGrants;
use crate::links::RabotLinks;
use crate::settings::{RABOBANK_CALLBACK_PATH, RABOT_LINKS_PATH};

/// The partner flows the server answers for; each is absent (404) while its partner is off.
#[derive(Clone, Default)]
pub struct Partners {
    pub rabobank: Option<Arc<RabobankGrants>>,
    pub rabot: Option<Arc<RabotLinks>>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub pool: PgPool,
    /// A watch so a configuration reload reaches the handlers too.
    pub partners: watch::Receiver<Partners>,
    /// The daemon's control loop: a completed link asks it to mirror the customer now.
    pub control: mpsc::Sender<Control>,
    /// `server.admin_token`; empty = the admin endpoints answer 404.
    pub admin_token: SecretString,
    /// `server.link_done_url`; empty = a finished link shows a page here.
    pub link_done_url: String,
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
        .route(RABOT_LINKS_PATH, post(links::create))
        .route(
            &format!("{RABOT_LINKS_PATH}/{{secret}}/success"),
            get(links::success),
        )
        .route(
            &format!("{RABOT_LINKS_PATH}/{{secret}}/failure"),
            get(links::failure),
        )
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
