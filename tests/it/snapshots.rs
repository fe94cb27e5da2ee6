//! `month_end_snapshot`: closed months frozen once from the mirror's history, then
//! `[retention]` applied; and the job through the real binary.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use partner_sync::finance::retention::{self, RawTable};
use partner_sync::finance::snapshot_job::{self, MonthEndSnapshot};
use partner_sync::jobs::JobName;
use partner_sync::settings::{RetentionSettings, Settings};
use partner_sync::store::audit::Actor;
use partner_sync::store::runs::{RunCounts, RunStatus};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::common::*;

async fn snapshot_pass(
    settings: &Settings,
    pool: &PgPool,
) -> (RunStatus, RunCounts, Option<String>) {
    run_pass(
        JobName::MonthEndSnapshot,
        Arc::new(MonthEndSnapshot::new(settings)),
        pool,
    )
    .await
}

/// The mirror as if its rows had been first seen `days` ago.
async fn backdate_mirror(pool: &PgPool, days: i32) {
    for sql in [
        "UPDATE mirror.rabot_contracts_versions SET valid_from = valid_from - make_interval(days => $1)",
        "UPDATE mirror.rabot_contracts SET first_seen_at = first_seen_at - make_interval(days => $1)",
    ] {
        sqlx::query(sql).bind(days).execute(pool).await.unwrap();
    }
}

/// The previous month in `zone` (its first day) and the moment it ends.
async fn previous_month(pool: &PgPool, zone: &str) -> (NaiveDate, DateTime<Utc>) {
    sqlx::query_as(
        "SELECT (date_trunc('month', now() AT TIME ZONE $1) - interval '1 month')::date,
                date_trunc('month', now() AT TIME ZONE $1) AT TIME ZONE $1",
    )
    .bind(zone)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn frozen(
    pool: &PgPool,
    month: NaiveDate,
) -> BTreeSet<(String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT contract_number, name, tariff_name FROM mirror.month_end_contracts WHERE month = $1",
    )
    .bind(month)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn the_previous_month_is_frozen_once_and_never_changes() {
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let db = TestDb::new().await;
    let settings = settings(&sandbox, &db, &[]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    backdate_mirror(&db.pool, 70).await;

    let (status, counts, error) = snapshot_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let (month, ends) = previous_month(&db.pool, "UTC").await;
    let first = frozen(&db.pool, month).await;
    assert_eq!(first.len(), 6, "{first:?}");
    let (snapshot_at, zone): (DateTime<Utc>, String) = sqlx::query_as(
        "SELECT snapshot_at, timezone FROM mirror.month_end_snapshots WHERE month = $1",
    )
    .bind(month)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((snapshot_at, zone.as_str()), (ends, "UTC"));
    // Every closed month since the mirror's first data: 70 days span two or three months.
    let months = count(&db.pool, "SELECT count(*) FROM mirror.month_end_snapshots").await;
    assert!((2..=3).contains(&months), "{months} months frozen");
    let rows = count(&db.pool, "SELECT count(*) FROM mirror.month_end_contracts").await;
    assert_eq!(counts.inserted, rows);

    // The contracts change, and so does their history (as a purge or a correction would).
    let (customer, contract) = sandbox_contracts(&sandbox)[0].clone();
    assert!(sandbox.update_contract(&customer, &contract, |k| {
        k["tariffName"] = "Changed later".into();
    }));
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    sqlx::query("UPDATE mirror.rabot_contracts_versions SET name = 'Rewritten history'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM mirror.rabot_contracts_versions WHERE contract_number = $1")
        .bind(&contract)
        .execute(&db.pool)
        .await
        .unwrap();
    let as_of_now = count(
        &db.pool,
        &format!(
            "SELECT count(*) FROM mirror.rabot_contracts_as_of('{}') WHERE name = 'Rewritten history'",
            ends.to_rfc3339()
        ),
    )
    .await;
    assert_eq!(as_of_now, 5, "the history under the snapshot did change");

    let (status, counts, error) = snapshot_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.inserted, 0, "nothing frozen twice");
    assert_eq!(frozen(&db.pool, month).await, first);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.month_end_snapshots").await,
        months
    );

    // Not even the owner rewrites a frozen month.
    let refused = sqlx::query("UPDATE mirror.month_end_contracts SET name = 'edited'")
        .execute(&db.pool)
        .await
        .expect_err("a frozen month is not updated");
    assert!(refused.to_string().contains("frozen month"), "{refused}");
}

#[tokio::test]
async fn the_month_ends_in_the_configured_zone_even_with_nothing_mirrored() {
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let db = TestDb::new().await;
    let settings = settings(
        &sandbox,
        &db,
        &[("PARTNER_SYNC__MONTH_END__TIMEZONE", "Europe/Berlin")],
    );
    let (status, counts, error) = snapshot_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.inserted, 0);
    let (month, ends) = previous_month(&db.pool, "Europe/Berlin").await;
    let rows: Vec<(NaiveDate, DateTime<Utc>, String)> =
        sqlx::query_as("SELECT month, snapshot_at, timezone FROM mirror.month_end_snapshots")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(month, ends, "Europe/Berlin".to_owned())]);
}

#[tokio::test]
async fn a_misspelt_zone_is_refused_naming_its_key() {
    let error = Settings::load_from(
        None,
        [(
            "PARTNER_SYNC__MONTH_END__TIMEZONE".to_owned(),
            "Europe/Berln".to_owned(),
        )],
    )
    .expect_err("not a zone")
    .to_string();
    assert!(
        error.contains("month_end.timezone") && error.contains("Europe/Berlin"),
        "{error}"
    );
    let error = Settings::load_from(
        None,
        [(
            "PARTNER_SYNC__RETENTION__TOMBSTONED_VERSIONS".to_owned(),
            "0s".to_owned(),
        )],
    )
    .expect_err("zero keeps nothing")
    .to_string();
    assert!(error.contains("retention.tombstoned_versions"), "{error}");
}

#[tokio::test]
async fn sync_month_end_snapshot_runs_from_the_command_line() {
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let db = TestDb::new().await;
    let out = run_binary(
        &["sync", "month_end_snapshot"],
        sandbox_env(&sandbox, &db.url),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'month_end_snapshot' AND status = 'succeeded'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.month_end_snapshots").await,
        1
    );
}

/// Versions per customer, from both RABOT histories.
async fn versions_of(pool: &PgPool, customer: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM mirror.rabot_customers_versions WHERE customer_number = $1)
              + (SELECT count(*) FROM mirror.rabot_contracts_versions WHERE customer_number = $1)",
    )
    .bind(customer)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn retention_purges_old_history_of_tombstoned_rows_only() {
    let sandbox = start_sandbox(small_sandbox(4)).await;
    let db = TestDb::new().await;
    let settings = settings(
        &sandbox,
        &db,
        &[("PARTNER_SYNC__RETENTION__TOMBSTONED_VERSIONS", "30d")],
    );
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let customers = sandbox.customer_numbers();
    let (live, gone_long_ago, gone_today) = (&customers[0], &customers[1], &customers[2]);
    let contract = sandbox.contract_numbers(live)[0].clone();
    assert!(sandbox.update_contract(live, &contract, |k| {
        k["tariffName"] = "Second version".into();
    }));
    assert!(sandbox.remove_customer(gone_long_ago));
    assert!(sandbox.remove_customer(gone_today));
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    for sql in [
        "UPDATE mirror.rabot_customers SET deleted_at = now() - interval '40 days' WHERE customer_number = $1",
        "UPDATE mirror.rabot_contracts SET deleted_at = now() - interval '40 days' WHERE customer_number = $1",
    ] {
        sqlx::query(sql)
            .bind(gone_long_ago)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let live_before = versions_of(&db.pool, live).await;
    assert_eq!(
        live_before, 4,
        "a customer, two contracts, one of them changed"
    );
    let today_before = versions_of(&db.pool, gone_today).await;
    assert!(versions_of(&db.pool, gone_long_ago).await > 0);

    let (status, counts, error) = snapshot_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(versions_of(&db.pool, gone_long_ago).await, 0);
    assert_eq!(versions_of(&db.pool, live).await, live_before);
    assert_eq!(versions_of(&db.pool, gone_today).await, today_before);
    assert_eq!(
        counts.deleted, 3,
        "the customer's and its two contracts' versions"
    );
    // The tombstones themselves stay.
    let tombstones = count(
        &db.pool,
        &format!(
            "SELECT count(*) FROM mirror.rabot_customers WHERE customer_number = '{gone_long_ago}' AND deleted_at IS NOT NULL"
        ),
    )
    .await;
    assert_eq!(tombstones, 1);
    let (detail,): (serde_json::Value,) = sqlx::query_as(
        "SELECT detail FROM sync.audit WHERE action = 'retention.purged' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the purge is audited");
    assert_eq!(detail["deleted"]["mirror.rabot_contracts_versions"], 2);
    assert_eq!(detail["deleted"]["mirror.rabot_customers_versions"], 1);
}

#[tokio::test]
async fn a_raw_table_is_purged_by_its_own_setting() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE mirror.raw_rows (id int, recorded_at timestamptz NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO mirror.raw_rows VALUES (1, now() - interval '10 days'), (2, now() - interval '1 day')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let tables = [RawTable {
        table: "mirror.raw_rows",
        recorded_at: "recorded_at",
        keep: |r| r.raw_consumption,
    }];
    let actor = Actor::Scheduler;
    let forever = RetentionSettings::default();
    let purged = retention::purge_tables(&db.pool, &forever, &tables, &actor)
        .await
        .unwrap();
    assert_eq!(purged.total(), 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM sync.audit").await, 0);

    let week = RetentionSettings {
        raw_consumption: Some(std::time::Duration::from_secs(7 * 86_400)),
        ..RetentionSettings::default()
    };
    let purged = retention::purge_tables(&db.pool, &week, &tables, &actor)
        .await
        .unwrap();
    assert_eq!(purged.0.get("mirror.raw_rows"), Some(&1));
    let left: Vec<i32> = sqlx::query_scalar("SELECT id FROM mirror.raw_rows")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![2]);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.audit WHERE action = 'retention.purged'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn two_replicas_freezing_at_once_freeze_each_month_once() {
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let db = TestDb::new().await;
    let settings = settings(&sandbox, &db, &[]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    backdate_mirror(&db.pool, 100).await;
    // Each on a pool of its own, as two daemons would be.
    let other = sqlx::PgPool::connect(&db.url).await.unwrap();
    let zone = chrono_tz::Tz::UTC;
    let cancel = CancellationToken::new();
    let (one, two) = tokio::join!(
        snapshot_job::freeze_closed_months(&db.pool, zone, &cancel),
        snapshot_job::freeze_closed_months(&other, zone, &cancel),
    );
    let (one, two) = (one.expect("freezes"), two.expect("freezes"));
    let months = count(&db.pool, "SELECT count(*) FROM mirror.month_end_snapshots").await;
    assert!((3..=4).contains(&months), "{months} months");
    assert_eq!((one.len() + two.len()) as i64, months, "{one:?} {two:?}");
    for month in one.iter().chain(&two) {
        assert_eq!(month.contracts, 6, "{month:?}");
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.month_end_contracts").await,
        months * 6
    );
}
