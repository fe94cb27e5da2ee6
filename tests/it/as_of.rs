//! The state on any date: `mirror.rabot_contracts_as_of`, `mirror.energyzero_contracts_as_of`
//! and `mirror.rabot_contract_price_on`, over the history real mirror passes write.

use chrono::{DateTime, Utc};
use partner_sync::store::runs::RunStatus;
use sqlx::PgPool;

use crate::common::*;

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// (contract number, name) of every RABOT contract as of `at`, sorted.
async fn rabot_as_of(pool: &PgPool, at: DateTime<Utc>) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT contract_number, name FROM mirror.rabot_contracts_as_of($1)
          ORDER BY contract_number",
    )
    .bind(at)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn name_of(rows: &[(String, Option<String>)], contract: &str) -> Option<Option<String>> {
    rows.iter()
        .find(|(number, _)| number == contract)
        .map(|(_, name)| name.clone())
}

#[tokio::test]
async fn rabot_as_of_follows_first_sight_updates_and_tombstones() {
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let db = TestDb::new().await;
    let settings = settings(&sandbox, &db, &[]);
    let (customer, contract) = sandbox_contracts(&sandbox)[0].clone();

    let before_first_sight = db_now(&db.pool).await;
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let after_first = db_now(&db.pool).await;
    let first = rabot_as_of(&db.pool, after_first).await;
    assert_eq!(first.len(), 6, "{first:?}");
    let original = name_of(&first, &contract).expect("mirrored");
    assert!(
        rabot_as_of(&db.pool, before_first_sight).await.is_empty(),
        "nothing was mirrored yet"
    );

    assert!(sandbox.update_contract(&customer, &contract, |k| {
        k["name"] = "Renamed at RABOT".into();
    }));
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let after_update = db_now(&db.pool).await;
    assert_eq!(
        name_of(&rabot_as_of(&db.pool, after_first).await, &contract),
        Some(original.clone()),
        "the past stays as it was"
    );
    assert_eq!(
        name_of(&rabot_as_of(&db.pool, after_update).await, &contract),
        Some(Some("Renamed at RABOT".to_owned()))
    );

    assert!(sandbox.remove_contract(&customer, &contract));
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let tombstoned_at: DateTime<Utc> = sqlx::query_scalar(
        "SELECT deleted_at FROM mirror.rabot_contracts WHERE contract_number = $1",
    )
    .bind(&contract)
    .fetch_one(&db.pool)
    .await
    .expect("the contract is tombstoned");
    let after_tombstone = db_now(&db.pool).await;
    assert_eq!(
        name_of(&rabot_as_of(&db.pool, after_update).await, &contract),
        Some(Some("Renamed at RABOT".to_owned())),
        "before its tombstone the contract was there"
    );
    for at in [tombstoned_at, after_tombstone] {
        let rows = rabot_as_of(&db.pool, at).await;
        assert_eq!(name_of(&rows, &contract), None, "tombstoned at {at}");
        assert_eq!(rows.len(), 5, "the other contracts stay: {rows:?}");
    }

    // The typed columns are the live row's, version for version.
    let mismatched: i64 = count(
        &db.pool,
        "SELECT count(*) FROM mirror.rabot_contracts c
           JOIN mirror.rabot_contracts_as_of(now()) a USING (customer_number, contract_number)
          WHERE (c.state, c.tariff_name, c.delivery_start, c.malo_id, c.expected_annual_kwh)
                IS DISTINCT FROM (a.state, a.tariff_name, a.delivery_start, a.malo_id,
                                  a.expected_annual_kwh)",
    )
    .await;
    assert_eq!(mismatched, 0);
}

#[tokio::test]
async fn energyzero_as_of_follows_updates_and_tombstones() {
    let db = TestDb::new().await;
    let write = |sql: &'static str| {
        let pool = db.pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    let before = db_now(&db.pool).await;
    write(
        "INSERT INTO mirror.energyzero_contracts (user_id, contract_id, phase, has_gas, payload, content_hash)
         VALUES ('u1', 'e1', 'DELIVERY_STARTED', true, '{}', '\\x01'),
                ('u1', 'e2', 'DELIVERY_STARTED', false, '{}', '\\x02')",
    )
    .await;
    let first = db_now(&db.pool).await;
    write("UPDATE mirror.energyzero_contracts SET phase = 'DELIVERY_STOPPED', content_hash = '\\x03' WHERE contract_id = 'e1'").await;
    let second = db_now(&db.pool).await;
    write("UPDATE mirror.energyzero_contracts SET deleted_at = now() WHERE contract_id = 'e2'")
        .await;
    let third = db_now(&db.pool).await;

    let as_of = |at: DateTime<Utc>| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<bool>)>(
                "SELECT contract_id, phase, has_gas FROM mirror.energyzero_contracts_as_of($1)
                  ORDER BY contract_id",
            )
            .bind(at)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert!(as_of(before).await.is_empty());
    let started = Some("DELIVERY_STARTED".to_owned());
    let stopped = Some("DELIVERY_STOPPED".to_owned());
    assert_eq!(
        as_of(first).await,
        vec![
            ("e1".to_owned(), started.clone(), Some(true)),
            ("e2".to_owned(), started.clone(), Some(false))
        ]
    );
    assert_eq!(
        as_of(second).await,
        vec![
            ("e1".to_owned(), stopped.clone(), Some(true)),
            ("e2".to_owned(), started, Some(false))
        ]
    );
    assert_eq!(
        as_of(third).await,
        vec![("e1".to_owned(), stopped, Some(true))]
    );
}

/// Two price periods starting at German midnights, and their base fee.
async fn two_periods(pool: &PgPool) {
    for (from, fee) in [
        ("2026-01-01 00:00 Europe/Berlin", 10),
        ("2026-07-01 00:00 Europe/Berlin", 12),
    ] {
        sqlx::query(
            "INSERT INTO mirror.rabot_contract_costs_periods (contract_number, valid_from, payload, content_hash)
             VALUES ('K-1', $1::timestamptz, '{}', '\\x00')",
        )
        .bind(from)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO mirror.rabot_contract_cost_components (contract_number, valid_from, component, value, unit_main, unit_per)
             VALUES ('K-1', $1::timestamptz, 'baseServiceFee', $2, 'Euro', 'Month'),
                    ('K-1', $1::timestamptz, 'variableServiceFee', $2 + 1, 'Cent', 'KilowattHour')",
        )
        .bind(from)
        .bind(fee)
        .execute(pool)
        .await
        .unwrap();
    }
    // Another contract's prices are never mixed in.
    sqlx::query(
        "INSERT INTO mirror.rabot_contract_costs_periods (contract_number, valid_from, payload, content_hash)
         VALUES ('K-2', '2026-03-01 00:00 Europe/Berlin', '{}', '\\x00')",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn base_fee_on(pool: &PgPool, day: &str, zone: Option<&str>) -> Option<f64> {
    let rows: Vec<(String, f64)> = match zone {
        None => sqlx::query_as(
            "SELECT component, value::float8 FROM mirror.rabot_contract_price_on('K-1', $1::date)",
        )
        .bind(day),
        Some(zone) => sqlx::query_as(
            "SELECT component, value::float8 FROM mirror.rabot_contract_price_on('K-1', $1::date, $2)",
        )
        .bind(day)
        .bind(zone),
    }
    .fetch_all(pool)
    .await
    .unwrap();
    if rows.is_empty() {
        return None;
    }
    assert_eq!(rows.len(), 2, "one period's components only: {rows:?}");
    rows.into_iter()
        .find(|(name, _)| name == "baseServiceFee")
        .map(|(_, value)| value)
}

#[tokio::test]
async fn price_on_picks_the_period_in_force_on_the_day_read_in_berlin() {
    let db = TestDb::new().await;
    two_periods(&db.pool).await;
    assert_eq!(base_fee_on(&db.pool, "2025-12-31", None).await, None);
    assert_eq!(base_fee_on(&db.pool, "2026-01-01", None).await, Some(10.0));
    assert_eq!(base_fee_on(&db.pool, "2026-06-30", None).await, Some(10.0));
    assert_eq!(base_fee_on(&db.pool, "2026-07-01", None).await, Some(12.0));
    assert_eq!(base_fee_on(&db.pool, "2031-01-01", None).await, Some(12.0));
    // Berlin's midnight is 23:00 UTC the day before: read in UTC, the period starts then.
    assert_eq!(
        base_fee_on(&db.pool, "2025-12-31", Some("UTC")).await,
        Some(10.0)
    );
    assert_eq!(
        base_fee_on(&db.pool, "2026-06-30", Some("UTC")).await,
        Some(12.0)
    );
    // The connection's own TimeZone plays no part.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL TimeZone = 'America/Los_Angeles'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let fee: Option<f64> = sqlx::query_scalar(
        "SELECT value::float8 FROM mirror.rabot_contract_price_on('K-1', '2026-01-01')
          WHERE component = 'baseServiceFee'",
    )
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    assert_eq!(fee, Some(10.0));
}

#[tokio::test]
async fn the_reader_role_executes_the_functions_and_reads_the_snapshots_only() {
    let db = TestDb::new().await;
    two_periods(&db.pool).await;
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE partner_sync_reader")
        .execute(&mut *tx)
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM mirror.rabot_contracts_as_of(now())",
        "SELECT count(*) FROM mirror.energyzero_contracts_as_of(now())",
        "SELECT count(*) FROM mirror.rabot_contract_price_on('K-1', '2026-08-01')",
        "SELECT count(*) FROM mirror.month_end_contracts",
        "SELECT count(*) FROM mirror.month_end_snapshots",
    ] {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let refused = sqlx::query(
        "INSERT INTO mirror.month_end_snapshots (month, snapshot_at, timezone)
         VALUES ('2026-01-01', now(), 'UTC')",
    )
    .execute(&mut *tx)
    .await
    .expect_err("the reader cannot write a snapshot");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    drop(tx);

    let documented: i64 = count(
        &db.pool,
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'mirror'
            AND p.proname IN ('rabot_contracts_as_of', 'energyzero_contracts_as_of', 'rabot_contract_price_on')
            AND obj_description(p.oid, 'pg_proc') IS NOT NULL
            AND has_function_privilege('partner_sync_reader', p.oid, 'EXECUTE')",
    )
    .await;
    assert_eq!(documented, 3);
}
