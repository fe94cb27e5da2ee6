//! `resync rabot --customer ID`: the daemon refreshes one RABOT customer and its contracts,
//! found by customer number or external id, and touches no other customer's rows.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use partner_sync_sandbox::Sandbox;

use crate::common::*;

/// What a refresh may change of a row: its content, when it changed, whether it is tombstoned.
type RowState = (Vec<u8>, DateTime<Utc>, Option<DateTime<Utc>>);

/// Every mirrored customer and contract, keyed `customer` or `customer/contract`.
async fn mirror_rows(db: &TestDb) -> BTreeMap<String, RowState> {
    type Row = (String, Vec<u8>, DateTime<Utc>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT customer_number, content_hash, changed_at, deleted_at FROM mirror.rabot_customers
         UNION ALL
         SELECT customer_number || '/' || contract_number, content_hash, changed_at, deleted_at
           FROM mirror.rabot_contracts",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, hash, changed, deleted)| (key, (hash, changed, deleted)))
        .collect()
}

/// Keys whose row differs between the two snapshots (or is in only one of them).
fn changed_keys(
    before: &BTreeMap<String, RowState>,
    after: &BTreeMap<String, RowState>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect()
}

/// A mirrored sandbox (one full pass, in process) and a daemon listening for requests.
struct Fixture {
    db: TestDb,
    sandbox: Sandbox,
    env: Vec<(String, String)>,
    daemon: Daemon,
}

impl Fixture {
    async fn start(customers: usize) -> Self {
        let db = TestDb::new().await;
        let sandbox = start_sandbox(small_sandbox(customers)).await;
        let (status, _, error) = mirror_pass(&settings(&sandbox, &db, &[]), &db.pool).await;
        assert_eq!(
            status.as_str(),
            "succeeded",
            "the full pass failed: {error:?}"
        );
        let mut env = sandbox_env(&sandbox, &db.url);
        env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
        let daemon = Daemon::run(env.clone());
        assert!(
            daemon
                .wait_for_log("listening for resync requests", Duration::from_secs(20))
                .await,
            "{}",
            daemon.log()
        );
        Self {
            db,
            sandbox,
            env,
            daemon,
        }
    }

    /// SIGTERM: the daemon must stop cleanly.
    async fn stop(self) {
        self.daemon.stop_cleanly().await;
    }

    /// `resync rabot --customer ID --wait`: exit code and stdout.
    async fn refresh(&self, id: &str) -> (Option<i32>, String) {
        let out = run_binary(
            &[
                "resync",
                "rabot",
                "--customer",
                id,
                "--wait",
                "--timeout",
                "60s",
            ],
            self.env.clone(),
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        (out.status.code(), format!("{stdout}{stderr}"))
    }

    /// Customers whose external id no other customer has.
    fn customers_with_own_external_id(&self) -> Vec<String> {
        let numbers = self.sandbox.customer_numbers();
        let external: Vec<Option<String>> = numbers
            .iter()
            .map(|n| self.sandbox.external_id_of(n))
            .collect();
        numbers
            .iter()
            .zip(&external)
            .filter(|(_, id)| {
                id.is_some() && external.iter().filter(|other| other == id).count() == 1
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    async fn email_of(&self, customer_number: &str) -> Option<String> {
        sqlx::query_scalar("SELECT email FROM mirror.rabot_customers WHERE customer_number = $1")
            .bind(customer_number)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn last_refresh_run(&self) -> (String, String, Option<String>) {
        sqlx::query_as(
            "SELECT cause, status, error FROM sync.runs WHERE job = 'rabot_customer_refresh'
              ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_customer_number_refreshes_that_customer_alone_and_tombstones_nothing_else() {
    let f = Fixture::start(12).await;
    let candidates = f.customers_with_own_external_id();
    let (target, deleted_elsewhere) = (&candidates[0], &candidates[1]);
    let contract = f.sandbox.contract_numbers(target)[0].clone();
    let before = mirror_rows(&f.db).await;

    assert!(f.sandbox.update_customer(target, |c| {
        c["emailAddress"] = "refreshed@example.org".into();
    }));
    assert!(f.sandbox.update_contract(target, &contract, |k| {
        k["tariffName"] = "Refreshed tariff".into();
    }));
    // Another customer is gone upstream: only a full pass may tombstone it.
    assert!(f.sandbox.remove_customer(deleted_elsewhere));

    let (code, out) = f.refresh(target).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "requested rabot_customer_refresh of customer {target}"
        )) && out.contains("rabot_customer_refresh run")
            && out.contains("succeeded"),
        "{out}"
    );
    assert_eq!(
        f.email_of(target).await.as_deref(),
        Some("refreshed@example.org")
    );
    let tariff: Option<String> = sqlx::query_scalar(
        "SELECT tariff_name FROM mirror.rabot_contracts
          WHERE customer_number = $1 AND contract_number = $2",
    )
    .bind(target)
    .bind(&contract)
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(tariff.as_deref(), Some("Refreshed tariff"));

    let after = mirror_rows(&f.db).await;
    assert_eq!(
        changed_keys(&before, &after),
        vec![target.clone(), format!("{target}/{contract}")],
        "only the refreshed customer's changed rows may change"
    );
    assert_eq!(
        count(
            &f.db.pool,
            "SELECT count(*) FROM mirror.rabot_customers WHERE deleted_at IS NOT NULL"
        )
        .await,
        0
    );
    let (cause, status, error) = f.last_refresh_run().await;
    assert_eq!((cause.as_str(), status.as_str()), ("notify", "succeeded"));
    assert_eq!(error, None);
    // A full pass still runs as before and is recorded apart.
    assert_eq!(
        count(
            &f.db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror'"
        )
        .await,
        1
    );
    f.stop().await;
}

#[tokio::test]
async fn an_external_id_refreshes_every_customer_that_shares_it() {
    let f = Fixture::start(30).await;
    // The sandbox gives customers 4, 14, 24 their predecessor's external id (if it has one).
    let numbers = f.sandbox.customer_numbers();
    let (shared_id, owners) = numbers
        .iter()
        .filter_map(|n| Some((f.sandbox.external_id_of(n)?, n.clone())))
        .fold(
            BTreeMap::<String, Vec<String>>::new(),
            |mut by_id, (id, n)| {
                by_id.entry(id).or_default().push(n);
                by_id
            },
        )
        .into_iter()
        .find(|(_, owners)| owners.len() > 1)
        .expect("two customers share an external id");
    let before = mirror_rows(&f.db).await;
    for owner in &owners {
        assert!(f.sandbox.update_customer(owner, |c| {
            c["emailAddress"] = format!("{owner}@refreshed.example").into();
        }));
    }
    let bystander = numbers.iter().find(|n| !owners.contains(n)).unwrap();
    assert!(f.sandbox.update_customer(bystander, |c| {
        c["emailAddress"] = "not-asked-for@example.org".into();
    }));

    let (code, out) = f.refresh(&shared_id).await;
    assert_eq!(code, Some(0), "{out}");
    for owner in &owners {
        assert_eq!(
            f.email_of(owner).await,
            Some(format!("{owner}@refreshed.example"))
        );
    }
    let after = mirror_rows(&f.db).await;
    let mut expected = owners.clone();
    expected.sort();
    assert_eq!(changed_keys(&before, &after), expected);
    assert_ne!(
        f.email_of(bystander).await.as_deref(),
        Some("not-asked-for@example.org")
    );
    f.stop().await;
}

#[tokio::test]
async fn a_contract_gone_upstream_is_tombstoned_by_its_customers_refresh_only() {
    let f = Fixture::start(6).await;
    let candidates = f.customers_with_own_external_id();
    let (target, other) = (&candidates[0], &candidates[1]);
    let gone = f.sandbox.contract_numbers(target)[0].clone();
    let kept = f.sandbox.contract_numbers(target)[1].clone();
    let other_gone = f.sandbox.contract_numbers(other)[0].clone();
    assert!(f.sandbox.remove_contract(target, &gone));
    assert!(f.sandbox.remove_contract(other, &other_gone));
    let before = mirror_rows(&f.db).await;

    let (code, out) = f.refresh(target).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("deleted 1"), "{out}");
    let after = mirror_rows(&f.db).await;
    assert_eq!(
        changed_keys(&before, &after),
        vec![format!("{target}/{gone}")]
    );
    assert!(after[&format!("{target}/{gone}")].2.is_some(), "tombstoned");
    assert!(after[&format!("{target}/{kept}")].2.is_none());
    assert!(
        after[&format!("{other}/{other_gone}")].2.is_none(),
        "another customer's contract waits for a refresh of its own"
    );
    f.stop().await;
}

#[tokio::test]
async fn a_customer_without_external_id_keeps_its_row_and_the_run_says_so() {
    let f = Fixture::start(30).await;
    let target = f
        .sandbox
        .customer_numbers()
        .into_iter()
        .find(|n| f.sandbox.external_id_of(n).is_none())
        .expect("some sandbox customers have no external id");
    let gone = f.sandbox.contract_numbers(&target)[0].clone();
    assert!(f.sandbox.remove_contract(&target, &gone));
    assert!(f.sandbox.update_customer(&target, |c| {
        c["emailAddress"] = "unseen@example.org".into();
    }));

    let (code, out) = f.refresh(&target).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("has no external id"), "{out}");
    assert_ne!(
        f.email_of(&target).await.as_deref(),
        Some("unseen@example.org")
    );
    let rows = mirror_rows(&f.db).await;
    assert!(rows[&format!("{target}/{gone}")].2.is_some());
    let (_, status, error) = f.last_refresh_run().await;
    assert_eq!(status, "succeeded");
    assert!(error.unwrap_or_default().contains("its row was kept"));
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_id_fails_naming_it_and_changes_nothing() {
    let f = Fixture::start(4).await;
    let before = mirror_rows(&f.db).await;
    let (code, out) = f.refresh("NO-SUCH-CUSTOMER").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no RABOT customer with customer number or external id NO-SUCH-CUSTOMER"),
        "{out}"
    );
    assert_eq!(mirror_rows(&f.db).await, before);
    let (_, status, _) = f.last_refresh_run().await;
    assert_eq!(status, "failed");
    f.stop().await;
}

/// Refused before any database or daemon is reached: usage errors, exit 2.
#[tokio::test]
async fn customer_goes_with_the_rabot_job_only() {
    for args in [
        &["resync", "energyzero", "--customer", "46491184"][..],
        &["resync", "--customer", "46491184"],
        &["resync", "rabot", "energyzero", "--customer", "46491184"],
        &["resync", "rabot_customer_refresh"],
        &["sync", "rabot_customer_refresh"],
    ] {
        let out = run_binary(args, Vec::<(String, String)>::new()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--customer"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn hostile_ids_are_refused_or_fail_cleanly_and_never_reach_another_path() {
    let long = "9".repeat(10_000);
    for id in [long.as_str(), "bad\u{1b}[2Jid", "line\nbreak", ""] {
        let out = run_binary(
            &["resync", "rabot", "--customer", id],
            Vec::<(String, String)>::new(),
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("printable characters"), "{stderr}");
        assert!(!stderr.contains(&long[..100]) && !stderr.contains('\u{1b}'));
    }
    // No argument can hold a NUL (the OS passes C strings); the check refuses it all the same.
    assert!(partner_sync::partners::rabot::customer_refresh_job::customer_id("a\0b").is_err());

    let f = Fixture::start(4).await;
    let before = mirror_rows(&f.db).await;
    for id in ["../", "?x=", "../../customers/1/link", "%2e%2e/x#y"] {
        let logged = f.sandbox.recent_requests().len();
        let (code, out) = f.refresh(id).await;
        assert_eq!(code, Some(1), "{id}: {out}");
        assert!(out.contains(&format!("external id {id}")), "{out}");
        let sent = &f.sandbox.recent_requests()[logged..];
        let api: Vec<&String> = sent
            .iter()
            .filter(|r| !r.contains("/connect/token"))
            .collect();
        assert!(!api.is_empty());
        for request in api {
            let target = request.strip_prefix("GET ").expect(request);
            let url = url::Url::parse(&format!("http://sandbox{target}")).unwrap();
            assert_eq!(url.path(), "/rabot/partner/v1/customers", "{request}");
            let filter: Vec<String> = url
                .query_pairs()
                .filter(|(name, _)| name == "filter.externalId")
                .map(|(_, value)| value.into_owned())
                .collect();
            assert_eq!(filter, vec![id.to_owned()], "{request}");
        }
    }
    assert_eq!(mirror_rows(&f.db).await, before);

    // A request stored by other means than the command is checked again by the daemon.
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO sync.trigger_requests (id, job, customer) VALUES ($1, 'rabot_customer_refresh', $2)",
    )
    .bind(id)
    .bind("evil\u{7}id")
    .execute(&f.db.pool)
    .await
    .unwrap();
    let logged = f.sandbox.recent_requests().len();
    sqlx::query("SELECT pg_notify('partner_sync', $1)")
        .bind(id.to_string())
        .execute(&f.db.pool)
        .await
        .unwrap();
    assert!(
        wait_for(
            &f.db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_customer_refresh' AND status = 'failed' AND error LIKE '%printable characters%'",
            1,
            Duration::from_secs(20),
        )
        .await
    );
    assert_eq!(
        f.sandbox.recent_requests().len(),
        logged,
        "nothing was sent"
    );
    // Nor can anything store an unbounded one.
    let too_long = sqlx::query(
        "INSERT INTO sync.trigger_requests (id, job, customer) VALUES ($1, 'rabot_customer_refresh', $2)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(&long)
    .execute(&f.db.pool)
    .await;
    assert!(too_long.is_err());
    f.stop().await;
}

/// Requests for two customers that arrive together are two runs, one per customer: they are
/// never coalesced into one run that would answer both but refresh only one.
#[tokio::test]
async fn requests_for_two_customers_are_two_runs() {
    let f = Fixture::start(6).await;
    let candidates = f.customers_with_own_external_id();
    let targets = [&candidates[0], &candidates[1], &candidates[2]];
    for target in targets {
        assert!(f.sandbox.update_customer(target, |c| {
            c["emailAddress"] = format!("{target}@refreshed.example").into();
        }));
    }
    // Slow answers keep the first run going while the others queue behind it.
    f.sandbox.set_latency(Duration::from_millis(150));
    let (a, b, c) = tokio::join!(
        f.refresh(targets[0]),
        f.refresh(targets[1]),
        f.refresh(targets[2])
    );
    for (code, out) in [a, b, c] {
        assert_eq!(code, Some(0), "{out}");
    }
    for target in targets {
        assert_eq!(
            f.email_of(target).await,
            Some(format!("{target}@refreshed.example"))
        );
    }
    assert_eq!(
        count(
            &f.db.pool,
            "SELECT count(DISTINCT run_id) FROM sync.trigger_requests WHERE job = 'rabot_customer_refresh'"
        )
        .await,
        3
    );
    f.stop().await;
}

/// While another replica runs a refresh (here: holds its job lock), a claimed request waits
/// for it rather than being skipped, and runs once the lock is free.
#[tokio::test]
async fn a_refresh_waits_for_one_running_elsewhere() {
    let f = Fixture::start(4).await;
    let target = f.sandbox.customer_numbers()[0].clone();
    let mut elsewhere = f.db.pool.acquire().await.unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind("rabot_customer_refresh")
        .fetch_one(&mut *elsewhere)
        .await
        .unwrap();
    assert!(locked);

    let refresh = f.refresh(&target);
    let release = async {
        assert!(
            wait_for(
                &f.db,
                "SELECT count(*) FROM sync.trigger_requests WHERE claimed_by IS NOT NULL",
                1,
                Duration::from_secs(20),
            )
            .await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = count(
            &f.db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_customer_refresh'",
        )
        .await;
        let skipped = count(
            &f.db.pool,
            "SELECT count(*) FROM sync.trigger_requests WHERE skipped IS NOT NULL",
        )
        .await;
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind("rabot_customer_refresh")
            .execute(&mut *elsewhere)
            .await
            .unwrap();
        (started, skipped)
    };
    let ((code, out), (started, skipped)) = tokio::join!(refresh, release);
    assert_eq!(
        (started, skipped),
        (0, 0),
        "nothing ran or was skipped while the lock was held"
    );
    assert_eq!(code, Some(0), "{out}");
    let (_, status, _) = f.last_refresh_run().await;
    assert_eq!(status, "succeeded");
    f.stop().await;
}
