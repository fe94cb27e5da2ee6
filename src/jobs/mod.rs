//! Jobs: one file per job, each a fetch → map → store pass that reports its counts.
//! The [`registry`] decides which jobs the settings enable and on what schedule.

pub mod energyzero_mirror;
pub mod rabobank_rotation;
pub mod rabot_mirror;

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::grants::RabobankGrants;
use crate::settings::Settings;
use crate::store::runs::RunCounts;

/// Stable job names: they appear in `sync.runs.job`, logs, and advisory-lock keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobName {
    RabotMirror,
    RabobankTokenRotation,
    EnergyzeroMirror,
}

impl JobName {
    pub const ALL: &[JobName] = &[
        JobName::RabotMirror,
        JobName::RabobankTokenRotation,
        JobName::EnergyzeroMirror,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobName::RabotMirror => "rabot_mirror",
            JobName::RabobankTokenRotation => "rabobank_token_rotation",
            JobName::EnergyzeroMirror => "energyzero_mirror",
        }
    }

    pub fn parse(name: &str) -> Option<JobName> {
        Self::ALL.iter().copied().find(|job| job.as_str() == name)
    }

    /// Jobs that copy partner data (SIGUSR1 and a bare `resync` run these).
    pub fn is_mirror(self) -> bool {
        matches!(self, JobName::RabotMirror | JobName::EnergyzeroMirror)
    }

    pub fn partner(self) -> &'static str {
        match self {
            JobName::RabotMirror => "rabot",
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

/// The job's cron expression when the settings enable it.
pub fn schedule_of(settings: &Settings, job: JobName) -> Option<String> {
    match job {
        JobName::RabotMirror => settings
            .rabot
            .enabled
            .then(|| settings.rabot.schedule.clone()),
        JobName::RabobankTokenRotation => settings
            .rabobank
            .enabled
            .then(|| settings.rabobank.schedule.clone()),
        JobName::EnergyzeroMirror => settings
            .energyzero
            .enabled
            .then(|| settings.energyzero.schedule.clone()),
    }
}

/// A job with the cron expression that triggers it.
#[derive(Clone)]
pub struct ScheduledJob {
    pub job: Arc<dyn Job>,
    pub schedule: String,
}

/// The jobs the settings enable. `rabobank` is the grant keeper the daemon's callback also
/// uses (present when Rabobank is enabled), so both share one client and rate limit.
pub fn registry(
    settings: &Settings,
    rabobank: Option<&Arc<RabobankGrants>>,
) -> anyhow::Result<Vec<ScheduledJob>> {
    let mut jobs = Vec::new();
    if settings.rabot.enabled {
        jobs.push(ScheduledJob {
            job: Arc::new(rabot_mirror::RabotMirror::new(settings)?),
            schedule: settings.rabot.schedule.clone(),
        });
    }
    if let Some(grants) = rabobank {
        jobs.push(ScheduledJob {
            job: Arc::new(rabobank_rotation::RabobankRotation::new(
                settings,
                grants.clone(),
            )),
            schedule: settings.rabobank.schedule.clone(),
        });
    }
    if settings.energyzero.enabled {
        jobs.push(ScheduledJob {
            job: Arc::new(energyzero_mirror::EnergyzeroMirror::new(settings)?),
            schedule: settings.energyzero.schedule.clone(),
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
}
