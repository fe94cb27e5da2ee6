//! `month_end_snapshot`: freezes each closed month's RABOT contracts, as mirrored at the
//! month's last moment (`mirror.rabot_contracts_as_of`), into `mirror.month_end_contracts`,
//! then applies `[retention]`.
//!
//! A month is closed once midnight at the start of the next month has passed in
//! `month_end.timezone`. A run freezes every closed month not frozen yet, from the month of the
//! mirror's first contract (at least the previous month), so a run missed on the 1st is caught
//! up by the next. Each month is one transaction that first claims the month's row in
//! `mirror.month_end_snapshots`: a month frozen before, by this replica or another, is never
//! taken again, so later changes and history purges cannot alter a closed month. Freezing comes
//! before the purge for the same reason.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::job::{Job, JobError, RunContext};
use crate::settings::{RetentionSettings, Settings};

use super::retention;

pub struct MonthEndSnapshot {
    zone: Tz,
    retention: RetentionSettings,
}

impl MonthEndSnapshot {
    pub fn new(settings: &Settings) -> Self {
        Self {
            zone: settings.month_end.timezone,
            retention: settings.retention.clone(),
        }
    }
}

/// One month frozen by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenMonth {
    /// The month's first day.
    pub month: NaiveDate,
    pub snapshot_at: DateTime<Utc>,
    /// Contracts frozen.
    pub contracts: u64,
}

impl Job for MonthEndSnapshot {
    fn run<'a>(&'a self, ctx: &'a RunContext) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let frozen = freeze_closed_months(&ctx.pool, self.zone, &ctx.cancel).await?;
            for month in &frozen {
                tracing::info!(month = %month.month, contracts = month.contracts, "month frozen");
            }
            let contracts: u64 = frozen.iter().map(|month| month.contracts).sum();
            ctx.counts.send_modify(|c| c.inserted += contracts as i64);
            ctx.check_cancelled()?;
            let purged = retention::purge(&ctx.pool, &self.retention, &ctx.actor).await?;
            ctx.counts
                .send_modify(|c| c.deleted += purged.total() as i64);
            Ok(())
        })
    }
}

/// The closed months not frozen yet, oldest first, each with the moment it is frozen at.
async fn missing_months(
    pool: &PgPool,
    zone: Tz,
) -> Result<Vec<(NaiveDate, DateTime<Utc>)>, sqlx::Error> {
    // Month arithmetic in the database, in the zone's own calendar: `timestamptz AT TIME ZONE`
    // gives the local time there, `timestamp AT TIME ZONE` the instant of a local time.
    sqlx::query_as(
        "WITH bounds AS (
             SELECT date_trunc('month', now() AT TIME ZONE $1) - interval '1 month' AS last_closed,
                    (SELECT date_trunc('month', min(first_seen_at) AT TIME ZONE $1)
                       FROM mirror.rabot_contracts) AS first_data
         )
         SELECT m::date, (m + interval '1 month') AT TIME ZONE $1
           FROM bounds,
                generate_series(least(coalesce(first_data, last_closed), last_closed),
                                last_closed, interval '1 month') AS m
          WHERE NOT EXISTS (SELECT 1 FROM mirror.month_end_snapshots s WHERE s.month = m::date)
          ORDER BY m",
    )
    .bind(zone.name())
    .fetch_all(pool)
    .await
}

/// Freezes every closed month not frozen yet; returns those this call froze (none when another
/// replica was first).
pub async fn freeze_closed_months(
    pool: &PgPool,
    zone: Tz,
    cancel: &CancellationToken,
) -> Result<Vec<FrozenMonth>, JobError> {
    let mut frozen = Vec::new();
    for (month, snapshot_at) in missing_months(pool, zone).await? {
        // Between months, never inside one: a month is frozen whole or not at all.
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let mut tx = pool.begin().await?;
        // The claim: a concurrent run waits here for the other's commit, then finds the month
        // taken and inserts nothing.
        let taken_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO mirror.month_end_snapshots (month, snapshot_at, timezone)
             VALUES ($1, $2, $3) ON CONFLICT (month) DO NOTHING RETURNING taken_at",
        )
        .bind(month)
        .bind(snapshot_at)
        .bind(zone.name())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(taken_at) = taken_at else {
            continue;
        };
        let contracts = sqlx::query(
            "INSERT INTO mirror.month_end_contracts
                 (month, snapshot_at, taken_at, customer_number, contract_number, name, state,
                  tariff_name, delivery_start, delivery_end, meter_number, malo_id, melo_id,
                  expected_annual_kwh, accounting_method, grid_operator_code,
                  grid_operator_name, version_valid_from)
             SELECT $1, $2, $3, a.customer_number, a.contract_number, a.name, a.state,
                    a.tariff_name, a.delivery_start, a.delivery_end, a.meter_number, a.malo_id,
                    a.melo_id, a.expected_annual_kwh, a.accounting_method,
                    a.grid_operator_code, a.grid_operator_name, a.version_valid_from
               FROM mirror.rabot_contracts_as_of($2) a
             ON CONFLICT (month, contract_number) DO NOTHING",
        )
        .bind(month)
        .bind(snapshot_at)
        .bind(taken_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        frozen.push(FrozenMonth {
            month,
            snapshot_at,
            contracts,
        });
    }
    Ok(frozen)
}
