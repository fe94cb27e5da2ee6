//! Rabobank rotation through the real binary: two daemons on one database, `sync rabobank`,
//! and a stop or a kill in the middle of a refresh.

use super::*;

/// Two real daemons on one database, rotating every second with every grant due: 100
/// rotations of 10 grants, no refresh token used twice, every grant still active.
#[tokio::test]
async fn two_daemons_rotating_ten_grants_a_hundred_times_never_reuse_a_token() {
    let bank = Bank::start(bank_options()).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(bank.connect(&format!("daemon-grant-{i}")).await);
    }
    let mut env = rabobank_env(
        &bank.sandbox,
        &bank.db.url,
        &bank.settings.server.public_url,
    );
    env.extend(
        [
            ("PARTNER_SYNC__RABOBANK__SCHEDULE", "* * * * * *"),
            ("PARTNER_SYNC__RABOBANK__ROTATE_BEFORE", "400days"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let daemons = [Daemon::run(env.clone()), Daemon::run(env.clone())];

    let rotated_enough = "SELECT count(*) FROM sync.oauth_grants WHERE refresh_count >= 10";
    let started = std::time::Instant::now();
    while count(&bank.db.pool, rotated_enough).await < 10
        && started.elapsed() < Duration::from_secs(90)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for daemon in daemons {
        daemon.stop_cleanly().await;
    }

    assert_eq!(
        count(&bank.db.pool, rotated_enough).await,
        10,
        "100 rotations in time"
    );
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!(
        (stats.reuse_detections, stats.invalid_grant_answers),
        (0, 0),
        "{stats:?}"
    );
    let (total, active): (i64, i64) = sqlx::query_as(
        "SELECT sum(refresh_count), count(*) FILTER (WHERE status = 'active') FROM sync.oauth_grants",
    )
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    assert_eq!(active, 10);
    assert_eq!(
        total as u64, stats.refreshes,
        "every rotation the bank made was saved"
    );
    let overlapping: i64 = count(
        &bank.db.pool,
        "SELECT count(*) FROM sync.runs a JOIN sync.runs b ON a.id < b.id AND a.job = b.job
          WHERE a.job = 'rabobank_token_rotation'
            AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)",
    )
    .await;
    assert_eq!(
        overlapping, 0,
        "rotation runs never overlap across the daemons"
    );
}

/// The environment of a daemon or `rotate-tokens` against `bank` that rotates every grant
/// it sees, stops runs 100 ms after SIGTERM, and never runs on a schedule by itself.
fn rotating_env(bank: &Bank, run_on_start: bool) -> Vec<(String, String)> {
    let mut env = rabobank_env(
        &bank.sandbox,
        &bank.db.url,
        &bank.settings.server.public_url,
    );
    env.extend(
        [
            ("PARTNER_SYNC__RABOBANK__SCHEDULE", NEVER),
            ("PARTNER_SYNC__RABOBANK__ROTATE_BEFORE", "400days"),
            ("PARTNER_SYNC__DAEMON__SHUTDOWN_GRACE", "100ms"),
            (
                "PARTNER_SYNC__DAEMON__RUN_ON_START",
                if run_on_start { "true" } else { "false" },
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

/// `sync rabobank` is the token rotation run once, as `rotate-tokens` is.
#[tokio::test]
async fn sync_rabobank_rotates_the_grants_like_rotate_tokens() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("by-sync").await;
    let out = run_binary(&["sync", "rabobank"], rotating_env(&bank, false)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bank.grant_status(id).await, ("active".to_owned(), 1, None));
    let run: (String, String) = sqlx::query_as(
        "SELECT status, cause FROM sync.runs WHERE job = 'rabobank_token_rotation'
          ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    assert_eq!(run, ("succeeded".to_owned(), "cli".to_owned()));
}

/// SIGTERM while the bank holds back its answer, with a grace period far shorter than the
/// wait: the run is abandoned, but the refresh it sent is awaited and its rotated token saved.
#[tokio::test]
async fn sigterm_during_an_answered_refresh_saves_the_rotated_token() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("in-flight").await;
    bank.sandbox
        .set_rabobank_token_answer_delay(Duration::from_millis(1500));
    let daemon = Daemon::run(rotating_env(&bank, true));

    // The bank has rotated the token; its answer is 1.5 s away.
    assert!(bank_processed(&bank.sandbox, 1, Duration::from_secs(30)).await);
    let logged = daemon.stop_cleanly().await;

    let marks = refresh_marks(&bank.db.pool, id).await;
    assert_eq!(marks.refresh_count, 1, "{logged}");
    assert!(marks.refresh_started_at.is_none() && marks.refresh_in_doubt_since.is_none());
    let run: (String,) = sqlx::query_as(
        "SELECT status FROM sync.runs WHERE job = 'rabobank_token_rotation' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    assert_eq!(run.0, "cancelled", "the run itself was abandoned: {logged}");

    // The saved token is the live one: the next rotation works and nothing was reused.
    bank.sandbox.set_rabobank_token_answer_delay(Duration::ZERO);
    bank.age(id, DAY).await;
    let (status, counts, error) = bank.rotation_pass().await;
    assert_eq!(
        (status, counts.updated),
        (RunStatus::Succeeded, 1),
        "{error:?}"
    );
    assert_eq!(bank.grant_status(id).await, ("active".to_owned(), 2, None));
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!(
        (
            stats.refreshes,
            stats.reuse_detections,
            stats.invalid_grant_answers
        ),
        (2, 0, 0)
    );
}

/// `kill -9` after the bank rotated the token but before its answer arrived: the next start
/// finds the refresh in flight with no live owner, and reports the grant `in_doubt` (grants
/// table and JSON, metrics) instead of replaying a token the bank may have spent.
#[tokio::test]
async fn a_kill_after_the_bank_answered_is_reported_in_doubt_at_the_next_start() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("killed").await;
    let healthy = bank.connect("healthy").await;
    bank.sandbox
        .set_rabobank_token_answer_delay(Duration::from_secs(30));
    let mut rotation = Daemon::command(&["rotate-tokens"])
        .envs(rotating_env(&bank, false))
        .start();
    assert!(bank_processed(&bank.sandbox, 1, Duration::from_secs(30)).await);
    rotation.kill().await;
    bank.sandbox.set_rabobank_token_answer_delay(Duration::ZERO);
    let killed = sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM sync.oauth_grants WHERE refresh_started_at IS NOT NULL",
    )
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    let other = if killed == id { healthy } else { id };
    let started_at = refresh_marks(&bank.db.pool, killed)
        .await
        .refresh_started_at;

    // The next start of a daemon notices it.
    let daemon = Daemon::run_ready(rotating_env(&bank, false)).await;
    let marks = refresh_marks(&bank.db.pool, killed).await;
    assert!(marks.refresh_interrupted, "{marks:?}");
    assert_eq!(marks.refresh_in_doubt_since, started_at);
    assert_eq!((marks.refresh_count, marks.refresh_started_at), (0, None));
    let logged = daemon.log();
    assert!(logged.contains("interrupted after it was sent"), "{logged}");
    assert_eq!(
        super::audited(&bank.db.pool, "grant.in_doubt").await,
        [killed]
    );

    let address = daemon.logged_address("operations server listening").await;
    let metrics = reqwest::get(format!("{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"partner_sync_grants_in_doubt{provider="rabobank"} 1"#),
        "{metrics}"
    );
    let since_gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with("partner_sync_grant_refresh_in_doubt_since_timestamp_seconds{")
                && l.contains(&killed.to_string())
        })
        .expect("a gauge for the grant in doubt");
    let since: f64 = since_gauge.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (since - started_at.unwrap().timestamp() as f64).abs() < 2.0,
        "{since_gauge}"
    );
    daemon.stop_cleanly().await;

    // `grants`: JSON and table say in_doubt, since when and why.
    let env = rotating_env(&bank, false);
    let listed = run_binary(&["grants", "--json"], env.clone()).await;
    assert!(listed.status.success());
    let grants: Vec<serde_json::Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let entry = |id: Uuid| {
        grants
            .iter()
            .find(|g| g["id"] == id.to_string())
            .unwrap()
            .clone()
    };
    let in_doubt = entry(killed);
    assert_eq!(
        (
            &in_doubt["status"],
            &in_doubt["state"],
            &in_doubt["in_doubt_reason"]
        ),
        (&"active".into(), &"in_doubt".into(), &"interrupted".into()),
        "{in_doubt}"
    );
    let since: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(in_doubt["refresh_in_doubt_since"].clone()).unwrap();
    assert_eq!(Some(since), started_at);
    assert_eq!(entry(other)["state"], "active");
    let table = run_binary(&["grants"], env).await;
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.contains("in_doubt") && l.contains("(interrupted)")),
        "{table}"
    );

    // Rotation leaves the token alone (no reuse at the bank) and names the grant, without
    // failing the run for the others.
    let requests = bank.sandbox.rabobank_stats().refresh_requests;
    bank.age(other, DAY).await;
    let (status, counts, error) = bank.rotation_pass().await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((counts.updated, counts.skipped, counts.failed), (1, 1, 0));
    assert!(error.unwrap().contains("in doubt"));
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!(
        stats.refresh_requests,
        requests + 1,
        "only the healthy grant"
    );
    assert_eq!(
        (stats.reuse_detections, stats.invalid_grant_answers),
        (0, 0)
    );
    assert_eq!(refresh_marks(&bank.db.pool, killed).await.refresh_count, 0);
}
