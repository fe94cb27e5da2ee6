//! Rabobank grants: starting a consent (a single-use `state`), completing it at the callback,
//! and the one refresh path every token rotation takes.
//!
//! A Rabobank refresh token is single use, and the bank rotates it when it answers a refresh.
//! Losing the chain (a refresh whose new token is not saved, or two refreshes of the same
//! token) costs the user a new consent, so every refresh of a grant:
//! 1. holds the grant's advisory lock on a connection of its own, so no other task or replica
//!    refreshes it meanwhile; they wait, then find the work done;
//! 2. re-reads the sealed token and decides again whether a refresh is still due;
//! 3. commits an "in flight" mark (`refresh_started_at`) before the request is sent;
//! 4. sends, and saves the answer (which clears the mark) in a task of its own that no caller
//!    can cancel: shutdown or a lost job lock may drop the run, never a refresh already sent.
//!    The process waits for these tasks ([`RefreshTasks::finish`]) before it exits.
//!
//! A mark found while holding the lock was left by a process that stopped after sending (a
//! crash, `kill -9`): the refresh is recorded as in doubt, interrupted, and its refresh token is
//! never sent again automatically, since the bank may have rotated it and would revoke the
//! consent on seeing it twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

mod lock;
mod refresh;

use lock::GrantLock;
pub use refresh::record_interrupted_refreshes;
use refresh::report_interrupted;

use crate::crypto::{self, CryptoError, TokenKey};
use crate::partners::rabobank::grant_store::{
    self as store, GrantStatus, InterruptedRefresh, NewGrant, SealedGrant, SealedTokens,
};
use crate::partners::rabobank::{self, ConsentError, RabobankClient, TokenError, TokenGrant};
use crate::settings::{HttpSettings, Settings};
use crate::store::audit::{self, Actor, Entry};

/// How long a `state` handed out by `rabobank authorize` stays usable.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Used when a token response has no `expires_in`: the shorter documented lifetime (PSD2), so
/// a token is never believed valid for longer than it is.
const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(3600);
/// Used when a token response has no `refresh_token_expires_in`: the documented 30 days.
const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// An access token closer than this to expiry is refreshed before use.
const ACCESS_TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Waiting for another replica's refresh of the same grant; a refresh is one HTTP request.
const GRANT_LOCK_TIMEOUT: &str = "120s";
/// Attempts to store tokens the bank already rotated, when the first write failed.
const SAVE_ATTEMPTS: u32 = 5;
/// Each attempt to store rotated tokens, a pooled connection included.
const SAVE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Every save attempt with the pauses between them (0.5 + 1 + 2 + 4 s), rounded up.
const SAVE_TIME_LIMIT: Duration = Duration::from_secs(5 * 5 + 8);

/// The refreshes handed off to run to completion: tasks no caller cancels, which the process
/// waits for before it exits. Clones share the tasks.
#[derive(Debug, Clone, Default)]
pub struct RefreshTasks {
    tracker: TaskTracker,
    /// Cancelled by [`Self::finish`]: a refresh not yet sent (waiting for the rate limit or for
    /// a retry after an answer that says it was not processed) is then not sent at all.
    stop: CancellationToken,
}

impl RefreshTasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest [`Self::finish`] needs: one request already sent, then the save's attempts.
    pub fn bound(http: &HttpSettings) -> Duration {
        http.request_timeout + SAVE_TIME_LIMIT
    }

    /// Refreshes still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// No new request is sent from now on; waits, at most `bound`, for the requests already
    /// sent to be answered and saved. `false` when some did not finish in time.
    pub async fn finish(&self, bound: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        let running = self.tracker.len();
        if running > 0 {
            tracing::info!(
                running,
                "waiting for refresh requests already sent to be answered and saved"
            );
        }
        tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// What a callback carried, as received.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// How a callback ended, for the page the user sees.
#[derive(Debug)]
pub enum ConsentOutcome {
    Granted {
        grant_id: Uuid,
        label: Option<String>,
    },
    /// The user refused or the bank reported an error; recorded, nothing exchanged.
    Refused {
        error: String,
        description: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the state is missing, unknown, expired or already used ({0})")]
    BadState(&'static str),
    #[error("the callback carries neither a code nor an error")]
    NoCode,
    /// Recorded as the state's outcome; the bank's answer is the source.
    #[error("the authorization code could not be exchanged")]
    Exchange(#[source] ExchangeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why a code exchange gave no grant.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token response has no refresh token")]
    NoRefreshToken,
}

/// Why a refresh gave no fresh tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("grant {0} does not exist")]
    NotFound(Uuid),
    #[error("grant {id} is {status}, not active")]
    NotActive { id: Uuid, status: String },
    /// Final: the grant is now `needs_reconsent`.
    #[error("grant {id} needs a new consent: {detail}")]
    NeedsReconsent { id: Uuid, detail: String },
    /// The bank did not process the refresh; the grant is unchanged and still active.
    #[error("refreshing grant {id} failed, will try again later: {detail}")]
    Transient { id: Uuid, detail: String },
    /// Sent but unanswered: the refresh token may be spent. Not retried now.
    #[error(
        "refreshing grant {id} got no usable answer; the refresh token may be spent, so it is not replayed until the next rotation: {detail}"
    )]
    OutcomeUnknown { id: Uuid, detail: String },
    /// A refresh sent earlier was interrupted before its answer was saved (its process
    /// stopped): the bank may have rotated the token. Never sent again automatically.
    #[error(
        "grant {id} is in doubt since {since}: a refresh sent then was interrupted before its answer was saved, so its refresh token is not sent again; re-consent or settle it (README, Rabobank consents)"
    )]
    InDoubt { id: Uuid, since: DateTime<Utc> },
    #[error(
        "Rabobank refused the refresh request for grant {id} (check the rabobank settings): {detail}"
    )]
    Rejected { id: Uuid, detail: String },
    #[error("grant {id}'s tokens could not be opened")]
    Crypto {
        id: Uuid,
        #[source]
        source: CryptoError,
    },
    #[error("the bank rotated grant {id}'s tokens but they could not be saved: {reason}")]
    NotSaved { id: Uuid, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// When a refresh is due, decided again under the row lock.
#[derive(Debug, Clone, Copy)]
pub enum RefreshNeed {
    /// Rotation: the refresh token expires within this long.
    RefreshTokenExpiresWithin(Duration),
    /// Before use: the access token expires within this long.
    AccessTokenExpiresWithin(Duration),
}

impl RefreshNeed {
    fn is_due(self, grant: &SealedGrant, now: DateTime<Utc>) -> bool {
        let within = |at: DateTime<Utc>, margin: Duration| at <= later(now, margin);
        match self {
            // A refresh left in doubt is settled by the next rotation, whatever the expiry.
            RefreshNeed::RefreshTokenExpiresWithin(margin) => {
                grant.refresh_in_doubt_since.is_some() || within(grant.refresh_expires_at, margin)
            }
            RefreshNeed::AccessTokenExpiresWithin(margin) => {
                within(grant.access_expires_at, margin)
            }
        }
    }
}

/// The grant after the refresh path: refreshed now, or found not due. (`SecretString`'s
/// `Debug` is redacted.)
#[derive(Debug)]
pub struct CurrentGrant {
    pub refreshed: bool,
    pub access_token: SecretString,
    pub refresh_count: i32,
    pub refresh_expires_at: DateTime<Utc>,
    pub consented_on: Option<DateTime<Utc>>,
    pub consent_id: Option<String>,
    pub label: Option<String>,
}

pub struct RabobankGrants {
    keeper: Arc<TokenKeeper>,
    refreshes: RefreshTasks,
}

/// What a refresh task needs, shared with the tasks that outlive their caller.
struct TokenKeeper {
    client: RabobankClient,
    key: TokenKey,
}

impl std::fmt::Debug for RabobankGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabobankGrants")
            .field("client", &self.keeper.client)
            .field("key", &self.keeper.key)
            .finish()
    }
}

/// What the refresh path decided under the grant's lock.
enum Decision {
    /// Nothing to send: the grant as it is.
    Current(CurrentGrant),
    /// Send this refresh token.
    Send(SealedGrant, SecretString),
}

impl RabobankGrants {
    /// `None` when Rabobank is not enabled. Refreshes run in tasks of their own
    /// ([`Self::refresh_tasks`]).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Arc<Self>>> {
        Self::with_refresh_tasks(settings, RefreshTasks::new())
    }

    /// [`Self::from_settings`], with refreshes running in `refreshes` (the daemon shares one
    /// set across configuration reloads, so that its stop waits for all of them).
    pub fn with_refresh_tasks(
        settings: &Settings,
        refreshes: RefreshTasks,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if !settings.rabobank.enabled {
            return Ok(None);
        }
        let key = TokenKey::new(&settings.security.token_key_bytes()?);
        let client = RabobankClient::new(&settings.rabobank, &settings.http)?;
        Ok(Some(Arc::new(Self {
            keeper: Arc::new(TokenKeeper { client, key }),
            refreshes,
        })))
    }

    pub fn client(&self) -> &RabobankClient {
        &self.keeper.client
    }

    /// The tasks refreshes run in; wait for them ([`RefreshTasks::finish`]) before exiting.
    pub fn refresh_tasks(&self) -> &RefreshTasks {
        &self.refreshes
    }

    /// Stores a fresh single-use state and returns the URL to send the user to.
    pub async fn begin_consent(
        &self,
        pool: &PgPool,
        label: Option<&str>,
    ) -> Result<url::Url, sqlx::Error> {
        let state = crypto::url_secret();
        store::insert_state(
            pool,
            &crypto::url_secret_hash(&state),
            rabobank::PARTNER,
            label,
            STATE_LIFETIME,
        )
        .await?;
        Ok(self.client().authorize_url(&state))
    }

    /// The callback: the state first (consumed whatever follows), then the bank's answer.
    /// `actor` carried the callback (a browser); a consent granted or refused is audited.
    pub async fn complete_consent(
        &self,
        pool: &PgPool,
        params: &CallbackParams,
        actor: &Actor,
    ) -> Result<ConsentOutcome, CallbackError> {
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return Err(CallbackError::BadState("missing"));
        };
        let hash = crypto::url_secret_hash(state);
        let Some(consumed) = store::consume_state(pool, &hash, rabobank::PARTNER).await? else {
            let why = store::state_refusal(pool, &hash, rabobank::PARTNER).await?;
            return Err(CallbackError::BadState(why));
        };

        if let Some(error) = params.error.as_deref() {
            let recorded = match &params.error_description {
                Some(description) => format!("{error}: {description}"),
                None => error.to_owned(),
            };
            let mut tx = pool.begin().await?;
            store::record_state_outcome(&mut *tx, &hash, "denied", Some(&recorded), None).await?;
            let entry = Entry::new(actor, "consent.refused")
                .partner(rabobank::PARTNER)
                .detail(json!({ "label": consumed.label, "error": error }));
            audit::record(&mut *tx, &entry).await?;
            tx.commit().await?;
            tracing::warn!(label = consumed.label, error = %recorded, "Rabobank consent not given");
            return Ok(ConsentOutcome::Refused {
                error: error.to_owned(),
                description: params.error_description.clone(),
            });
        }
        let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
            store::record_state_outcome(pool, &hash, "failed", Some("no code"), None).await?;
            return Err(CallbackError::NoCode);
        };

        let exchanged = match self.client().exchange_code(code).await {
            Ok(mut grant) => match grant.refresh_token.take() {
                Some(refresh_token) => Ok((grant, refresh_token)),
                None => Err(ExchangeError::NoRefreshToken),
            },
            Err(error) => Err(ExchangeError::Token(error)),
        };
        let (grant, refresh_token) = match exchanged {
            Ok(exchanged) => exchanged,
            Err(error) => {
                let detail = error.to_string();
                store::record_state_outcome(pool, &hash, "failed", Some(&detail), None).await?;
                tracing::error!(label = consumed.label, error = %detail, "Rabobank consent could not be completed");
                return Err(CallbackError::Exchange(error));
            }
        };
        let grant_id = Uuid::new_v4();
        let tokens = self.keeper.seal(grant_id, &grant, &refresh_token, None);
        let mut tx = pool.begin().await?;
        store::insert_grant(
            &mut *tx,
            &NewGrant {
                id: grant_id,
                provider: rabobank::PARTNER,
                label: consumed.label.as_deref(),
                consent_id: grant.consent_id.as_deref(),
                tokens: &tokens,
            },
        )
        .await?;
        store::record_state_outcome(&mut *tx, &hash, "granted", None, Some(grant_id)).await?;
        let entry = grant_entry(actor, "consent.granted", grant_id).detail(json!({
            "label": consumed.label,
            "consent_id": grant.consent_id,
        }));
        audit::record(&mut *tx, &entry).await?;
        tx.commit().await?;
        tracing::info!(%grant_id, label = consumed.label, consent_id = grant.consent_id, "Rabobank consent stored");
        Ok(ConsentOutcome::Granted {
            grant_id,
            label: consumed.label,
        })
    }

    /// An access token valid for at least a minute, refreshing (through [`Self::refresh`])
    /// when needed.
    pub async fn access_token(
        &self,
        pool: &PgPool,
        id: Uuid,
        actor: &Actor,
    ) -> Result<SecretString, RefreshError> {
        if let Some(grant) = store::read(pool, id).await? {
            if grant.status == GrantStatus::Active.as_str()
                && !RefreshNeed::AccessTokenExpiresWithin(ACCESS_TOKEN_MARGIN)
                    .is_due(&grant, Utc::now())
            {
                return self.keeper.open(&grant, &grant.access_token_sealed);
            }
        }
        let current = self
            .refresh(
                pool,
                id,
                RefreshNeed::AccessTokenExpiresWithin(ACCESS_TOKEN_MARGIN),
                actor,
            )
            .await?;
        Ok(current.access_token)
    }

    /// The one refresh path; see the module docs. The caller may be cancelled at any point:
    /// until the hand-off nothing was sent or written, and after it the task finishes alone.
    /// `actor` caused it (the scheduler, a signal, a command); rotations and the grant's
    /// changes of state are audited under its name.
    pub async fn refresh(
        &self,
        pool: &PgPool,
        id: Uuid,
        need: RefreshNeed,
        actor: &Actor,
    ) -> Result<CurrentGrant, RefreshError> {
        let mut lock = GrantLock::acquire(pool, id).await?;
        let decided = self.decide(&mut lock, id, need, actor).await;
        let (grant, refresh_token) = match decided {
            Ok(Decision::Send(grant, refresh_token)) => (grant, refresh_token),
            Ok(Decision::Current(current)) => {
                lock.release().await;
                return Ok(current);
            }
            Err(error) => {
                lock.release().await;
                return Err(error);
            }
        };
        let keeper = self.keeper.clone();
        let pool = pool.clone();
        let stop = self.refreshes.stop.clone();
        let actor = actor.clone();
        let handed_off = self.refreshes.tracker.spawn(async move {
            keeper
                .send_and_save(&pool, lock, grant, refresh_token, &stop, &actor)
                .await
        });
        handed_off.await.unwrap_or_else(|failed| {
            Err(RefreshError::NotSaved {
                id,
                reason: format!("the refresh task failed: {failed}"),
            })
        })
    }

    /// Under the grant's lock: settle a mark left by a stopped process, then decide whether to
    /// send the stored refresh token.
    async fn decide(
        &self,
        lock: &mut GrantLock,
        id: Uuid,
        need: RefreshNeed,
        actor: &Actor,
    ) -> Result<Decision, RefreshError> {
        let mut grant = store::read(lock.conn()?, id)
            .await?
            .ok_or(RefreshError::NotFound(id))?;
        if grant.refresh_started_at.is_some() {
            // The lock is ours, so whoever marked this refresh in flight is gone.
            if let Some(interrupted) = store::mark_interrupted(lock.conn()?, id).await? {
                report_interrupted(&interrupted);
                audit::record(lock.conn()?, &in_doubt_entry(actor, &interrupted)).await?;
            }
            grant = store::read(lock.conn()?, id)
                .await?
                .ok_or(RefreshError::NotFound(id))?;
        }
        if grant.status != GrantStatus::Active.as_str() {
            return Err(RefreshError::NotActive {
                id,
                status: grant.status,
            });
        }
        if !need.is_due(&grant, Utc::now()) {
            return Ok(Decision::Current(CurrentGrant {
                refreshed: false,
                access_token: self.keeper.open(&grant, &grant.access_token_sealed)?,
                refresh_count: grant.refresh_count,
                refresh_expires_at: grant.refresh_expires_at,
                consented_on: grant.consented_on,
                consent_id: grant.consent_id,
                label: grant.label,
            }));
        }
        if let (Some(since), true) = (grant.refresh_in_doubt_since, grant.refresh_interrupted) {
            return Err(RefreshError::InDoubt { id, since });
        }
        // Only rotation settles a refresh left unanswered (once per run): callers that merely
        // want an access token must not replay a refresh token that may be spent.
        if let (Some(since), RefreshNeed::AccessTokenExpiresWithin(_)) =
            (grant.refresh_in_doubt_since, need)
        {
            return Err(RefreshError::OutcomeUnknown {
                id,
                detail: format!(
                    "a refresh sent at {since} is unanswered; the rotation job settles it"
                ),
            });
        }
        let refresh_token = self.keeper.open(&grant, &grant.refresh_token_sealed)?;
        Ok(Decision::Send(grant, refresh_token))
    }

    /// Reads the consent's status and marks the grant `revoked` when it has ended. `Ok(None)`
    /// when consent checks are off or the grant has no consent id.
    pub async fn check_consent(
        &self,
        pool: &PgPool,
        id: Uuid,
        consent_id: Option<&str>,
        actor: &Actor,
    ) -> anyhow::Result<Option<String>> {
        let Some(consent_id) = consent_id else {
            return Ok(None);
        };
        if !self.client().checks_consents() {
            return Ok(None);
        }
        let access_token = self.access_token(pool, id, actor).await?;
        let Some(answer) = self.client().consent(&access_token, consent_id).await else {
            return Ok(None);
        };
        let revoked = |status: &str| {
            grant_entry(actor, "grant.revoked", id).detail(json!({ "consent_status": status }))
        };
        let status = match answer {
            Ok(details) if details.is_ended() => {
                let status = details.summary_status();
                store::set_status(
                    pool,
                    id,
                    GrantStatus::Revoked,
                    &format!("the consent has ended: {status}"),
                )
                .await?;
                audit::record(pool, &revoked(&status)).await?;
                status
            }
            Ok(details) => details.summary_status(),
            Err(ConsentError::ConsentInvalid) => {
                store::set_status(
                    pool,
                    id,
                    GrantStatus::Revoked,
                    "CONSENT_INVALID: the user revoked the consent or it expired",
                )
                .await?;
                audit::record(pool, &revoked("CONSENT_INVALID")).await?;
                "CONSENT_INVALID".to_owned()
            }
            Err(error) => return Err(error.into()),
        };
        store::record_consent_status(pool, id, &status).await?;
        Ok(Some(status))
    }
}

/// An audit entry about grant `id`.
fn grant_entry(actor: &Actor, action: &'static str, id: Uuid) -> Entry {
    Entry::new(actor, action)
        .partner(rabobank::PARTNER)
        .subject(id.to_string())
}

/// The audit entry of a refresh found interrupted: the grant is in doubt.
fn in_doubt_entry(actor: &Actor, interrupted: &InterruptedRefresh) -> Entry {
    grant_entry(actor, "grant.in_doubt", interrupted.id).detail(json!({
        "reason": "interrupted",
        "in_doubt_since": interrupted.refresh_in_doubt_since,
    }))
}

/// `at + span`, saturating at the latest time chrono can represent: spans come from the bank's
/// answers and from settings, and an absurd one must not panic.
pub fn later(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_add_signed(span))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at - span`, saturating at the earliest representable time.
pub fn earlier(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_lifetimes_saturate_instead_of_panicking() {
        let now = Utc::now();
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(earlier(now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            later(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
        let hour = Duration::from_secs(3600);
        assert_eq!((later(now, hour) - now).num_seconds(), 3600);
        assert_eq!((now - earlier(now, hour)).num_seconds(), 3600);
    }
}
