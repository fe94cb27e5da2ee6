//! `mirror.rabot_contract_consumption`: a contract's consumption periods, one contract's
//! answer upserted in one transaction, each row written only when it changed; and the window
//! of periods a run must read again. Nothing here deletes or tombstones: consumption that was
//! measured stays true.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::partners::rabot::{Interval, MetricPeriod};
use crate::store::runs::UpsertCounts;
use crate::store::{content_hash, counts, dedup_last};

/// What is stored of one contract in one interval, as far as the next read needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredWindow {
    /// The earliest period not Final (a state RABOT may still change).
    pub first_open: Option<DateTime<Utc>>,
    /// The start of the period `lookback` periods before the newest one, or of the oldest
    /// stored when fewer are.
    pub lookback_start: Option<DateTime<Utc>>,
}

impl StoredWindow {
    /// Where the next read starts: the earlier of the two; `None` when nothing is stored.
    pub fn from(&self) -> Option<DateTime<Utc>> {
        match (self.first_open, self.lookback_start) {
            (Some(open), Some(lookback)) => Some(open.min(lookback)),
            (open, lookback) => open.or(lookback),
        }
    }
}

pub async fn stored_window(
    pool: &PgPool,
    contract_number: &str,
    interval: Interval,
    lookback: u32,
) -> Result<StoredWindow, sqlx::Error> {
    sqlx::query_as(
        "SELECT
            (SELECT min(period_start) FROM mirror.rabot_contract_consumption
              WHERE contract_number = $1 AND period_interval = $2
                AND value_state IS DISTINCT FROM 'Final') AS first_open,
            COALESCE(
              (SELECT period_start FROM mirror.rabot_contract_consumption
                WHERE contract_number = $1 AND period_interval = $2
                ORDER BY period_start DESC OFFSET $3 LIMIT 1),
              (SELECT min(period_start) FROM mirror.rabot_contract_consumption
                WHERE contract_number = $1 AND period_interval = $2)) AS lookback_start",
    )
    .bind(contract_number)
    .bind(interval.as_str())
    .bind(i64::from(lookback))
    .fetch_one(pool)
    .await
}

/// Upserts one contract's periods (in `unit`) in one transaction. A period repeated in the
/// answer keeps its last occurrence.
pub async fn upsert_contract_consumption(
    pool: &PgPool,
    contract_number: &str,
    interval: Interval,
    unit: Option<&str>,
    periods: Vec<MetricPeriod>,
) -> Result<UpsertCounts, sqlx::Error> {
    let periods = dedup_last(periods, |period| period.start);
    let total = periods.len() as i64;
    if total == 0 {
        return Ok(UpsertCounts::default());
    }
    let mut cols = Columns::default();
    for period in periods {
        cols.push(period, unit);
    }
    let mut tx = pool.begin().await?;
    let inserted_flags: Vec<bool> = sqlx::query_scalar(
        r#"
        WITH input AS (
            SELECT * FROM unnest($4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[],
                                 $8::text[], $9::jsonb[], $10::bytea[])
                AS t(period_start, period_end, value, value_state, relevance_type, payload,
                     content_hash)
        ),
        changed AS (
            SELECT i.* FROM input i
            LEFT JOIN mirror.rabot_contract_consumption m
                   ON m.contract_number = $1 AND m.period_interval = $2
                  AND m.period_start = i.period_start
            WHERE m.period_start IS NULL OR m.content_hash <> i.content_hash
        )
        INSERT INTO mirror.rabot_contract_consumption AS m
            (contract_number, period_interval, period_start, period_end, value, unit,
             value_state, relevance_type, payload, content_hash)
        SELECT $1, $2, period_start, period_end, value::numeric, $3, value_state,
               relevance_type, payload, content_hash
          FROM changed
        ON CONFLICT (contract_number, period_interval, period_start) DO UPDATE SET
            period_end = EXCLUDED.period_end,
            value = EXCLUDED.value,
            unit = EXCLUDED.unit,
            value_state = EXCLUDED.value_state,
            relevance_type = EXCLUDED.relevance_type,
            payload = EXCLUDED.payload,
            content_hash = EXCLUDED.content_hash,
            changed_at = now()
        RETURNING (xmax = 0)
        "#,
    )
    .bind(contract_number)
    .bind(interval.as_str())
    .bind(unit)
    .bind(cols.start)
    .bind(cols.end)
    .bind(cols.value)
    .bind(cols.value_state)
    .bind(cols.relevance_type)
    .bind(cols.payload)
    .bind(cols.content_hash)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counts(total, &inserted_flags))
}

/// Column vectors for `unnest`: one bind parameter per column instead of one per value.
#[derive(Default)]
struct Columns {
    start: Vec<DateTime<Utc>>,
    end: Vec<DateTime<Utc>>,
    value: Vec<Option<String>>,
    value_state: Vec<Option<String>>,
    relevance_type: Vec<Option<String>>,
    payload: Vec<Value>,
    content_hash: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, period: MetricPeriod, unit: Option<&str>) {
        // The end comes from the neighbouring record and the unit from the answer: a change
        // to either is a change to the row.
        self.content_hash.push(content_hash(&json!({
            "record": period.raw,
            "end": period.end,
            "unit": unit,
        })));
        self.start.push(period.start);
        self.end.push(period.end);
        self.value.push(period.value);
        self.value_state.push(period.value_state);
        self.relevance_type.push(period.relevance_type);
        self.payload.push(period.raw);
    }
}
