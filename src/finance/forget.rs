//! `partner-sync forget rabot N`: erases a RABOT customer that RABOT no longer returns from
//! every table that holds its data, in one transaction, and records the erasure in the audit
//! trail.
//!
//! Refused while a link of the customer is `linked` (the link would bring it back), and while
//! the mirror holds it or one of its contracts live (RABOT still returned it in the last pass),
//! unless it was unlinked and the link was its only relation to us: no scope lists an unlinked
//! customer again, so no pass would ever tombstone it. The audit entry names the customer number and counts rows per
//! table; it holds nothing read from the customer (no name, address or external id). The
//! number stays because it is RABOT's key, not a person's data once nothing here maps it to a
//! person, and an erasure must be provable for the number it was asked for; the earlier
//! entries about the customer, which the append-only trail keeps, name it the same way.
//!
//! Tables keyed by contract number are listed in [`BY_CONTRACT`]: a new one is one line there.

use std::collections::BTreeMap;

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::audit::{self, Actor, Entry};

/// Tables holding a customer's contracts' data by `contract_number`, children before parents.
pub const BY_CONTRACT: &[&str] = &[
    "mirror.rabot_contract_cost_components",
    "mirror.rabot_contract_cost_components_versions",
    "mirror.rabot_contract_costs_periods",
    "mirror.rabot_contract_costs_periods_versions",
    "mirror.rabot_contract_consumption",
    "mirror.rabot_contract_consumption_versions",
];

/// Tables holding a customer's data by `customer_number`, children before parents.
const BY_CUSTOMER: &[&str] = &[
    "mirror.month_end_contracts",
    "mirror.rabot_contracts_versions",
    "mirror.rabot_contracts",
    "mirror.rabot_customers_versions",
    "mirror.rabot_customers",
    "sync.rabot_seen",
];

/// Why a customer was not erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The mirror holds the customer, or one of its contracts, live.
    Live,
    /// A link of the customer is `linked`.
    Linked,
    /// Nothing here holds the customer number.
    Unknown,
}

impl Refusal {
    /// What to tell the operator: why, and what to do.
    pub fn explain(&self, customer_number: &str) -> String {
        match self {
            Refusal::Live => format!(
                "customer {customer_number} is live in the mirror: RABOT still returned it in \
                 the last pass, so it would be mirrored again. Once RABOT no longer returns it, \
                 a pass tombstones it (`partner-sync resync rabot --customer {customer_number}` \
                 runs one now) and then it can be forgotten"
            ),
            Refusal::Linked => format!(
                "customer {customer_number} is still linked: run `partner-sync unlink rabot \
                 {customer_number}` first, then forget it"
            ),
            Refusal::Unknown => format!(
                "customer {customer_number} is unknown: no mirror table, snapshot or link holds \
                 that customer number (already forgotten, or mistyped?)"
            ),
        }
    }
}

/// Rows erased, per table.
pub type Erased = BTreeMap<String, u64>;

async fn delete(
    tx: &mut Transaction<'_, Postgres>,
    erased: &mut Erased,
    table: &str,
    sql: &str,
    bind: &[&str],
) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(sql);
    for value in bind {
        query = query.bind(*value);
    }
    let rows = query.execute(&mut **tx).await?.rows_affected();
    *erased.entry(table.to_owned()).or_default() += rows;
    Ok(())
}

/// Erases RABOT customer `customer_number`, or says why not (nothing changed then).
pub async fn forget_rabot_customer(
    pool: &PgPool,
    customer_number: &str,
    actor: &Actor,
) -> Result<Result<Erased, Refusal>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Locks the customer's rows, so a pass writing them now waits, and the check below holds
    // until the erasure commits.
    let mut live = false;
    for table in ["mirror.rabot_customers", "mirror.rabot_contracts"] {
        let sql = format!(
            "SELECT coalesce(bool_or(deleted_at IS NULL), false)
               FROM (SELECT deleted_at FROM {table} WHERE customer_number = $1 FOR UPDATE) AS r"
        );
        live |= sqlx::query_scalar::<_, bool>(&sql)
            .bind(customer_number)
            .fetch_one(&mut *tx)
            .await?;
    }
    let (linked, unlinked): (bool, bool) = sqlx::query_as(
        "SELECT coalesce(bool_or(status = 'linked'), false),
                coalesce(bool_or(status = 'unlinked'), false)
           FROM sync.customer_links WHERE partner = 'rabot' AND customer_number = $1",
    )
    .bind(customer_number)
    .fetch_one(&mut *tx)
    .await?;
    if linked {
        return Ok(Err(Refusal::Linked));
    }
    if live {
        // RABOT lists a customer for us through its relations; with the link gone and no
        // other relation (Owner, Affiliate), it is no longer returned.
        let only_through_the_link: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM mirror.rabot_customers
                                 WHERE customer_number = $1 AND NOT relations <@ '{Linked}')",
        )
        .bind(customer_number)
        .fetch_one(&mut *tx)
        .await?;
        if !(unlinked && only_through_the_link) {
            return Ok(Err(Refusal::Live));
        }
    }

    // Contracts this customer ever had, in the live table, its history or a snapshot.
    let contracts: Vec<String> = sqlx::query_scalar(
        "SELECT contract_number FROM mirror.rabot_contracts WHERE customer_number = $1
         UNION SELECT contract_number FROM mirror.rabot_contracts_versions WHERE customer_number = $1
         UNION SELECT contract_number FROM mirror.month_end_contracts WHERE customer_number = $1",
    )
    .bind(customer_number)
    .fetch_all(&mut *tx)
    .await?;
    // Its external ids, which name it in resync requests.
    let external_ids: Vec<String> = sqlx::query_scalar(
        "SELECT external_id FROM mirror.rabot_customers
          WHERE customer_number = $1 AND external_id IS NOT NULL
         UNION SELECT payload ->> 'externalIdentifier' FROM mirror.rabot_customers_versions
          WHERE customer_number = $1 AND payload ->> 'externalIdentifier' IS NOT NULL
         UNION SELECT external_id FROM sync.customer_links
          WHERE partner = 'rabot' AND customer_number = $1",
    )
    .bind(customer_number)
    .fetch_all(&mut *tx)
    .await?;

    let mut erased = Erased::new();
    for table in BY_CONTRACT {
        let sql = format!("DELETE FROM {table} WHERE contract_number = ANY($1)");
        let rows = sqlx::query(&sql)
            .bind(&contracts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        erased.insert((*table).to_owned(), rows);
    }
    for table in BY_CUSTOMER {
        let sql = format!("DELETE FROM {table} WHERE customer_number = $1");
        delete(&mut tx, &mut erased, table, &sql, &[customer_number]).await?;
    }
    delete(
        &mut tx,
        &mut erased,
        "sync.link_refusals",
        "DELETE FROM sync.link_refusals
          WHERE offered_customer_number = $1
             OR link_id IN (SELECT id FROM sync.customer_links
                             WHERE partner = 'rabot' AND customer_number = $1)",
        &[customer_number],
    )
    .await?;
    delete(
        &mut tx,
        &mut erased,
        "sync.customer_links",
        "DELETE FROM sync.customer_links WHERE partner = 'rabot' AND customer_number = $1",
        &[customer_number],
    )
    .await?;
    delete(
        &mut tx,
        &mut erased,
        "sync.run_failures",
        "DELETE FROM sync.run_failures
          WHERE item = 'customer ' || $1 OR starts_with(item, 'contract ' || $1 || '/')",
        &[customer_number],
    )
    .await?;
    // Requests are the daemon's bookkeeping: kept, without the id that named the customer.
    let requests = sqlx::query(
        "UPDATE sync.trigger_requests SET customer = NULL
          WHERE customer = $1 OR customer = ANY($2)",
    )
    .bind(customer_number)
    .bind(&external_ids)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    erased.insert("sync.trigger_requests".to_owned(), requests);

    if erased.values().all(|rows| *rows == 0) {
        return Ok(Err(Refusal::Unknown));
    }
    let entry = Entry::new(actor, "customer.forgotten")
        .partner("rabot")
        .subject(customer_number)
        .detail(serde_json::json!({ "erased": erased }));
    audit::record(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(Ok(erased))
}
