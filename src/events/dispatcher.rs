//! One runner per job. Triggers that arrive while a job runs coalesce into at most one
//! follow-up run; runs of one job never overlap, in this process (one runner task) or across
//! replicas (a Postgres advisory lock held for the whole run).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Trigger, TriggerCause};
use crate::jobs::{Job, JobError, JobName, RunContext, ScheduledJob};
use crate::store::runs::{self, RunCounts, RunStatus};
use crate::store::trigger_requests;

/// How one call of [`JobRunner::run_once`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Finished {
        run_id: i64,
        status: RunStatus,
        counts: RunCounts,
        error: Option<String>,
    },
    /// Another replica holds the job's lock; nothing was run or recorded.
    LockedElsewhere,
}

/// The next run of a job: the cause of the first trigger of a coalesced burst, and every
/// `resync` request the burst carried.
#[derive(Debug, Default)]
struct Pending {
    cause: Option<TriggerCause>,
    requests: Vec<uuid::Uuid>,
}

pub struct JobRunner {
    job: Arc<dyn Job>,
    pool: PgPool,
    /// After shutdown is requested, how long a run may take to reach a batch boundary.
    grace: Duration,
    host: String,
    pending: Mutex<Option<Pending>>,
    wake: Notify,
}

impl JobRunner {
    pub fn new(job: Arc<dyn Job>, pool: PgPool, grace: Duration) -> Self {
        Self {
            job,
            pool,
            grace,
            host: host_id(),
            pending: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    pub fn job(&self) -> JobName {
        self.job.name()
    }

    fn trigger(&self, trigger: Trigger) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let pending = pending.get_or_insert_with(Pending::default);
        // The first cause of a coalesced burst is the one recorded.
        pending.cause.get_or_insert(trigger.cause);
        pending.requests.extend(trigger.request);
        self.wake.notify_one();
    }

    /// Runs triggered passes until `stop` (no new runs: shutdown or a configuration reload);
    /// never two at once. A run in progress is cancelled only by `shutdown`.
    pub async fn run_loop(self: Arc<Self>, stop: CancellationToken, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
            }
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let Some(Pending {
                cause: Some(cause),
                requests,
            }) = pending
            else {
                continue;
            };
            let (counts, _) = watch::channel(RunCounts::default());
            if let Err(error) = self
                .run_for_requests(cause, &requests, &shutdown, counts)
                .await
            {
                tracing::error!(job = %self.job(), error = %error, "could not record the run");
            }
        }
    }

    /// One run, start to finish: lock, `sync.runs` row, the job, the final row update.
    /// Callable without the loop (CLI `sync`, demo, tests).
    pub async fn run_once(
        &self,
        cause: TriggerCause,
        cancel: &CancellationToken,
        counts: watch::Sender<RunCounts>,
    ) -> Result<RunOutcome, sqlx::Error> {
        self.run_for_requests(cause, &[], cancel, counts).await
    }

    /// [`Self::run_once`], recording the run (or why there was none) on the `resync` requests
    /// it answers.
    async fn run_for_requests(
        &self,
        cause: TriggerCause,
        requests: &[uuid::Uuid],
        cancel: &CancellationToken,
        counts: watch::Sender<RunCounts>,
    ) -> Result<RunOutcome, sqlx::Error> {
        let job = self.job.name();
        let Some(mut lock) = JobLock::try_acquire(&self.pool, job).await? else {
            tracing::info!(%job, "another replica is running this job; skipping");
            trigger_requests::record_skipped(
                &self.pool,
                requests,
                job.as_str(),
                "another replica was running the job",
            )
            .await?;
            return Ok(RunOutcome::LockedElsewhere);
        };
        let outcome = async {
            let abandoned = runs::fail_abandoned(&self.pool, job.as_str()).await?;
            if abandoned > 0 {
                tracing::warn!(%job, abandoned, "marked runs left running by a stopped process as failed");
            }
            let run_id = runs::start(&self.pool, job.as_str(), cause.as_str(), &self.host).await?;
            trigger_requests::record_run(&self.pool, requests, job.as_str(), run_id).await?;
            let span = tracing::info_span!("job_run", %job, run_id, partner = job.partner(), cause = cause.as_str());
            self.execute(run_id, cancel, counts, &mut lock)
                .instrument(span)
                .await
        }
        .await;
        lock.release().await;
        outcome
    }

    async fn execute(
        &self,
        run_id: i64,
        cancel: &CancellationToken,
        counts: watch::Sender<RunCounts>,
        lock: &mut JobLock,
    ) -> Result<RunOutcome, sqlx::Error> {
        tracing::info!("run started");
        let started = std::time::Instant::now();
        let ctx = RunContext {
            run_id,
            pool: self.pool.clone(),
            cancel: cancel.clone(),
            counts,
            partial_failure: Default::default(),
        };
        let hard_stop = async {
            cancel.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        // A bug that panics fails this run, not the runner: later triggers still run the job.
        let work = AssertUnwindSafe(self.job.run(&ctx)).catch_unwind();
        let result = tokio::select! {
            result = work => result.unwrap_or_else(|panic| Err(JobError::Failed(anyhow::anyhow!(
                "the job panicked: {}",
                panic_message(panic.as_ref())
            )))),
            // The lock went with its connection: another replica may start this job now, so
            // this run stops (its open transaction rolls back) rather than overlap with it.
            reason = lock.lost() => Err(JobError::Failed(anyhow::anyhow!(
                "lost the database connection holding the job lock ({reason}); stopped so no other replica overlaps"
            ))),
            // Dropping the job mid-batch rolls its open transaction back: nothing half-written.
            _ = hard_stop => {
                tracing::warn!(grace_s = self.grace.as_secs(), "run did not stop within the grace period; abandoning it");
                Err(JobError::Cancelled)
            }
        };
        let counts = *ctx.counts.borrow();
        let (status, error) = match &result {
            // Items that failed within a run that went on are the run's error text; it
            // still succeeded.
            Ok(()) => (RunStatus::Succeeded, ctx.take_partial_failure()),
            Err(JobError::Cancelled) => (
                RunStatus::Cancelled,
                Some("cancelled by shutdown".to_owned()),
            ),
            Err(JobError::Failed(e)) => (RunStatus::Failed, Some(format!("{e:#}"))),
        };
        runs::finish(&self.pool, run_id, status, &counts, error.as_deref()).await?;
        crate::metrics::run_finished(self.job.name().as_str(), status, started.elapsed(), &counts);
        match &error {
            Some(error) if status == RunStatus::Succeeded => tracing::warn!(
                failed = counts.failed,
                %error,
                "run succeeded, but some items failed"
            ),
            None => tracing::info!(
                pages = counts.pages,
                requests = counts.requests,
                fetched = counts.fetched,
                inserted = counts.inserted,
                updated = counts.updated,
                unchanged = counts.unchanged,
                deleted = counts.deleted,
                skipped = counts.skipped,
                failed = counts.failed,
                "run succeeded"
            ),
            Some(error) if status == RunStatus::Cancelled => {
                tracing::warn!(%error, "run cancelled")
            }
            Some(error) => tracing::error!(%error, "run failed"),
        }
        Ok(RunOutcome::Finished {
            run_id,
            status,
            counts,
            error,
        })
    }
}

/// How often a running job checks that the connection holding its lock is still there.
const LOCK_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A session-level advisory lock on a dedicated pooled connection, keyed by the job name.
struct JobLock {
    conn: Option<PoolConnection<sqlx::Postgres>>,
    job: JobName,
}

impl JobLock {
    async fn try_acquire(pool: &PgPool, job: JobName) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(job.as_str())
                .fetch_one(&mut *conn)
                .await?;
        Ok(locked.then_some(Self {
            conn: Some(conn),
            job,
        }))
    }

    /// Resolves when the lock's connection stops answering: the session, and the lock with
    /// it, is gone. Checked every few seconds while the run goes on.
    async fn lost(&mut self) -> String {
        let Some(conn) = self.conn.as_mut() else {
            return "no lock connection".to_owned();
        };
        loop {
            tokio::time::sleep(LOCK_CHECK_INTERVAL).await;
            let alive = tokio::time::timeout(
                LOCK_CHECK_INTERVAL,
                sqlx::query("SELECT 1").execute(&mut **conn),
            )
            .await;
            match alive {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return error.to_string(),
                Err(_) => return "no answer in time".to_owned(),
            }
        }
    }

    async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked =
            sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(self.job.as_str())
                .fetch_one(&mut *conn)
                .await;
        if !matches!(unlocked, Ok(true)) {
            tracing::warn!(job = %self.job, "could not release the job lock; closing its connection");
            let _ = conn.close().await;
        }
    }
}

impl Drop for JobLock {
    /// A lock dropped without `release` (its run was abandoned) must not go back to the pool
    /// still held: closing the session is the one sure way to release a session lock.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Identifies this process in `sync.runs.host`, so ops can tell replicas apart.
pub fn host_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Routes triggers to the runners.
#[derive(Clone)]
pub struct Dispatcher {
    runners: Arc<BTreeMap<JobName, Arc<JobRunner>>>,
}

impl Dispatcher {
    pub fn new(pool: &PgPool, jobs: &[ScheduledJob], grace: Duration) -> Self {
        let runners = jobs
            .iter()
            .map(|s| {
                (
                    s.job.name(),
                    Arc::new(JobRunner::new(s.job.clone(), pool.clone(), grace)),
                )
            })
            .collect();
        Self {
            runners: Arc::new(runners),
        }
    }

    pub fn jobs(&self) -> impl Iterator<Item = JobName> + '_ {
        self.runners.keys().copied()
    }

    pub fn dispatch(&self, trigger: Trigger) {
        match self.runners.get(&trigger.job) {
            Some(runner) => {
                tracing::debug!(job = %trigger.job, cause = trigger.cause.as_str(), "trigger");
                runner.trigger(trigger);
            }
            None => {
                tracing::warn!(job = %trigger.job, "trigger for a job that is not enabled; ignored")
            }
        }
    }

    pub fn has(&self, job: JobName) -> bool {
        self.runners.contains_key(&job)
    }

    /// One task per runner; `stop` ends the loops (no new runs), `shutdown` also cancels runs.
    pub fn spawn_runners(
        &self,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        for runner in self.runners.values() {
            tracker.spawn(runner.clone().run_loop(stop.clone(), shutdown.clone()));
        }
    }
}
