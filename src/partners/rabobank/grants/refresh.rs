//! The part of a refresh no caller can cancel (mark in flight, send, save), and finding the
//! refreshes a stopped process left in doubt.

use super::*;

impl TokenKeeper {
    /// The part of a refresh no caller can cancel: mark it in flight, send it, save the answer.
    /// The lock is released last, so the next refresh of this grant sees the outcome.
    pub(super) async fn send_and_save(
        &self,
        pool: &PgPool,
        mut lock: GrantLock,
        grant: SealedGrant,
        refresh_token: SecretString,
        stop: &CancellationToken,
        actor: &Actor,
    ) -> Result<CurrentGrant, RefreshError> {
        let outcome = self
            .send_and_save_locked(pool, &mut lock, grant, &refresh_token, stop, actor)
            .await;
        lock.release().await;
        outcome
    }

    pub(super) async fn send_and_save_locked(
        &self,
        pool: &PgPool,
        lock: &mut GrantLock,
        grant: SealedGrant,
        refresh_token: &SecretString,
        stop: &CancellationToken,
        actor: &Actor,
    ) -> Result<CurrentGrant, RefreshError> {
        let id = grant.id;
        // Committed before sending: if this process dies before the answer is saved, the
        // mark (with no lock holder) says the refresh token may be spent.
        if !store::mark_refresh_started(lock.conn()?, id, grant.refresh_count).await? {
            return Err(RefreshError::Transient {
                id,
                detail: "the grant changed before the refresh was sent; nothing was sent"
                    .to_owned(),
            });
        }
        let fresh = match self.client.refresh(refresh_token, stop).await {
            Ok(fresh) => fresh,
            Err(error) => {
                return Err(self
                    .record_refresh_failure(lock, &grant, error, actor)
                    .await);
            }
        };

        let tokens = self.seal(
            id,
            &fresh,
            fresh.refresh_token.as_ref().unwrap_or(refresh_token),
            Some(&grant),
        );
        let saved = match lock.conn() {
            Ok(conn) => {
                tokio::time::timeout(
                    SAVE_ATTEMPT_TIMEOUT,
                    store::save_refreshed(conn, id, grant.refresh_count, &tokens),
                )
                .await
            }
            Err(error) => Ok(Err(error)),
        };
        match saved {
            Ok(Ok(true)) => {}
            // Cannot happen while the lock is held; if it does, say so rather than pretend.
            Ok(Ok(false)) => {
                return Err(RefreshError::NotSaved {
                    id,
                    reason: "the grant row changed under its lock".to_owned(),
                });
            }
            Ok(Err(error)) => {
                self.save_again(pool, id, grant.refresh_count, &tokens, error.to_string())
                    .await?
            }
            Err(_) => {
                let first = format!("no answer within {SAVE_ATTEMPT_TIMEOUT:?}");
                self.save_again(pool, id, grant.refresh_count, &tokens, first)
                    .await?
            }
        }
        tracing::info!(grant_id = %id, refresh_count = grant.refresh_count + 1, refresh_expires_at = %tokens.refresh_expires_at, "rotated refresh token");
        // Right after the save (which may have needed a fresh connection): the tokens are
        // stored, so a trail that cannot be written is logged rather than failing the refresh.
        let entry = grant_entry(actor, "grant.refreshed", id)
            .detail(json!({ "refresh_count": grant.refresh_count + 1 }));
        if let Err(error) = audit::record(pool, &entry).await {
            tracing::error!(grant_id = %id, error = %error, "could not record a rotation in the audit trail");
        }
        Ok(CurrentGrant {
            refreshed: true,
            access_token: fresh.access_token,
            refresh_count: grant.refresh_count + 1,
            refresh_expires_at: tokens.refresh_expires_at,
            consented_on: tokens.consented_on.or(grant.consented_on),
            consent_id: grant.consent_id,
            label: grant.label,
        })
    }

    /// The bank rotated the tokens but the first write failed (a dropped connection): the new
    /// refresh token now exists only here, so keep trying on fresh connections. The write is
    /// guarded by the refresh count, so it cannot overwrite a newer rotation. If every attempt
    /// fails the in-flight mark stays, and the grant is later found in doubt.
    pub(super) async fn save_again(
        &self,
        pool: &PgPool,
        id: Uuid,
        refresh_count: i32,
        tokens: &SealedTokens,
        first_error: String,
    ) -> Result<(), RefreshError> {
        tracing::warn!(grant_id = %id, error = %first_error, "saving rotated tokens failed; retrying");
        let mut last = first_error;
        let mut delay = Duration::from_millis(500);
        for _ in 1..SAVE_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
            let attempt = tokio::time::timeout(
                SAVE_ATTEMPT_TIMEOUT,
                store::save_refreshed(pool, id, refresh_count, tokens),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => {
                    last = "a newer rotation was stored meanwhile".to_owned();
                    break;
                }
                Ok(Err(error)) => last = error.to_string(),
                Err(_) => last = format!("no answer within {SAVE_ATTEMPT_TIMEOUT:?}"),
            }
        }
        tracing::error!(grant_id = %id, error = %last, "rotated tokens were not saved; the grant will need a new consent");
        Err(RefreshError::NotSaved { id, reason: last })
    }

    /// Records why a refresh gave no tokens, ending its in-flight mark.
    pub(super) async fn record_refresh_failure(
        &self,
        lock: &mut GrantLock,
        grant: &SealedGrant,
        error: TokenError,
        actor: &Actor,
    ) -> RefreshError {
        let id = grant.id;
        let conn = match lock.conn() {
            Ok(conn) => conn,
            Err(error) => return RefreshError::Database(error),
        };
        let (record, outcome) = match error {
            TokenError::InvalidGrant(detail) => {
                let detail = match grant.refresh_in_doubt_since {
                    Some(since) => format!(
                        "{detail} (a refresh sent at {since} got no answer and probably spent the token)"
                    ),
                    None => detail,
                };
                let mut result =
                    store::set_status(&mut *conn, id, GrantStatus::NeedsReconsent, &detail).await;
                if result.is_ok() {
                    result = store::end_refresh(&mut *conn, id).await;
                }
                if result.is_ok() {
                    let entry = grant_entry(actor, "grant.needs_reconsent", id)
                        .detail(json!({ "reason": detail }));
                    result = audit::record(&mut *conn, &entry).await;
                }
                tracing::error!(grant_id = %id, label = grant.label, error = %detail, "Rabobank refused the refresh token: the grant needs a new consent");
                (result, RefreshError::NeedsReconsent { id, detail })
            }
            TokenError::Transient(detail) => (
                store::record_refresh_error(conn, id, &detail, false).await,
                RefreshError::Transient { id, detail },
            ),
            TokenError::OutcomeUnknown(detail) => {
                let mut result = store::record_refresh_error(&mut *conn, id, &detail, true).await;
                if result.is_ok() {
                    let entry = grant_entry(actor, "grant.in_doubt", id)
                        .detail(json!({ "reason": "unanswered", "error": detail }));
                    result = audit::record(&mut *conn, &entry).await;
                }
                (result, RefreshError::OutcomeUnknown { id, detail })
            }
            TokenError::Rejected(detail) => (
                store::record_refresh_error(conn, id, &detail, false).await,
                RefreshError::Rejected { id, detail },
            ),
        };
        match record {
            Ok(()) => outcome,
            Err(error) => RefreshError::Database(error),
        }
    }

    pub(super) fn open(
        &self,
        grant: &SealedGrant,
        sealed: &[u8],
    ) -> Result<SecretString, RefreshError> {
        self.key
            .open(sealed, &grant.key_id, grant.id.as_bytes())
            .map_err(|source| RefreshError::Crypto {
                id: grant.id,
                source,
            })
    }

    /// Seals a token response for grant `id`. The refresh token is re-sealed even when the
    /// server kept it, so both tokens always share one key id.
    pub(super) fn seal(
        &self,
        id: Uuid,
        grant: &TokenGrant,
        refresh_token: &SecretString,
        previous: Option<&SealedGrant>,
    ) -> SealedTokens {
        let now = Utc::now();
        let after = |lifetime: Duration| later(now, lifetime);
        let refresh_expires_at = match (&grant.refresh_token, grant.refresh_expires_in, previous) {
            (_, Some(lifetime), _) => after(lifetime),
            // The server kept the old refresh token: its expiry is unchanged.
            (None, None, Some(previous)) => previous.refresh_expires_at,
            _ => after(DEFAULT_REFRESH_LIFETIME),
        };
        let aad = id.as_bytes();
        SealedTokens {
            key_id: self.key.id().to_owned(),
            access_token_sealed: self.key.seal(grant.access_token.expose_secret(), aad),
            refresh_token_sealed: self.key.seal(refresh_token.expose_secret(), aad),
            access_expires_at: after(grant.access_expires_in.unwrap_or(DEFAULT_ACCESS_LIFETIME)),
            refresh_expires_at,
            consented_on: grant.consented_on,
            scope: grant.scope.clone(),
        }
    }
}

/// Finds refreshes whose process stopped between sending and saving (a crash, `kill -9`) and
/// records each as in doubt, interrupted. A mark whose grant lock is held belongs to a refresh
/// in flight in a live process and is left alone. Run at start-up and by every rotation.
pub async fn record_interrupted_refreshes(
    pool: &PgPool,
    actor: &Actor,
) -> Result<Vec<InterruptedRefresh>, sqlx::Error> {
    let mut found = Vec::new();
    for id in store::refreshes_started(pool).await? {
        let Some(mut lock) = GrantLock::try_acquire(pool, id).await? else {
            continue;
        };
        let interrupted = match lock.conn() {
            Ok(conn) => match store::mark_interrupted(&mut *conn, id).await {
                Ok(Some(interrupted)) => audit::record(conn, &in_doubt_entry(actor, &interrupted))
                    .await
                    .map(|()| Some(interrupted)),
                other => other,
            },
            Err(error) => Err(error),
        };
        lock.release().await;
        if let Some(interrupted) = interrupted? {
            report_interrupted(&interrupted);
            found.push(interrupted);
        }
    }
    Ok(found)
}

pub(super) fn report_interrupted(interrupted: &InterruptedRefresh) {
    tracing::error!(
        grant_id = %interrupted.id,
        label = interrupted.label,
        in_doubt_since = %interrupted.refresh_in_doubt_since,
        "a refresh request was interrupted after it was sent (its process stopped): the grant is in doubt and is not refreshed again automatically; see `partner-sync grants`"
    );
}
