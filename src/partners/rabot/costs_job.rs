//! `rabot_costs`: the price components of every contract the mirror shows live, read from
//! RABOT a few contracts at a time (`rabot.concurrency`) under the RABOT client's one rate
//! limit, and stored contract by contract, each in one transaction that writes only what
//! changed.
//!
//! One contract's failure (gone at RABOT since the last mirror pass, a 404; refused; an answer
//! that cannot be read) fails that contract, not the run: it is logged once, counted, and
//! recorded in `sync.run_failures`. Refused RABOT credentials fail the run at once, since every
//! contract would fail the same way; so does a run in which every contract failed.

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::http::RateBudget;
use crate::http::one_line;
use crate::job::{Job, JobError, RunContext};
use crate::partners::rabot::{RabotClient, RabotError};
use crate::partners::rabot::{cost_store, store};
use crate::settings::Settings;
use crate::store::runs;

pub struct RabotCosts {
    client: RabotClient,
    concurrency: usize,
}

/// Why one contract's costs were not stored.
enum ContractFailure {
    /// Stops the run: cancellation, refused credentials, our own database.
    Run(JobError),
    /// Only this contract.
    Contract(RabotError),
}

impl RabotCosts {
    /// Over `client`, shared with the other RABOT jobs so one rate limit covers them all.
    pub fn new(settings: &Settings, client: RabotClient) -> Self {
        Self {
            client,
            concurrency: settings.rabot.concurrency.max(1),
        }
    }

    async fn run_all(&self, ctx: &RunContext) -> Result<(), JobError> {
        // The client (and its counter) lives as long as the daemon; a run reports its own share.
        let requests_before = self.client.tally();
        let contracts = store::live_contracts(&ctx.pool).await?;
        if contracts.is_empty() {
            tracing::info!("no live RABOT contracts: the RABOT mirror has not stored any yet");
            return Ok(());
        }

        let mut outcomes = stream::iter(contracts.clone())
            .map(|contract| {
                let store::LiveContract {
                    customer_number,
                    contract_number,
                    ..
                } = contract;
                let span = tracing::info_span!("contract", %customer_number, %contract_number);
                async move {
                    let outcome = self
                        .mirror_contract(ctx, &customer_number, &contract_number)
                        .await;
                    (customer_number, contract_number, outcome)
                }
                .instrument(span)
            })
            .buffer_unordered(self.concurrency);
        let mut failures: Vec<String> = Vec::new();
        let mut done: i64 = 0;
        while let Some((customer_number, contract_number, outcome)) = outcomes.next().await {
            done += 1;
            ctx.counts.send_modify(|c| {
                c.set_progress(
                    "contracts",
                    done,
                    contracts.len() as i64,
                    self.client.tally().since(requests_before),
                    self.client.effective_rate(),
                );
            });
            match outcome {
                Ok(()) => {}
                // Dropping the stream abandons the contracts in flight; none holds a
                // transaction open while it waits for RABOT.
                Err(ContractFailure::Run(error)) => return Err(error),
                Err(ContractFailure::Contract(error)) => {
                    let item = format!("contract {customer_number}/{contract_number}");
                    // One line: it goes into a log field, a table and the run's summary.
                    let reason = one_line(&format!("{error:#}"));
                    tracing::warn!(%item, error = %reason, "contract costs not mirrored");
                    ctx.counts.send_modify(|c| c.failed += 1);
                    runs::record_failure(&ctx.pool, ctx.run_id, &item, &reason).await?;
                    failures.push(format!("{item}: {reason}"));
                }
            }
        }
        drop(outcomes);
        ctx.counts
            .send_modify(|c| c.set_requests(self.client.tally().since(requests_before)));

        if failures.is_empty() {
            return Ok(());
        }
        // Cut to a readable length; every reason is whole in sync.run_failures.
        let summary = one_line(&format!(
            "{} of {} contracts failed: {}",
            failures.len(),
            contracts.len(),
            failures.join("; ")
        ));
        if failures.len() == contracts.len() {
            Err(JobError::Failed(anyhow::anyhow!(summary)))
        } else {
            ctx.report_partial_failure(summary);
            Ok(())
        }
    }

    /// One contract: its costs from RABOT, then one transaction.
    async fn mirror_contract(
        &self,
        ctx: &RunContext,
        customer_number: &str,
        contract_number: &str,
    ) -> Result<(), ContractFailure> {
        // Shutdown stops the run between contracts, never inside one contract's transaction.
        ctx.check_cancelled().map_err(ContractFailure::Run)?;
        let costs = match self
            .client
            .contract_costs(customer_number, contract_number)
            .await
        {
            Ok(costs) => costs,
            Err(error) if error.is_partner_rejected() => {
                return Err(ContractFailure::Run(JobError::Failed(error.into())));
            }
            Err(error) => return Err(ContractFailure::Contract(error)),
        };
        let fetched = costs.periods.len() as i64
            + costs
                .periods
                .iter()
                .map(|period| period.components.len() as i64)
                .sum::<i64>();
        ctx.note_drift(|drift| costs.periods.iter().for_each(|p| p.note_drift(drift)));
        let stored = cost_store::upsert_contract_costs(&ctx.pool, contract_number, costs.periods)
            .await
            .map_err(|error| ContractFailure::Run(error.into()))?;
        ctx.counts.send_modify(|c| {
            c.pages += 1;
            c.fetched += fetched;
            c.skipped += costs.skipped as i64;
            c.add_upsert(stored.periods);
            c.add_upsert(stored.components);
        });
        Ok(())
    }
}

impl Job for RabotCosts {
    fn rate_budget(&self) -> Option<RateBudget> {
        Some(self.client.rate_budget())
    }

    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.run_all(ctx))
    }
}
