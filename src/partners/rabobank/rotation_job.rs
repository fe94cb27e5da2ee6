//! Rabobank token rotation: every active grant whose refresh token expires within
//! `rabobank.rotate_before` is refreshed through the one refresh path (row lock, single use),
//! consents are checked when the Consent Details Service is configured, and grants nearing the
//! bank's limits are warned about while there is still time to act. Each run first records
//! refreshes that a stopped process left in flight, and reports grants in doubt (skipped, named
//! in the run's error) rather than failing on them.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use tracing::Instrument;
use uuid::Uuid;

use crate::http::RateBudget;
use crate::job::{Job, JobError, RunContext};
use crate::partners::rabobank::grant_store as store;
use crate::partners::rabobank::grants::{
    self, RabobankGrants, RefreshError, RefreshNeed, earlier, later,
};
use crate::partners::rabobank::{PARTNER, REFRESH_LIMIT};
use crate::settings::Settings;

/// Warn when fewer refreshes than this remain (about two years of daily use is far more; this
/// is about a tenth of the allowance).
const REFRESH_WARNING_REMAINING: i32 = 400;
/// Warn this long before a PSD2 consent's end: enough for a person to arrange a new consent.
const CONSENT_END_WARNING: Duration = Duration::from_secs(14 * 86_400);

pub struct RabobankRotation {
    grants: Arc<RabobankGrants>,
    rotate_before: Duration,
}

impl RabobankRotation {
    pub fn new(settings: &Settings, grants: Arc<RabobankGrants>) -> Self {
        Self {
            grants,
            rotate_before: settings.rabobank.rotate_before,
        }
    }

    async fn run_all(&self, ctx: &RunContext) -> Result<(), JobError> {
        let client = self.grants.client();
        let requests_before = client.tally();
        grants::record_interrupted_refreshes(&ctx.pool, &ctx.actor).await?;
        let ids = store::active_ids(&ctx.pool, PARTNER).await?;
        let mut failures = Vec::new();
        let mut in_doubt = Vec::new();
        let total = ids.len() as i64;
        for (done, id) in (1..).zip(ids) {
            ctx.check_cancelled()?;
            let span = tracing::info_span!("grant", grant_id = %id);
            let outcome = self.rotate_one(ctx, id).instrument(span).await;
            ctx.counts.send_modify(|c| {
                c.fetched += 1;
                c.set_progress(
                    "grants",
                    done,
                    total,
                    client.tally().since(requests_before),
                    client.effective_rate(),
                );
                match &outcome {
                    Ok(Rotated::Refreshed) => c.updated += 1,
                    Ok(Rotated::NotDue) => c.unchanged += 1,
                    Ok(Rotated::InDoubt(_)) => c.skipped += 1,
                    Err(_) => c.failed += 1,
                }
            });
            match outcome {
                Ok(Rotated::InDoubt(why)) => in_doubt.push(why),
                Ok(_) => {}
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        let in_doubt = (!in_doubt.is_empty()).then(|| {
            format!(
                "{} grant(s) in doubt: {}",
                in_doubt.len(),
                in_doubt.join("; ")
            )
        });
        if failures.is_empty() {
            if let Some(in_doubt) = in_doubt {
                ctx.report_partial_failure(in_doubt);
            }
            Ok(())
        } else {
            Err(JobError::Failed(anyhow::anyhow!(
                "{} grant(s) failed: {}{}",
                failures.len(),
                failures.join("; "),
                in_doubt.map(|d| format!("; {d}")).unwrap_or_default()
            )))
        }
    }

    async fn rotate_one(&self, ctx: &RunContext, id: Uuid) -> anyhow::Result<Rotated> {
        let current = match self
            .grants
            .refresh(
                &ctx.pool,
                id,
                RefreshNeed::RefreshTokenExpiresWithin(self.rotate_before),
                &ctx.actor,
            )
            .await
        {
            Ok(current) => current,
            // Another replica changed the grant's status since the list was read.
            Err(RefreshError::NotActive { .. }) => return Ok(Rotated::NotDue),
            // Waits for a person; logged once when it was found, named in the run's error.
            Err(error @ RefreshError::InDoubt { .. }) => {
                return Ok(Rotated::InDoubt(error.to_string()));
            }
            Err(error) => return Err(error.into()),
        };
        let label = current.label.as_deref().unwrap_or("");
        let remaining = REFRESH_LIMIT - current.refresh_count;
        if remaining <= REFRESH_WARNING_REMAINING {
            tracing::warn!(%label, refresh_count = current.refresh_count, remaining, "grant nears Rabobank's limit of 4096 refreshes per consent; ask the user for a new consent");
        }
        if let (Some(lifetime), Some(consented_on)) = (
            self.grants.client().variant().consent_lifetime(),
            current.consented_on,
        ) {
            let ends_at = later(consented_on, lifetime);
            let warn_from = earlier(ends_at, CONSENT_END_WARNING);
            if Utc::now() >= warn_from {
                tracing::warn!(%label, consent_ends_at = %ends_at, "PSD2 consent ends soon; ask the user for a new consent");
            }
        }
        if let Some(status) = self
            .grants
            .check_consent(&ctx.pool, id, current.consent_id.as_deref(), &ctx.actor)
            .await?
        {
            tracing::info!(%label, consent_status = %status, "consent checked");
        }
        Ok(if current.refreshed {
            Rotated::Refreshed
        } else {
            Rotated::NotDue
        })
    }
}

/// What a rotation did with one grant.
enum Rotated {
    Refreshed,
    NotDue,
    /// An interrupted refresh left it in doubt; the text says since when and what to do.
    InDoubt(String),
}

impl Job for RabobankRotation {
    fn rate_budget(&self) -> Option<RateBudget> {
        Some(self.grants.client().rate_budget())
    }

    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.run_all(ctx))
    }
}
