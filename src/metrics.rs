//! Prometheus metrics: their names, the process-wide recorder, and the small helpers the rest of
//! the code calls. Until [`install`] runs (CLI `sync`, `demo`) the helpers record nothing.
//!
//! Grant and job-freshness gauges are not kept in the process-wide recorder: they are read from
//! the database at every scrape and rendered by a recorder of their own
//! ([`render_grant_gauges`], [`render_job_gauges`]), so a grant that is gone or no longer active
//! disappears from the output instead of keeping its last value, and every replica reports the
//! same freshness whichever of them ran the job.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use reqwest::StatusCode;

/// Finished runs, labels `job` and `status` (`succeeded`, `failed`, `cancelled`).
pub const RUNS: &str = "partner_sync_runs_total";
/// Run durations in seconds, label `job`.
pub const RUN_DURATION: &str = "partner_sync_run_duration_seconds";
/// Rows handled by finished runs, labels `job` and `kind` (see [`ROW_KINDS`]).
pub const RUN_ROWS: &str = "partner_sync_run_rows_total";
/// Requests sent to partners (every attempt), labels `partner` and `status` (the HTTP status
/// code, or `error` when no answer came).
pub const HTTP_REQUESTS: &str = "partner_sync_http_requests_total";
/// Time a request waited for the partner's rate limiter, in seconds, label `partner`.
pub const RATE_LIMIT_WAIT: &str = "partner_sync_rate_limit_wait_seconds";
/// The request rate a partner client sends at now, in requests per second, label `partner`:
/// the configured rate until the partner answers 429, then lower, climbing back (AIMD).
pub const RATE_LIMIT_EFFECTIVE: &str = "partner_sync_rate_limit_effective_rps";
/// Token requests (client credentials, code exchanges, refreshes), label `partner`.
pub const TOKEN_REQUESTS: &str = "partner_sync_token_requests_total";
/// Items whose partner answer held a name the typed columns do not know (a new field, enum
/// value or fee name), labels `partner` and `place` (e.g. `contract.contractState`). The names
/// themselves are in `sync.runs.drift`: a label per name would let a partner grow the series
/// without bound.
pub const SCHEMA_DRIFT: &str = "partner_sync_schema_drift_total";
/// Seconds until an active grant's refresh token expires, labels `provider`, `grant_id` and
/// `label`; read from the database at every scrape.
pub const GRANT_REFRESH_EXPIRES_IN: &str = "partner_sync_grant_refresh_expires_in_seconds";
/// Active grants whose last refresh is in doubt (sent, its answer never saved), label
/// `provider`; read from the database at every scrape, 0 when none is.
pub const GRANTS_IN_DOUBT: &str = "partner_sync_grants_in_doubt";
/// Unix time since which an active grant's last refresh is in doubt, labels `provider`,
/// `grant_id` and `label`; present only for grants in doubt.
pub const GRANT_IN_DOUBT_SINCE: &str =
    "partner_sync_grant_refresh_in_doubt_since_timestamp_seconds";

/// Unix time the job's last complete pass ended: status `succeeded` and no partial failure
/// recorded (`sync.runs.error` IS NULL). Label `job`; absent until the job's first complete
/// pass. Read from the database at every scrape, like the other job gauges below.
pub const LAST_SUCCESS: &str = "partner_sync_last_success_timestamp_seconds";
/// Seconds from [`LAST_SUCCESS`] to now, by the database's clock; label `job`.
pub const LAST_SUCCESS_AGE: &str = "partner_sync_last_success_age_seconds";
/// 1 when a scheduled, enabled job's [`LAST_SUCCESS_AGE`] exceeds [`STALE_THRESHOLD`] or it
/// never had a complete pass, else 0; label `job` (jobs without a schedule have none).
pub const STALE: &str = "partner_sync_stale";
/// The stale threshold in force for a scheduled job: `<partner>.stale_after`, or 2 × the
/// schedule's interval; label `job`.
pub const STALE_THRESHOLD: &str = "partner_sync_stale_threshold_seconds";
/// Failed runs since the job's last succeeded run; label `job`.
pub const CONSECUTIVE_FAILURES: &str = "partner_sync_job_consecutive_failures";
/// Refreshes an active grant's consent still allows (the bank's limit minus those done);
/// labels `provider`, `grant_id` and `label`.
pub const GRANT_REFRESHES_REMAINING: &str = "partner_sync_grant_refreshes_remaining";
/// Seconds until an active grant's consent ends (negative: ended); present only when the end
/// is known (PSD2: 180 days after `consented_on`; Premium consents last until revoked).
pub const GRANT_CONSENT_EXPIRES_IN: &str = "partner_sync_grant_consent_expires_in_seconds";
/// Grants per `provider` and `state` (`active`, `in_doubt`, `refreshing`, `needs_reconsent`,
/// `revoked`, as `partner-sync grants` shows them); states no grant is in are absent.
pub const GRANTS: &str = "partner_sync_grants";

/// RABOT contracts whose consumption RABOT refused with 403 (a customer who has not linked,
/// read with `role:finance-reporting` alone): expected, skipped, and counted here.
pub const RABOT_CONSUMPTION_FORBIDDEN: &str = "partner_sync_rabot_consumption_forbidden_total";

/// The `kind` values of [`RUN_ROWS`].
pub const ROW_KINDS: [&str; 6] = [
    "inserted",
    "updated",
    "unchanged",
    "deleted",
    "skipped",
    "failed",
];

/// Runs take from a fraction of a second (nothing changed) to an hour (a first full mirror).
const RUN_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Most requests do not wait at all; a long wait means the configured rate is too low.
const RATE_LIMIT_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call and returns a handle to render it. Later
/// calls (tests run many servers in one process) return a clone of the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = with_buckets(PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    // Someone else's recorder is installed: serve an empty, valid exposition.
                    tracing::warn!(%error, "cannot install the metrics recorder; /metrics stays empty");
                    return with_buckets(PrometheusBuilder::new())
                        .build_recorder()
                        .handle();
                }
            };
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

fn with_buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    builder
        .set_buckets_for_metric(Matcher::Full(RUN_DURATION.into()), RUN_DURATION_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(RATE_LIMIT_WAIT.into()),
                RATE_LIMIT_WAIT_BUCKETS,
            )
        })
        .expect("bucket lists are not empty")
}

fn describe() {
    describe_counter!(RUNS, "Finished job runs by job and final status.");
    describe_histogram!(RUN_DURATION, Unit::Seconds, "Duration of job runs.");
    describe_counter!(RUN_ROWS, "Rows handled by finished job runs, by kind.");
    describe_counter!(
        HTTP_REQUESTS,
        "Requests sent to partners, retries included, by answer status (`error`: no answer)."
    );
    describe_histogram!(
        RATE_LIMIT_WAIT,
        Unit::Seconds,
        "Time requests waited for the partner's rate limit."
    );
    describe_gauge!(
        RATE_LIMIT_EFFECTIVE,
        "Requests per second a partner client sends at now: the configured rate, lowered after a 429 and climbing back."
    );
    describe_counter!(
        RABOT_CONSUMPTION_FORBIDDEN,
        "RABOT contracts whose consumption was refused with 403 (customer not linked), skipped."
    );
    describe_counter!(
        TOKEN_REQUESTS,
        "Token requests sent to partners: client credentials, code exchanges, refreshes."
    );
    describe_counter!(
        SCHEMA_DRIFT,
        "Items whose partner answer held a field, enum value or fee name the typed columns do not know."
    );
}

/// Histograms keep raw samples until upkeep folds them into buckets; without scrapes they
/// would grow for ever, so a small thread does it regularly.
fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the metrics upkeep thread");
    }
}

/// The rows a finished run handled, one field per `kind` of [`RUN_ROWS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunRows {
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub skipped: i64,
    pub failed: i64,
}

/// A run ended with `status` (`succeeded`, `failed`, `cancelled`) and its row was updated.
pub fn run_finished(job: &'static str, status: &'static str, took: Duration, rows: RunRows) {
    counter!(RUNS, "job" => job, "status" => status).increment(1);
    histogram!(RUN_DURATION, "job" => job).record(took.as_secs_f64());
    let rows = [
        rows.inserted,
        rows.updated,
        rows.unchanged,
        rows.deleted,
        rows.skipped,
        rows.failed,
    ];
    for (kind, n) in ROW_KINDS.into_iter().zip(rows) {
        counter!(RUN_ROWS, "job" => job, "kind" => kind).increment(u64::try_from(n).unwrap_or(0));
    }
}

/// A run saw `items` items with names unknown at `place`.
pub fn schema_drift(partner: &'static str, place: &'static str, items: u64) {
    counter!(SCHEMA_DRIFT, "partner" => partner, "place" => place).increment(items);
}

/// One attempt of a request got an answer (`Some(status)`) or failed without one (`None`).
pub fn http_request(partner: &'static str, status: Option<StatusCode>) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.as_u16().to_string());
    counter!(HTTP_REQUESTS, "partner" => partner, "status" => status).increment(1);
}

/// A request waited `waited` for the partner's rate limiter.
pub fn rate_limit_waited(partner: &'static str, waited: Duration) {
    histogram!(RATE_LIMIT_WAIT, "partner" => partner).record(waited.as_secs_f64());
}

/// A partner client's rate limiter now lets `requests_per_second` through.
pub fn rate_limit_effective(partner: &'static str, requests_per_second: f64) {
    gauge!(RATE_LIMIT_EFFECTIVE, "partner" => partner).set(requests_per_second);
}

/// `contracts` RABOT contracts' consumption was refused with 403 and skipped.
pub fn rabot_consumption_forbidden(contracts: u64) {
    counter!(RABOT_CONSUMPTION_FORBIDDEN).increment(contracts);
}

/// An access token was requested from a partner.
pub fn token_requested(partner: &'static str) {
    counter!(TOKEN_REQUESTS, "partner" => partner).increment(1);
}

/// The values of one job's freshness gauges, as a scrape read them.
#[derive(Debug, Clone, PartialEq)]
pub struct JobGauges {
    pub job: &'static str,
    /// [`LAST_SUCCESS`] and [`LAST_SUCCESS_AGE`]; `None` before the first complete pass.
    pub last_success: Option<(f64, f64)>,
    /// [`STALE`] and [`STALE_THRESHOLD`]; `None` for a job without a schedule.
    pub stale: Option<(bool, f64)>,
    pub consecutive_failures: i64,
}

/// A recorder used for one scrape only: what `record` sets is rendered and then dropped, so
/// a row that is gone from the database is gone from the output too.
fn render_scrape(record: impl FnOnce()) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, record);
    handle.render()
}

/// The freshness gauges ([`LAST_SUCCESS`] to [`CONSECUTIVE_FAILURES`]) of `jobs`.
pub fn render_job_gauges(jobs: &[JobGauges]) -> String {
    render_scrape(|| {
        describe_gauge!(
            LAST_SUCCESS,
            Unit::Seconds,
            "Unix time the job's last complete pass ended (succeeded, no partial failure)."
        );
        describe_gauge!(
            LAST_SUCCESS_AGE,
            Unit::Seconds,
            "Seconds since the job's last complete pass ended (database clock)."
        );
        describe_gauge!(
            STALE,
            "1 when a scheduled job's last complete pass is older than its threshold, or it never had one."
        );
        describe_gauge!(
            STALE_THRESHOLD,
            Unit::Seconds,
            "Age after which the job is stale: <partner>.stale_after, or 2 x the schedule's interval."
        );
        describe_gauge!(
            CONSECUTIVE_FAILURES,
            "Failed runs since the job's last succeeded run."
        );
        for job in jobs {
            let label = || [("job", job.job.to_owned())];
            if let Some((at, age)) = job.last_success {
                gauge!(LAST_SUCCESS, &label()).set(at);
                gauge!(LAST_SUCCESS_AGE, &label()).set(age);
            }
            if let Some((stale, threshold)) = job.stale {
                gauge!(STALE, &label()).set(if stale { 1.0 } else { 0.0 });
                gauge!(STALE_THRESHOLD, &label()).set(threshold);
            }
            gauge!(CONSECUTIVE_FAILURES, &label()).set(job.consecutive_failures as f64);
        }
    })
}

/// The values of one active grant's gauges, as a scrape read them.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantGauges {
    pub provider: String,
    pub grant_id: String,
    pub label: String,
    /// [`GRANT_REFRESH_EXPIRES_IN`]: seconds from now, negative once expired.
    pub refresh_expires_in: f64,
    /// [`GRANT_REFRESHES_REMAINING`].
    pub refreshes_remaining: f64,
    /// [`GRANT_CONSENT_EXPIRES_IN`]; `None` when the consent's end is not known.
    pub consent_expires_in: Option<f64>,
    /// [`GRANT_IN_DOUBT_SINCE`] (Unix time); `None` when the last refresh is not in doubt.
    pub in_doubt_since: Option<f64>,
}

/// How many grants of a provider are in one state: one sample of [`GRANTS`].
#[derive(Debug, Clone, PartialEq)]
pub struct GrantsInState {
    pub provider: String,
    pub state: String,
    pub grants: f64,
}

/// The per-grant gauges of the active `grants` ([`GRANT_REFRESH_EXPIRES_IN`],
/// [`GRANT_REFRESHES_REMAINING`], [`GRANT_CONSENT_EXPIRES_IN`], [`GRANT_IN_DOUBT_SINCE`]),
/// [`GRANTS_IN_DOUBT`] per provider, and [`GRANTS`] per state.
pub fn render_grant_gauges(grants: &[GrantGauges], states: &[GrantsInState]) -> String {
    render_scrape(|| {
        describe_gauge!(
            GRANT_REFRESH_EXPIRES_IN,
            Unit::Seconds,
            "Seconds until an active grant's refresh token expires (negative: expired)."
        );
        describe_gauge!(
            GRANT_REFRESHES_REMAINING,
            "Refreshes an active grant's consent still allows."
        );
        describe_gauge!(
            GRANT_CONSENT_EXPIRES_IN,
            Unit::Seconds,
            "Seconds until an active grant's consent ends (negative: ended); absent when it lasts until revoked."
        );
        describe_gauge!(
            GRANTS_IN_DOUBT,
            "Active grants whose last refresh was sent but its answer never saved: see `partner-sync grants`."
        );
        describe_gauge!(
            GRANT_IN_DOUBT_SINCE,
            Unit::Seconds,
            "Unix time since which an active grant's last refresh is in doubt."
        );
        describe_gauge!(GRANTS, "Grants per provider and state.");
        let mut in_doubt: std::collections::BTreeMap<&str, u32> = Default::default();
        for grant in grants {
            let labels = [
                ("provider", grant.provider.clone()),
                ("grant_id", grant.grant_id.clone()),
                ("label", grant.label.clone()),
            ];
            gauge!(GRANT_REFRESH_EXPIRES_IN, &labels).set(grant.refresh_expires_in);
            gauge!(GRANT_REFRESHES_REMAINING, &labels).set(grant.refreshes_remaining);
            if let Some(seconds) = grant.consent_expires_in {
                gauge!(GRANT_CONSENT_EXPIRES_IN, &labels).set(seconds);
            }
            let count = in_doubt.entry(grant.provider.as_str()).or_default();
            if let Some(since) = grant.in_doubt_since {
                *count += 1;
                gauge!(GRANT_IN_DOUBT_SINCE, &labels).set(since);
            }
        }
        for (provider, count) in in_doubt {
            gauge!(GRANTS_IN_DOUBT, "provider" => provider.to_owned()).set(f64::from(count));
        }
        for state in states {
            gauge!(GRANTS, "provider" => state.provider.clone(), "state" => state.state.clone())
                .set(state.grants);
        }
    })
}
