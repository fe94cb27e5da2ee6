//! `sync.rate_budget_members`: replicas that send with the same partner credential divide its
//! configured rate. Each process renews its row while its client sends, and sets its limiter's
//! share to the number of fresh rows; an idle process leaves, so the busy ones take the whole
//! rate within one renewal.
//!
//! PostgreSQL's clock decides freshness, so replicas' clocks need not agree. Between two
//! renewals a replica that has just started sending may overlap with the others for up to
//! [`RENEW_EVERY`]; a 429 in that gap is handled by the adaptive limiter like any other.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::http::RateBudget;

/// How often each process renews its row and reads the others'.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A row older than this no longer counts: its process stopped or went idle without leaving.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// Renews (`sending`) or removes this member's row, drops rows gone stale, and returns how many
/// members send with `budget` now, this one included when `sending`.
pub async fn renew(
    pool: &PgPool,
    budget: &str,
    member: Uuid,
    sending: bool,
    fresh_for: Duration,
) -> Result<u32, sqlx::Error> {
    // One statement: every part sees the rows as they were before it, hence `member <> $2`
    // in the count and this member added by hand.
    let others: i64 = sqlx::query_scalar(
        "WITH renewed AS (
             INSERT INTO sync.rate_budget_members (budget, member, seen_at)
             SELECT $1, $2, now() WHERE $3
             ON CONFLICT (budget, member) DO UPDATE SET seen_at = now()
         ),
         removed AS (
             DELETE FROM sync.rate_budget_members
              WHERE (budget = $1 AND member = $2 AND NOT $3)
                 OR (member <> $2 AND seen_at < now() - $4::interval)
         )
         SELECT count(*) FROM sync.rate_budget_members
          WHERE budget = $1 AND member <> $2 AND seen_at >= now() - $4::interval",
    )
    .bind(budget)
    .bind(member)
    .bind(sending)
    .bind(interval(fresh_for))
    .fetch_one(pool)
    .await?;
    Ok(u32::try_from(others)
        .unwrap_or(u32::MAX)
        .saturating_add(u32::from(sending)))
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

/// Keeps `budget`'s share up to date until `stop`, every `every`, then leaves. A database that
/// does not answer leaves the last share in place (logged once per outage): the limiter's own
/// reaction to 429s still holds the partner's limit.
pub async fn keep_share(
    pool: PgPool,
    budget: RateBudget,
    every: Duration,
    fresh_for: Duration,
    stop: CancellationToken,
) {
    let member = Uuid::new_v4();
    let partner = budget.limiter.partner();
    let mut failing = false;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let sending = budget.limiter.sent_within(fresh_for);
        match renew(&pool, &budget.key, member, sending, fresh_for).await {
            Ok(members) => {
                failing = false;
                // An idle process counts itself among those sending, so that its first
                // requests already keep to its share.
                budget.limiter.set_share(members + u32::from(!sending));
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(partner, error = %error, "could not renew this replica's share of the rate limit");
            }
            Err(_) => {}
        }
    }
    // Leaving lets the others take the whole rate at once; if the database does not answer
    // soon, the row goes stale within `fresh_for` anyway.
    let leave = renew(&pool, &budget.key, member, false, fresh_for);
    match tokio::time::timeout(every, leave).await {
        Ok(Err(error)) => {
            tracing::debug!(partner, error = %error, "could not leave the rate budget")
        }
        Err(_) => tracing::debug!(partner, "leaving the rate budget took too long"),
        Ok(Ok(_)) => {}
    }
}

/// One task per distinct limiter among `budgets` (jobs of one partner share theirs), each
/// keeping its share until `stop`.
pub fn spawn_keepers(
    pool: &PgPool,
    budgets: impl IntoIterator<Item = RateBudget>,
    tracker: &tokio_util::task::TaskTracker,
    stop: &CancellationToken,
) {
    let mut distinct: Vec<RateBudget> = Vec::new();
    for budget in budgets {
        if !distinct
            .iter()
            .any(|known| std::sync::Arc::ptr_eq(&known.limiter, &budget.limiter))
        {
            distinct.push(budget);
        }
    }
    for budget in distinct {
        tracker.spawn(keep_share(
            pool.clone(),
            budget,
            RENEW_EVERY,
            FRESH_FOR,
            stop.clone(),
        ));
    }
}
