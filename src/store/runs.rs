//! `sync.runs`: one row per job run.

use sqlx::PgPool;

/// What a run did, as recorded in `sync.runs` and printed by the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub pages: i32,
    pub requests: i64,
    pub fetched: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub skipped: i64,
    /// Items that could not be processed (e.g. grants that failed to rotate).
    pub failed: i64,
}

impl RunCounts {
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

pub async fn finish(
    pool: &PgPool,
    run_id: i64,
    status: RunStatus,
    counts: &RunCounts,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync.runs SET status = $2, finished_at = now(), pages = $3, requests = $4,
                fetched = $5, inserted = $6, updated = $7, unchanged = $8, deleted = $9,
                skipped = $10, failed = $11, error = $12
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
    .execute(pool)
    .await?;
    Ok(())
}

/// A run still `running` after longer than expected.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StuckRun {
    pub id: i64,
    pub job: String,
    pub running_s: f64,
}

/// Runs that have been `running` for longer than `older_than`, oldest first (at most 10).
pub async fn stuck(
    pool: &PgPool,
    older_than: std::time::Duration,
) -> Result<Vec<StuckRun>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job, extract(epoch FROM now() - started_at)::float8 AS running_s
           FROM sync.runs
          WHERE status = 'running' AND started_at < now() - make_interval(secs => $1)
          ORDER BY started_at LIMIT 10",
    )
    .bind(older_than.as_secs_f64())
    .fetch_all(pool)
    .await
}
