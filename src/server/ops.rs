//! Probes and metrics for operators: `GET /readyz` (database, migrations, stuck runs) and
//! `GET /metrics` (Prometheus text). Neither body ever holds a secret: check names, migration
//! versions, job names and run ids only.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ServerState;
use crate::store::{self, grants, runs};

/// How long each readiness query, and the grant query of a scrape, may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// What a passing check reports.
const OK: &str = "ok";
/// What a check reports when an earlier one already failed.
const NOT_CHECKED: &str = "not checked";

/// The `/readyz` body: `ready`, and per check `"ok"` or why it failed.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    database: String,
    migrations: String,
    stuck_runs: String,
}

/// 200 when the database answers, every embedded migration is applied and no run has been
/// `running` for longer than `daemon.stuck_after`; 503 otherwise.
pub async fn readyz(State(state): State<ServerState>) -> Response {
    let pool = &state.pool;
    let database = match bounded(sqlx::query("SELECT 1").execute(pool)).await {
        Ok(_) => OK.to_owned(),
        Err(why) => why,
    };
    let (migrations, stuck_runs) = if database == OK {
        let migrations = match bounded(store::missing_migrations(pool)).await {
            Ok(missing) if missing.is_empty() => OK.to_owned(),
            Ok(missing) => format!(
                "not applied: {}",
                missing
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(why) => format!("cannot read _sqlx_migrations: {why}"),
        };
        let stuck_runs = match bounded(runs::stuck(pool, state.stuck_after)).await {
            Ok(stuck) if stuck.is_empty() => OK.to_owned(),
            Ok(stuck) => format!(
                "running longer than {}: {}",
                humantime::format_duration(state.stuck_after),
                stuck
                    .iter()
                    .map(|r| format!("{} run {} ({:.0} s)", r.job, r.id, r.running_s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(why) => format!("cannot read sync.runs: {why}"),
        };
        (migrations, stuck_runs)
    } else {
        (NOT_CHECKED.to_owned(), NOT_CHECKED.to_owned())
    };
    let ready = [&database, &migrations, &stuck_runs]
        .iter()
        .all(|c| c.as_str() == OK);
    let body = Readiness {
        ready,
        database,
        migrations,
        stuck_runs,
    };
    if !ready {
        tracing::warn!(?body, "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The process's metrics, then the refresh-token expiry of every active grant, read now.
pub async fn metrics(State(state): State<ServerState>) -> Response {
    let mut text = state.metrics.render();
    match bounded(grants::active_refresh_expiries(&state.pool)).await {
        Ok(expiries) => text.push_str(&crate::metrics::render_grant_gauges(&expiries)),
        // The rest is still worth scraping; the missing gauges show the problem.
        Err(why) => tracing::warn!(error = %why, "cannot read grant expiries for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Runs a query with [`CHECK_TIMEOUT`]; the error, if any, as a short line.
async fn bounded<T>(query: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, query).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(describe(&error)),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(CHECK_TIMEOUT)
        )),
    }
}

/// sqlx errors name no URL or password; the server's own message is kept, on one line.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => crate::http::one_line(e.message()),
        sqlx::Error::PoolTimedOut => "no pooled connection available".to_owned(),
        sqlx::Error::Io(e) => format!("cannot reach the database: {e}"),
        other => crate::http::one_line(&other.to_string()),
    }
}
