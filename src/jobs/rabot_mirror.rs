//! The RABOT mirror: customers for each configured external id (or all), each page's customers'
//! contracts fetched concurrently under the rate limit, both written in one transaction per
//! page, and deletions detected only once a scope's pass completed.

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::Instrument;

use super::{Job, JobError, JobName, RunContext};
use crate::partners::rabot::{Page, RabotClient};
use crate::settings::Settings;
use crate::store::rabot::{self as store, Scope};

pub struct RabotMirror {
    client: RabotClient,
    scopes: Vec<Scope>,
    concurrency: usize,
}

impl RabotMirror {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let rabot = &settings.rabot;
        let scopes = if rabot.external_ids.is_empty() {
            vec![Scope::AllCustomers]
        } else {
            rabot
                .external_ids
                .iter()
                .cloned()
                .map(Scope::ExternalId)
                .collect()
        };
        Ok(Self {
            client: RabotClient::new(rabot, &settings.http)?,
            scopes,
            concurrency: rabot.concurrency.max(1),
        })
    }

    async fn run_all(&self, ctx: &RunContext) -> Result<(), JobError> {
        // The client (and its counter) lives as long as the daemon; a run reports its own share.
        let requests_before = self.client.requests_sent();
        let mut result = Ok(());
        for scope in self.scopes.iter().cloned() {
            let span = tracing::info_span!("scope", scope = %scope);
            result = self
                .run_scope(ctx, scope, requests_before)
                .instrument(span)
                .await;
            if result.is_err() {
                break;
            }
        }
        ctx.counts
            .send_modify(|c| c.requests = self.requests_since(requests_before));
        result
    }

    fn requests_since(&self, before: u64) -> i64 {
        (self.client.requests_sent() - before) as i64
    }

    async fn run_scope(
        &self,
        ctx: &RunContext,
        scope: Scope,
        requests_before: u64,
    ) -> Result<(), JobError> {
        let external_id = match &scope {
            Scope::AllCustomers => None,
            Scope::ExternalId(id) => Some(id.clone()),
        };
        let mut pages = self.client.customer_pages(external_id);
        while let Some(page) = pages.try_next().await.map_err(failed)? {
            let numbers: Vec<String> = page
                .items
                .iter()
                .map(|c| c.customer_number.clone())
                .collect();
            let contract_pages: Vec<Page<_>> = stream::iter(numbers)
                .map(|number| self.client.contracts(number))
                .buffer_unordered(self.concurrency)
                .try_collect()
                .await
                .map_err(failed)?;

            let fetched =
                page.items.len() + contract_pages.iter().map(|p| p.items.len()).sum::<usize>();
            let skipped = page.skipped + contract_pages.iter().map(|p| p.skipped).sum::<usize>();
            let pages_read = page.pages + contract_pages.iter().map(|p| p.pages).sum::<usize>();
            let contracts = contract_pages.into_iter().flat_map(|p| p.items).collect();

            // Customers and their contracts land together or not at all.
            let mut tx = ctx.pool.begin().await?;
            let customers = store::upsert_customers(&mut tx, ctx.run_id, page.items).await?;
            let contracts = store::upsert_contracts(&mut tx, ctx.run_id, contracts).await?;
            tx.commit().await?;

            ctx.counts.send_modify(|c| {
                c.pages += pages_read as i32;
                c.fetched += fetched as i64;
                c.skipped += skipped as i64;
                c.add_upsert(customers);
                c.add_upsert(contracts);
                c.requests = self.requests_since(requests_before);
            });
            // Shutdown stops the pass between pages: the page in hand is written, not thrown away.
            ctx.check_cancelled()?;
        }

        // The scope's pass is complete: only now may rows it no longer returns be tombstoned.
        let mut tx = ctx.pool.begin().await?;
        let deleted = store::tombstone_unseen(&mut tx, ctx.run_id, &scope).await?;
        tx.commit().await?;
        if deleted > 0 {
            tracing::info!(deleted, "tombstoned rows no longer returned");
        }
        ctx.counts.send_modify(|c| c.deleted += deleted);
        Ok(())
    }
}

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> JobError {
    JobError::Failed(anyhow::Error::new(error))
}

impl Job for RabotMirror {
    fn name(&self) -> JobName {
        JobName::RabotMirror
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
