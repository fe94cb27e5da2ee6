//! The RABOT mirror: customers for each configured external id (or all), each page's customers'
//! contracts fetched concurrently under the rate limit, both written in one transaction per
//! page, and deletions detected only once a scope's pass completed.
//!
//! The same pass serves two jobs: `rabot_mirror` covers the configured scopes on its schedule,
//! `rabot_link_mirror` covers customers who just linked (triggered by the link redirect), so a
//! new customer's rows appear within seconds rather than at the next tick.

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::http::{RateBudget, RequestTally, one_line};
use crate::job::{Job, JobError, RunContext};
use crate::partners::rabot::link_store as links;
use crate::partners::rabot::store::{self as store, Scope};
use crate::partners::rabot::{Contract, Customer, Page, RabotClient};
use crate::settings::{LINKED_CUSTOMERS, Settings, TombstoneGuard};
use crate::store::runs::{self, Remaining};
use crate::store::upsert_setting_aside;

/// Which customers a run covers.
#[derive(Debug, Clone)]
enum Coverage {
    /// `rabot.external_ids`: empty = every customer; `@linked` = every linked customer's
    /// external id, read at the start of each run.
    Configured(Vec<String>),
    /// Customers linked since they were last mirrored (`sync.customer_links.mirrored_at`).
    NewlyLinked,
}

pub struct RabotMirror {
    client: RabotClient,
    coverage: Coverage,
    concurrency: usize,
    guard: TombstoneGuard,
}

impl RabotMirror {
    /// The scheduled mirror, with a client of its own.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self::scheduled(
            settings,
            RabotClient::new(&settings.rabot, &settings.http)?,
        ))
    }

    /// The scheduled mirror over `client` (shared with linking, so one rate limit covers both).
    pub fn scheduled(settings: &Settings, client: RabotClient) -> Self {
        Self {
            client,
            coverage: Coverage::Configured(settings.rabot.external_ids.clone()),
            concurrency: settings.rabot.concurrency.max(1),
            guard: settings.rabot.tombstone_guard,
        }
    }

    /// The mirror of customers who just linked.
    pub fn newly_linked(settings: &Settings, client: RabotClient) -> Self {
        Self {
            coverage: Coverage::NewlyLinked,
            ..Self::scheduled(settings, client)
        }
    }

    async fn run_all(&self, ctx: &RunContext) -> Result<(), JobError> {
        // The client (and its counter) lives as long as the daemon; a run reports its own share.
        let requests_before = self.client.tally();
        let result = match &self.coverage {
            Coverage::Configured(external_ids) => {
                // Customers whose link trigger was lost are caught up first. One that cannot
                // be read waits for the next run rather than holding up every other customer.
                match self.run_newly_linked(ctx, requests_before).await {
                    Err(JobError::Failed(error)) => tracing::warn!(
                        error = format!("{error:#}"),
                        "could not mirror a newly linked customer; the next run tries again"
                    ),
                    other => other?,
                }
                let mut result = Ok(());
                for scope in configured_scopes(ctx, external_ids).await? {
                    result = self.run_scope_logged(ctx, scope, requests_before).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
            Coverage::NewlyLinked => self.run_newly_linked(ctx, requests_before).await,
        };
        ctx.counts
            .send_modify(|c| c.set_requests(self.client.tally().since(requests_before)));
        result
    }

    /// Mirrors each newly linked customer and marks its link mirrored. Links completed while
    /// this runs are taken too (their trigger may have found this run holding the lock).
    async fn run_newly_linked(
        &self,
        ctx: &RunContext,
        requests_before: RequestTally,
    ) -> Result<(), JobError> {
        loop {
            // A link marked mirrored leaves this list, so the loop ends once nothing is new.
            let pending = links::unmirrored(&ctx.pool).await?;
            if pending.is_empty() {
                return Ok(());
            }
            for (link_id, external_id) in pending {
                ctx.check_cancelled()?;
                let before = ctx.counts.borrow().fetched;
                self.run_scope_logged(ctx, Scope::ExternalId(external_id.clone()), requests_before)
                    .await?;
                if ctx.counts.borrow().fetched == before {
                    tracing::warn!(%link_id, %external_id, "RABOT returned no customer for a linked external id");
                }
                links::mark_mirrored(&ctx.pool, link_id).await?;
            }
        }
    }

    async fn run_scope_logged(
        &self,
        ctx: &RunContext,
        scope: Scope,
        requests_before: RequestTally,
    ) -> Result<(), JobError> {
        let span = tracing::info_span!("scope", scope = %scope);
        self.run_scope(ctx, scope, requests_before)
            .instrument(span)
            .await
    }

    async fn run_scope(
        &self,
        ctx: &RunContext,
        scope: Scope,
        requests_before: RequestTally,
    ) -> Result<(), JobError> {
        let external_id = match &scope {
            Scope::AllCustomers => None,
            Scope::ExternalId(id) => Some(id.clone()),
            // One customer's contracts are the targeted refresh's scope, never a listing's.
            Scope::CustomerContracts(_) => {
                return Err(JobError::Failed(anyhow::anyhow!(
                    "{scope} is not a customer list this job can read"
                )));
            }
        };
        // Why a row missing from this pass may still exist upstream; `None` = the pass saw
        // every row the partner has.
        let mut doubt: Option<&'static str> = None;
        // Reading runs ahead of writing: while one page is stored, the next page's customers
        // and the contracts of the two pages after it are being fetched, so the rate limit,
        // not the partner's latency or the database, sets the pace. `concurrency` permits
        // bound the contract requests in flight across those pages.
        let permits = tokio::sync::Semaphore::new(self.concurrency);
        // For the progress estimate: the scope's size, once RABOT's `count` says it.
        let scope_start = self.client.tally();
        let mut customers_done: i64 = 0;
        let mut list_size: Option<u64> = None;
        let (sender, mut read) = tokio::sync::mpsc::channel(1);
        let reading = async {
            let mut pages = self
                .client
                .customer_pages(external_id)
                .map_ok(|page| self.with_contracts(page, &permits))
                .try_buffered(2);
            while let Some(page) = pages.next().await {
                if sender.send(page).await.is_err() {
                    break;
                }
            }
            drop(sender);
            Ok::<_, JobError>(())
        };
        let writing = async {
            while let Some(page) = read.recv().await {
                let (page, contract_pages) = page.map_err(failed)?;
                if page.moved || contract_pages.iter().any(|p| p.moved) {
                    doubt.get_or_insert("the list changed while it was read");
                }
                list_size = page.list_size.or(list_size);
                customers_done += page.items.len() as i64;
                let fetched =
                    page.items.len() + contract_pages.iter().map(|p| p.items.len()).sum::<usize>();
                let unreadable =
                    page.skipped + contract_pages.iter().map(|p| p.skipped).sum::<usize>();
                let pages_read = page.pages + contract_pages.iter().map(|p| p.pages).sum::<usize>();
                let contracts = contract_pages.into_iter().flat_map(|p| p.items).collect();

                let refused = store_read(ctx, page.items, contracts).await?;
                if unreadable + refused > 0 {
                    doubt.get_or_insert("some rows could not be read or stored");
                }
                ctx.counts.send_modify(|c| {
                    c.pages += pages_read as i32;
                    c.fetched += fetched as i64;
                    c.skipped += unreadable as i64;
                    c.set_requests(self.client.tally().since(requests_before));
                    c.remaining = list_size.map(|size| {
                        Remaining::at_rate(
                            "customers",
                            customers_done,
                            size as i64,
                            self.client.tally().since(scope_start).sent as i64,
                            self.client.effective_rate(),
                        )
                    });
                });
                // Shutdown stops the pass between pages: the page in hand is written, not
                // thrown away; what was read ahead is dropped unwritten.
                ctx.check_cancelled()?;
            }
            Ok(())
        };
        // The first error on either side ends both: reading stops when writing fails.
        tokio::try_join!(reading, writing)?;

        // The scope's pass is complete: only now may rows it no longer returns be tombstoned,
        // and only when their absence is certain and not suspiciously large.
        if let Some(doubt) = doubt {
            tracing::warn!(
                reason = doubt,
                "rows missing from this pass are kept until a pass sees the whole list"
            );
            return Ok(());
        }
        tombstone_unseen(ctx, &scope, &self.guard).await
    }
}

impl RabotMirror {
    /// A page of customers with each customer's contracts, fetched under `permits`.
    async fn with_contracts(
        &self,
        page: Page<Customer>,
        permits: &tokio::sync::Semaphore,
    ) -> Result<(Page<Customer>, Vec<Page<Contract>>), crate::partners::rabot::RabotError> {
        let numbers: Vec<String> = page
            .items
            .iter()
            .map(|c| c.customer_number.clone())
            .collect();
        let contract_pages = stream::iter(numbers)
            .map(|number| async move {
                // Never closed, so acquiring cannot fail; if it did, going on unbounded is
                // better than failing the pass.
                let _permit = permits.acquire().await.ok();
                self.client.contracts(number).await
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok((page, contract_pages))
    }
}

/// Writes customers and contracts read together in one transaction, so they land together or
/// not at all; a row the database refuses is set aside (logged, recorded in
/// `sync.run_failures`), not the batch. Adds the upserts and the refused rows (as skipped) to
/// the run's counts, notes the run's schema drift, and returns how many rows were refused.
pub(super) async fn store_read(
    ctx: &RunContext,
    customers: Vec<Customer>,
    contracts: Vec<Contract>,
) -> Result<usize, JobError> {
    ctx.note_drift(|drift| {
        customers.iter().for_each(|c| c.note_drift(drift));
        contracts.iter().for_each(|c| c.note_drift(drift));
    });
    let mut tx = ctx.pool.begin().await?;
    let run_id = ctx.run_id;
    let customers = upsert_setting_aside(
        &mut tx,
        customers,
        |c| format!("customer {}", c.customer_number),
        |conn, rows| Box::pin(store::upsert_customers(conn, run_id, rows)),
    )
    .await?;
    let contracts = upsert_setting_aside(
        &mut tx,
        contracts,
        |c| format!("contract {}/{}", c.customer_number, c.contract_number),
        |conn, rows| Box::pin(store::upsert_contracts(conn, run_id, rows)),
    )
    .await?;
    tx.commit().await?;

    let refused: Vec<_> = customers
        .refused
        .into_iter()
        .chain(contracts.refused)
        .collect();
    for (item, reason) in &refused {
        let reason = one_line(reason);
        tracing::warn!(%item, error = %reason, "row not stored; the pass goes on");
        runs::record_failure(&ctx.pool, ctx.run_id, item, &reason).await?;
    }
    ctx.counts.send_modify(|c| {
        c.skipped += refused.len() as i64;
        c.add_upsert(customers.counts);
        c.add_upsert(contracts.counts);
    });
    Ok(refused.len())
}

/// Once `scope` was read whole and without doubt: tombstones what the run did not see, in one
/// transaction, unless that is more than `guard` allows (then nothing, and the run fails).
pub(super) async fn tombstone_unseen(
    ctx: &RunContext,
    scope: &Scope,
    guard: &TombstoneGuard,
) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    let gone = store::tombstone_unseen(&mut tx, ctx.run_id, scope).await?;
    if let Err(refusal) = guard.check("rabot", gone.rows, gone.mirrored) {
        tx.rollback().await?;
        return Err(JobError::Failed(anyhow::anyhow!(refusal)));
    }
    tx.commit().await?;
    if gone.rows > 0 {
        tracing::info!(deleted = gone.rows, "tombstoned rows no longer returned");
    }
    ctx.counts.send_modify(|c| c.deleted += gone.rows as i64);
    Ok(())
}

pub(super) fn failed(error: impl std::error::Error + Send + Sync + 'static) -> JobError {
    JobError::Failed(anyhow::Error::new(error))
}

/// The scopes of one scheduled run: every customer when none are configured, else each
/// configured external id, `@linked` expanded to the linked customers' ids as of now.
async fn configured_scopes(
    ctx: &RunContext,
    external_ids: &[String],
) -> Result<Vec<Scope>, JobError> {
    if external_ids.is_empty() {
        return Ok(vec![Scope::AllCustomers]);
    }
    let mut ids: Vec<String> = Vec::new();
    for id in external_ids {
        if id == LINKED_CUSTOMERS {
            ids.extend(links::linked_external_ids(&ctx.pool).await?);
        } else {
            ids.push(id.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids.into_iter().map(Scope::ExternalId).collect())
}

impl Job for RabotMirror {
    fn rate_budget(&self) -> Option<RateBudget> {
        Some(self.client.rate_budget())
    }

    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let result = self.run_all(ctx).await;
            // Seen-keys are scratch: drop them whatever the outcome (a crash is cleaned up later).
            if let Err(error) = store::forget_seen(&ctx.pool, ctx.run_id).await {
                tracing::warn!(error = %error, "could not clear this run's seen keys");
            }
            result
        })
    }
}
