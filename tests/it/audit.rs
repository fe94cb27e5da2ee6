//! The audit trail: `sync.audit` refuses every change but an INSERT, even from its owner.

use std::time::Duration;

use partner_sync::store::audit::{self, Actor, Entry};
use partner_sync::store::runs::RunStatus;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::bank::Bank;
use crate::common::*;
use crate::links::{ADMIN_TOKEN, LinkDaemon};

async fn one_entry(db: &TestDb) {
    let entry = Entry::new(&Actor::Scheduler, "test.entry")
        .partner("rabot")
        .subject("S-1")
        .detail(json!({"n": 1}));
    audit::record(&db.pool, &entry).await.unwrap();
}

#[tokio::test]
async fn the_trail_is_append_only_even_for_its_owner() {
    let db = TestDb::new().await;
    one_entry(&db).await;
    let owner: bool = sqlx::query_scalar(
        "SELECT tableowner = current_user FROM pg_tables
          WHERE schemaname = 'sync' AND tablename = 'audit'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(owner, "the test must run as the table's owner");

    for statement in [
        "UPDATE sync.audit SET actor = 'someone else'",
        "DELETE FROM sync.audit",
        "TRUNCATE sync.audit",
    ] {
        let error = sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect_err(statement);
        let message = error.to_string();
        assert!(
            message.contains("sync.audit is append-only"),
            "{statement}: {message}"
        );
    }
    let rows = audit::list(&db.pool, None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor, "scheduler");
    assert_eq!(rows[0].action, "test.entry");
    assert_eq!(rows[0].partner.as_deref(), Some("rabot"));
    assert_eq!(rows[0].subject.as_deref(), Some("S-1"));
    assert_eq!(rows[0].detail, json!({"n": 1}));

    // Every column carries a comment, the table too.
    let uncommented: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_attribute a
          WHERE a.attrelid = 'sync.audit'::regclass AND a.attnum > 0 AND NOT a.attisdropped
            AND col_description(a.attrelid, a.attnum) IS NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(uncommented.is_empty(), "{uncommented:?}");
}

/// Every entry, one line of row text each, in order: what the secret searches read.
async fn trail_text(db: &TestDb) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT string_agg(a::text, E'\\n' ORDER BY id) FROM sync.audit a",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .unwrap_or_default()
}

/// (actor, action, subject) of every entry, in order.
async fn trail(db: &TestDb) -> Vec<(String, String, Option<String>)> {
    audit::list(&db.pool, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.actor, row.action, row.subject))
        .collect()
}

/// `partner-sync audit --json …`: one JSON object per line.
fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn cli_user() -> String {
    Actor::cli_user().to_string()
}

#[tokio::test]
async fn a_link_leaves_its_trail_with_who_did_it_and_no_secret() {
    let d = LinkDaemon::start(&[]).await;
    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let number = customer.customer_number.clone();
    let authorization_url = d.authorization_url("OUR-AUDIT").await;
    let back = d.decide(&authorization_url, &customer, "approve").await;
    let secret = LinkDaemon::secret_of(&back).to_owned();

    // A number RABOT does not confirm first: set aside, and audited as such.
    let (status, _) = d.offer(&back, "10000").await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    let done = d.browser.get(&back).send().await.unwrap();
    assert_eq!(done.status(), reqwest::StatusCode::OK);

    let admin = format!(
        "admin-token:{}",
        &hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()))[..8]
    );
    assert_eq!(
        trail(&d.db).await,
        vec![
            (
                admin.clone(),
                "link.created".into(),
                Some("OUR-AUDIT".into())
            ),
            (
                "browser".into(),
                "link.refused".into(),
                Some("OUR-AUDIT".into())
            ),
            ("browser".into(), "link.linked".into(), Some(number.clone())),
        ]
    );
    let rows = audit::list(&d.db.pool, None, None).await.unwrap();
    assert!(rows.iter().all(|r| r.partner.as_deref() == Some("rabot")));
    assert_eq!(rows[1].detail["offered_customer_number"], "10000");
    assert_eq!(rows[2].detail["external_id"], "OUR-AUDIT");

    // The customer is unlinked from the command line.
    let out = d.cli(&["unlink", "rabot", &number]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = trail(&d.db).await.pop().unwrap();
    assert_eq!(
        last,
        (cli_user(), "link.unlinked".into(), Some(number.clone()))
    );

    // Neither the link's secrets nor the admin token are anywhere in the trail.
    assert!(rows[0].detail["link_id"].is_string());
    assert!(secret.len() >= 43);
    let text = trail_text(&d.db).await;
    assert!(text.contains("OUR-AUDIT"), "{text}");
    assert!(!text.contains(&secret), "{text}");
    assert!(!text.contains(ADMIN_TOKEN), "{text}");
    assert!(!text.to_lowercase().contains("authorization"), "{text}");

    // The command returns exactly the customer's entries, oldest first.
    let out = d.cli(&["audit", "--json", "--subject", &number]).await;
    let listed: Vec<(String, String)> = json_lines(&out)
        .iter()
        .map(|row| {
            assert_eq!(row["subject"], number.as_str());
            (
                row["actor"].as_str().unwrap().to_owned(),
                row["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("browser".to_owned(), "link.linked".to_owned()),
            (cli_user(), "link.unlinked".to_owned()),
        ]
    );
    // And the table, for people.
    let out = d.cli(&["audit", "--subject", "OUR-AUDIT"]).await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("AT "), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("link.refused"), "{table}");
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn a_refused_link_is_audited_with_its_error_name() {
    let d = LinkDaemon::start(&[]).await;
    let customer = d.sandbox.rabot_linkable_customers()[1].clone();
    let out = d.cli(&["link", "rabot", "--external-id", "OUR-NO"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let authorization_url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let back = d.decide(&authorization_url, &customer, "deny").await;
    let secret = LinkDaemon::secret_of(&back).to_owned();
    d.browser.get(&back).send().await.unwrap();

    assert_eq!(
        trail(&d.db).await,
        vec![
            (cli_user(), "link.created".into(), Some("OUR-NO".into())),
            (
                "browser".into(),
                "link.denied".into(),
                Some("OUR-NO".into())
            ),
        ]
    );
    let rows = audit::list(&d.db.pool, None, Some("OUR-NO")).await.unwrap();
    assert_eq!(rows[1].detail["error_name"], "access_denied");
    assert!(!trail_text(&d.db).await.contains(&secret));
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn a_consent_and_its_rotation_are_audited() {
    let bank = Bank::start(small_sandbox(1)).await;
    let refused = bank.bank_redirect(Some("nope"), "deny").await;
    bank.arrive(&refused).await;
    let id = bank.connect("household").await;
    bank.age(id, Duration::from_secs(6 * 86_400)).await;
    let (status, _, error) = bank.rotation_pass().await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");

    let grant = id.to_string();
    assert_eq!(
        trail(&bank.db).await,
        vec![
            ("browser".into(), "consent.refused".into(), None),
            (
                "browser".into(),
                "consent.granted".into(),
                Some(grant.clone())
            ),
            (cli_user(), "grant.refreshed".into(), Some(grant.clone())),
        ]
    );
    let rows = audit::list(&bank.db.pool, None, Some(&grant))
        .await
        .unwrap();
    assert_eq!(rows[0].detail["label"], "household");
    assert_eq!(rows[1].detail["refresh_count"], 1);
    assert!(
        rows.iter()
            .all(|r| r.partner.as_deref() == Some("rabobank"))
    );
    // No state, code or token in the trail: only the labels, ids and counts above.
    let state = url::Url::parse(&refused)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let text = trail_text(&bank.db).await;
    assert!(!text.contains(&state), "{text}");
    assert!(!text.contains("token\""), "{text}");
}

#[tokio::test]
async fn resync_requests_and_guard_overrides_are_audited_and_since_filters() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let env = sandbox_env(&sandbox, &db.url);

    let out = run_binary(&["resync", "rabot", "--customer", "CUST-1"], env.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_binary(&["sync", "rabot", "--allow-mass-delete"], env.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_binary(&["sync", "rabot"], env.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let user = cli_user();
    assert_eq!(
        trail(&db).await,
        vec![
            (
                user.clone(),
                "resync.requested".into(),
                Some("CUST-1".into())
            ),
            (
                user.clone(),
                "guard.override".into(),
                Some("rabot_mirror".into())
            ),
            (user.clone(), "sync.run".into(), Some("rabot_mirror".into())),
            (user.clone(), "sync.run".into(), Some("rabot_mirror".into())),
        ]
    );
    let rows = audit::list(&db.pool, None, None).await.unwrap();
    assert_eq!(rows[0].detail["jobs"], json!(["rabot_customer_refresh"]));
    assert_eq!(rows[1].detail["allow_mass_delete"], true);
    assert_eq!(rows[2].detail["status"], "succeeded");

    // An entry of ten days ago: listed with --since 30d, not with --since 7d.
    sqlx::query(
        "INSERT INTO sync.audit (at, actor, action, subject)
         VALUES (now() - interval '10 days', 'alice', 'test.old', 'rabot_mirror')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let actions = |out: &std::process::Output| -> Vec<String> {
        json_lines(out)
            .iter()
            .map(|row| row["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let db_env = [("DATABASE_URL", db.url.as_str())];
    let recent = run_binary(
        &[
            "audit",
            "--json",
            "--since",
            "7d",
            "--subject",
            "rabot_mirror",
        ],
        db_env,
    )
    .await;
    assert_eq!(actions(&recent), ["guard.override", "sync.run", "sync.run"]);
    let older = run_binary(
        &[
            "audit",
            "--json",
            "--since",
            "30d",
            "--subject",
            "rabot_mirror",
        ],
        db_env,
    )
    .await;
    assert_eq!(
        actions(&older),
        ["test.old", "guard.override", "sync.run", "sync.run"]
    );
    let all = run_binary(&["audit", "--json"], db_env).await;
    assert_eq!(actions(&all).len(), 5);
    let bad = run_binary(&["audit", "--since", "a week"], db_env).await;
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn a_signal_that_asks_for_runs_is_audited() {
    let d = LinkDaemon::start(&[]).await;
    d.daemon.signal(Signal::Usr1);
    // RABOT's three mirrors: rabot_mirror, rabot_costs and rabot_consumption.
    assert!(
        wait_for(
            &d.db,
            "SELECT count(*) FROM sync.audit
              WHERE actor = 'signal' AND action = 'signal.resync'
                AND detail ->> 'signal' = 'SIGUSR1' AND detail ->> 'jobs_triggered' = '3'",
            1,
            Duration::from_secs(5)
        )
        .await,
        "{:?}",
        trail(&d.db).await
    );
    // The runs it started act for the signal too: nothing else was audited.
    assert_eq!(trail(&d.db).await.len(), 1);
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn a_signal_that_asks_for_a_rotation_is_audited() {
    let bank = Bank::start(small_sandbox(1)).await;
    let mut env = crate::rabobank::rabobank_env(
        &bank.sandbox,
        &bank.db.url,
        &bank.settings.server.public_url,
    );
    env.push(("PARTNER_SYNC__RABOBANK__SCHEDULE".into(), NEVER.into()));
    let daemon = Daemon::run_ready(env).await;
    daemon.signal(Signal::Usr2);
    assert!(
        wait_for(
            &bank.db,
            "SELECT count(*) FROM sync.audit
              WHERE actor = 'signal' AND action = 'signal.rotate'
                AND detail ->> 'signal' = 'SIGUSR2' AND detail ->> 'jobs_triggered' = '1'",
            1,
            Duration::from_secs(10)
        )
        .await,
        "{:?}\n{}",
        trail(&bank.db).await,
        daemon.log()
    );
    daemon.stop_cleanly().await;
}
