//! Jobs: one file per job, each a fetch → map → store pass that reports its counts.
//! The [`registry`] decides which jobs the settings enable and on what schedule.

pub mod energyzero_mirror;
pub mod rabobank_rotation;
pub mod rabot_customer_refresh;
pub mod rabot_mirror;

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::rabobank_grants::RabobankGrants;
use crate::rabot_links::RabotLinks;
use crate::settings::Settings;
use crate::store::runs::RunCounts;

/// Stable job names: they appear in `sync.runs.job`, logs, and advisory-lock keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobName {
    RabotMirror,
    RabotLinkMirror,
    RabotCustomerRefresh,
    RabobankTokenRotation,
    EnergyzeroMirror,
}

impl JobName {
    pub const ALL: &[JobName] = &[
        JobName::RabotMirror,
        JobName::RabotLinkMirror,
        JobName::RabotCustomerRefresh,
        JobName::RabobankTokenRotation,
        JobName::EnergyzeroMirror,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobName::RabotMirror => "rabot_mirror",
            JobName::RabotLinkMirror => "rabot_link_mirror",
            JobName::RabotCustomerRefresh => "rabot_customer_refresh",
            JobName::RabobankTokenRotation => "rabobank_token_rotation",
            JobName::EnergyzeroMirror => "energyzero_mirror",
        }
    }

    pub fn parse(name: &str) -> Option<JobName> {
        Self::ALL.iter().copied().find(|job| job.as_str() == name)
    }

    /// Partner names the commands accept for a job, each standing for that partner's
    /// scheduled job (RABOT's link mirror runs only when a link completes, so `rabot` is its
    /// scheduled mirror).
    pub const PARTNER_NAMES: &[(&str, JobName)] = &[
        ("rabot", JobName::RabotMirror),
        ("energyzero", JobName::EnergyzeroMirror),
        ("rabobank", JobName::RabobankTokenRotation),
    ];

    /// A job as an operator names it on the command line: a partner name (see
    /// [`Self::PARTNER_NAMES`]) or a job name.
    pub fn from_cli_name(name: &str) -> Option<JobName> {
        Self::PARTNER_NAMES
            .iter()
            .find(|(partner, _)| *partner == name)
            .map(|&(_, job)| job)
            .or_else(|| Self::parse(name))
    }

    /// Every name [`Self::from_cli_name`] accepts: partner names first, then job names.
    pub fn cli_names() -> impl Iterator<Item = &'static str> {
        Self::PARTNER_NAMES
            .iter()
            .map(|&(partner, _)| partner)
            .chain(Self::ALL.iter().map(|job| job.as_str()))
    }

    /// Jobs that copy partner data on a schedule (SIGUSR1 and a bare `resync` run these).
    pub fn is_mirror(self) -> bool {
        matches!(self, JobName::RabotMirror | JobName::EnergyzeroMirror)
    }

    /// Jobs with a cron schedule; the others run only when an event asks (a completed link, a
    /// customer's refresh requested).
    pub fn is_scheduled(self) -> bool {
        !matches!(
            self,
            JobName::RabotLinkMirror | JobName::RabotCustomerRefresh
        )
    }

    /// Jobs whose every run is one request's own work (the customer it names): such requests
    /// run one by one, never coalesced, and a run waits for the job lock rather than being
    /// skipped while another replica runs the job (that run does other work).
    pub fn serves_one_request_per_run(self) -> bool {
        matches!(self, JobName::RabotCustomerRefresh)
    }

    pub fn partner(self) -> &'static str {
        match self {
            JobName::RabotMirror | JobName::RabotLinkMirror | JobName::RabotCustomerRefresh => {
                "rabot"
            }
            JobName::RabobankTokenRotation => "rabobank",
            JobName::EnergyzeroMirror => "energyzero",
        }
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cancelled by shutdown")]
    Cancelled,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        JobError::Failed(anyhow::Error::new(error).context("database"))
    }
}

/// What a job run gets from its runner.
pub struct RunContext {
    pub run_id: i64,
    pub pool: PgPool,
    /// Cancelled at shutdown: a job stops between batches, never inside one.
    pub cancel: CancellationToken,
    /// Running totals: the runner records them whatever the outcome, the demo shows progress.
    pub counts: watch::Sender<RunCounts>,
    /// The `resync` requests (`sync.trigger_requests` ids) this run answers; empty for runs
    /// nobody requested that way (a schedule, a signal, `sync`).
    pub requests: Vec<uuid::Uuid>,
    /// Set by a run that succeeded although some items failed: the runner records it as the
    /// run's `error` while the status stays `succeeded`.
    pub(crate) partial_failure: std::sync::Mutex<Option<String>>,
}

impl RunContext {
    /// Says, on one line, which items failed in a run that otherwise went on and succeeded.
    pub fn report_partial_failure(&self, summary: String) {
        *self
            .partial_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(summary);
    }

    pub(crate) fn take_partial_failure(&self) -> Option<String> {
        self.partial_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }
}

pub trait Job: Send + Sync {
    fn name(&self) -> JobName;
    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>>;
}

/// Whether the settings enable the job.
pub fn is_enabled(settings: &Settings, job: JobName) -> bool {
    match job {
        JobName::RabotMirror | JobName::RabotLinkMirror | JobName::RabotCustomerRefresh => {
            settings.rabot.enabled
        }
        JobName::RabobankTokenRotation => settings.rabobank.enabled,
        JobName::EnergyzeroMirror => settings.energyzero.enabled,
    }
}

/// The job's cron expression when the settings enable it and it runs on a schedule.
pub fn schedule_of(settings: &Settings, job: JobName) -> Option<String> {
    if !is_enabled(settings, job) {
        return None;
    }
    match job {
        JobName::RabotMirror => Some(settings.rabot.schedule.clone()),
        JobName::RabotLinkMirror | JobName::RabotCustomerRefresh => None,
        JobName::RabobankTokenRotation => Some(settings.rabobank.schedule.clone()),
        JobName::EnergyzeroMirror => Some(settings.energyzero.schedule.clone()),
    }
}

/// A job with the cron expression that triggers it; `None` for a job only events trigger.
#[derive(Clone)]
pub struct ScheduledJob {
    pub job: Arc<dyn Job>,
    pub schedule: Option<String>,
}

/// The jobs the settings enable. `rabobank` is the grant keeper the daemon's callback also
/// uses (present when Rabobank is enabled), so both share one client and rate limit; `rabot`
/// likewise carries the RABOT client that linking uses (present when RABOT is enabled).
pub fn registry(
    settings: &Settings,
    rabobank: Option<&Arc<RabobankGrants>>,
    rabot: Option<&Arc<RabotLinks>>,
) -> anyhow::Result<Vec<ScheduledJob>> {
    let mut jobs = Vec::new();
    if let Some(rabot) = rabot {
        jobs.push(ScheduledJob {
            job: Arc::new(rabot_mirror::RabotMirror::scheduled(
                settings,
                rabot.client().clone(),
            )),
            schedule: Some(settings.rabot.schedule.clone()),
        });
        // Triggered by each completed link, never by the clock: the scheduled mirror catches
        // up links whose trigger was lost (a replica stopped, or the job was busy elsewhere).
        jobs.push(ScheduledJob {
            job: Arc::new(rabot_mirror::RabotMirror::newly_linked(
                settings,
                rabot.client().clone(),
            )),
            schedule: None,
        });
        // Triggered by `resync rabot --customer ID` only.
        jobs.push(ScheduledJob {
            job: Arc::new(rabot_customer_refresh::RabotCustomerRefresh::new(
                settings,
                rabot.client().clone(),
            )),
            schedule: None,
        });
    }
    if let Some(grants) = rabobank {
        jobs.push(ScheduledJob {
            job: Arc::new(rabobank_rotation::RabobankRotation::new(
                settings,
                grants.clone(),
            )),
            schedule: Some(settings.rabobank.schedule.clone()),
        });
    }
    if settings.energyzero.enabled {
        jobs.push(ScheduledJob {
            job: Arc::new(energyzero_mirror::EnergyzeroMirror::new(settings)?),
            schedule: Some(settings.energyzero.schedule.clone()),
        });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_unique_and_snake_case() {
        let names: std::collections::BTreeSet<_> =
            JobName::ALL.iter().map(|j| j.as_str()).collect();
        assert_eq!(names.len(), JobName::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn partner_names_stand_for_their_scheduled_job_and_job_names_for_themselves() {
        assert_eq!(JobName::from_cli_name("rabot"), Some(JobName::RabotMirror));
        assert_eq!(
            JobName::from_cli_name("energyzero"),
            Some(JobName::EnergyzeroMirror)
        );
        assert_eq!(
            JobName::from_cli_name("rabobank"),
            Some(JobName::RabobankTokenRotation)
        );
        for &job in JobName::ALL {
            assert_eq!(JobName::from_cli_name(job.as_str()), Some(job));
        }
        for &(partner, job) in JobName::PARTNER_NAMES {
            assert_eq!(job.partner(), partner);
            assert!(job.is_scheduled());
        }
        assert_eq!(JobName::from_cli_name("Rabot"), None);
        assert_eq!(JobName::from_cli_name(""), None);
        assert_eq!(JobName::cli_names().count(), 8);
    }
}
