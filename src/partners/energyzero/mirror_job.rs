//! The EnergyZero mirror: for each user (settings ∪ enabled `sync.energyzero_subjects`),
//! impersonate (cached token), read `me` and every page of its contracts, then write the user
//! and the contracts in one transaction. Users run a few at a time under the partner's one rate
//! limit. Contracts a user's complete pass no longer shows are tombstoned at the run's end, in
//! one transaction, and only when their number is within `energyzero.tombstone_guard`.
//!
//! One user's failure (impersonation refused, GraphQL errors, user gone) fails that user, not the
//! run: it is logged once, counted, and recorded in `sync.run_failures`. Rejected partner
//! credentials fail the run at once: every user would fail the same way.

use std::collections::HashSet;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::http::RateBudget;
use crate::http::one_line;
use crate::job::{Job, JobError, RunContext};
use crate::partners::energyzero::store;
use crate::partners::energyzero::{EnergyzeroClient, EnergyzeroError};
use crate::settings::{Settings, TombstoneGuard};
use crate::store::{runs, upsert_setting_aside};

/// Users mirrored at the same time: enough to hide latency, few enough that the rate limit,
/// not the fan-out, decides the pace.
const CONCURRENCY: usize = 4;

pub struct EnergyzeroMirror {
    client: EnergyzeroClient,
    user_ids: Vec<String>,
    guard: TombstoneGuard,
}

/// Why one user was not mirrored.
enum UserFailure {
    /// Stops the run: cancellation, rejected partner credentials, our own database.
    Run(JobError),
    /// Only this user.
    User(EnergyzeroError),
}

impl EnergyzeroMirror {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client: EnergyzeroClient::new(&settings.energyzero, &settings.http)?,
            user_ids: settings.energyzero.user_ids.clone(),
            guard: settings.energyzero.tombstone_guard,
        })
    }

    pub fn client(&self) -> &EnergyzeroClient {
        &self.client
    }

    /// Settings first, then the enabled subjects ops added; each user once.
    async fn users(&self, ctx: &RunContext) -> Result<Vec<String>, JobError> {
        let subjects = store::subject_user_ids(&ctx.pool).await?;
        let mut seen = HashSet::new();
        Ok(self
            .user_ids
            .iter()
            .cloned()
            .chain(subjects.into_iter().map(|id| id.trim().to_owned()))
            .filter(|id| !id.is_empty() && seen.insert(id.clone()))
            .collect())
    }

    async fn run_all(&self, ctx: &RunContext) -> Result<(), JobError> {
        // The client (and its counter) lives as long as the daemon; a run reports its own share.
        let requests_before = self.client.tally();
        let users = self.users(ctx).await?;
        if users.is_empty() {
            tracing::warn!(
                "no EnergyZero users to mirror: list them in energyzero.user_ids or insert them into sync.energyzero_subjects"
            );
            return Ok(());
        }

        let mut outcomes = stream::iter(users.clone())
            .map(|user_id: String| {
                let span = tracing::info_span!("user", user_id = %user_id);
                async move {
                    let outcome = self.mirror_user(ctx, &user_id).await;
                    (user_id, outcome)
                }
                .instrument(span)
            })
            .buffer_unordered(CONCURRENCY);
        let mut failures: Vec<String> = Vec::new();
        let mut gone: Vec<(String, String)> = Vec::new();
        while let Some((user_id, outcome)) = outcomes.next().await {
            ctx.counts
                .send_modify(|c| c.set_requests(self.client.tally().since(requests_before)));
            match outcome {
                Ok(missing) => gone.extend(missing),
                // Dropping the stream abandons the other users' passes; their open
                // transactions roll back.
                Err(UserFailure::Run(error)) => return Err(error),
                Err(UserFailure::User(error)) => {
                    // One line: it goes into a log field, a table and the run's summary.
                    let reason = one_line(&format!("{error:#}"));
                    tracing::warn!(%user_id, error = %reason, "user not mirrored");
                    ctx.counts.send_modify(|c| c.failed += 1);
                    runs::record_failure(&ctx.pool, ctx.run_id, &user_id, &reason).await?;
                    failures.push(format!("{user_id}: {reason}"));
                }
            }
        }
        drop(outcomes);
        ctx.counts
            .send_modify(|c| c.set_requests(self.client.tally().since(requests_before)));
        self.tombstone(ctx, &gone).await?;

        if failures.is_empty() {
            return Ok(());
        }
        // Cut to a readable length; every reason is whole in sync.run_failures.
        let summary = one_line(&format!(
            "{} of {} users failed: {}",
            failures.len(),
            users.len(),
            failures.join("; ")
        ));
        if failures.len() == users.len() {
            Err(JobError::Failed(anyhow::anyhow!(summary)))
        } else {
            ctx.report_partial_failure(summary);
            Ok(())
        }
    }

    /// One user's complete pass, then one transaction: user and contracts. Returns the user's
    /// contracts the pass no longer saw, which the run tombstones at its end (none when a row
    /// could not be stored: then the pass is not known to be whole).
    async fn mirror_user(
        &self,
        ctx: &RunContext,
        user_id: &str,
    ) -> Result<Vec<(String, String)>, UserFailure> {
        // Shutdown stops the run between users, never inside one user's transaction.
        ctx.check_cancelled().map_err(UserFailure::Run)?;
        let pass = match self.client.user_with_contracts(user_id).await {
            Ok(pass) => pass,
            Err(error) if error.is_partner_rejected() => {
                return Err(UserFailure::Run(JobError::Failed(error.into())));
            }
            Err(error) => return Err(UserFailure::User(error)),
        };
        let fetched = 1 + pass.contracts.len() as i64;
        ctx.note_drift(|drift| pass.contracts.iter().for_each(|c| c.note_drift(drift)));
        let seen: Vec<String> = pass
            .contracts
            .iter()
            .map(|c| c.contract_id.clone())
            .collect();

        let write = async {
            let mut tx = ctx.pool.begin().await?;
            let user = upsert_setting_aside(
                &mut tx,
                vec![pass.user],
                |u| format!("user {}", u.user_id),
                |conn, rows| Box::pin(store::upsert_users(conn, rows)),
            )
            .await?;
            let contracts = upsert_setting_aside(
                &mut tx,
                pass.contracts,
                |c| format!("contract {}/{}", c.user_id, c.contract_id),
                |conn, rows| Box::pin(store::upsert_contracts(conn, rows)),
            )
            .await?;
            let missing = store::missing_contracts(&mut tx, user_id, &seen).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((user, contracts, missing))
        };
        let (user, contracts, missing) = write
            .await
            .map_err(|e| UserFailure::Run(JobError::from(e)))?;
        let refused: Vec<_> = user.refused.into_iter().chain(contracts.refused).collect();
        for (item, reason) in &refused {
            let reason = one_line(reason);
            tracing::warn!(%item, error = %reason, "row not stored; the pass goes on");
            runs::record_failure(&ctx.pool, ctx.run_id, item, &reason)
                .await
                .map_err(|e| UserFailure::Run(JobError::from(e)))?;
        }
        ctx.counts.send_modify(|c| {
            c.pages += pass.pages as i32;
            c.fetched += fetched;
            c.skipped += refused.len() as i64;
            c.add_upsert(user.counts);
            c.add_upsert(contracts.counts);
        });
        if !refused.is_empty() {
            if !missing.is_empty() {
                tracing::warn!(
                    held_back = missing.len(),
                    "contracts missing from this pass are kept: some rows could not be stored"
                );
            }
            return Ok(Vec::new());
        }
        Ok(missing
            .into_iter()
            .map(|contract| (user_id.to_owned(), contract))
            .collect())
    }

    /// Tombstones the contracts the users' passes no longer saw, all or none: more than the
    /// guard allows fails the run instead.
    async fn tombstone(&self, ctx: &RunContext, gone: &[(String, String)]) -> Result<(), JobError> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut tx = ctx.pool.begin().await?;
        let mirrored = store::live_contracts(&mut tx).await?;
        self.guard
            .check("energyzero", gone.len() as u64, mirrored as u64)
            .map_err(|refusal| JobError::Failed(anyhow::anyhow!(refusal)))?;
        let deleted = store::tombstone_contracts(&mut tx, ctx.run_id, gone).await?;
        tx.commit().await?;
        if deleted > 0 {
            tracing::info!(deleted, "tombstoned contracts no longer returned");
        }
        ctx.counts.send_modify(|c| c.deleted += deleted);
        Ok(())
    }
}

impl Job for EnergyzeroMirror {
    fn rate_budget(&self) -> Option<RateBudget> {
        Some(self.client.rate_budget())
    }

    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.run_all(ctx))
    }
}
