//! The EnergyZero mirror end to end: sandbox over HTTP (partner token in the Authorization
//! header, impersonation, GraphQL) → runner → PostgreSQL; plus settings, failure isolation and
//! log hygiene.

use std::sync::Arc;
use std::time::Duration;

use partner_sync::jobs::JobName;
use partner_sync::partners::energyzero::mirror_job::EnergyzeroMirror;
use partner_sync::settings::Settings;
use partner_sync::store::runs::{RunCounts, RunStatus};
use partner_sync_sandbox::{Sandbox, SandboxOptions};
use sqlx::PgPool;

use crate::common::*;

/// `users` EnergyZero users (every 3rd has 23 contracts, the others 2; pages capped at 10).
fn ez_sandbox(users: usize) -> SandboxOptions {
    let mut options = SandboxOptions::default();
    options.energyzero.users = users;
    options
}

/// Environment that enables only EnergyZero, pointed at `sandbox`, mirroring `user_ids` (not
/// every user the sandbox has).
pub fn ez_env(sandbox: &Sandbox, database_url: &str, user_ids: &[String]) -> Vec<(String, String)> {
    let mut env = vec![("DATABASE_URL".to_owned(), database_url.to_owned())];
    env.extend(sandbox.env());
    env.extend(
        [
            ("PARTNER_SYNC__ENERGYZERO__ENABLED", "true".to_owned()),
            ("PARTNER_SYNC__ENERGYZERO__USER_IDS", user_ids.join(",")),
            (
                "PARTNER_SYNC__ENERGYZERO__REQUESTS_PER_SECOND",
                "1000".to_owned(),
            ),
            ("PARTNER_SYNC__ENERGYZERO__BURST", "50".to_owned()),
            ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "10ms".to_owned()),
            ("PARTNER_SYNC__HTTP__BACKOFF_MAX", "50ms".to_owned()),
            ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "3".to_owned()),
            ("PARTNER_SYNC__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
            ("PARTNER_SYNC__SERVER__OPS_LISTEN", "127.0.0.1:0".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

fn ez_settings(
    sandbox: &Sandbox,
    db: &TestDb,
    user_ids: &[String],
    overrides: &[(&str, &str)],
) -> Settings {
    let mut env = ez_env(sandbox, &db.url, user_ids);
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load_from(None, env).expect("test settings are valid")
}

fn ez_job(settings: &Settings) -> Arc<EnergyzeroMirror> {
    Arc::new(EnergyzeroMirror::new(settings).expect("job builds"))
}

async fn pass(
    job: &Arc<EnergyzeroMirror>,
    pool: &PgPool,
) -> (RunStatus, RunCounts, Option<String>) {
    run_pass(JobName::EnergyzeroMirror, job.clone(), pool).await
}

fn all_contracts(sandbox: &Sandbox, users: &[String]) -> Vec<(String, String)> {
    users
        .iter()
        .flat_map(|u| {
            sandbox
                .energyzero_contract_ids(u)
                .into_iter()
                .map(move |c| (u.clone(), c))
        })
        .collect()
}

async fn failures(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT item, error FROM sync.run_failures ORDER BY item")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pass_mirrors_users_and_every_page_of_contracts_into_typed_columns() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(6)).await;
    let users = sandbox.energyzero_user_ids();
    assert_eq!(users.len(), 6);
    let settings = ez_settings(&sandbox, &db, &users, &[]);

    let (status, counts, error) = pass(&ez_job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(error, None);

    let contracts = all_contracts(&sandbox, &users);
    // Users 3 and 6 have 23 contracts (3 pages of at most 10), the other four 2 (1 page).
    assert_eq!(contracts.len(), 4 * 2 + 2 * 23);
    assert_eq!(counts.pages, 4 + 2 * 3);
    assert_eq!(counts.fetched, 6 + contracts.len() as i64);
    assert_eq!(counts.inserted, counts.fetched);
    assert_eq!(
        (
            counts.updated,
            counts.unchanged,
            counts.deleted,
            counts.failed
        ),
        (0, 0, 0, 0)
    );
    // One partner token, one impersonation per user, one GraphQL request per page.
    assert_eq!(counts.requests, 1 + 6 + 10);
    let stats = sandbox.energyzero_stats();
    assert_eq!(
        (
            stats.partner_tokens_issued,
            stats.impersonations,
            stats.graphql_requests
        ),
        (1, 6, 10)
    );

    let mut mirrored: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, contract_id FROM mirror.energyzero_contracts")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected = contracts.clone();
    mirrored.sort();
    expected.sort();
    assert_eq!(mirrored, expected);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.energyzero_users").await,
        6
    );

    // Typed columns agree with the payload, for every row.
    let disagreeing_users = count(
        &db.pool,
        "SELECT count(*) FROM mirror.energyzero_users
          WHERE user_id IS DISTINCT FROM payload->>'id'
             OR first_name IS DISTINCT FROM payload->>'firstName'
             OR middle_name IS DISTINCT FROM payload->>'middleName'
             OR surname IS DISTINCT FROM payload->>'surname'
             OR email IS DISTINCT FROM payload->>'email'
             OR customer_number IS DISTINCT FROM payload->>'customerNumber'
             OR birth_date IS DISTINCT FROM (payload->>'birthDate')::date
             OR vendor IS DISTINCT FROM payload->>'vendor'
             OR payload ? 'contracts'",
    )
    .await;
    assert_eq!(disagreeing_users, 0);
    let disagreeing_contracts = count(
        &db.pool,
        "SELECT count(*) FROM mirror.energyzero_contracts
          WHERE contract_id IS DISTINCT FROM payload->>'id'
             OR phase IS DISTINCT FROM payload->>'phase'
             OR accepted_at IS DISTINCT FROM (payload->>'acceptedAt')::timestamptz
             OR start_date IS DISTINCT FROM (payload->>'startDate')::date
             OR end_date IS DISTINCT FROM (payload->>'endDate')::date
             OR duration_months IS DISTINCT FROM (payload->>'duration')::int
             OR has_gas IS DISTINCT FROM (payload->>'hasGas')::boolean
             OR has_electricity IS DISTINCT FROM (payload->>'hasElectricity')::boolean
             OR total_yearly_usage_kwh IS DISTINCT FROM (payload->>'totalYearlyUsage')::numeric
             OR energy_contract_type IS DISTINCT FROM payload->>'energyContractType'
             OR delivery_city IS DISTINCT FROM payload->'deliveryAddress'->>'city'
             OR delivery_zip_code IS DISTINCT FROM payload->'deliveryAddress'->>'zipCode'
             OR NOT payload ? 'billingAddress'",
    )
    .await;
    assert_eq!(disagreeing_contracts, 0);
    // The data is varied enough that the columns are really filled.
    assert!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.energyzero_contracts WHERE phase IS NOT NULL AND start_date IS NOT NULL AND total_yearly_usage_kwh IS NOT NULL"
        )
        .await
            > 0
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.energyzero_current_contracts"
        )
        .await,
        contracts.len() as i64
    );
    // Finance's role reads the new tables and view, and still nothing in `sync`.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET ROLE partner_sync_reader")
        .execute(&mut *conn)
        .await
        .unwrap();
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.energyzero_current_contracts
          WHERE user_id IN (SELECT user_id FROM mirror.energyzero_users)
            AND contract_id IN (SELECT contract_id FROM mirror.energyzero_contracts_versions)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(live, contracts.len() as i64);
    let denied = sqlx::query("SELECT count(*) FROM sync.energyzero_subjects")
        .fetch_one(&mut *conn)
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    drop(conn);

    let (run_status, run_failed, run_error): (String, i64, Option<String>) =
        sqlx::query_as("SELECT status, failed, error FROM sync.runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (run_status.as_str(), run_failed, run_error),
        ("succeeded", 0, None)
    );
}

#[tokio::test]
async fn a_resync_writes_nothing_unchanged_and_applies_changes_and_removals() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(3)).await;
    let users = sandbox.energyzero_user_ids();
    let job = ez_job(&ez_settings(&sandbox, &db, &users, &[]));
    let (status, first, _) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);

    // xmin changes whenever a row is rewritten, so equal xmins prove nothing was written.
    let row_versions = "SELECT string_agg(xmin::text, ',' ORDER BY user_id, contract_id)
                          FROM mirror.energyzero_contracts";
    let before: String = sqlx::query_scalar(row_versions)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let (status, second, error) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((second.inserted, second.updated, second.deleted), (0, 0, 0));
    assert_eq!(second.unchanged, first.inserted);
    let after: String = sqlx::query_scalar(row_versions)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
    // The daemon's client keeps its user tokens between runs: no new impersonation.
    assert_eq!(sandbox.energyzero_stats().impersonations, 3);

    // One contract changes, one disappears.
    let contracts = all_contracts(&sandbox, &users);
    let (changed_user, changed) = contracts[0].clone();
    let (removed_user, removed) = contracts[contracts.len() - 1].clone();
    assert!(
        sandbox.energyzero_update_contract(&changed_user, &changed, |c| {
            c["phase"] = serde_json::json!("DELIVERY_STOPPED");
        })
    );
    assert!(sandbox.energyzero_remove_contract(&removed_user, &removed));
    let (status, third, error) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((third.inserted, third.updated, third.deleted), (0, 1, 1));

    let phase: Option<String> = sqlx::query_scalar(
        "SELECT phase FROM mirror.energyzero_contracts WHERE user_id = $1 AND contract_id = $2",
    )
    .bind(&changed_user)
    .bind(&changed)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(phase.as_deref(), Some("DELIVERY_STOPPED"));
    let versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.energyzero_contracts_versions WHERE contract_id = $1",
    )
    .bind(&changed)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(versions, 2, "the old version is kept");
    let tombstoned: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NOT NULL FROM mirror.energyzero_contracts WHERE user_id = $1 AND contract_id = $2",
    )
    .bind(&removed_user)
    .bind(&removed)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(tombstoned);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.energyzero_contracts WHERE deleted_at IS NOT NULL"
        )
        .await,
        1,
        "only the removed contract is tombstoned"
    );
}

#[tokio::test]
async fn the_partner_token_is_renewed_once_across_a_run_longer_than_its_lifetime() {
    let db = TestDb::new().await;
    let mut options = ez_sandbox(12);
    options.energyzero.partner_token_lifetime = Duration::from_secs(2);
    options.latency = Duration::from_millis(500);
    let sandbox = start_sandbox(options).await;
    let all = sandbox.energyzero_user_ids();
    // The four heavy users (3, 6, 9, 12: impersonation + 3 pages, ~2 s) take the four slots
    // at ~0.5 s, while the first token is fresh; the fifth user waits for a slot until ~2.5 s,
    // after the 2 s token fell due for renewal (at 80 % of its life, ≤ 1.6 s). So exactly one
    // renewal happens, for that impersonation, and no request needs a third token.
    let users = vec![
        all[2].clone(),
        all[5].clone(),
        all[8].clone(),
        all[11].clone(),
        all[0].clone(),
    ];
    let started = std::time::Instant::now();
    let (status, counts, error) =
        pass(&ez_job(&ez_settings(&sandbox, &db, &users, &[])), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the run outlasted the partner token"
    );
    assert_eq!(counts.failed, 0);
    let stats = sandbox.energyzero_stats();
    assert_eq!(stats.partner_tokens_issued, 2, "{stats:?}");
    assert_eq!(stats.impersonations, 5, "one per user: {stats:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.energyzero_users").await,
        5
    );
}

#[tokio::test]
async fn an_impersonation_403_fails_that_user_and_the_run_says_so() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(4)).await;
    let users = sandbox.energyzero_user_ids();
    let refused = users[1].clone();
    sandbox.energyzero_forbid_impersonation(&refused);

    let (status, counts, error) =
        pass(&ez_job(&ez_settings(&sandbox, &db, &users, &[])), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.failed, 1);
    let error = error.expect("the run's error names the failed user");
    assert!(
        error.starts_with(&format!("1 of 4 users failed: {refused}: ")) && error.contains("403"),
        "{error}"
    );
    let recorded = failures(&db.pool).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].0, refused);
    assert!(recorded[0].1.contains("403"), "{}", recorded[0].1);

    let mirrored: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM mirror.energyzero_users ORDER BY user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected: Vec<String> = users.iter().filter(|u| **u != refused).cloned().collect();
    expected.sort();
    assert_eq!(mirrored, expected);
    let stats = sandbox.energyzero_stats();
    assert_eq!(
        stats.impersonations_refused, 1,
        "a 403 is not retried: {stats:?}"
    );
    let (run_status, run_error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM sync.runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(run_status, "succeeded");
    assert_eq!(run_error.as_deref(), Some(error.as_str()));
}

#[tokio::test]
async fn graphql_errors_for_one_user_among_several_fail_only_that_user() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(6)).await;
    let users = sandbox.energyzero_user_ids();
    let broken = users[2].clone();
    sandbox.energyzero_fail_user(&broken);
    let gone = users[4].clone();
    let settings = ez_settings(&sandbox, &db, &users, &[]);
    let job = ez_job(&settings);

    let (status, counts, error) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.failed, 1);
    let error = error.unwrap();
    assert!(
        error.contains(&format!("{broken}: ")) && error.contains("INTERNAL"),
        "{error}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.energyzero_users").await,
        5
    );
    assert_eq!(failures(&db.pool).await.len(), 1);

    // A user removed after the first pass answers NOT_FOUND: that user fails, and their
    // mirrored contracts are not tombstoned (a failed pass proves nothing).
    assert!(sandbox.energyzero_remove_user(&gone));
    let (status, counts, error) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((counts.failed, counts.deleted), (2, 0));
    let error = error.unwrap();
    assert!(error.starts_with("2 of 6 users failed: "), "{error}");
    assert!(error.contains("NOT_FOUND"), "{error}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.energyzero_contracts WHERE deleted_at IS NOT NULL"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_run_fails_when_every_user_fails() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(2)).await;
    let users = sandbox.energyzero_user_ids();
    for user in &users {
        sandbox.energyzero_forbid_impersonation(user);
    }
    let (status, counts, error) =
        pass(&ez_job(&ez_settings(&sandbox, &db, &users, &[])), &db.pool).await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(counts.failed, 2);
    assert!(error.unwrap().starts_with("2 of 2 users failed"));
    assert_eq!(failures(&db.pool).await.len(), 2);
}

#[tokio::test]
async fn rejected_partner_credentials_fail_the_run_at_once_naming_the_setting() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(6)).await;
    let users = sandbox.energyzero_user_ids();
    let settings = ez_settings(
        &sandbox,
        &db,
        &users,
        &[("PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET", "not-the-secret")],
    );
    let (status, counts, error) = pass(&ez_job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Failed);
    let error = error.unwrap();
    assert!(error.contains("energyzero.client_secret"), "{error}");
    assert!(!error.contains("not-the-secret"));
    assert_eq!(counts.failed, 0, "not counted as user failures");
    let stats = sandbox.energyzero_stats();
    assert_eq!(stats.partner_tokens_issued, 0);
    assert_eq!(stats.impersonations, 0);
    // Concurrent users share the one token request; the rejection is final, not retried.
    assert_eq!(stats.partner_token_requests, 1, "{stats:?}");
    assert!(failures(&db.pool).await.is_empty());
}

#[tokio::test]
async fn users_added_to_the_subjects_table_are_mirrored_with_those_in_settings() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(5)).await;
    let users = sandbox.energyzero_user_ids();
    // Settings name users 0 and 1; ops added 1 (again), 2 and 3 (disabled).
    for (user, enabled) in [(&users[1], true), (&users[2], true), (&users[3], false)] {
        sqlx::query(
            "INSERT INTO sync.energyzero_subjects (user_id, label, enabled) VALUES ($1, 'test', $2)",
        )
        .bind(user)
        .bind(enabled)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let settings = ez_settings(&sandbox, &db, &users[..2], &[]);
    let (status, counts, error) = pass(&ez_job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let mirrored: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM mirror.energyzero_users ORDER BY user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected = users[..3].to_vec();
    expected.sort();
    assert_eq!(mirrored, expected);
    assert_eq!(sandbox.energyzero_stats().impersonations, 3, "user 1 once");
    assert_eq!(counts.inserted, counts.fetched);
}

#[tokio::test]
async fn sync_energyzero_at_trace_level_logs_no_secret_or_token() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(4)).await;
    let users = sandbox.energyzero_user_ids();
    // One user fails, so the failure path is logged too.
    sandbox.energyzero_forbid_impersonation(&users[3]);
    let client_secret = sandbox.options().energyzero.client_secret.clone();
    let mut env = ez_env(&sandbox, &db.url, &users);
    env.push(("RUST_LOG".into(), "trace".into()));

    let out = run_binary(&["sync", "energyzero"], env).await;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    assert!(logs.lines().count() > 100, "TRACE logging was on");
    assert!(
        logs.contains("user not mirrored"),
        "the failed user is logged"
    );
    assert!(logs.contains("\"job\":\"energyzero_mirror\""));

    let tokens = sandbox.energyzero_issued_tokens();
    assert!(tokens.len() >= 4, "a partner token and user tokens");
    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain([client_secret.as_str()])
    {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
    // The JWTs' signatures alone must not leak either (a token cut in a log line).
    for token in &tokens {
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() >= 16) {
            assert!(
                !logs.contains(signature),
                "a token signature appears in the logs"
            );
        }
    }
}

#[tokio::test]
async fn a_401_renews_the_user_token_and_a_401_on_impersonation_renews_the_partner_token() {
    use partner_sync_sandbox::Fault;

    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(2)).await;
    let users = sandbox.energyzero_user_ids();
    let job = ez_job(&ez_settings(&sandbox, &db, &users, &[]));
    assert_eq!(pass(&job, &db.pool).await.0, RunStatus::Succeeded);
    let before = sandbox.energyzero_stats();
    assert_eq!(
        (
            before.partner_tokens_issued,
            before.impersonations,
            before.graphql_requests
        ),
        (1, 2, 2)
    );

    // One GraphQL call is answered 401 (a user token revoked early): the user token is dropped
    // and impersonation runs again, and that impersonation is answered 401 too (the partner
    // token revoked): the partner token is renewed and the impersonation retried, once each.
    for path in ["/energyzero/customer", "/impersonate"] {
        sandbox.inject_fault(Fault {
            path_contains: path.to_owned(),
            status: 401,
            retry_after: None,
            times: 1,
        });
    }
    let (status, counts, error) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((counts.failed, error), (0, None));
    let after = sandbox.energyzero_stats();
    assert_eq!(after.partner_tokens_issued, 2, "{after:?}");
    assert_eq!(after.impersonations, 3, "{after:?}");
    assert_eq!(after.graphql_requests, 2 + 3, "one call retried: {after:?}");
}

#[tokio::test]
async fn more_tombstones_than_the_guard_allows_fail_the_run_and_tombstone_nothing() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(ez_sandbox(4)).await;
    let users = sandbox.energyzero_user_ids();
    // A small guard so a handful of removals trips it: at most max(3, 0 × mirrored).
    let guard = [
        ("PARTNER_SYNC__ENERGYZERO__TOMBSTONE_GUARD__MIN_ROWS", "3"),
        ("PARTNER_SYNC__ENERGYZERO__TOMBSTONE_GUARD__SHARE", "0"),
    ];
    let job = ez_job(&ez_settings(&sandbox, &db, &users, &guard));
    assert_eq!(pass(&job, &db.pool).await.0, RunStatus::Succeeded);

    // Four contracts of two users go: 4 > 3, across users, so no single user's pass decides.
    let contracts = all_contracts(&sandbox, &users);
    let removed: Vec<_> = [0, 1, contracts.len() - 2, contracts.len() - 1]
        .into_iter()
        .map(|i| contracts[i].clone())
        .collect();
    for (user, contract) in &removed {
        assert!(sandbox.energyzero_remove_contract(user, contract));
    }
    let tombstoned =
        "SELECT count(*) FROM mirror.energyzero_contracts WHERE deleted_at IS NOT NULL";
    let (status, counts, error) = pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Failed);
    let error = error.unwrap_or_default();
    assert!(error.contains("energyzero.tombstone_guard"), "{error}");
    assert!(error.contains("would tombstone 4 of"), "{error}");
    assert_eq!(counts.deleted, 0);
    assert_eq!(count(&db.pool, tombstoned).await, 0);

    // The operator accepts it for one pass.
    let mut settings = ez_settings(&sandbox, &db, &users, &guard);
    settings.energyzero.tombstone_guard.allow_mass_delete = true;
    let (status, counts, error) = pass(&ez_job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.deleted, 4);
    assert_eq!(count(&db.pool, tombstoned).await, 4);
}
