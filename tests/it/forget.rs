//! `partner-sync forget rabot N`: refused while RABOT returns the customer, else the customer
//! erased from every table that holds it, other customers untouched, the erasure audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use partner_sync::finance::snapshot_job::MonthEndSnapshot;
use partner_sync::jobs::JobName;
use partner_sync::partners::rabot::RabotClient;
use partner_sync::partners::rabot::consumption_job::RabotConsumption;
use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::SandboxOptions;
use sqlx::PgPool;

use crate::common::*;

/// Rows of `customer` in every table that may hold it, by table: every table of `mirror` and
/// `sync` with a `customer_number` column (by customer) or only a `contract_number` column (by
/// `contracts`), found in the catalog, so a table added later is checked without being listed.
async fn rows_of(pool: &PgPool, customer: &str, contracts: &[String]) -> BTreeMap<String, i64> {
    let tables: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.table_schema || '.' || c.table_name,
                bool_or(c.column_name = 'customer_number')
           FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
          WHERE c.table_schema IN ('mirror', 'sync') AND t.table_type = 'BASE TABLE'
            AND c.column_name IN ('customer_number', 'contract_number')
          GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut rows = BTreeMap::new();
    for (table, by_customer) in tables {
        let query = if by_customer {
            format!("SELECT count(*) FROM {table} WHERE customer_number = $1")
        } else {
            format!("SELECT count(*) FROM {table} WHERE contract_number = ANY($2)")
        };
        let n: i64 = sqlx::query_scalar(&query)
            .bind(customer)
            .bind(contracts)
            .fetch_one(pool)
            .await
            .unwrap();
        rows.insert(table, n);
    }
    rows
}

async fn link(pool: &PgPool, customer: &str, status: &str) {
    sqlx::query(
        "INSERT INTO sync.customer_links (id, success_hash, external_id, authorization_url,
                                          expires_at, customer_number, status, mirrored_at)
         VALUES (gen_random_uuid(), sha256(gen_random_uuid()::text::bytea), 'ext-' || $1,
                 'https://rabot.invalid/authorize', now(), $1, $2, now())",
    )
    .bind(customer)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn forget_refuses_a_live_customer_and_erases_a_tombstoned_one_everywhere() {
    // The client may ask for role:application, which reads consumption without a link.
    let sandbox = start_sandbox(SandboxOptions {
        granted_scopes: vec!["api:partner".to_owned(), "role:application".to_owned()],
        ..small_sandbox(3)
    })
    .await;
    let db = TestDb::new().await;
    let settings = settings(&sandbox, &db, &[]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let (status, _, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    // Consumption for every contract.
    let application = load_settings(
        &sandbox,
        &db.url,
        &[(
            "PARTNER_SYNC__RABOT__SCOPES",
            "api:partner role:application",
        )],
    );
    let client = RabotClient::new(&application.rabot, &application.http).unwrap();
    let (status, _, error) = run_pass(
        JobName::RabotConsumption,
        Arc::new(RabotConsumption::new(&application, client)),
        &db.pool,
    )
    .await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    // A closed month holding every contract.
    sqlx::query(
        "UPDATE mirror.rabot_contracts_versions SET valid_from = valid_from - interval '40 days'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (status, _, error) = run_pass(
        JobName::MonthEndSnapshot,
        Arc::new(MonthEndSnapshot::new(&settings)),
        &db.pool,
    )
    .await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");

    let customers = sandbox.customer_numbers();
    let (gone, kept) = (customers[0].clone(), customers[1].clone());
    let gone_contracts = sandbox.contract_numbers(&gone);
    let kept_contracts = sandbox.contract_numbers(&kept);
    link(&db.pool, &gone, "unlinked").await;
    link(&db.pool, &kept, "unlinked").await;
    let (email, last_name): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT email, last_name FROM mirror.rabot_customers WHERE customer_number = $1",
    )
    .bind(&gone)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let env = sandbox_env(&sandbox, &db.url);
    // Live: refused, nothing erased.
    let before = rows_of(&db.pool, &gone, &gone_contracts).await;
    let out = run_binary(&["forget", "rabot", &gone], env.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is live in the mirror") && stderr.contains("resync rabot --customer"),
        "{stderr}"
    );
    assert_eq!(rows_of(&db.pool, &gone, &gone_contracts).await, before);
    // Unknown: said so.
    let out = run_binary(&["forget", "rabot", "NO-SUCH-CUSTOMER"], env.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is unknown"), "{stderr}");

    // RABOT stops returning it; a pass tombstones it.
    assert!(sandbox.remove_customer(&gone));
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert!(tombstoned_customers(&db.pool).await.contains(&gone));
    let before = rows_of(&db.pool, &gone, &gone_contracts).await;
    for table in [
        "mirror.rabot_customers",
        "mirror.rabot_contracts_versions",
        "mirror.rabot_contract_cost_components",
        "mirror.rabot_contract_consumption",
        "mirror.month_end_contracts",
        "sync.customer_links",
    ] {
        assert!(
            before[table] > 0,
            "{table} holds the customer before: {before:?}"
        );
    }
    let kept_before = rows_of(&db.pool, &kept, &kept_contracts).await;
    let out = run_binary(&["forget", "rabot", &gone], env.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("forgot RABOT customer {gone}")),
        "{stdout}"
    );
    let after = rows_of(&db.pool, &gone, &gone_contracts).await;
    assert!(after.values().all(|n| *n == 0), "{after:?}");
    assert_eq!(rows_of(&db.pool, &kept, &kept_contracts).await, kept_before);

    let (actor, subject, detail): (String, Option<String>, serde_json::Value) = sqlx::query_as(
        "SELECT actor, subject, detail FROM sync.audit WHERE action = 'customer.forgotten'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("one audit entry");
    assert!(!actor.is_empty());
    assert_eq!(subject.as_deref(), Some(gone.as_str()));
    assert_eq!(
        detail["erased"]["mirror.rabot_contracts_versions"],
        before["mirror.rabot_contracts_versions"]
    );
    let text = detail.to_string();
    for personal in [email, last_name, Some(format!("ext-{gone}"))]
        .into_iter()
        .flatten()
    {
        assert!(!text.contains(&personal), "{personal} in {text}");
    }

    // Forgotten twice: nothing is left to erase.
    let out = run_binary(&["forget", "rabot", &gone], env.clone()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is unknown"));

    // Unlinked, but RABOT still lists it as its Owner's: live, refused.
    let unlinked = customers[2].clone();
    let unlinked_contracts = sandbox.contract_numbers(&unlinked);
    link(&db.pool, &unlinked, "unlinked").await;
    let out = run_binary(&["forget", "rabot", &unlinked], env.clone()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is live in the mirror"));
    // Unlinked, and the link was its only relation: no scope lists it again, so no pass would
    // tombstone it; it is forgotten while still live.
    sqlx::query(
        "UPDATE mirror.rabot_customers SET relations = '{Linked}' WHERE customer_number = $1",
    )
    .bind(&unlinked)
    .execute(&db.pool)
    .await
    .unwrap();
    let out = run_binary(&["forget", "rabot", &unlinked], env).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = rows_of(&db.pool, &unlinked, &unlinked_contracts).await;
    assert!(after.values().all(|n| *n == 0), "{after:?}");
    assert_eq!(rows_of(&db.pool, &kept, &kept_contracts).await, kept_before);
}

#[tokio::test]
async fn forget_refuses_a_tombstoned_customer_whose_link_is_active() {
    let sandbox = start_sandbox(small_sandbox(2)).await;
    let db = TestDb::new().await;
    let settings = settings(&sandbox, &db, &[]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let gone = sandbox.customer_numbers()[0].clone();
    link(&db.pool, &gone, "linked").await;
    assert!(sandbox.remove_customer(&gone));
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");

    let out = run_binary(&["forget", "rabot", &gone], sandbox_env(&sandbox, &db.url)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("unlink rabot {gone}")), "{stderr}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_customers").await,
        2,
        "nothing erased"
    );
}
