//! What a job is to the runner that runs it: the [`Job`] trait, and what one run gets
//! ([`RunContext`]). Each partner's jobs implement it in their partner's folder; which jobs
//! exist, their names and how each is built, is the table in `jobs`.

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http::RateBudget;
use crate::store::drift::Drift;
use crate::store::runs::RunCounts;

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
    /// The job's stable name, as `sync.runs.job` records it.
    pub job: &'static str,
    pub run_id: i64,
    pub pool: PgPool,
    /// Cancelled at shutdown: a job stops between batches, never inside one.
    pub cancel: CancellationToken,
    /// Running totals: the runner records them whatever the outcome, the demo shows progress.
    pub counts: watch::Sender<RunCounts>,
    /// The `resync` requests (`sync.trigger_requests` ids) this run answers; empty for runs
    /// nobody requested that way (a schedule, a signal, `sync`).
    pub requests: Vec<uuid::Uuid>,
    /// Who caused the run (the scheduler, a signal, a command's user): audited changes the
    /// run makes are recorded under this name.
    pub actor: crate::store::audit::Actor,
    /// Set by a run that succeeded although some items failed: the runner records it as the
    /// run's `error` while the status stays `succeeded`.
    pub(crate) partial_failure: std::sync::Mutex<Option<String>>,
    /// Names in the partner's answers the typed columns do not know; the runner records them
    /// with the run.
    pub(crate) drift: std::sync::Mutex<Drift>,
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

    /// Adds what `note` finds to the run's schema drift.
    pub fn note_drift(&self, note: impl FnOnce(&mut Drift)) {
        note(
            &mut self
                .drift
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    pub(crate) fn take_drift(&self) -> Drift {
        std::mem::take(
            &mut *self
                .drift
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A job's runner. It does not know its own name: the job table pairs them, and the context
/// of each run carries it.
pub trait Job: Send + Sync {
    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>>;

    /// The partner rate limit the job's requests go through, which replicas divide between
    /// them; `None` for a job that calls no partner.
    fn rate_budget(&self) -> Option<RateBudget> {
        None
    }
}
