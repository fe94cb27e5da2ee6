//! The mirror never tombstones a live row: lists that change during a pass, answers that are
//! malformed, empty or full of NUL characters, rows the database refuses, and the mass-delete
//! guard. Real PostgreSQL, the sandbox over loopback HTTP.

use std::collections::HashSet;
use std::time::Duration;

use partner_sync::settings::Settings;
use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::{Deletions, Fault, Sandbox, Tamper, TamperFault};
use sqlx::PgPool;

use crate::common::*;

async fn tombstoned_rows(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT (SELECT count(*) FROM mirror.rabot_customers WHERE deleted_at IS NOT NULL)
              + (SELECT count(*) FROM mirror.rabot_contracts WHERE deleted_at IS NOT NULL)",
    )
    .await
}

/// Fails the test when the mirror shows any customer the sandbox still serves as deleted.
async fn assert_no_live_customer_tombstoned(sandbox: &Sandbox, pool: &PgPool) {
    let live: HashSet<String> = sandbox.customer_numbers().into_iter().collect();
    let wrongly: Vec<_> = tombstoned_customers(pool)
        .await
        .into_iter()
        .filter(|number| live.contains(number))
        .collect();
    assert!(wrongly.is_empty(), "live customers tombstoned: {wrongly:?}");
}

fn small_pages(sandbox: &Sandbox, db: &TestDb) -> Settings {
    settings(
        sandbox,
        db,
        &[
            ("PARTNER_SYNC__RABOT__PAGE_SIZE", "10"),
            ("PARTNER_SYNC__RABOT__CONCURRENCY", "2"),
        ],
    )
}

/// A sandbox of `customers` customers and a database holding one clean pass of it.
async fn mirrored(customers: usize) -> (TestDb, Sandbox, Settings) {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(customers)).await;
    let settings = small_pages(&sandbox, &db);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    (db, sandbox, settings)
}

#[tokio::test]
async fn customers_deleted_at_random_moments_of_a_pass_never_tombstone_a_live_one() {
    let (db, sandbox, settings) = mirrored(200).await;

    // Before some of the next pass's requests, a random customer disappears upstream: offsets
    // after it shift by one, and its contracts may answer 404.
    sandbox.delete_customers_while_listing(Deletions {
        probability: 0.05,
        burst: 1,
        total: 12,
        seed: 7,
    });
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let deleted: HashSet<String> = sandbox.deleted_while_listing().into_iter().collect();
    assert!(deleted.len() >= 3, "the pass saw deletions: {deleted:?}");
    assert_no_live_customer_tombstoned(&sandbox, &db.pool).await;

    // Within the second complete pass after it, every deleted customer is tombstoned.
    for _ in 0..2 {
        let (status, _, error) = mirror_pass(&settings, &db.pool).await;
        assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    }
    assert_no_live_customer_tombstoned(&sandbox, &db.pool).await;
    assert_eq!(tombstoned_customers(&db.pool).await, deleted);
}

#[tokio::test]
async fn a_shift_larger_than_the_overlap_holds_absences_back_until_a_whole_pass() {
    let (db, sandbox, settings) = mirrored(100).await;

    // While the second pass is past its second page, 12 customers from the list's start go:
    // more than the page overlap (2 of 10) absorbs, so live customers slide past unread.
    sandbox.set_latency(Duration::from_millis(5));
    let pass = {
        let settings = settings.clone();
        let pool = db.pool.clone();
        tokio::spawn(async move { mirror_pass(&settings, &pool).await })
    };
    let first: Vec<String> = sandbox.customer_numbers()[..12].to_vec();
    let before = sandbox.stats().api_requests;
    // Two customer pages and their contracts: 2 × (1 + 10) requests.
    while sandbox.stats().api_requests < before + 22 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for number in &first {
        assert!(sandbox.remove_customer(number));
    }
    let (status, counts, error) = pass.await.expect("pass task");
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.deleted, 0, "nothing is tombstoned on a moved list");
    assert_eq!(tombstoned_rows(&db.pool).await, 0);

    sandbox.set_latency(Duration::ZERO);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(
        tombstoned_customers(&db.pool).await,
        first.into_iter().collect::<HashSet<_>>()
    );
    assert_no_live_customer_tombstoned(&sandbox, &db.pool).await;
}

#[tokio::test]
async fn contracts_of_a_customer_gone_mid_pass_answering_404_do_not_fail_the_pass() {
    let (db, sandbox, settings) = mirrored(20).await;
    let customer = sandbox.customer_numbers()[4].clone();
    sandbox.inject_fault(Fault {
        path_contains: format!("/customers/{customer}/contracts"),
        status: 404,
        retry_after: None,
        times: 1,
    });
    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.deleted, 0);
    // The customer is still listed, so its contracts stay until a pass reads them again.
    assert_eq!(tombstoned_rows(&db.pool).await, 0);
}

#[tokio::test]
async fn empty_null_or_keyless_lists_fail_the_pass_and_tombstone_nothing() {
    let (db, sandbox, settings) = mirrored(30).await;
    let cases = [
        (
            "/customers",
            Tamper::NullData,
            "data is null instead of an array",
        ),
        ("/customers", Tamper::NullKey, "has no customerNumber"),
        ("/customers", Tamper::MissingKey, "has no customerNumber"),
        (
            "/contracts",
            Tamper::NullData,
            "data is null instead of an array",
        ),
        ("/contracts", Tamper::MissingKey, "has no contractNumber"),
        ("/customers", Tamper::Truncated, "unreadable answer"),
        // All 30 customers (and their 60 contracts) gone at once: the guard's business.
        ("/customers", Tamper::EmptyList, "rabot.tombstone_guard"),
    ];
    for (path, tamper, expected) in cases {
        sandbox.tamper(TamperFault {
            path_contains: path.to_owned(),
            tamper,
            times: 1,
        });
        let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
        let error = error.unwrap_or_default();
        assert_eq!(status, RunStatus::Failed, "{tamper:?} on {path}: {error}");
        assert!(
            error.contains(expected),
            "{tamper:?} on {path}: {expected:?} not in {error}"
        );
        if tamper != Tamper::Truncated && tamper != Tamper::EmptyList {
            assert!(
                error.contains(path),
                "{tamper:?}: the endpoint is named: {error}"
            );
        }
        assert_eq!(counts.deleted, 0, "{tamper:?} on {path}");
        assert_eq!(tombstoned_rows(&db.pool).await, 0, "{tamper:?} on {path}");
    }
}

#[tokio::test]
async fn a_dropped_connection_mid_answer_is_retried_or_fails_with_a_reason() {
    let (db, sandbox, settings) = mirrored(30).await;
    for path in ["/customers", "/contracts"] {
        sandbox.tamper(TamperFault {
            path_contains: path.to_owned(),
            tamper: Tamper::Reset,
            times: 1,
        });
        let (status, _, error) = mirror_pass(&settings, &db.pool).await;
        assert!(
            status == RunStatus::Succeeded || error.as_deref().is_some_and(|e| !e.is_empty()),
            "{path}: {status:?} without a reason"
        );
        assert_eq!(tombstoned_rows(&db.pool).await, 0, "{path}");
    }
}

#[tokio::test]
async fn nul_characters_are_stored_replaced_and_the_pass_goes_on() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(15)).await;
    let settings = small_pages(&sandbox, &db);
    for path in ["/customers", "/contracts"] {
        sandbox.tamper(TamperFault {
            path_contains: path.to_owned(),
            tamper: Tamper::NulInStrings,
            times: 1000,
        });
    }
    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.skipped, 0);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_customers").await,
        15
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_contracts").await,
        30
    );
    // Every customer's last name had a NUL: it is U+FFFD in the column and the payload.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_customers
              WHERE last_name LIKE '%' || U&'\\FFFD' || '%'
                AND payload->>'lastName' = last_name"
        )
        .await,
        15
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_contracts WHERE tariff_name LIKE '%' || U&'\\FFFD' || '%'"
        )
        .await,
        30
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_is_set_aside_counted_and_blocks_tombstones() {
    let (db, sandbox, settings) = mirrored(20).await;
    // A decimal PostgreSQL's numeric cannot hold (more than 16,383 digits after the point).
    let (customer, contract) = sandbox_contracts(&sandbox)[3].clone();
    let too_fine = format!("0.{}1", "0".repeat(17_000));
    assert!(sandbox.update_contract(&customer, &contract, |c| {
        c["expectedAnnualConsumptionInKwhPerYear"] = too_fine.clone().into();
        c["tariffName"] = "changed".into();
    }));
    // And one customer really goes: its tombstone must wait for a pass that stored everything.
    let gone = sandbox.customer_numbers()[10].clone();
    assert!(sandbox.remove_customer(&gone));

    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.skipped, 1);
    assert_eq!(counts.deleted, 0);
    assert_eq!(tombstoned_rows(&db.pool).await, 0);
    let failures: Vec<String> = sqlx::query_scalar("SELECT item FROM sync.run_failures")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(failures, [format!("contract {customer}/{contract}")]);
    // The rest of that contract's page was stored.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_contracts WHERE tariff_name = 'changed'"
        )
        .await,
        0
    );

    // Once the partner sends a storable value again, the pass is whole and the customer goes.
    assert!(sandbox.update_contract(&customer, &contract, |c| {
        c["expectedAnnualConsumptionInKwhPerYear"] = 1200.into();
    }));
    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.skipped, 0);
    assert_eq!(tombstoned_customers(&db.pool).await, HashSet::from([gone]));
}

#[tokio::test]
async fn the_mass_delete_guard_fails_the_pass_until_the_operator_accepts_it_once() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(60)).await;
    let env = sandbox_env(&sandbox, &db.url);
    let sync = run_binary(&["sync", "rabot"], env.clone()).await;
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );

    // 20 of 60 customers (and their 40 contracts) really go: 60 of 180 rows, above
    // max(50, 10 % of 180).
    let numbers = sandbox.customer_numbers();
    for number in &numbers[..20] {
        assert!(sandbox.remove_customer(number));
    }
    let refused = run_binary(&["sync", "rabot"], env.clone()).await;
    assert_eq!(refused.status.code(), Some(1));
    let error: String = sqlx::query_scalar(
        "SELECT error FROM sync.runs WHERE job = 'rabot_mirror' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(error.contains("tombstone guard"), "{error}");
    assert!(error.contains("would tombstone 60 of 180"), "{error}");
    assert!(error.contains("--allow-mass-delete"), "{error}");
    assert_eq!(tombstoned_rows(&db.pool).await, 0);

    let accepted = run_binary(&["sync", "rabot", "--allow-mass-delete"], env.clone()).await;
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert_eq!(tombstoned_rows(&db.pool).await, 60);

    // The acceptance was for that one pass: the guard holds again.
    for number in &numbers[20..45] {
        assert!(sandbox.remove_customer(number));
    }
    let refused = run_binary(&["sync", "rabot"], env).await;
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(tombstoned_rows(&db.pool).await, 60);
}
