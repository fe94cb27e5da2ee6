//! `[retention]`: deletes the history of rows a partner stopped returning long ago, and raw rows
//! older than their setting, in one transaction with an audit entry that counts them.
//!
//! The statements are built from the tables below (names written here, never read from
//! outside); every value, the age included, is a bound parameter. Keeping another table's raw
//! rows for a limited time is one more [`RawTable`] in [`RAW_TABLES`].

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

use crate::settings::RetentionSettings;
use crate::store::audit::{self, Actor, Entry};

/// A history table and the live table whose tombstones decide when its versions go.
struct History {
    versions: &'static str,
    live: &'static str,
    /// The key both share.
    key: &'static [&'static str],
}

const HISTORIES: &[History] = &[
    History {
        versions: "mirror.rabot_customers_versions",
        live: "mirror.rabot_customers",
        key: &["customer_number"],
    },
    History {
        versions: "mirror.rabot_contracts_versions",
        live: "mirror.rabot_contracts",
        key: &["customer_number", "contract_number"],
    },
    History {
        versions: "mirror.energyzero_users_versions",
        live: "mirror.energyzero_users",
        key: &["user_id"],
    },
    History {
        versions: "mirror.energyzero_contracts_versions",
        live: "mirror.energyzero_contracts",
        key: &["user_id", "contract_id"],
    },
];

/// A table of raw rows kept for `keep(retention)`, judged by its `recorded_at` column.
pub struct RawTable {
    pub table: &'static str,
    pub recorded_at: &'static str,
    pub keep: fn(&RetentionSettings) -> Option<Duration>,
}

/// Every table of raw rows with a retention setting.
/// Consumption goes by the end of the period it measured, in both the table and its history.
pub const RAW_TABLES: &[RawTable] = &[
    RawTable {
        table: "mirror.rabot_contract_consumption",
        recorded_at: "period_end",
        keep: |retention| retention.raw_consumption,
    },
    RawTable {
        table: "mirror.rabot_contract_consumption_versions",
        recorded_at: "period_end",
        keep: |retention| retention.raw_consumption,
    },
];

/// Rows deleted, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged(pub BTreeMap<&'static str, u64>);

impl Purged {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Applies `retention` to the mirror's histories and to [`RAW_TABLES`].
pub async fn purge(
    pool: &PgPool,
    retention: &RetentionSettings,
    actor: &Actor,
) -> Result<Purged, sqlx::Error> {
    purge_tables(pool, retention, RAW_TABLES, actor).await
}

/// [`purge`] over `raw` instead of [`RAW_TABLES`]. Nothing is written, the audit entry
/// included, when no setting asks for a purge.
pub async fn purge_tables(
    pool: &PgPool,
    retention: &RetentionSettings,
    raw: &[RawTable],
    actor: &Actor,
) -> Result<Purged, sqlx::Error> {
    let raw: Vec<(&RawTable, Duration)> = raw
        .iter()
        .filter_map(|table| Some((table, (table.keep)(retention)?)))
        .collect();
    if retention.tombstoned_versions.is_none() && raw.is_empty() {
        return Ok(Purged::default());
    }
    let mut purged = Purged::default();
    let mut tx = pool.begin().await?;
    if let Some(keep) = retention.tombstoned_versions {
        for history in HISTORIES {
            let join = history
                .key
                .iter()
                .map(|column| format!("l.{column} = v.{column}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let sql = format!(
                "DELETE FROM {} v USING {} l WHERE {join} AND l.deleted_at IS NOT NULL
                   AND l.deleted_at < now() - make_interval(secs => $1)",
                history.versions, history.live
            );
            let rows = sqlx::query(&sql)
                .bind(keep.as_secs_f64())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            purged.0.insert(history.versions, rows);
        }
    }
    for (table, keep) in &raw {
        let sql = format!(
            "DELETE FROM {} WHERE {} < now() - make_interval(secs => $1)",
            table.table, table.recorded_at
        );
        let rows = sqlx::query(&sql)
            .bind(keep.as_secs_f64())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        purged.0.insert(table.table, rows);
    }
    let entry = Entry::new(actor, "retention.purged").detail(serde_json::json!({
        "tombstoned_versions": retention.tombstoned_versions.map(|d| humantime::format_duration(d).to_string()),
        "raw_consumption": retention.raw_consumption.map(|d| humantime::format_duration(d).to_string()),
        "deleted": purged.0,
    }));
    audit::record(&mut *tx, &entry).await?;
    tx.commit().await?;
    tracing::info!(rows = purged.total(), "retention applied");
    Ok(purged)
}
