//! The RABOT mirror job end to end: sandbox over HTTP → runner → PostgreSQL.

use partner_sync::jobs::JobName;
use partner_sync::store::audit::Actor;
use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::{Fault, SandboxOptions};

use crate::common::*;

#[tokio::test]
async fn a_pass_mirrors_every_page_of_customers_and_contracts() {
    let db = TestDb::new().await;
    // Page size 10 with 25 customers: 3 customer pages; every 10th customer has 23 contracts: 3 pages each.
    let sandbox = start_sandbox(SandboxOptions {
        customers: 25,
        heavy_customer_every: 10,
        heavy_contracts: 23,
        ..SandboxOptions::default()
    })
    .await;
    let settings = settings(&sandbox, &db, &[]);

    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");

    let expected_contracts = sandbox_contracts(&sandbox);
    // 23 ordinary customers with 2 contracts, 2 heavy ones with 23.
    assert_eq!(expected_contracts.len(), 23 * 2 + 2 * 23);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_customers").await,
        25
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_contracts").await,
        expected_contracts.len() as i64
    );
    // 3 customer pages + 23 ordinary customers × 1 page + 2 heavy customers × 3 pages.
    assert_eq!(counts.pages, 3 + 23 + 2 * 3);
    assert_eq!(counts.inserted, 25 + expected_contracts.len() as i64);
    assert_eq!(counts.fetched, counts.inserted);
    assert_eq!(
        (counts.updated, counts.unchanged, counts.deleted),
        (0, 0, 0)
    );

    // The typed columns and the raw payload agree, and the run row says what happened.
    let (customer, contract) = &expected_contracts[0];
    let (state, payload_state): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT state, payload->>'contractState' FROM mirror.rabot_contracts
          WHERE customer_number = $1 AND contract_number = $2",
    )
    .bind(customer)
    .bind(contract)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, payload_state);
    let (run_status, inserted): (String, i64) =
        sqlx::query_as("SELECT status, inserted FROM sync.runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (run_status.as_str(), inserted),
        ("succeeded", counts.inserted)
    );
}

#[tokio::test]
async fn the_external_id_filter_mirrors_only_those_customers() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(40)).await;
    let numbers = sandbox.customer_numbers();
    let wanted: Vec<String> = numbers
        .iter()
        .filter_map(|n| sandbox.external_id_of(n))
        .take(2)
        .collect();
    let expected: Vec<&String> = numbers
        .iter()
        .filter(|n| {
            sandbox
                .external_id_of(n)
                .is_some_and(|e| wanted.contains(&e))
        })
        .collect();
    assert!(!expected.is_empty() && expected.len() < numbers.len());

    let settings = settings(
        &sandbox,
        &db,
        &[("PARTNER_SYNC__RABOT__EXTERNAL_IDS", &wanted.join(","))],
    );
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");

    let mut mirrored: Vec<String> =
        sqlx::query_scalar("SELECT customer_number FROM mirror.rabot_customers ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected: Vec<String> = expected.into_iter().cloned().collect();
    mirrored.sort();
    expected.sort();
    assert_eq!(mirrored, expected);
    let strays = count(
        &db.pool,
        "SELECT count(*) FROM mirror.rabot_contracts k
          WHERE NOT EXISTS (SELECT 1 FROM mirror.rabot_customers c WHERE c.customer_number = k.customer_number)",
    )
    .await;
    assert_eq!(strays, 0);
}

#[tokio::test]
async fn a_second_pass_over_unchanged_data_writes_nothing() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(30)).await;
    let settings = settings(&sandbox, &db, &[]);
    let (status, first, _) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);

    // xmin changes whenever a row is rewritten, so equal xmins prove nothing was written.
    let row_versions =
        "SELECT string_agg(xmin::text, ',' ORDER BY customer_number, contract_number)
                          FROM mirror.rabot_contracts";
    let before: String = sqlx::query_scalar(row_versions)
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let (status, second, _) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!((second.inserted, second.updated, second.deleted), (0, 0, 0));
    assert_eq!(second.unchanged, first.inserted);
    let after: String = sqlx::query_scalar(row_versions)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_contracts_versions"
        )
        .await,
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_contracts").await
    );
}

#[tokio::test]
async fn a_changed_contract_is_updated_and_its_history_kept() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(12)).await;
    let settings = settings(&sandbox, &db, &[]);
    assert_eq!(
        mirror_pass(&settings, &db.pool).await.0,
        RunStatus::Succeeded
    );

    let (customer, contract) = sandbox_contracts(&sandbox)[5].clone();
    assert!(sandbox.update_contract(&customer, &contract, |c| {
        c["tariffName"] = serde_json::json!("Ökostrom Flex 2027");
    }));
    let (status, counts, _) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!((counts.inserted, counts.updated, counts.deleted), (0, 1, 0));

    let tariff: Option<String> = sqlx::query_scalar(
        "SELECT tariff_name FROM mirror.rabot_contracts WHERE customer_number = $1 AND contract_number = $2",
    )
    .bind(&customer)
    .bind(&contract)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tariff.as_deref(), Some("Ökostrom Flex 2027"));
    let versions: Vec<(Option<String>, bool)> = sqlx::query_as(
        "SELECT payload->>'tariffName', valid_to IS NULL FROM mirror.rabot_contracts_versions
          WHERE customer_number = $1 AND contract_number = $2 ORDER BY valid_from",
    )
    .bind(&customer)
    .bind(&contract)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(versions.len(), 2);
    assert!(!versions[0].1, "the old version is closed");
    assert_eq!(versions[1], (Some("Ökostrom Flex 2027".to_owned()), true));
}

#[tokio::test]
async fn removed_rows_are_tombstoned_only_after_a_successful_pass() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(30)).await;
    let settings = settings(&sandbox, &db, &[]);
    assert_eq!(
        mirror_pass(&settings, &db.pool).await.0,
        RunStatus::Succeeded
    );

    let customers = sandbox.customer_numbers();
    let (customer, contract) = sandbox_contracts(&sandbox)[0].clone();
    assert!(sandbox.remove_contract(&customer, &contract));
    let gone_customer = customers[3].clone();
    assert!(sandbox.remove_customer(&gone_customer));
    let deleted = "SELECT count(*) FROM mirror.rabot_contracts WHERE deleted_at IS NOT NULL";

    // A pass that fails on the last customer's contracts (500 is not retried) marks nothing.
    let last = customers.last().unwrap();
    sandbox.inject_fault(Fault {
        path_contains: format!("/customers/{last}/contracts"),
        status: 500,
        retry_after: None,
        times: 1,
    });
    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(error.unwrap().contains("500"));
    assert_eq!(counts.deleted, 0);
    assert_eq!(count(&db.pool, deleted).await, 0);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_customers WHERE deleted_at IS NOT NULL"
        )
        .await,
        0
    );

    // The next complete pass tombstones the removed contract, the removed customer and its contracts.
    let (status, counts, _) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);
    let gone_customer_contracts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contracts WHERE customer_number = $1",
    )
    .bind(&gone_customer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(counts.deleted, 1 + 1 + gone_customer_contracts);
    let tombstoned: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NOT NULL FROM mirror.rabot_contracts WHERE customer_number = $1 AND contract_number = $2",
    )
    .bind(&customer)
    .bind(&contract)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(tombstoned);
    assert_eq!(count(&db.pool, deleted).await, 1 + gone_customer_contracts);
    let customer_gone: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NOT NULL FROM mirror.rabot_customers WHERE customer_number = $1",
    )
    .bind(&gone_customer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(customer_gone);
    // The history closes the deleted contract's version.
    let open_versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contracts_versions
          WHERE customer_number = $1 AND contract_number = $2 AND valid_to IS NULL",
    )
    .bind(&customer)
    .bind(&contract)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(open_versions, 0);
    // Scratch keys do not outlive their runs.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM sync.rabot_seen").await,
        0
    );
}

#[tokio::test]
async fn a_tombstoned_row_that_reappears_is_revived() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(10)).await;
    let settings = settings(&sandbox, &db, &[]);
    assert_eq!(
        mirror_pass(&settings, &db.pool).await.0,
        RunStatus::Succeeded
    );

    // As if an earlier pass had not seen the customer…
    let (customer, _) = sandbox_contracts(&sandbox)[0].clone();
    sqlx::query("UPDATE mirror.rabot_customers SET deleted_at = now() WHERE customer_number = $1")
        .bind(&customer)
        .execute(&db.pool)
        .await
        .unwrap();
    // …a pass that sees it again revives it.
    let (status, counts, _) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(counts.updated, 1);
    let revived: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NULL FROM mirror.rabot_customers WHERE customer_number = $1",
    )
    .bind(&customer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(revived);
}

#[tokio::test]
async fn the_finance_role_reads_the_mirror_and_nothing_else() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    assert_eq!(
        mirror_pass(&settings(&sandbox, &db, &[]), &db.pool).await.0,
        RunStatus::Succeeded
    );
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET ROLE partner_sync_reader")
        .execute(&mut *conn)
        .await
        .unwrap();
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM mirror.rabot_current_contracts")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(live, 6);
    let denied = sqlx::query("SELECT count(*) FROM sync.runs")
        .fetch_one(&mut *conn)
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    let write = sqlx::query("DELETE FROM mirror.rabot_contracts")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(write.to_string().contains("permission denied"), "{write}");
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn two_runners_on_one_database_never_run_the_job_at_once() {
    use std::sync::Arc;
    use std::time::Duration;

    use partner_sync::events::TriggerCause;
    use partner_sync::events::dispatcher::{JobRunner, RunOutcome};
    use partner_sync::partners::rabot::mirror_job::RabotMirror;
    use partner_sync::store::runs::RunCounts;
    use tokio_util::sync::CancellationToken;

    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(100),
        ..small_sandbox(5)
    })
    .await;
    let settings = settings(&sandbox, &db, &[]);
    // Two "replicas": separate pools and runners, one database.
    let other_pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let runner = |pool| {
        JobRunner::new(
            JobName::RabotMirror,
            Arc::new(RabotMirror::new(&settings).unwrap()),
            pool,
            Duration::from_secs(5),
        )
    };
    let (a, b) = (runner(db.pool.clone()), runner(other_pool));
    let cancel = CancellationToken::new();
    let (first, second) = tokio::join!(
        a.run_once(
            TriggerCause::Cli,
            Actor::Scheduler,
            &cancel,
            tokio::sync::watch::channel(RunCounts::default()).0
        ),
        b.run_once(
            TriggerCause::Cli,
            Actor::Scheduler,
            &cancel,
            tokio::sync::watch::channel(RunCounts::default()).0
        ),
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    let ran = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                RunOutcome::Finished {
                    status: RunStatus::Succeeded,
                    ..
                }
            )
        })
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| **o == RunOutcome::LockedElsewhere)
        .count();
    assert_eq!((ran, skipped), (1, 1));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM sync.runs").await, 1);

    // The lock is released afterwards: the other replica can run the next trigger.
    let next = b
        .run_once(
            TriggerCause::Cli,
            Actor::Scheduler,
            &cancel,
            tokio::sync::watch::channel(RunCounts::default()).0,
        )
        .await
        .unwrap();
    assert!(matches!(
        next,
        RunOutcome::Finished {
            status: RunStatus::Succeeded,
            ..
        }
    ));
}
