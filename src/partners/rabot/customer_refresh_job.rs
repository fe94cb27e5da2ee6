//! The targeted refresh of one RABOT customer (`resync rabot --customer ID`): that customer's
//! row and whole contracts list now, without a full pass and without tombstoning anything of
//! any other customer.
//!
//! RABOT documents no endpoint for one customer, so the ID (from the request the run answers)
//! is resolved here: a customer number the mirror knows is refreshed through the customer list
//! filtered by its external id (a customer without one keeps its row; its contracts are still
//! refreshed); any other ID is taken as an external id, and every customer listed under it is
//! refreshed. The ID travels only as a query value, percent-encoded by the client; paths carry
//! customer numbers RABOT itself gave.
//!
//! A customer's contracts that vanished are tombstoned when its whole list was read without
//! doubt (the same rules as a full pass: a list that moved, a 404, a row that could not be read
//! or stored, and nothing is tombstoned). Only rows last written before this run started can be
//! tombstoned, so the refresh may run beside a full pass (as the link mirror does) rather than
//! wait for one or hold one back.

use futures::TryStreamExt;
use futures::future::BoxFuture;

use super::mirror_job::{failed, store_read, tombstone_unseen};
use crate::http::RateBudget;
use crate::job::{Job, JobError, RunContext};
use crate::partners::rabot::store::{self as store, Scope};
use crate::partners::rabot::{Customer, RabotClient};
use crate::settings::{Settings, TombstoneGuard};
use crate::store::trigger_requests;

/// The longest customer number or external id a refresh takes (the column's bound too).
pub const MAX_CUSTOMER_ID_CHARS: usize = 200;

/// A customer ID as an operator gives it: trimmed, then 1 to [`MAX_CUSTOMER_ID_CHARS`]
/// characters, none of them a control character (NUL, newlines, escapes).
pub fn customer_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.is_empty()
        || id.chars().count() > MAX_CUSTOMER_ID_CHARS
        || id.chars().any(char::is_control)
    {
        return Err(format!(
            "a customer number or external id is 1 to {MAX_CUSTOMER_ID_CHARS} printable characters"
        ));
    }
    Ok(id.to_owned())
}

pub struct RabotCustomerRefresh {
    client: RabotClient,
    guard: TombstoneGuard,
}

/// One customer to refresh: its number, and its row as RABOT lists it now (`None`: the row
/// could not be asked for, and stays as mirrored).
struct Target {
    customer_number: String,
    listed: Option<Customer>,
}

impl RabotCustomerRefresh {
    /// Over `client`, shared with the other RABOT jobs so one rate limit covers them all.
    pub fn new(settings: &Settings, client: RabotClient) -> Self {
        Self {
            client,
            guard: settings.rabot.tombstone_guard,
        }
    }

    async fn refresh(&self, ctx: &RunContext) -> Result<(), JobError> {
        let id = requested_id(ctx).await?;
        let requests_before = self.client.tally();
        let result = self.refresh_id(ctx, &id).await;
        ctx.counts
            .send_modify(|c| c.set_requests(self.client.tally().since(requests_before)));
        result
    }

    async fn refresh_id(&self, ctx: &RunContext, id: &str) -> Result<(), JobError> {
        let mut notes = Vec::new();
        let targets = match store::mirrored_external_id(&ctx.pool, id).await? {
            Some(external_id) => vec![
                self.known_customer(ctx, id, external_id, &mut notes)
                    .await?,
            ],
            None => {
                let listed = self.listed_under(ctx, id).await?;
                if listed.is_empty() {
                    return Err(JobError::Failed(anyhow::anyhow!(
                        "no RABOT customer with customer number or external id {id} (a \
                         customer number is looked up in the mirror: one not mirrored yet is \
                         found by its external id)"
                    )));
                }
                listed
                    .into_iter()
                    .map(|customer| Target {
                        customer_number: customer.customer_number.clone(),
                        listed: Some(customer),
                    })
                    .collect()
            }
        };
        for target in targets {
            ctx.check_cancelled()?;
            let customer_number = target.customer_number.clone();
            if let Some(doubt) = self.refresh_customer(ctx, target).await? {
                notes.push(format!(
                    "customer {customer_number}: {doubt}, so none of its contracts were tombstoned"
                ));
            }
        }
        if !notes.is_empty() {
            let summary = notes.join("; ");
            tracing::warn!(notes = %summary, "customer refreshed in part");
            ctx.report_partial_failure(summary);
        }
        Ok(())
    }

    /// A customer number the mirror knows: its row as RABOT lists it under the external id it
    /// was mirrored with, if it has one and is still listed there.
    async fn known_customer(
        &self,
        ctx: &RunContext,
        customer_number: &str,
        external_id: Option<String>,
        notes: &mut Vec<String>,
    ) -> Result<Target, JobError> {
        // An empty filter could list every customer: it is no external id.
        let listed = match external_id.filter(|id| !id.is_empty()) {
            None => {
                notes.push(format!(
                    "customer {customer_number} has no external id, so RABOT cannot list it \
                     alone: its row was kept as mirrored and only its contracts were refreshed"
                ));
                None
            }
            Some(external_id) => {
                let listed = self
                    .listed_under(ctx, &external_id)
                    .await?
                    .into_iter()
                    .find(|customer| customer.customer_number == customer_number);
                if listed.is_none() {
                    notes.push(format!(
                        "customer {customer_number} is no longer listed under external id \
                         {external_id}: its row was kept as mirrored"
                    ));
                }
                listed
            }
        };
        Ok(Target {
            customer_number: customer_number.to_owned(),
            listed,
        })
    }

    /// Every customer RABOT lists under `external_id` that carries exactly that id (the filter
    /// is RABOT's; it is checked here too, so no other customer is ever written).
    async fn listed_under(
        &self,
        ctx: &RunContext,
        external_id: &str,
    ) -> Result<Vec<Customer>, JobError> {
        let mut customers = Vec::new();
        let mut pages = self.client.customer_pages(Some(external_id.to_owned()));
        while let Some(page) = pages.try_next().await.map_err(failed)? {
            ctx.counts.send_modify(|c| {
                c.pages += page.pages as i32;
                c.skipped += page.skipped as i64;
            });
            customers.extend(
                page.items
                    .into_iter()
                    .filter(|customer| customer.external_id.as_deref() == Some(external_id)),
            );
        }
        Ok(customers)
    }

    /// Reads the customer's whole contracts list and stores it with the customer's row; then
    /// tombstones its contracts that vanished, unless there is a doubt, which is returned.
    async fn refresh_customer(
        &self,
        ctx: &RunContext,
        target: Target,
    ) -> Result<Option<&'static str>, JobError> {
        let Target {
            customer_number,
            listed,
        } = target;
        let contracts = self
            .client
            .contracts(customer_number.clone())
            .await
            .map_err(failed)?;
        let mut doubt = contracts.moved.then_some(
            "its contracts list changed while it was read, or RABOT no longer has the customer",
        );
        let customers: Vec<Customer> = listed.into_iter().collect();
        let fetched = customers.len() + contracts.items.len();
        ctx.counts.send_modify(|c| {
            c.pages += contracts.pages as i32;
            c.fetched += fetched as i64;
            c.skipped += contracts.skipped as i64;
        });
        let refused = store_read(ctx, customers, contracts.items).await?;
        if contracts.skipped + refused > 0 {
            doubt.get_or_insert("some of its rows could not be read or stored");
        }
        if doubt.is_none() {
            let scope = Scope::CustomerContracts(customer_number);
            tombstone_unseen(ctx, &scope, &self.guard).await?;
        }
        Ok(doubt)
    }
}

/// The ID the run's request names, checked again: the request row is input too.
async fn requested_id(ctx: &RunContext) -> Result<String, JobError> {
    let job = ctx.job;
    let Some(&request) = ctx.requests.first() else {
        return Err(JobError::Failed(anyhow::anyhow!(
            "{job} refreshes the customer a request names: use `partner-sync resync rabot --customer ID`"
        )));
    };
    let customer = trigger_requests::customer_of(&ctx.pool, request, job)
        .await?
        .ok_or_else(|| anyhow::anyhow!("request {request} names no customer"))?;
    customer_id(&customer)
        .map_err(|reason| JobError::Failed(anyhow::anyhow!("request {request}: {reason}")))
}

impl Job for RabotCustomerRefresh {
    fn rate_budget(&self) -> Option<RateBudget> {
        Some(self.client.rate_budget())
    }

    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let result = self.refresh(ctx).await;
            // Seen-keys are scratch: drop them whatever the outcome.
            if let Err(error) = store::forget_seen(&ctx.pool, ctx.run_id).await {
                tracing::warn!(error = %error, "could not clear this run's seen keys");
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_are_bounded_and_printable() {
        assert_eq!(customer_id(" 46491184 ").as_deref(), Ok("46491184"));
        assert_eq!(customer_id("../?x=").as_deref(), Ok("../?x="));
        assert_eq!(customer_id("EXT-ü 1").as_deref(), Ok("EXT-ü 1"));
        let longest = "é".repeat(MAX_CUSTOMER_ID_CHARS);
        assert_eq!(customer_id(&longest).as_deref(), Ok(longest.as_str()));
        for refused in [
            String::new(),
            "   ".to_owned(),
            "a\0b".to_owned(),
            "a\nb".to_owned(),
            "a\u{1b}[2Jb".to_owned(),
            "a\u{85}b".to_owned(),
            "x".repeat(MAX_CUSTOMER_ID_CHARS + 1),
            "x".repeat(10_000),
        ] {
            assert!(customer_id(&refused).is_err(), "{refused:?}");
        }
    }
}
