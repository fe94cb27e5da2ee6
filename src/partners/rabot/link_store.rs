//! `sync.customer_links`: customer links from creation to their one ending (linked or denied),
//! and later unlinking. Every ending is a single conditional `UPDATE … RETURNING`, so a replayed
//! or concurrent redirect changes nothing. The success and failure redirects each have their own
//! secret (stored as SHA-256): a secret only ever finds its link through its own column.
//! `sync.link_refusals` keeps the success redirects RABOT did not confirm.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

pub const PARTNER_RABOT: &str = "rabot";

/// What a new link records.
pub struct NewLink<'a> {
    pub id: Uuid,
    pub success_hash: &'a [u8],
    pub failure_hash: &'a [u8],
    pub external_id: &'a str,
    pub auth_as: Option<&'a str>,
    pub sign_up_url: Option<&'a str>,
    pub authorization_url: &'a str,
    pub lifetime: Duration,
}

/// A link as ops see it (`partner-sync links`); nothing secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LinkRow {
    pub id: Uuid,
    /// `pending` past its expiry reads as `expired`.
    pub status: String,
    pub external_id: String,
    pub auth_as: Option<String>,
    pub customer_number: Option<String>,
    pub error_name: Option<String>,
    pub error_description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub mirrored_at: Option<DateTime<Utc>>,
    pub unlinked_at: Option<DateTime<Utc>>,
}

const LINK_COLUMNS: &str = "id,
    CASE WHEN status = 'pending' AND expires_at <= now() THEN 'expired' ELSE status END AS status,
    external_id, auth_as, customer_number, error_name, error_description, created_at, expires_at,
    completed_at, mirrored_at, unlinked_at";

pub async fn insert<'e>(
    executor: impl PgExecutor<'e>,
    link: &NewLink<'_>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO sync.customer_links
             (id, success_hash, failure_hash, partner, external_id, auth_as, sign_up_url,
              authorization_url, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
         RETURNING expires_at",
    )
    .bind(link.id)
    .bind(link.success_hash)
    .bind(link.failure_hash)
    .bind(PARTNER_RABOT)
    .bind(link.external_id)
    .bind(link.auth_as)
    .bind(link.sign_up_url)
    .bind(link.authorization_url)
    .bind(link.lifetime.as_secs_f64())
    .fetch_one(executor)
    .await
}

/// Which redirect a secret arrived on; each has its own stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    Success,
    Failure,
}

impl Redirect {
    /// The column holding this redirect's hash (a fixed name, never a value).
    fn hash_column(self) -> &'static str {
        match self {
            Redirect::Success => "success_hash",
            Redirect::Failure => "failure_hash",
        }
    }
}

/// A link still waiting for the customer, found by its success secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingLink {
    pub id: Uuid,
    pub external_id: String,
}

/// The pending, unexpired link whose success secret hashes to `success_hash`.
pub async fn pending_by_success(
    pool: &PgPool,
    success_hash: &[u8],
) -> Result<Option<PendingLink>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, external_id FROM sync.customer_links
          WHERE success_hash = $1 AND status = 'pending' AND expires_at > now()",
    )
    .bind(success_hash)
    .fetch_optional(pool)
    .await
}

/// The customer approved (and RABOT confirmed the number): a pending, unexpired link becomes
/// `linked`. `None` when the secret is unknown, expired or already used.
pub async fn complete_linked<'e>(
    executor: impl PgExecutor<'e>,
    success_hash: &[u8],
    customer_number: &str,
) -> Result<Option<LinkRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE sync.customer_links
            SET status = 'linked', customer_number = $2, completed_at = now()
          WHERE success_hash = $1 AND status = 'pending' AND expires_at > now()
          RETURNING {LINK_COLUMNS}"
    ))
    .bind(success_hash)
    .bind(customer_number)
    .fetch_optional(executor)
    .await
}

/// The customer refused: a pending, unexpired link becomes `denied` with RABOT's reason.
pub async fn complete_denied<'e>(
    executor: impl PgExecutor<'e>,
    failure_hash: &[u8],
    error_name: &str,
    error_description: Option<&str>,
) -> Result<Option<LinkRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE sync.customer_links
            SET status = 'denied', error_name = $2, error_description = $3, completed_at = now()
          WHERE failure_hash = $1 AND status = 'pending' AND expires_at > now()
          RETURNING {LINK_COLUMNS}"
    ))
    .bind(failure_hash)
    .bind(error_name)
    .bind(error_description)
    .fetch_optional(executor)
    .await
}

/// Why a redirect's secret was refused, for the log: "unknown" (also a secret of the other
/// redirect), "expired" or "already used".
pub async fn refusal(
    pool: &PgPool,
    redirect: Redirect,
    hash: &[u8],
) -> Result<&'static str, sqlx::Error> {
    let row: Option<(String, bool)> = sqlx::query_as(&format!(
        "SELECT status, expires_at <= now() FROM sync.customer_links WHERE {} = $1",
        redirect.hash_column()
    ))
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => "unknown",
        Some((status, _)) if status != "pending" => "already used",
        Some(_) => "expired",
    })
}

/// A link keeps at most this many refusals: the success URL is public enough that someone could
/// replay it in a loop, and the first ones tell the story.
pub const MAX_REFUSALS_PER_LINK: i64 = 20;

/// Records a refused success redirect; false when the link already has its share of refusals.
pub async fn record_refusal<'e>(
    executor: impl PgExecutor<'e>,
    link_id: Uuid,
    reason: &str,
    offered_customer_number: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO sync.link_refusals (link_id, reason, offered_customer_number)
         SELECT $1, $2, $3
          WHERE (SELECT count(*) FROM sync.link_refusals WHERE link_id = $1) < $4",
    )
    .bind(link_id)
    .bind(reason)
    .bind(offered_customer_number)
    .bind(MAX_REFUSALS_PER_LINK)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the customer's live links `unlinked`; returns how many there were.
pub async fn mark_unlinked<'e>(
    executor: impl PgExecutor<'e>,
    customer_number: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync.customer_links SET status = 'unlinked', unlinked_at = now()
          WHERE partner = $1 AND customer_number = $2 AND status = 'linked'",
    )
    .bind(PARTNER_RABOT)
    .bind(customer_number)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// External ids of every linked customer (the `@linked` scope of the RABOT mirror).
pub async fn linked_external_ids(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT external_id FROM sync.customer_links
          WHERE partner = $1 AND status = 'linked' ORDER BY external_id",
    )
    .bind(PARTNER_RABOT)
    .fetch_all(pool)
    .await
}

/// Linked customers not mirrored since they linked: (link id, external id), oldest first.
pub async fn unmirrored(pool: &PgPool) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, external_id FROM sync.customer_links
          WHERE partner = $1 AND status = 'linked' AND mirrored_at IS NULL
          ORDER BY completed_at",
    )
    .bind(PARTNER_RABOT)
    .fetch_all(pool)
    .await
}

pub async fn mark_mirrored(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sync.customer_links SET mirrored_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every link, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<LinkRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LINK_COLUMNS} FROM sync.customer_links ORDER BY created_at DESC"
    ))
    .fetch_all(pool)
    .await
}
