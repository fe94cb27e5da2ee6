//! `mirror.energyzero_users` and `mirror.energyzero_contracts`: batched upserts that skip
//! unchanged rows before they reach `ON CONFLICT` (as for RABOT), tombstones per user after that
//! user's complete pass, and the users ops added to `sync.energyzero_subjects`.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::partners::energyzero::{Contract, User};
use crate::store::runs::UpsertCounts;
use crate::store::{content_hash, counts, dedup_last};

/// The enabled rows of `sync.energyzero_subjects`, oldest first.
pub async fn subject_user_ids(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM sync.energyzero_subjects WHERE enabled ORDER BY added_at, user_id",
    )
    .fetch_all(pool)
    .await
}

/// Upserts users; rows whose content hash is unchanged (and that are not tombstoned) are
/// filtered out first, so an unchanged resync writes nothing.
pub async fn upsert_users(
    conn: &mut PgConnection,
    rows: Vec<User>,
) -> Result<UpsertCounts, sqlx::Error> {
    let rows = dedup_last(rows, |r| r.user_id.clone());
    let total = rows.len() as i64;
    if total == 0 {
        return Ok(UpsertCounts::default());
    }
    let mut cols = UserColumns::default();
    for row in rows {
        cols.push(row);
    }
    let inserted_flags: Vec<bool> = sqlx::query_scalar(
        r#"
        WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::date[], $9::text[], $10::jsonb[],
                                 $11::bytea[])
                AS t(user_id, customer_number, email, first_name, middle_name, surname,
                     phone_number, birth_date, vendor, payload, content_hash)
        ),
        changed AS (
            SELECT i.* FROM input i
            LEFT JOIN mirror.energyzero_users m USING (user_id)
            WHERE m.user_id IS NULL
               OR m.content_hash <> i.content_hash
               OR m.deleted_at IS NOT NULL
        )
        INSERT INTO mirror.energyzero_users AS m
            (user_id, customer_number, email, first_name, middle_name, surname, phone_number,
             birth_date, vendor, payload, content_hash)
        SELECT user_id, customer_number, email, first_name, middle_name, surname, phone_number,
               birth_date, vendor, payload, content_hash
          FROM changed
        ON CONFLICT (user_id) DO UPDATE SET
            customer_number = EXCLUDED.customer_number,
            email = EXCLUDED.email,
            first_name = EXCLUDED.first_name,
            middle_name = EXCLUDED.middle_name,
            surname = EXCLUDED.surname,
            phone_number = EXCLUDED.phone_number,
            birth_date = EXCLUDED.birth_date,
            vendor = EXCLUDED.vendor,
            payload = EXCLUDED.payload,
            content_hash = EXCLUDED.content_hash,
            changed_at = now(),
            deleted_at = NULL
        RETURNING (xmax = 0)
        "#,
    )
    .bind(cols.user_id)
    .bind(cols.customer_number)
    .bind(cols.email)
    .bind(cols.first_name)
    .bind(cols.middle_name)
    .bind(cols.surname)
    .bind(cols.phone_number)
    .bind(cols.birth_date)
    .bind(cols.vendor)
    .bind(cols.payload)
    .bind(cols.content_hash)
    .fetch_all(&mut *conn)
    .await?;
    Ok(counts(total, &inserted_flags))
}

/// Upserts contracts (of any number of users), skipping unchanged rows.
pub async fn upsert_contracts(
    conn: &mut PgConnection,
    rows: Vec<Contract>,
) -> Result<UpsertCounts, sqlx::Error> {
    let rows = dedup_last(rows, |r| (r.user_id.clone(), r.contract_id.clone()));
    let total = rows.len() as i64;
    if total == 0 {
        return Ok(UpsertCounts::default());
    }
    let mut cols = ContractColumns::default();
    for row in rows {
        cols.push(row);
    }
    let inserted_flags: Vec<bool> = sqlx::query_scalar(
        r#"
        WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                                 $5::text[], $6::text[], $7::text[], $8::date[], $9::date[],
                                 $10::date[], $11::date[], $12::int4[], $13::text[], $14::bool[],
                                 $15::bool[], $16::bool[], $17::text[], $18::text[], $19::text[],
                                 $20::jsonb[], $21::bytea[])
                AS t(user_id, contract_id, accepted_at, consumer_type, company,
                     energy_contract_type, phase, start_date, original_start_date, end_date,
                     delivery_stopped_date, duration_months, payment_method, has_gas,
                     has_electricity, has_production, total_yearly_usage_kwh,
                     delivery_zip_code, delivery_city, payload, content_hash)
        ),
        changed AS (
            SELECT i.* FROM input i
            LEFT JOIN mirror.energyzero_contracts m USING (user_id, contract_id)
            WHERE m.contract_id IS NULL
               OR m.content_hash <> i.content_hash
               OR m.deleted_at IS NOT NULL
        )
        INSERT INTO mirror.energyzero_contracts AS m
            (user_id, contract_id, accepted_at, consumer_type, company, energy_contract_type,
             phase, start_date, original_start_date, end_date, delivery_stopped_date,
             duration_months, payment_method, has_gas, has_electricity, has_production,
             total_yearly_usage_kwh, delivery_zip_code, delivery_city, payload, content_hash)
        SELECT user_id, contract_id, accepted_at, consumer_type, company, energy_contract_type,
               phase, start_date, original_start_date, end_date, delivery_stopped_date,
               duration_months, payment_method, has_gas, has_electricity, has_production,
               total_yearly_usage_kwh::numeric, delivery_zip_code, delivery_city, payload,
               content_hash
          FROM changed
        ON CONFLICT (user_id, contract_id) DO UPDATE SET
            accepted_at = EXCLUDED.accepted_at,
            consumer_type = EXCLUDED.consumer_type,
            company = EXCLUDED.company,
            energy_contract_type = EXCLUDED.energy_contract_type,
            phase = EXCLUDED.phase,
            start_date = EXCLUDED.start_date,
            original_start_date = EXCLUDED.original_start_date,
            end_date = EXCLUDED.end_date,
            delivery_stopped_date = EXCLUDED.delivery_stopped_date,
            duration_months = EXCLUDED.duration_months,
            payment_method = EXCLUDED.payment_method,
            has_gas = EXCLUDED.has_gas,
            has_electricity = EXCLUDED.has_electricity,
            has_production = EXCLUDED.has_production,
            total_yearly_usage_kwh = EXCLUDED.total_yearly_usage_kwh,
            delivery_zip_code = EXCLUDED.delivery_zip_code,
            delivery_city = EXCLUDED.delivery_city,
            payload = EXCLUDED.payload,
            content_hash = EXCLUDED.content_hash,
            changed_at = now(),
            deleted_at = NULL
        RETURNING (xmax = 0)
        "#,
    )
    .bind(cols.user_id)
    .bind(cols.contract_id)
    .bind(cols.accepted_at)
    .bind(cols.consumer_type)
    .bind(cols.company)
    .bind(cols.energy_contract_type)
    .bind(cols.phase)
    .bind(cols.start_date)
    .bind(cols.original_start_date)
    .bind(cols.end_date)
    .bind(cols.delivery_stopped_date)
    .bind(cols.duration_months)
    .bind(cols.payment_method)
    .bind(cols.has_gas)
    .bind(cols.has_electricity)
    .bind(cols.has_production)
    .bind(cols.total_yearly_usage_kwh)
    .bind(cols.delivery_zip_code)
    .bind(cols.delivery_city)
    .bind(cols.payload)
    .bind(cols.content_hash)
    .fetch_all(&mut *conn)
    .await?;
    Ok(counts(total, &inserted_flags))
}

/// After a complete pass of `user_id`: that user's live contracts not in `seen` (a user has a
/// handful of contracts, so the ids travel as one array). The run tombstones them at its end,
/// once it knows the run's total is within the guard.
pub async fn missing_contracts(
    conn: &mut PgConnection,
    user_id: &str,
    seen: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT contract_id FROM mirror.energyzero_contracts
          WHERE user_id = $1 AND deleted_at IS NULL AND NOT (contract_id = ANY($2))",
    )
    .bind(user_id)
    .bind(seen)
    .fetch_all(&mut *conn)
    .await
}

/// Live contracts in the mirror: what the mass-delete guard measures a run's tombstones against.
pub async fn live_contracts(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM mirror.energyzero_contracts WHERE deleted_at IS NULL")
        .fetch_one(&mut *conn)
        .await
}

/// Tombstones the given `(user_id, contract_id)` rows, except those written since run `run_id`
/// started (a later pass saw them again). Returns how many were tombstoned.
pub async fn tombstone_contracts(
    conn: &mut PgConnection,
    run_id: i64,
    gone: &[(String, String)],
) -> Result<i64, sqlx::Error> {
    let (users, contracts): (Vec<&str>, Vec<&str>) = gone
        .iter()
        .map(|(user, contract)| (user.as_str(), contract.as_str()))
        .unzip();
    sqlx::query_scalar(
        r#"
        WITH gone AS (
            UPDATE mirror.energyzero_contracts k SET deleted_at = now()
              FROM unnest($2::text[], $3::text[]) AS g(user_id, contract_id)
             WHERE k.user_id = g.user_id AND k.contract_id = g.contract_id
               AND k.deleted_at IS NULL
               AND k.changed_at < (SELECT started_at FROM sync.runs WHERE id = $1)
            RETURNING 1
        )
        SELECT count(*) FROM gone
        "#,
    )
    .bind(run_id)
    .bind(users)
    .bind(contracts)
    .fetch_one(&mut *conn)
    .await
}

/// Column vectors for `unnest`: one bind parameter per column instead of one per value.
#[derive(Default)]
struct UserColumns {
    user_id: Vec<String>,
    customer_number: Vec<Option<String>>,
    email: Vec<Option<String>>,
    first_name: Vec<Option<String>>,
    middle_name: Vec<Option<String>>,
    surname: Vec<Option<String>>,
    phone_number: Vec<Option<String>>,
    birth_date: Vec<Option<NaiveDate>>,
    vendor: Vec<Option<String>>,
    payload: Vec<Value>,
    content_hash: Vec<Vec<u8>>,
}

impl UserColumns {
    fn push(&mut self, row: User) {
        self.content_hash.push(content_hash(&row.raw));
        self.user_id.push(row.user_id);
        self.customer_number.push(row.customer_number);
        self.email.push(row.email);
        self.first_name.push(row.first_name);
        self.middle_name.push(row.middle_name);
        self.surname.push(row.surname);
        self.phone_number.push(row.phone_number);
        self.birth_date.push(row.birth_date);
        self.vendor.push(row.vendor);
        self.payload.push(row.raw);
    }
}

#[derive(Default)]
struct ContractColumns {
    user_id: Vec<String>,
    contract_id: Vec<String>,
    accepted_at: Vec<Option<DateTime<Utc>>>,
    consumer_type: Vec<Option<String>>,
    company: Vec<Option<String>>,
    energy_contract_type: Vec<Option<String>>,
    phase: Vec<Option<String>>,
    start_date: Vec<Option<NaiveDate>>,
    original_start_date: Vec<Option<NaiveDate>>,
    end_date: Vec<Option<NaiveDate>>,
    delivery_stopped_date: Vec<Option<NaiveDate>>,
    duration_months: Vec<Option<i32>>,
    payment_method: Vec<Option<String>>,
    has_gas: Vec<Option<bool>>,
    has_electricity: Vec<Option<bool>>,
    has_production: Vec<Option<bool>>,
    total_yearly_usage_kwh: Vec<Option<String>>,
    delivery_zip_code: Vec<Option<String>>,
    delivery_city: Vec<Option<String>>,
    payload: Vec<Value>,
    content_hash: Vec<Vec<u8>>,
}

impl ContractColumns {
    fn push(&mut self, row: Contract) {
        self.content_hash.push(content_hash(&row.raw));
        self.user_id.push(row.user_id);
        self.contract_id.push(row.contract_id);
        self.accepted_at.push(row.accepted_at);
        self.consumer_type.push(row.consumer_type);
        self.company.push(row.company);
        self.energy_contract_type.push(row.energy_contract_type);
        self.phase.push(row.phase);
        self.start_date.push(row.start_date);
        self.original_start_date.push(row.original_start_date);
        self.end_date.push(row.end_date);
        self.delivery_stopped_date.push(row.delivery_stopped_date);
        self.duration_months.push(row.duration_months);
        self.payment_method.push(row.payment_method);
        self.has_gas.push(row.has_gas);
        self.has_electricity.push(row.has_electricity);
        self.has_production.push(row.has_production);
        self.total_yearly_usage_kwh.push(row.total_yearly_usage_kwh);
        self.delivery_zip_code.push(row.delivery_zip_code);
        self.delivery_city.push(row.delivery_city);
        self.payload.push(row.raw);
    }
}
