//! One runner per job. Triggers that arrive while a job runs coalesce into at most one
//! follow-up run; runs of one job never overlap, in this process (one runner task) or across
//! replicas (a Postgres advisory lock held for the whole run). A tick or signal that finds the
//! job running on another replica is skipped: that run does the same work. A run that answers
//! `resync` requests waits for the lock instead, since the run elsewhere may have read the
//! partner before the request was made. A job whose every run is one request's own work (a
//! customer's refresh) also runs its requests one by one.
//!
//! A configuration reload starts a new dispatcher that succeeds the old one: each new runner
//! waits until the old runner of its job has finished its run in progress, then takes over
//! whatever the old one still had queued (triggers, and the `resync` requests they answer), and
//! from then on the old runner forwards anything that still reaches it. Nothing queued is lost
//! to a reload and the two never run the job at once.

use std::collections::{BTreeMap, BTreeSet};
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
use crate::job::{Job, JobError, RunContext};
use crate::jobs::{JobName, ScheduledJob};
use crate::store::audit::Actor;
use crate::store::drift::Drift;
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
    /// Another replica holds the job's lock (or held it until shutdown, for a job whose runs
    /// wait for it); nothing was run or recorded.
    LockedElsewhere,
}

/// The next run of a job: the cause of the first trigger of a coalesced burst, and every
/// `resync` request the burst carried.
#[derive(Debug, Default)]
struct Pending {
    cause: Option<TriggerCause>,
    requests: Vec<uuid::Uuid>,
}

impl Pending {
    /// This burst, then `later` coalesced into it: the earlier cause stays the recorded one.
    fn merge(self, later: Option<Pending>) -> Pending {
        let Some(later) = later else {
            return self;
        };
        let mut requests = self.requests;
        requests.extend(later.requests);
        Pending {
            cause: self.cause.or(later.cause),
            requests,
        }
    }
}

/// What waits for a runner: the next run, or the runner that took over after a reload.
#[derive(Default)]
struct Queue {
    pending: Option<Pending>,
    successor: Option<Arc<JobRunner>>,
}

pub struct JobRunner {
    name: JobName,
    job: Arc<dyn Job>,
    pool: PgPool,
    /// After shutdown is requested, how long a run may take to reach a batch boundary.
    grace: Duration,
    host: String,
    queue: Mutex<Queue>,
    wake: Notify,
    /// The runner of the same job in the configuration this one replaced.
    predecessor: Mutex<Option<Arc<JobRunner>>>,
    /// Cancelled when this runner's loop has ended: it will start no run any more.
    exited: CancellationToken,
}

impl JobRunner {
    pub fn new(name: JobName, job: Arc<dyn Job>, pool: PgPool, grace: Duration) -> Self {
        Self {
            name,
            job,
            pool,
            grace,
            host: host_id(),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            predecessor: Mutex::new(None),
            exited: CancellationToken::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn job(&self) -> JobName {
        self.name
    }

    fn trigger(&self, trigger: Trigger) {
        let mut queue = self.queue();
        if let Some(successor) = queue.successor.clone() {
            // Retired by a reload (a late scheduler tick, say): the new runner runs it.
            drop(queue);
            successor.trigger(trigger);
            return;
        }
        let pending = queue.pending.get_or_insert_with(Pending::default);
        // The first cause of a coalesced burst is the one recorded.
        pending.cause.get_or_insert(trigger.cause);
        pending.requests.extend(trigger.request);
        self.wake.notify_one();
    }

    /// What the next run answers: everything queued, or for a job that serves one request per
    /// run the first request alone, the rest left queued (and the loop woken again for them).
    fn next_run(&self) -> Option<Pending> {
        let mut queue = self.queue();
        let pending = queue.pending.as_mut()?;
        if self.name.serves_one_request_per_run() && pending.requests.len() > 1 {
            let first = pending.requests.remove(0);
            self.wake.notify_one();
            return Some(Pending {
                cause: pending.cause,
                requests: vec![first],
            });
        }
        queue.pending.take()
    }

    /// Once this runner's loop has ended: hands what is still queued to `successor`, which
    /// also receives every later trigger.
    fn hand_over(&self, successor: &Arc<JobRunner>) -> Option<Pending> {
        let mut queue = self.queue();
        queue.successor = Some(successor.clone());
        queue.pending.take()
    }

    /// Puts a predecessor's queue before this runner's own.
    fn take_over(&self, earlier: Pending) {
        let mut queue = self.queue();
        let merged = earlier.merge(queue.pending.take());
        if merged.cause.is_some() {
            queue.pending = Some(merged);
            self.wake.notify_one();
        }
    }

    /// After a reload: waits until the old runner of this job has ended (its run in progress
    /// included), then takes over its queue. False when shutdown came first.
    async fn succeed_predecessor(self: &Arc<Self>, shutdown: &CancellationToken) -> bool {
        let predecessor = self
            .predecessor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(predecessor) = predecessor else {
            return true;
        };
        tokio::select! {
            _ = predecessor.exited.cancelled() => {}
            _ = shutdown.cancelled() => return false,
        }
        if let Some(pending) = predecessor.hand_over(self) {
            tracing::info!(job = %self.job(), requests = pending.requests.len(), "took over a run queued before the reload");
            self.take_over(pending);
        }
        true
    }

    /// Runs triggered passes until `stop` (no new runs: shutdown or a configuration reload);
    /// never two at once. A run in progress is cancelled only by `shutdown`. A runner that
    /// succeeds another after a reload starts only once that one has ended.
    pub async fn run_loop(self: Arc<Self>, stop: CancellationToken, shutdown: CancellationToken) {
        let _exited = self.exited.clone().drop_guard();
        if !self.succeed_predecessor(&shutdown).await {
            return;
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
            }
            let pending = self.next_run();
            let Some(Pending {
                cause: Some(cause),
                requests,
            }) = pending
            else {
                continue;
            };
            let (counts, _) = watch::channel(RunCounts::default());
            if let Err(error) = self
                .run_for_requests(cause, actor_of(cause), &requests, &shutdown, counts)
                .await
            {
                tracing::error!(job = %self.job(), error = %error, "could not record the run");
            }
        }
    }

    /// One run, start to finish: lock, `sync.runs` row, the job, the final row update.
    /// Callable without the loop (CLI `sync`, demo, tests); `actor` is who asked for it.
    pub async fn run_once(
        &self,
        cause: TriggerCause,
        actor: Actor,
        cancel: &CancellationToken,
        counts: watch::Sender<RunCounts>,
    ) -> Result<RunOutcome, sqlx::Error> {
        self.run_for_requests(cause, actor, &[], cancel, counts)
            .await
    }

    /// [`Self::run_once`], recording the run (or why there was none) on the `resync` requests
    /// it answers.
    async fn run_for_requests(
        &self,
        cause: TriggerCause,
        actor: Actor,
        requests: &[uuid::Uuid],
        cancel: &CancellationToken,
        counts: watch::Sender<RunCounts>,
    ) -> Result<RunOutcome, sqlx::Error> {
        let job = self.name;
        // A run elsewhere does the same work as a scheduled or coalesced one, which can be
        // skipped; a run someone asked for waits its turn, as that run may have started
        // before the request and so not hold what the requester wants to see.
        let (lock, skipped) = if job.serves_one_request_per_run() || !requests.is_empty() {
            let lock = JobLock::acquire_waiting(&self.pool, job, cancel).await?;
            (
                lock,
                "the daemon stopped while another run of the job went on",
            )
        } else {
            let lock = JobLock::try_acquire(&self.pool, job).await?;
            (lock, "another replica was running the job")
        };
        let Some(mut lock) = lock else {
            tracing::info!(%job, reason = skipped, "not running the job");
            trigger_requests::record_skipped(&self.pool, requests, job.as_str(), skipped).await?;
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
            self.execute(run_id, actor, requests, cancel, counts, &mut lock)
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
        actor: Actor,
        requests: &[uuid::Uuid],
        cancel: &CancellationToken,
        counts: watch::Sender<RunCounts>,
        lock: &mut JobLock,
    ) -> Result<RunOutcome, sqlx::Error> {
        tracing::info!("run started");
        let started = std::time::Instant::now();
        let ctx = RunContext {
            job: self.name.as_str(),
            run_id,
            pool: self.pool.clone(),
            cancel: cancel.clone(),
            counts,
            requests: requests.to_vec(),
            actor,
            partial_failure: Default::default(),
            drift: Default::default(),
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
        let drift = ctx.take_drift();
        runs::finish(
            &self.pool,
            run_id,
            status,
            &counts,
            error.as_deref(),
            &drift,
        )
        .await?;
        report_drift(self.name, &drift);
        crate::metrics::run_finished(
            self.name.as_str(),
            status.as_str(),
            started.elapsed(),
            row_metrics(&counts),
        );
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

/// Unknown names already warned about today, so a new name is one warning a day, not one per
/// run (the mirror may run every few minutes). Bounded like a run's drift: at most
/// [`MAX_WARNED_PER_DAY`] names a day are remembered, after which the rest still count in the
/// metric and `sync.runs.drift`.
static WARNED_TODAY: Mutex<WarnedNames> = Mutex::new((None, BTreeSet::new()));
/// The day, and the (partner, place, name) warned about on it.
type WarnedNames = (
    Option<chrono::NaiveDate>,
    BTreeSet<(&'static str, &'static str, String)>,
);
const MAX_WARNED_PER_DAY: usize = 1_000;

/// The drift a run saw: counted by partner and place, and one warning per new name per day.
fn report_drift(job: JobName, drift: &Drift) {
    let today = chrono::Utc::now().date_naive();
    let mut warned = WARNED_TODAY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned.0 != Some(today) {
        *warned = (Some(today), BTreeSet::new());
    }
    for (place, names) in drift.places() {
        crate::metrics::schema_drift(job.partner(), place, names.values().sum());
        for (name, items) in names {
            let key = (job.partner(), place, name.clone());
            if warned.1.len() < MAX_WARNED_PER_DAY && warned.1.insert(key) {
                tracing::warn!(
                    place,
                    name = %name,
                    items,
                    "the partner sent a name the mirror's typed columns do not know; it is kept in raw"
                );
            }
        }
    }
}

/// How often a running job checks that the connection holding its lock is still there.
const LOCK_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often a run that waits for its job's lock tries again.
const LOCK_WAIT_INTERVAL: Duration = Duration::from_millis(250);

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

    /// Waits until the lock is free, trying again every [`LOCK_WAIT_INTERVAL`] (a blocking
    /// `pg_advisory_lock` could not be given up at shutdown); `None` when `cancel` came first.
    async fn acquire_waiting(
        pool: &PgPool,
        job: JobName,
        cancel: &CancellationToken,
    ) -> Result<Option<Self>, sqlx::Error> {
        loop {
            if let Some(lock) = Self::try_acquire(pool, job).await? {
                return Ok(Some(lock));
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(LOCK_WAIT_INTERVAL) => {}
            }
        }
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

/// Who a triggered run acts for: a signal's runs are the signal's, every other trigger the
/// daemon acts on by itself (a schedule, start-up, a link, a claimed request) is the
/// scheduler's. A command's run names its user through [`JobRunner::run_once`].
fn actor_of(cause: TriggerCause) -> Actor {
    match cause {
        TriggerCause::Signal => Actor::Signal,
        _ => Actor::Scheduler,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A run's counts as the row metrics count them.
fn row_metrics(counts: &RunCounts) -> crate::metrics::RunRows {
    crate::metrics::RunRows {
        inserted: counts.inserted,
        updated: counts.updated,
        unchanged: counts.unchanged,
        deleted: counts.deleted,
        skipped: counts.skipped,
        failed: counts.failed,
    }
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
    /// Runners of the replaced configuration whose job this one no longer runs: what they
    /// still have queued when they end is answered as skipped.
    orphans: Arc<Vec<Arc<JobRunner>>>,
}

impl Dispatcher {
    pub fn new(pool: &PgPool, jobs: &[ScheduledJob], grace: Duration) -> Self {
        let runners = jobs
            .iter()
            .map(|s| {
                (
                    s.name,
                    Arc::new(JobRunner::new(s.name, s.job.clone(), pool.clone(), grace)),
                )
            })
            .collect();
        Self {
            runners: Arc::new(runners),
            orphans: Arc::default(),
        }
    }

    /// The dispatcher of a reloaded configuration: its runners take over `previous`'s queues
    /// once `previous`'s runners have ended (see the module notes).
    pub fn succeeding(
        previous: &Dispatcher,
        pool: &PgPool,
        jobs: &[ScheduledJob],
        grace: Duration,
    ) -> Self {
        let mut next = Self::new(pool, jobs, grace);
        let mut orphans = Vec::new();
        for (job, old) in previous.runners.iter() {
            match next.runners.get(job) {
                Some(new) => {
                    *new.predecessor.lock().unwrap_or_else(|e| e.into_inner()) = Some(old.clone());
                }
                None => orphans.push(old.clone()),
            }
        }
        next.orphans = Arc::new(orphans);
        next
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
        for orphan in self.orphans.iter() {
            tracker.spawn(answer_orphaned(orphan.clone(), shutdown.clone()));
        }
    }
}

/// A job the reloaded configuration no longer runs: once its old runner has ended, the
/// `resync` requests still queued there are answered as skipped, so nobody waits for them.
async fn answer_orphaned(runner: Arc<JobRunner>, shutdown: CancellationToken) {
    tokio::select! {
        _ = runner.exited.cancelled() => {}
        _ = shutdown.cancelled() => return,
    }
    let Some(pending) = runner.queue().pending.take() else {
        return;
    };
    let job = runner.job();
    tracing::warn!(%job, "a run queued before the reload is dropped: the new configuration does not enable the job");
    if let Err(error) = trigger_requests::record_skipped(
        &runner.pool,
        &pending.requests,
        job.as_str(),
        "the job was disabled by a configuration reload",
    )
    .await
    {
        tracing::error!(%job, error = %error, "could not record the dropped resync requests");
    }
}
