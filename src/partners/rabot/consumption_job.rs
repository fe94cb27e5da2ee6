//! `rabot_consumption`: the consumption of every contract the mirror shows live, read from
//! RABOT's contract metrics a few contracts at a time (`rabot.concurrency`) under the RABOT
//! client's one rate limit, and stored contract by contract, each in one transaction that
//! writes only what changed.
//!
//! Incremental: a contract with periods stored is read again from the earlier of its first
//! period not Final and `rabot.consumption_lookback` periods before its newest one, so Final
//! periods older than that are not fetched again. A contract with nothing stored is read from
//! its delivery start, but never from further back than `rabot.consumption_backfill_limit`.
//! Every read ends now.
//!
//! A 403 is expected: metrics need `role:application` or a Linked customer, and
//! `role:finance-reporting` reads the contracts of customers who never linked. Such a contract
//! is skipped, counted (`skipped`, [`metrics::RABOT_CONSUMPTION_FORBIDDEN`]) and summed up in
//! one log line per run; it never fails the run. Any other failure of one contract fails that
//! contract only, as in `rabot_costs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::http::RateBudget;
use crate::http::one_line;
use crate::job::{Job, JobError, RunContext};
use crate::metrics;
use crate::partners::rabot::consumption_store;
use crate::partners::rabot::store::{self, LiveContract};
use crate::partners::rabot::{Interval, MetricsQuery, RabotClient, RabotError};
use crate::settings::Settings;
use crate::store::runs;

pub struct RabotConsumption {
    client: RabotClient,
    concurrency: usize,
    interval: Interval,
    zone: Tz,
    lookback: u32,
    backfill_limit: Duration,
    metric_type_parameter: String,
    value_type_parameter: String,
    /// Contracts refused with 403 in the last run that ended, for the demo's summary.
    last_forbidden: AtomicU64,
}

/// What became of one contract.
enum ContractOutcome {
    Stored,
    /// Delivery starts in the future: nothing to read yet.
    NotDelivered,
    /// 403: its customer has not linked.
    Forbidden,
}

/// Why one contract's consumption was not stored.
enum ContractFailure {
    /// Stops the run: cancellation, refused credentials, our own database.
    Run(JobError),
    /// Only this contract.
    Contract(RabotError),
}

impl RabotConsumption {
    /// Over `client`, shared with the other RABOT jobs so one rate limit covers them all.
    pub fn new(settings: &Settings, client: RabotClient) -> Self {
        let rabot = &settings.rabot;
        Self {
            client,
            concurrency: rabot.concurrency.max(1),
            // Validated with the settings; Monthly is the documented default either way.
            interval: Interval::parse(&rabot.consumption_interval).unwrap_or(Interval::Monthly),
            zone: rabot.metrics_timezone,
            lookback: rabot.consumption_lookback,
            backfill_limit: rabot.consumption_backfill_limit,
            metric_type_parameter: rabot.metric_type_parameter.clone(),
            value_type_parameter: rabot.value_type_parameter.clone(),
            last_forbidden: AtomicU64::new(0),
        }
    }

    /// Contracts RABOT refused with 403 (customer not linked) in the last run.
    pub fn last_run_forbidden(&self) -> u64 {
        self.last_forbidden.load(Ordering::Relaxed)
    }

    async fn run_all(&self, ctx: &RunContext) -> Result<(), JobError> {
        let requests_before = self.client.tally();
        self.last_forbidden.store(0, Ordering::Relaxed);
        let contracts = store::live_contracts(&ctx.pool).await?;
        if contracts.is_empty() {
            tracing::info!("no live RABOT contracts: the RABOT mirror has not stored any yet");
            return Ok(());
        }
        // One instant for the whole run: every contract is read up to the same moment.
        let now = Utc::now();

        let mut outcomes = stream::iter(contracts.iter().cloned())
            .map(|contract| {
                let span = tracing::info_span!(
                    "contract",
                    customer_number = %contract.customer_number,
                    contract_number = %contract.contract_number
                );
                async move {
                    let outcome = self.mirror_contract(ctx, &contract, now).await;
                    (contract, outcome)
                }
                .instrument(span)
            })
            .buffer_unordered(self.concurrency);
        let mut failures: Vec<String> = Vec::new();
        let mut done: i64 = 0;
        let mut forbidden: u64 = 0;
        while let Some((contract, outcome)) = outcomes.next().await {
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
                Ok(ContractOutcome::Stored | ContractOutcome::NotDelivered) => {}
                Ok(ContractOutcome::Forbidden) => {
                    forbidden += 1;
                    self.last_forbidden.store(forbidden, Ordering::Relaxed);
                    metrics::rabot_consumption_forbidden(1);
                    ctx.counts.send_modify(|c| c.skipped += 1);
                }
                // Dropping the stream abandons the contracts in flight; none holds a
                // transaction open while it waits for RABOT.
                Err(ContractFailure::Run(error)) => return Err(error),
                Err(ContractFailure::Contract(error)) => {
                    let item = format!(
                        "contract {}/{}",
                        contract.customer_number, contract.contract_number
                    );
                    let reason = one_line(&format!("{error:#}"));
                    tracing::warn!(%item, error = %reason, "contract consumption not mirrored");
                    ctx.counts.send_modify(|c| c.failed += 1);
                    runs::record_failure(&ctx.pool, ctx.run_id, &item, &reason).await?;
                    failures.push(format!("{item}: {reason}"));
                }
            }
        }
        drop(outcomes);
        ctx.counts
            .send_modify(|c| c.set_requests(self.client.tally().since(requests_before)));
        if forbidden > 0 {
            // Expected, and the same every run: one line, not one per contract.
            tracing::info!(
                forbidden,
                contracts = contracts.len(),
                "RABOT refused the consumption of {forbidden} contracts with 403 (their customers \
                 have not linked; role:finance-reporting alone does not reach metrics): skipped"
            );
        }

        if failures.is_empty() {
            return Ok(());
        }
        let attempted = contracts.len() - forbidden as usize;
        let summary = one_line(&format!(
            "{} of {attempted} contracts failed: {}",
            failures.len(),
            failures.join("; ")
        ));
        if failures.len() == attempted {
            Err(JobError::Failed(anyhow::anyhow!(summary)))
        } else {
            ctx.report_partial_failure(summary);
            Ok(())
        }
    }

    /// Where a contract's read starts: see the module comment. `None` when there is nothing
    /// to read yet (delivery starts after `now`).
    fn read_from(
        &self,
        stored: Option<DateTime<Utc>>,
        delivery_start: Option<NaiveDate>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if let Some(from) = stored {
            return Some(from);
        }
        let limit = chrono::Duration::from_std(self.backfill_limit)
            .ok()
            .and_then(|limit| now.checked_sub_signed(limit))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let delivery = delivery_start.and_then(|day| {
            // Midnight of that day on the zone's clock (or the first instant after a gap).
            let midnight = day.and_hms_opt(0, 0, 0)?;
            self.zone
                .from_local_datetime(&midnight)
                .earliest()
                .or_else(|| {
                    self.zone
                        .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                        .earliest()
                })
                .map(|at| at.with_timezone(&Utc))
        });
        let from = delivery.map_or(limit, |delivery| delivery.max(limit));
        (from < now).then_some(from)
    }

    /// One contract: its window from the table, its consumption from RABOT, one transaction.
    async fn mirror_contract(
        &self,
        ctx: &RunContext,
        contract: &LiveContract,
        now: DateTime<Utc>,
    ) -> Result<ContractOutcome, ContractFailure> {
        // Shutdown stops the run between contracts, never inside one contract's transaction.
        ctx.check_cancelled().map_err(ContractFailure::Run)?;
        let stored = consumption_store::stored_window(
            &ctx.pool,
            &contract.contract_number,
            self.interval,
            self.lookback,
        )
        .await
        .map_err(|error| ContractFailure::Run(error.into()))?;
        let Some(from) = self.read_from(stored.from(), contract.delivery_start, now) else {
            return Ok(ContractOutcome::NotDelivered);
        };
        let query = MetricsQuery {
            from,
            to: now,
            interval: self.interval,
            zone: self.zone,
            metric_type_parameter: &self.metric_type_parameter,
            value_type_parameter: &self.value_type_parameter,
        };
        let metrics = match self
            .client
            .contract_consumption(&contract.customer_number, &contract.contract_number, &query)
            .await
        {
            Ok(metrics) => metrics,
            Err(error) if error.is_partner_rejected() => {
                return Err(ContractFailure::Run(JobError::Failed(error.into())));
            }
            Err(error) if error.status() == Some(reqwest::StatusCode::FORBIDDEN) => {
                return Ok(ContractOutcome::Forbidden);
            }
            Err(error) => return Err(ContractFailure::Contract(error)),
        };
        let fetched = metrics.periods.len() as i64;
        ctx.note_drift(|drift| metrics.periods.iter().for_each(|p| p.note_drift(drift)));
        let stored = consumption_store::upsert_contract_consumption(
            &ctx.pool,
            &contract.contract_number,
            self.interval,
            metrics.unit.as_deref(),
            metrics.periods,
        )
        .await
        .map_err(|error| ContractFailure::Run(error.into()))?;
        ctx.counts.send_modify(|c| {
            c.pages += 1;
            c.fetched += fetched;
            c.skipped += metrics.skipped as i64;
            c.add_upsert(stored);
        });
        Ok(ContractOutcome::Stored)
    }
}

impl Job for RabotConsumption {
    fn rate_budget(&self) -> Option<RateBudget> {
        Some(self.client.rate_budget())
    }

    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.run_all(ctx))
    }
}
