//! `sync.runs`: one row per job run.

use sqlx::PgPool;

use crate::http::RequestTally;
use crate::store::drift::Drift;

/// What a run did, as recorded in `sync.runs` and printed by the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub pages: i32,
    pub requests: i64,
    /// Requests the partner answered with 429 (each was retried or counted as failed).
    pub throttled: i64,
    pub fetched: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub skipped: i64,
    /// Items that could not be processed (e.g. grants that failed to rotate).
    pub failed: i64,
    /// Not recorded: how much the run expects is left, for a progress display; `None` until
    /// the run knows.
    pub remaining: Option<Remaining>,
}

/// What a run has left, by its own estimate: `done` of `total` items (`what` names them), and
/// the time the requests still to send take at the client's rate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub what: &'static str,
    pub done: i64,
    pub total: i64,
    pub time_left: std::time::Duration,
}

impl Remaining {
    /// `done` of `total` items after `requests` requests: each item left is taken to need as
    /// many as the done ones did on average (one, before any is done), sent at `rate` per
    /// second.
    pub fn at_rate(what: &'static str, done: i64, total: i64, requests: i64, rate: f64) -> Self {
        let per_item = if done > 0 {
            requests as f64 / done as f64
        } else {
            1.0
        };
        let left = (total - done).max(0) as f64 * per_item;
        let seconds = if rate > 0.0 { left / rate } else { 0.0 };
        Remaining {
            what,
            done,
            total: total.max(done),
            time_left: std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default(),
        }
    }
}

impl RunCounts {
    /// "40 requests, throttled 3, fetched 60, inserted 2, …" (throttled: answered 429), the
    /// zero counts after the requests left out: the words of a pass's last line at a terminal
    /// and of `resync --wait`.
    pub fn summary(&self) -> String {
        let named = [
            ("throttled", self.throttled),
            ("fetched", self.fetched),
            ("inserted", self.inserted),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("deleted", self.deleted),
            ("skipped", self.skipped),
            ("failed", self.failed),
        ];
        let mut parts = vec![format!("{} requests", self.requests)];
        parts.extend(
            named
                .iter()
                .filter(|(_, n)| *n != 0)
                .map(|(name, n)| format!("{name} {n}")),
        );
        parts.join(", ")
    }

    /// The run's share of its client's requests (the tally now since the one at its start).
    pub fn set_requests(&mut self, run: RequestTally) {
        self.requests = run.sent as i64;
        self.throttled = run.throttled as i64;
    }

    /// After `done` of `total` items: the run's requests, and the time left at `rate`.
    pub fn set_progress(
        &mut self,
        what: &'static str,
        done: i64,
        total: i64,
        run: RequestTally,
        rate: f64,
    ) {
        self.set_requests(run);
        self.remaining = Some(Remaining::at_rate(what, done, total, self.requests, rate));
    }

    pub fn add_upsert(&mut self, upsert: UpsertCounts) {
        self.inserted += upsert.inserted;
        self.updated += upsert.updated;
        self.unchanged += upsert.unchanged;
    }
}

/// The outcome of one batched upsert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

pub async fn start(pool: &PgPool, job: &str, cause: &str, host: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO sync.runs (job, cause, host) VALUES ($1, $2, $3) RETURNING id")
        .bind(job)
        .bind(cause)
        .bind(host)
        .fetch_one(pool)
        .await
}

/// Marks as failed the job's runs still recorded as running. Called while holding the job's
/// lock: no live process can be running them, so their process died (killed, or cut off from
/// the database) before it could record an ending.
pub async fn fail_abandoned(pool: &PgPool, job: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sync.runs SET status = 'failed', finished_at = now(),
                error = 'abandoned: its process stopped before recording an ending'
          WHERE job = $1 AND status = 'running'",
    )
    .bind(job)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub async fn finish(
    pool: &PgPool,
    run_id: i64,
    status: RunStatus,
    counts: &RunCounts,
    error: Option<&str>,
    drift: &Drift,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync.runs SET status = $2, finished_at = now(), pages = $3, requests = $4,
                fetched = $5, inserted = $6, updated = $7, unchanged = $8, deleted = $9,
                skipped = $10, failed = $11, error = $12, drift = $13, throttled = $14
          WHERE id = $1",
    )
    .bind(run_id)
    .bind(status.as_str())
    .bind(counts.pages)
    .bind(counts.requests)
    .bind(counts.fetched)
    .bind(counts.inserted)
    .bind(counts.updated)
    .bind(counts.unchanged)
    .bind(counts.deleted)
    .bind(counts.skipped)
    .bind(counts.failed)
    .bind(error)
    .bind(drift.to_json())
    .bind(counts.throttled)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records why one item (a user, a grant) failed within run `run_id`; the run may still succeed.
pub async fn record_failure(
    pool: &PgPool,
    run_id: i64,
    item: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync.run_failures (run_id, item, error) VALUES ($1, $2, $3)
         ON CONFLICT (run_id, item) DO UPDATE SET error = EXCLUDED.error",
    )
    .bind(run_id)
    .bind(item)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// A `sync.runs` row as `status` and `resync --wait` show it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub cause: String,
    pub status: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub pages: i32,
    pub requests: i64,
    pub throttled: i64,
    pub fetched: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub skipped: i64,
    pub failed: i64,
    pub error: Option<String>,
    pub host: String,
}

impl RunRow {
    pub fn duration(&self) -> Option<std::time::Duration> {
        (self.finished_at? - self.started_at).to_std().ok()
    }

    /// The counts as the run recorded them.
    pub fn counts(&self) -> RunCounts {
        RunCounts {
            pages: self.pages,
            requests: self.requests,
            throttled: self.throttled,
            fetched: self.fetched,
            inserted: self.inserted,
            updated: self.updated,
            unchanged: self.unchanged,
            deleted: self.deleted,
            skipped: self.skipped,
            failed: self.failed,
            remaining: None,
        }
    }
}

const RUN_COLUMNS: &str = "id, job, cause, status, started_at, finished_at, pages, requests,
    throttled, fetched, inserted, updated, unchanged, deleted, skipped, failed, error, host";

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM sync.runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The latest run of each job.
pub async fn latest_per_job(pool: &PgPool) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT DISTINCT ON (job) {RUN_COLUMNS} FROM sync.runs ORDER BY job, started_at DESC, id DESC"
    ))
    .fetch_all(pool)
    .await
}

/// The latest `limit` failed runs of the jobs named in `jobs`, or of every job when it is empty.
pub async fn recent_failures(
    pool: &PgPool,
    jobs: &[&str],
    limit: i64,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM sync.runs
          WHERE status = 'failed' AND (cardinality($2::text[]) = 0 OR job = ANY($2))
          ORDER BY started_at DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .bind(jobs)
    .fetch_all(pool)
    .await
}

/// A run still `running` after longer than expected.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StuckRun {
    pub id: i64,
    pub job: String,
    pub running_s: f64,
}

/// Runs that have been `running` for longer than `older_than` while their job's lock is held,
/// oldest first (at most 10). A `running` row whose lock is free belongs to a process that died:
/// it is abandoned, not stuck, and the job's next run marks it failed; it must not make every
/// replica unready meanwhile.
pub async fn stuck(
    pool: &PgPool,
    older_than: std::time::Duration,
) -> Result<Vec<StuckRun>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job, extract(epoch FROM now() - started_at)::float8 AS running_s
           FROM sync.runs r
          WHERE status = 'running' AND started_at < now() - make_interval(secs => $1)
            AND EXISTS (
                SELECT 1 FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(r.job, 0))
          ORDER BY started_at LIMIT 10",
    )
    .bind(older_than.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// What `sync.runs` says about how recent a job's data is.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecency {
    pub job: String,
    /// When the job's last complete pass ended: status `succeeded` and no partial failure
    /// recorded (`error` IS NULL). `None` when it never had one.
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds from then to now, by the database's clock.
    pub last_success_age_s: Option<f64>,
    /// Failed runs since the job's last `succeeded` run (partial successes included), or since
    /// its first run when none succeeded; cancelled and running ones are not counted.
    pub consecutive_failures: i64,
}

/// [`JobRecency`] of each job in `jobs`, in that order (a job with no run at all too). Each
/// lookup walks the `(job, started_at)` index backwards from the newest run, so the scrape
/// stays cheap however long the history grows. Runs of one job never overlap (its lock), so
/// the latest by start is the latest by end.
pub async fn recency(pool: &PgPool, jobs: &[&str]) -> Result<Vec<JobRecency>, sqlx::Error> {
    sqlx::query_as(
        "SELECT j.job, complete.finished_at AS last_success_at,
                extract(epoch FROM now() - complete.finished_at)::float8 AS last_success_age_s,
                (SELECT count(*) FROM sync.runs f
                  WHERE f.job = j.job AND f.status = 'failed'
                    AND (f.started_at, f.id) > (COALESCE(ok.started_at, '-infinity'),
                                                COALESCE(ok.id, 0))) AS consecutive_failures
           FROM unnest($1::text[]) WITH ORDINALITY AS j(job, position)
           LEFT JOIN LATERAL (
                SELECT finished_at FROM sync.runs r
                 WHERE r.job = j.job AND r.status = 'succeeded' AND r.error IS NULL
                 ORDER BY r.started_at DESC, r.id DESC LIMIT 1) complete ON true
           LEFT JOIN LATERAL (
                SELECT started_at, id FROM sync.runs r
                 WHERE r.job = j.job AND r.status = 'succeeded'
                 ORDER BY r.started_at DESC, r.id DESC LIMIT 1) ok ON true
          ORDER BY j.position",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_left_assumes_the_requests_per_item_seen_so_far() {
        // 100 items took 250 requests: 900 left need 2,250 more, at 5 per second.
        let r = Remaining::at_rate("customers", 100, 1000, 250, 5.0);
        assert_eq!(r.time_left, Duration::from_secs(450));
        // Before any item is done, one request each.
        let r = Remaining::at_rate("contracts", 0, 20, 3, 10.0);
        assert_eq!(r.time_left, Duration::from_secs(2));
    }

    #[test]
    fn an_estimate_never_runs_past_its_end_or_divides_by_no_rate() {
        // More done than the partner said there were: nothing left, and the total follows.
        let r = Remaining::at_rate("customers", 12, 10, 12, 10.0);
        assert_eq!((r.total, r.time_left), (12, Duration::ZERO));
        let r = Remaining::at_rate("customers", 1, 10, 1, 0.0);
        assert_eq!(r.time_left, Duration::ZERO);
    }

    #[test]
    fn a_runs_requests_are_its_share_of_the_clients() {
        let mut counts = RunCounts::default();
        let start = RequestTally {
            sent: 40,
            throttled: 2,
        };
        let now = RequestTally {
            sent: 95,
            throttled: 7,
        };
        counts.set_requests(now.since(start));
        assert_eq!((counts.requests, counts.throttled), (55, 5));
        assert_eq!(counts.summary(), "55 requests, throttled 5");
    }
}
