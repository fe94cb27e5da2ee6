//! `mirror.rabot_contract_costs_periods` and `mirror.rabot_contract_cost_components`: a
//! contract's price periods and their components, upserted together in one transaction, each
//! row written only when it changed. Nothing here deletes or tombstones: a period RABOT no
//! longer returns stays, because its prices were in force.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::partners::rabot::CostPeriod;
use crate::store::runs::UpsertCounts;
use crate::store::{content_hash, counts, dedup_last};

/// What storing one contract's costs wrote, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCosts {
    pub periods: UpsertCounts,
    pub components: UpsertCounts,
}

/// Upserts one contract's periods and their components in one transaction. A period repeated
/// in the answer keeps its last occurrence, as does a component repeated within a period.
pub async fn upsert_contract_costs(
    pool: &PgPool,
    contract_number: &str,
    periods: Vec<CostPeriod>,
) -> Result<StoredCosts, sqlx::Error> {
    let periods = dedup_last(periods, |period| period.valid_from);
    let mut tx = pool.begin().await?;
    let mut components = ComponentColumns::default();
    let mut period_columns = PeriodColumns::default();
    for period in periods {
        components.push(&period);
        period_columns.push(period);
    }
    let stored = StoredCosts {
        periods: upsert_periods(&mut tx, contract_number, period_columns).await?,
        components: upsert_components(&mut tx, contract_number, components).await?,
    };
    tx.commit().await?;
    Ok(stored)
}

async fn upsert_periods(
    conn: &mut PgConnection,
    contract_number: &str,
    cols: PeriodColumns,
) -> Result<UpsertCounts, sqlx::Error> {
    let total = cols.valid_from.len() as i64;
    if total == 0 {
        return Ok(UpsertCounts::default());
    }
    let inserted_flags: Vec<bool> = sqlx::query_scalar(
        r#"
        WITH input AS (
            SELECT * FROM unnest($2::timestamptz[], $3::jsonb[], $4::bytea[])
                AS t(valid_from, payload, content_hash)
        ),
        changed AS (
            SELECT i.* FROM input i
            LEFT JOIN mirror.rabot_contract_costs_periods m
                   ON m.contract_number = $1 AND m.valid_from = i.valid_from
            WHERE m.valid_from IS NULL OR m.content_hash <> i.content_hash
        )
        INSERT INTO mirror.rabot_contract_costs_periods AS m
            (contract_number, valid_from, payload, content_hash)
        SELECT $1, valid_from, payload, content_hash FROM changed
        ON CONFLICT (contract_number, valid_from) DO UPDATE SET
            payload = EXCLUDED.payload,
            content_hash = EXCLUDED.content_hash,
            changed_at = now()
        RETURNING (xmax = 0)
        "#,
    )
    .bind(contract_number)
    .bind(cols.valid_from)
    .bind(cols.payload)
    .bind(cols.content_hash)
    .fetch_all(&mut *conn)
    .await?;
    Ok(counts(total, &inserted_flags))
}

async fn upsert_components(
    conn: &mut PgConnection,
    contract_number: &str,
    cols: ComponentColumns,
) -> Result<UpsertCounts, sqlx::Error> {
    let total = cols.component.len() as i64;
    if total == 0 {
        return Ok(UpsertCounts::default());
    }
    // A component is compared column by column: numeric equality, so "12.50" and "12.5" are
    // the same price and nothing is written.
    let inserted_flags: Vec<bool> = sqlx::query_scalar(
        r#"
        WITH input AS (
            SELECT valid_from, component, value::numeric AS value, unit_main, unit_per, unit_text
              FROM unnest($2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                          $7::text[])
                AS t(valid_from, component, value, unit_main, unit_per, unit_text)
        ),
        changed AS (
            SELECT i.* FROM input i
            LEFT JOIN mirror.rabot_contract_cost_components m
                   ON m.contract_number = $1 AND m.valid_from = i.valid_from
                  AND m.component = i.component
            WHERE m.component IS NULL
               OR m.value IS DISTINCT FROM i.value
               OR m.unit_main IS DISTINCT FROM i.unit_main
               OR m.unit_per IS DISTINCT FROM i.unit_per
               OR m.unit_text IS DISTINCT FROM i.unit_text
        )
        INSERT INTO mirror.rabot_contract_cost_components AS m
            (contract_number, valid_from, component, value, unit_main, unit_per, unit_text)
        SELECT $1, valid_from, component, value, unit_main, unit_per, unit_text FROM changed
        ON CONFLICT (contract_number, valid_from, component) DO UPDATE SET
            value = EXCLUDED.value,
            unit_main = EXCLUDED.unit_main,
            unit_per = EXCLUDED.unit_per,
            unit_text = EXCLUDED.unit_text
        RETURNING (xmax = 0)
        "#,
    )
    .bind(contract_number)
    .bind(cols.valid_from)
    .bind(cols.component)
    .bind(cols.value)
    .bind(cols.unit_main)
    .bind(cols.unit_per)
    .bind(cols.unit_text)
    .fetch_all(&mut *conn)
    .await?;
    Ok(counts(total, &inserted_flags))
}

/// Column vectors for `unnest`: one bind parameter per column instead of one per value.
#[derive(Default)]
struct PeriodColumns {
    valid_from: Vec<DateTime<Utc>>,
    payload: Vec<Value>,
    content_hash: Vec<Vec<u8>>,
}

impl PeriodColumns {
    fn push(&mut self, period: CostPeriod) {
        self.content_hash.push(content_hash(&period.raw));
        self.valid_from.push(period.valid_from);
        self.payload.push(period.raw);
    }
}

#[derive(Default)]
struct ComponentColumns {
    valid_from: Vec<DateTime<Utc>>,
    component: Vec<String>,
    value: Vec<Option<String>>,
    unit_main: Vec<Option<String>>,
    unit_per: Vec<Option<String>>,
    unit_text: Vec<Option<String>>,
}

impl ComponentColumns {
    fn push(&mut self, period: &CostPeriod) {
        let components = dedup_last(period.components.clone(), |c| c.name.clone());
        for component in components {
            self.valid_from.push(period.valid_from);
            self.component.push(component.name);
            self.value.push(component.value);
            self.unit_main.push(component.unit_main);
            self.unit_per.push(component.unit_per);
            self.unit_text.push(component.unit_text);
        }
    }
}
