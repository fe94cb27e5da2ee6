//! The daemon's HTTP servers (axum). The public listener answers the OAuth redirect callback,
//! RABOT customer links (the admin endpoint that starts one and the redirects that end one) and
//! `/healthz`; the operations listener answers `/healthz`, `/readyz` and Prometheus `/metrics`,
//! which reveal internals and so are not on the public one. Both take their shutdown signal as
//! a parameter, so tests and the daemon stop them the same way, and both get the same limits:
//! request and header timeouts, a body limit and a connection cap.

mod connections;
mod ops;
mod page;
mod rabobank_callback;
mod rabot_links;

pub use ops::ScrapeSettings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::events::Control;
use crate::partners::rabobank::grants::RabobankGrants;
use crate::partners::rabot::links::RabotLinks;
use crate::settings::{RABOBANK_CALLBACK_PATH, RABOT_LINKS_PATH, Settings};

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
    /// What `/metrics` judges freshness and consent ends by; a watch, so a reload reaches it.
    pub scrape: watch::Receiver<ScrapeSettings>,
}

/// How each listener treats its clients: `server.*` limits and `daemon.shutdown_grace`.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_limit: usize,
    pub max_connections: usize,
    /// After the shutdown signal, requests in progress get this long before their connections
    /// are dropped.
    pub shutdown_grace: Duration,
}

impl ServerLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        let server = &settings.server;
        Self {
            request_timeout: server.request_timeout,
            header_read_timeout: server.header_read_timeout,
            body_limit: server.body_limit,
            max_connections: server.max_connections,
            shutdown_grace: settings.daemon.shutdown_grace,
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The public listener (`server.listen`): callbacks, customer links and `/healthz`.
pub fn public_router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(RABOBANK_CALLBACK_PATH, get(rabobank_callback::rabobank))
        .route(RABOT_LINKS_PATH, post(rabot_links::create))
        .route(
            &format!("{RABOT_LINKS_PATH}/{{secret}}/success"),
            get(rabot_links::success),
        )
        .route(
            &format!("{RABOT_LINKS_PATH}/{{secret}}/failure"),
            get(rabot_links::failure),
        )
        .with_state(state)
}

/// The operations listener (`server.ops_listen`): probes and metrics.
pub fn ops_router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}

/// Binds `listen` (the setting named `key`); returns the listener and its actual address
/// (port 0 picks one).
pub async fn bind(listen: SocketAddr, key: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding an HTTP server to {listen} ({key})"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    Ok((listener, address))
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// requests in progress finish within the grace period and drops idle or stuck connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    connections::serve(listener, with_limits(router, &limits), &limits, shutdown).await
}

/// The layers every route runs under, outermost first: a span per request, the request
/// timeout, then the body limit (at the body itself, and for axum's extractors, so both say 413).
fn with_limits(router: Router, limits: &ServerLimits) -> Router {
    router
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(RequestBodyLimitLayer::new(limits.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
}

/// Names the route pattern, never the path or query: link redirects carry their secret in the
/// path, and the OAuth callback its code and state in the query.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("http_request", method = %request.method(), route)
}
