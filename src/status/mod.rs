//! `partner-sync status`: what ops want at a glance — per partner, each job's last run, next
//! run and freshness, Rabobank's grants, and recent failures — as tables or as JSON for
//! scripts. The tables of `links` and `grants` are rendered here too.
//!
//! Table cells hold text from outside (partners' error bodies, redirect parameters a browser
//! sent, consent ids): every such cell goes through [`printable`], so none can move the cursor,
//! recolour the terminal or start a line that looks like ours. JSON output needs no such care:
//! serde escapes control characters.

pub mod progress;
mod render;
mod table;

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::PgPool;

pub use render::{printable, render_audit, render_grants, render_links, thousands};
pub use table::colour_wanted;

use crate::cron::{next_occurrence, parse_cron};
use crate::freshness::{self, Freshness, Policy};
use crate::jobs::JobName;
use crate::partners::rabobank::grant_store::{self, GrantSummary};
use crate::settings::Settings;
use crate::store::drift::{self, SeenDrift};
use crate::store::runs::{self, RunRow};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub jobs: Vec<JobStatus>,
    pub grants: Vec<GrantSummary>,
    pub recent_failures: Vec<RunRow>,
    /// Names the partners sent in the last [`DRIFT_WINDOW`] that the typed columns do not know.
    pub drift: Vec<SeenDrift>,
    /// The clock the report's "days left" are counted from.
    pub generated_at: DateTime<Utc>,
    /// `daemon.timezone`: the zone schedules are read in and the table shows times in (the
    /// JSON's times stay UTC).
    #[serde(serialize_with = "zone_name")]
    pub timezone: Tz,
    /// How long a Rabobank consent lasts from `consented_on` (`rabobank.variant`).
    #[serde(skip)]
    pub consent_lifetime: Option<Duration>,
}

#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub job: &'static str,
    pub enabled: bool,
    pub schedule: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<RunRow>,
    pub freshness: JobFreshness,
}

/// A job's [`Freshness`] with its verdict, as `status --json` shows it.
#[derive(Debug, Serialize)]
pub struct JobFreshness {
    #[serde(flatten)]
    pub facts: Freshness,
    /// `null` for a job that is off or has no schedule.
    pub stale: Option<bool>,
    pub stale_since: Option<DateTime<Utc>>,
}

impl From<Freshness> for JobFreshness {
    fn from(facts: Freshness) -> Self {
        Self {
            stale: facts.stale(),
            stale_since: facts.stale_since(),
            facts,
        }
    }
}

const RECENT_FAILURES: i64 = 5;
/// How far back `status` looks for schema drift.
pub const DRIFT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// The report of the jobs in `only` (every job when it is empty): their rows and their recent
/// failures; the grants are listed whichever jobs are asked for.
pub async fn report(
    pool: &PgPool,
    settings: &Settings,
    only: &[JobName],
) -> Result<StatusReport, sqlx::Error> {
    let latest = runs::latest_per_job(pool).await?;
    let now = Utc::now();
    let selected: Vec<JobName> = JobName::all()
        .filter(|job| only.is_empty() || only.contains(job))
        .collect();
    let policies: Vec<Policy> = selected
        .iter()
        .map(|&job| Policy::of(settings, job))
        .collect();
    let freshness = freshness::read(pool, &policies).await?;
    let jobs = selected
        .iter()
        .zip(freshness)
        .map(|(&job, freshness)| {
            let schedule = crate::jobs::schedule_of(settings, job);
            JobStatus {
                job: job.as_str(),
                enabled: crate::jobs::is_enabled(settings, job),
                next_run_at: schedule.as_deref().and_then(|expression| {
                    next_occurrence(&parse_cron(expression).ok()?, settings.daemon.timezone, now)
                }),
                schedule,
                last_run: latest.iter().find(|r| r.job == job.as_str()).cloned(),
                freshness: freshness.into(),
            }
        })
        .collect();
    let only_names: Vec<&str> = only.iter().map(|j| j.as_str()).collect();
    let mut drift = drift::seen_since(pool, now - DRIFT_WINDOW).await?;
    drift.retain(|seen| selected.iter().any(|job| job.as_str() == seen.job));
    Ok(StatusReport {
        jobs,
        drift,
        grants: grant_store::list(pool).await?,
        recent_failures: runs::recent_failures(pool, &only_names, RECENT_FAILURES).await?,
        generated_at: now,
        timezone: settings.daemon.timezone,
        consent_lifetime: settings.rabobank.variant.consent_lifetime(),
    })
}

fn zone_name<S: serde::Serializer>(zone: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(zone.name())
}
