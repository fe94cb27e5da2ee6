//! `sync.oauth_states` and `sync.oauth_grants`. Token columns only ever receive sealed bytes
//! (see `crate::crypto`); nothing here sees a plaintext token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    Active,
    /// The refresh token was refused: only a new consent brings the grant back.
    NeedsReconsent,
    /// The user withdrew the consent, or it ended.
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::NeedsReconsent => "needs_reconsent",
            GrantStatus::Revoked => "revoked",
        }
    }
}

/// A grant row as the refresh path needs it: sealed tokens and what decides whether to refresh.
#[derive(Debug, sqlx::FromRow)]
pub struct SealedGrant {
    pub id: Uuid,
    pub label: Option<String>,
    pub status: String,
    pub key_id: String,
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Vec<u8>,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
    pub consented_on: Option<DateTime<Utc>>,
    pub consent_id: Option<String>,
    pub refresh_count: i32,
    pub refresh_in_doubt_since: Option<DateTime<Utc>>,
    /// A refresh request was sent at this time and its outcome is not recorded yet.
    pub refresh_started_at: Option<DateTime<Utc>>,
    /// The refresh in doubt was interrupted by a stopped process (not left unanswered).
    pub refresh_interrupted: bool,
}

const SEALED_COLUMNS: &str = "id, label, status, key_id, access_token_sealed, refresh_token_sealed,
    access_expires_at, refresh_expires_at, consented_on, consent_id, refresh_count,
    refresh_in_doubt_since, refresh_started_at, refresh_interrupted";

/// A grant for listing: no token column is read.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct GrantSummary {
    pub id: Uuid,
    pub provider: String,
    pub label: Option<String>,
    pub status: String,
    /// `status`, except that an active grant whose last refresh is in doubt is `in_doubt`, and
    /// one with a refresh in flight (or left by a stopped process not yet noticed) `refreshing`.
    pub state: String,
    /// Since when the last refresh is in doubt: sent, and its answer never saved.
    pub refresh_in_doubt_since: Option<DateTime<Utc>>,
    /// Why: `unanswered` (the bank's answer was lost; the next rotation tries once) or
    /// `interrupted` (the process stopped; never retried automatically).
    pub in_doubt_reason: Option<String>,
    pub refresh_started_at: Option<DateTime<Utc>>,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
    pub refresh_count: i32,
    pub consent_id: Option<String>,
    pub consent_status: Option<String>,
    pub consented_on: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Sealed tokens and what the token response said about them.
pub struct SealedTokens {
    pub key_id: String,
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Vec<u8>,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
    pub consented_on: Option<DateTime<Utc>>,
    pub scope: Option<String>,
}

pub struct NewGrant<'a> {
    pub id: Uuid,
    pub provider: &'a str,
    pub label: Option<&'a str>,
    pub consent_id: Option<&'a str>,
    pub tokens: &'a SealedTokens,
}

/// A state stored by [`insert_state`] and consumed by a callback.
#[derive(Debug, sqlx::FromRow)]
pub struct ConsumedState {
    pub label: Option<String>,
}

pub async fn insert_state(
    pool: &PgPool,
    state_hash: &[u8],
    provider: &str,
    label: Option<&str>,
    lifetime: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync.oauth_states (state_hash, provider, label, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(state_hash)
    .bind(provider)
    .bind(label)
    .bind(lifetime.as_secs_f64())
    .execute(pool)
    .await?;
    // Old states are worth nothing after a day; keeping the table small keeps it fast.
    sqlx::query("DELETE FROM sync.oauth_states WHERE expires_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks a known, unexpired, unused state as used, in one statement, so two callbacks with the
/// same state cannot both pass.
pub async fn consume_state(
    pool: &PgPool,
    state_hash: &[u8],
    provider: &str,
) -> Result<Option<ConsumedState>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE sync.oauth_states SET used_at = now()
          WHERE state_hash = $1 AND provider = $2 AND used_at IS NULL AND expires_at > now()
          RETURNING label",
    )
    .bind(state_hash)
    .bind(provider)
    .fetch_optional(pool)
    .await
}

/// Why [`consume_state`] refused a state, for the log: "unknown", "expired" or "already used".
pub async fn state_refusal(
    pool: &PgPool,
    state_hash: &[u8],
    provider: &str,
) -> Result<&'static str, sqlx::Error> {
    let row: Option<(bool, bool)> = sqlx::query_as(
        "SELECT used_at IS NOT NULL, expires_at <= now() FROM sync.oauth_states
          WHERE state_hash = $1 AND provider = $2",
    )
    .bind(state_hash)
    .bind(provider)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => "unknown",
        Some((true, _)) => "already used",
        Some((false, _)) => "expired",
    })
}

pub async fn record_state_outcome<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    state_hash: &[u8],
    outcome: &str,
    error: Option<&str>,
    grant_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync.oauth_states SET outcome = $2, error = $3, grant_id = $4 WHERE state_hash = $1",
    )
    .bind(state_hash)
    .bind(outcome)
    .bind(error)
    .bind(grant_id)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn insert_grant<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    grant: &NewGrant<'_>,
) -> Result<(), sqlx::Error> {
    let t = grant.tokens;
    sqlx::query(
        "INSERT INTO sync.oauth_grants
            (id, provider, label, key_id, access_token_sealed, refresh_token_sealed,
             access_expires_at, refresh_expires_at, consented_on, consent_id, scope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(grant.id)
    .bind(grant.provider)
    .bind(grant.label)
    .bind(&t.key_id)
    .bind(&t.access_token_sealed)
    .bind(&t.refresh_token_sealed)
    .bind(t.access_expires_at)
    .bind(t.refresh_expires_at)
    .bind(t.consented_on)
    .bind(grant.consent_id)
    .bind(&t.scope)
    .execute(executor)
    .await?;
    Ok(())
}

/// A grant as the refresh path needs it; the refresh path reads it holding the grant's lock.
pub async fn read<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<SealedGrant>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SEALED_COLUMNS} FROM sync.oauth_grants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// Stores the tokens of a refresh. `expected_refresh_count` guards the write: it only lands on
/// the version of the row the refresh token came from.
pub async fn save_refreshed<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
    expected_refresh_count: i32,
    tokens: &SealedTokens,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sync.oauth_grants
            SET key_id = $3, access_token_sealed = $4, refresh_token_sealed = $5,
                access_expires_at = $6, refresh_expires_at = $7,
                consented_on = COALESCE($8, consented_on), scope = COALESCE($9, scope),
                refresh_count = refresh_count + 1, last_refreshed_at = now(),
                refresh_in_doubt_since = NULL, refresh_started_at = NULL,
                refresh_interrupted = false, last_error = NULL, updated_at = now()
          WHERE id = $1 AND refresh_count = $2",
    )
    .bind(id)
    .bind(expected_refresh_count)
    .bind(&tokens.key_id)
    .bind(&tokens.access_token_sealed)
    .bind(&tokens.refresh_token_sealed)
    .bind(tokens.access_expires_at)
    .bind(tokens.refresh_expires_at)
    .bind(tokens.consented_on)
    .bind(&tokens.scope)
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn set_status<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
    status: GrantStatus,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync.oauth_grants SET status = $2, last_error = $3, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .execute(executor)
    .await?;
    Ok(())
}

/// Records a failed refresh on a grant that stays active, ending its in-flight mark. `in_doubt`
/// marks a refresh that was sent but not answered; that mark stays until a refresh succeeds.
pub async fn record_refresh_error<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
    error: &str,
    in_doubt: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync.oauth_grants
            SET last_error = $2, updated_at = now(), refresh_started_at = NULL,
                refresh_in_doubt_since = CASE WHEN $3 THEN COALESCE(refresh_in_doubt_since, now())
                                              ELSE refresh_in_doubt_since END
          WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(in_doubt)
    .execute(executor)
    .await?;
    Ok(())
}

/// Records, committed before a refresh request is sent, that it is in flight. Guarded by the
/// refresh count the token came from; `false` when the row changed (nothing may be sent then).
pub async fn mark_refresh_started(
    conn: &mut PgConnection,
    id: Uuid,
    expected_refresh_count: i32,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sync.oauth_grants SET refresh_started_at = now(), updated_at = now()
          WHERE id = $1 AND refresh_count = $2 AND status = 'active' AND refresh_started_at IS NULL",
    )
    .bind(id)
    .bind(expected_refresh_count)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Ends a refresh's in-flight mark whose outcome was recorded by another write (`set_status`).
pub async fn end_refresh(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sync.oauth_grants SET refresh_started_at = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Grants with a refresh marked in flight: in flight now, or left by a stopped process.
pub async fn refreshes_started(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM sync.oauth_grants WHERE refresh_started_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// A refresh whose process stopped between sending it and recording its outcome.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InterruptedRefresh {
    pub id: Uuid,
    pub label: Option<String>,
    pub refresh_in_doubt_since: DateTime<Utc>,
}

/// Turns an in-flight mark nobody holds any more into a refresh in doubt, interrupted. Only
/// called with the grant's lock held, so the mark's owner is certainly gone.
pub async fn mark_interrupted(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<InterruptedRefresh>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE sync.oauth_grants
            SET refresh_in_doubt_since = COALESCE(refresh_in_doubt_since, refresh_started_at),
                refresh_interrupted = true, refresh_started_at = NULL, updated_at = now(),
                last_error = 'a refresh sent at ' || to_char(refresh_started_at AT TIME ZONE 'UTC',
                    'YYYY-MM-DD HH24:MI:SS') || ' UTC was interrupted (its process stopped) before '
                    || 'its answer was saved: the bank may have rotated the refresh token'
          WHERE id = $1 AND refresh_started_at IS NOT NULL
          RETURNING id, label, refresh_in_doubt_since",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn record_consent_status(
    pool: &PgPool,
    id: Uuid,
    consent_status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync.oauth_grants SET consent_status = $2, consent_checked_at = now(), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(consent_status)
    .execute(pool)
    .await?;
    Ok(())
}

/// Active grants of a provider, soonest refresh expiry first.
pub async fn active_ids(pool: &PgPool, provider: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM sync.oauth_grants WHERE provider = $1 AND status = 'active'
          ORDER BY refresh_expires_at, id",
    )
    .bind(provider)
    .fetch_all(pool)
    .await
}

/// [`GrantSummary::state`] in SQL, for the listing and the per-state counts alike.
const STATE: &str = "CASE WHEN status <> 'active' THEN status
                          WHEN refresh_in_doubt_since IS NOT NULL THEN 'in_doubt'
                          WHEN refresh_started_at IS NOT NULL THEN 'refreshing'
                          ELSE status END";

pub async fn list(pool: &PgPool) -> Result<Vec<GrantSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT id, provider, label, status, {STATE} AS state,
                refresh_in_doubt_since,
                CASE WHEN refresh_in_doubt_since IS NULL THEN NULL
                     WHEN refresh_interrupted THEN 'interrupted'
                     ELSE 'unanswered' END AS in_doubt_reason,
                refresh_started_at,
                access_expires_at, refresh_expires_at, refresh_count,
                consent_id, consent_status, consented_on, last_refreshed_at, last_error, created_at
           FROM sync.oauth_grants ORDER BY provider, created_at, id"
    ))
    .fetch_all(pool)
    .await
}

/// How many grants of a provider are in one [`GrantSummary::state`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantStateCount {
    pub provider: String,
    pub state: String,
    pub grants: i64,
}

pub async fn state_counts(pool: &PgPool) -> Result<Vec<GrantStateCount>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT provider, {STATE} AS state, count(*) AS grants
           FROM sync.oauth_grants GROUP BY 1, 2 ORDER BY 1, 2"
    ))
    .fetch_all(pool)
    .await
}

/// How long an active grant's refresh token has left, for the metrics endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshExpiry {
    pub id: Uuid,
    pub provider: String,
    pub label: Option<String>,
    /// Seconds from now (the database's clock); negative once expired.
    pub seconds: f64,
    /// Unix time since which the grant's last refresh is in doubt, if it is.
    pub in_doubt_since: Option<f64>,
    pub refresh_count: i32,
    /// Seconds from now until the consent ends; `None` when that is not known.
    pub consent_expires_in: Option<f64>,
}

/// The active grants' expiries. A consent lasting `consent_lifetime` from `consented_on` ends
/// then; with `None` (consents last until revoked), or no `consented_on`, its end is unknown.
pub async fn active_refresh_expiries(
    pool: &PgPool,
    consent_lifetime: Option<Duration>,
) -> Result<Vec<RefreshExpiry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, label,
                extract(epoch FROM refresh_expires_at - now())::float8 AS seconds,
                extract(epoch FROM refresh_in_doubt_since)::float8 AS in_doubt_since,
                refresh_count,
                extract(epoch FROM consented_on + make_interval(secs => $1) - now())::float8
                    AS consent_expires_in
           FROM sync.oauth_grants WHERE status = 'active' ORDER BY provider, id",
    )
    .bind(consent_lifetime.map(|d| d.as_secs_f64()))
    .fetch_all(pool)
    .await
}
