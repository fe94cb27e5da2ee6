//! `sync.trigger_requests`: resync requests sent through NOTIFY. A replica claims a request's
//! job with one conditional UPDATE, so exactly one replica runs it; the run that answers it is
//! recorded for `resync --wait`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, Actor, Entry};

/// The Postgres NOTIFY channel every daemon listens on.
pub const CHANNEL: &str = "partner_sync";

/// Stores one row per job and notifies every listening daemon, in one transaction (NOTIFY is
/// delivered at commit, after the rows are visible). `customer` is the one customer a targeted
/// refresh names (see [`customer_of`]). The request is audited (`actor` made it) in the same
/// transaction: its subject is the customer, else the request's id.
pub async fn request(
    pool: &PgPool,
    id: Uuid,
    jobs: &[&str],
    requested_by: &str,
    customer: Option<&str>,
    actor: &Actor,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO sync.trigger_requests (id, job, requested_by, customer)
         SELECT $1, job, $3, $4 FROM unnest($2::text[]) AS job",
    )
    .bind(id)
    .bind(jobs)
    .bind(requested_by)
    .bind(customer)
    .execute(&mut *tx)
    .await?;
    let entry = Entry::new(actor, "resync.requested")
        .subject(customer.map_or_else(|| id.to_string(), str::to_owned))
        .detail(serde_json::json!({
            "request_id": id,
            "jobs": jobs,
            "customer": customer,
            "host": requested_by,
        }));
    audit::record(&mut *tx, &entry).await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Claims the request's rows for the jobs this replica runs; returns the jobs claimed.
pub async fn claim(
    pool: &PgPool,
    id: Uuid,
    jobs: &[&str],
    host: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE sync.trigger_requests SET claimed_by = $3, claimed_at = now()
          WHERE id = $1 AND job = ANY($2) AND claimed_by IS NULL
          RETURNING job",
    )
    .bind(id)
    .bind(jobs)
    .bind(host)
    .fetch_all(pool)
    .await
}

/// Requests nobody claimed in the last `within` (sent while no daemon was listening, or while
/// a listener was reconnecting).
pub async fn unclaimed(pool: &PgPool, within: Duration) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT id FROM sync.trigger_requests
          WHERE claimed_by IS NULL AND requested_at > now() - make_interval(secs => $1)",
    )
    .bind(within.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// The customer request `id` names for `job`; `None` when the row names none (or is gone).
pub async fn customer_of(
    pool: &PgPool,
    id: Uuid,
    job: &str,
) -> Result<Option<String>, sqlx::Error> {
    let customer: Option<Option<String>> =
        sqlx::query_scalar("SELECT customer FROM sync.trigger_requests WHERE id = $1 AND job = $2")
            .bind(id)
            .bind(job)
            .fetch_optional(pool)
            .await?;
    Ok(customer.flatten())
}

pub async fn record_run(
    pool: &PgPool,
    ids: &[Uuid],
    job: &str,
    run_id: i64,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE sync.trigger_requests SET run_id = $3 WHERE id = ANY($1) AND job = $2")
        .bind(ids)
        .bind(job)
        .bind(run_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn record_skipped(
    pool: &PgPool,
    ids: &[Uuid],
    job: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE sync.trigger_requests SET skipped = $3 WHERE id = ANY($1) AND job = $2")
        .bind(ids)
        .bind(job)
        .bind(reason)
        .execute(pool)
        .await?;
    Ok(())
}

/// A request's row as `resync --wait` follows it.
#[derive(Debug, sqlx::FromRow)]
pub struct RequestState {
    pub job: String,
    pub claimed_by: Option<String>,
    pub skipped: Option<String>,
    pub run_id: Option<i64>,
    pub run_status: Option<String>,
    pub run_finished_at: Option<DateTime<Utc>>,
}

pub async fn state(pool: &PgPool, id: Uuid) -> Result<Vec<RequestState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.job, r.claimed_by, r.skipped, r.run_id, u.status AS run_status,
                u.finished_at AS run_finished_at
           FROM sync.trigger_requests r LEFT JOIN sync.runs u ON u.id = r.run_id
          WHERE r.id = $1 ORDER BY r.job",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
