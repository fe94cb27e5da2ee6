//! `sync.schedule_ticks`: one row per cron occurrence a replica took. Every replica's scheduler
//! fires; the first to insert the occurrence runs it, so each occurrence runs once across
//! replicas, even when a run ends before another replica's scheduler fires. The key is the
//! occurrence the schedule names (computed by the caller), never a replica's clock, so clocks
//! that disagree still agree on it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Takes `occurrence` of `job` for this replica; false when another replica took it first.
pub async fn claim(
    pool: &PgPool,
    job: &str,
    occurrence: DateTime<Utc>,
    host: &str,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "INSERT INTO sync.schedule_ticks (job, tick_at, claimed_by) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(job)
    .bind(occurrence)
    .bind(host)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        // Occurrences older than a day decide nothing any more.
        sqlx::query(
            "DELETE FROM sync.schedule_ticks WHERE job = $1 AND tick_at < now() - interval '1 day'",
        )
        .bind(job)
        .execute(pool)
        .await?;
    }
    Ok(claimed)
}
