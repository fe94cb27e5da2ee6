//! Probes and metrics for operators: `GET /readyz` (database, migrations, stuck runs) and
//! `GET /metrics` (Prometheus text, with the grant and job-freshness gauges read from the
//! database at each scrape). Neither body ever holds a secret: check names, migration versions,
//! job names, run ids and grant labels only.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ServerState;
use crate::freshness::{self, Policy};
use crate::metrics::{GrantGauges, GrantsInState};
use crate::partners::rabobank::REFRESH_LIMIT;
use crate::partners::rabobank::grant_store as grants;
use crate::settings::Settings;
use crate::store::{self, runs};

/// How long each readiness query, and each part of a scrape read from the database, may take.
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

/// What the scrape-time gauges are judged by, from the settings in force (a reload sends new
/// ones through [`ServerState::scrape`]).
#[derive(Debug, Clone, Default)]
pub struct ScrapeSettings {
    /// The enabled jobs and their stale thresholds.
    pub jobs: Vec<Policy>,
    /// How long a consent lasts from `consented_on` (`rabobank.variant`); `None`: until revoked.
    pub consent_lifetime: Option<Duration>,
}

impl ScrapeSettings {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            jobs: Policy::enabled(settings),
            consent_lifetime: settings.rabobank.variant.consent_lifetime(),
        }
    }
}

/// 200 when the database answers, every embedded migration is applied and no run has been
/// `running` for longer than `daemon.stuck_after`; 503 otherwise.
///
/// Freshness is deliberately not a check: when a partner is down, every replica's data goes
/// stale at once, and an orchestrator would take them all out of service or restart healthy
/// pods in a loop, which fixes nothing. Staleness is an alert (`partner_sync_stale`), not a
/// readiness fault.
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

/// The process's metrics, then the grants' and the jobs' gauges, read now.
pub async fn metrics(State(state): State<ServerState>) -> Response {
    let scrape = state.scrape.borrow().clone();
    let mut text = state.metrics.render();
    // Each part alone: the rest is still worth scraping, and the missing gauges show the problem.
    match bounded(grant_gauges(&state.pool, scrape.consent_lifetime)).await {
        Ok(gauges) => text.push_str(&gauges),
        Err(why) => tracing::warn!(error = %why, "cannot read the grants for /metrics"),
    }
    match bounded(freshness::read(&state.pool, &scrape.jobs)).await {
        Ok(jobs) => {
            let gauges: Vec<_> = jobs.iter().map(freshness::Freshness::gauges).collect();
            text.push_str(&crate::metrics::render_job_gauges(&gauges));
        }
        Err(why) => tracing::warn!(error = %why, "cannot read job freshness for /metrics"),
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

async fn grant_gauges(
    pool: &sqlx::PgPool,
    consent_lifetime: Option<Duration>,
) -> Result<String, sqlx::Error> {
    let active: Vec<GrantGauges> = grants::active_refresh_expiries(pool, consent_lifetime)
        .await?
        .into_iter()
        .map(|grant| GrantGauges {
            provider: grant.provider,
            grant_id: grant.id.to_string(),
            label: grant.label.unwrap_or_default(),
            refresh_expires_in: grant.seconds,
            refreshes_remaining: f64::from(REFRESH_LIMIT.saturating_sub(grant.refresh_count)),
            consent_expires_in: grant.consent_expires_in,
            in_doubt_since: grant.in_doubt_since,
        })
        .collect();
    let states: Vec<GrantsInState> = grants::state_counts(pool)
        .await?
        .into_iter()
        .map(|count| GrantsInState {
            provider: count.provider,
            state: count.state,
            grants: count.grants as f64,
        })
        .collect();
    Ok(crate::metrics::render_grant_gauges(&active, &states))
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
