//! Operating the real binary: SIGUSR1/SIGUSR2 resyncs, SIGHUP reloads, `resync --wait`
//! through NOTIFY, and two daemons sharing one database.

use std::time::Duration;

use partner_sync_sandbox::SandboxOptions;

use crate::common::*;

fn quiet_env(sandbox: &partner_sync_sandbox::Sandbox, db: &TestDb) -> Vec<(String, String)> {
    let mut env = sandbox_env(sandbox, &db.url);
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
    env.push(("PARTNER_SYNC__RABOT__COSTS_SCHEDULE".into(), NEVER.into()));
    env
}

#[tokio::test]
async fn sigusr1_resyncs_within_two_seconds_and_a_burst_gives_at_most_two_runs() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(100),
        ..small_sandbox(5)
    })
    .await;
    let daemon = Daemon::run_ready(quiet_env(&sandbox, &db)).await;

    daemon.signal(Signal::Usr1);
    let signalled =
        "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'signal'";
    assert!(
        wait_for(&db, signalled, 1, Duration::from_secs(2)).await,
        "a run within 2 s: {}",
        daemon.log()
    );
    let done = "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status <> 'running'";
    assert!(wait_for(&db, done, 1, Duration::from_secs(20)).await);

    // 100 signals while nothing runs: the first starts a run, the rest coalesce into one more.
    for _ in 0..100 {
        daemon.signal(Signal::Usr1);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(wait_for(&db, done, 2, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = count(&db.pool, signalled).await;
    assert!((2..=3).contains(&runs), "1 + at most 2 runs, got {runs}");

    // SIGUSR2 without Rabobank: a warning, no run, still alive.
    daemon.signal(Signal::Usr2);
    assert!(
        daemon
            .wait_for_log("token rotation is not enabled", Duration::from_secs(5))
            .await
    );
    daemon.stop_cleanly().await;
}

#[tokio::test]
async fn sighup_refuses_an_invalid_file_and_applies_a_changed_schedule() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(&file, format!("[rabot]\nschedule = \"{NEVER}\"\n")).unwrap();
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC_CONFIG".into(), file.to_str().unwrap().into()));
    let daemon = Daemon::run_ready(env).await;

    std::fs::write(&file, "[rabot]\nschedule = \"every minute\"\n").unwrap();
    daemon.signal(Signal::Hup);
    assert!(
        daemon
            .wait_for_log("new configuration refused", Duration::from_secs(5))
            .await,
        "{}",
        daemon.log()
    );
    // Still running the old settings: answers a resync.
    daemon.signal(Signal::Usr1);
    assert!(
        wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'signal'",
            1,
            Duration::from_secs(5)
        )
        .await
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'schedule'"
        )
        .await,
        0
    );

    std::fs::write(&file, "[rabot]\nschedule = \"* * * * * *\"\n").unwrap();
    daemon.signal(Signal::Hup);
    assert!(
        daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await
    );
    assert!(
        wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'schedule'",
            2,
            Duration::from_secs(10)
        )
        .await,
        "the new every-second schedule applies"
    );
    daemon.stop_cleanly().await;
}

#[tokio::test]
async fn two_daemons_run_each_tick_once_and_resync_wait_goes_through_notify() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(5)).await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push((
        "PARTNER_SYNC__RABOT__SCHEDULE".into(),
        "*/2 * * * * *".into(),
    ));
    let daemons = [Daemon::run(env.clone()), Daemon::run(env.clone())];
    for daemon in &daemons {
        assert!(
            daemon
                .wait_for_log("listening for resync requests", Duration::from_secs(20))
                .await
        );
    }
    let window_start = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(7)).await;

    // `resync --wait`: one replica claims it, the command prints the run and exits 0.
    let out = run_binary(&["resync", "rabot_mirror", "--wait"], env.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rabot_mirror run") && stdout.contains("succeeded"),
        "{stdout}"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'notify'"
        )
        .await,
        1,
        "exactly one replica ran the request"
    );
    let claimed: i64 = count(&db.pool, "SELECT count(*) FROM sync.trigger_requests WHERE claimed_by IS NOT NULL AND run_id IS NOT NULL").await;
    assert_eq!(claimed, 1);

    for daemon in daemons {
        daemon.stop_cleanly().await;
    }
    // Every even second between the window's start and its end is one tick; each ran once.
    let ticks: Vec<(chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
        "SELECT started_at, host FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'schedule' AND started_at >= $1 ORDER BY started_at",
    )
    .bind(window_start)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(ticks.len() >= 3, "ticks ran: {ticks:?}");
    for pair in ticks.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= chrono::Duration::milliseconds(1500),
            "one run per tick, not two: {ticks:?}"
        );
    }
}

#[tokio::test]
async fn resync_wait_without_a_daemon_says_so() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let env = sandbox_env(&sandbox, &db.url);
    // No daemon listens; the claim timeout (30 s) is long, so only check the request is stored
    // and the command without --wait returns at once.
    let out = run_binary(&["resync"], env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM sync.trigger_requests WHERE job = 'rabot_mirror' AND claimed_by IS NULL").await,
        1
    );
    let bad = run_binary(&["resync", "no_such_job"], Vec::<(String, String)>::new()).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rabot_mirror"));
}

#[tokio::test]
async fn a_replica_killed_mid_run_leaves_the_other_able_to_run_the_job() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(200),
        ..small_sandbox(20)
    })
    .await;
    let env = quiet_env(&sandbox, &db);
    let mut victim = Daemon::run_ready(env.clone()).await;
    let survivor = Daemon::run_ready(env.clone()).await;
    victim.signal(Signal::Usr1);
    assert!(
        wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'running'",
            1,
            Duration::from_secs(5)
        )
        .await
    );
    victim.kill().await;

    // PostgreSQL frees the dead replica's lock once it notices the closed connection; a signal
    // that arrives before that finds the job running elsewhere and is skipped, so ask again.
    let mut succeeded = false;
    for _ in 0..30 {
        survivor.signal(Signal::Usr1);
        if wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'succeeded'",
            1,
            Duration::from_secs(1),
        )
        .await
        {
            succeeded = true;
            break;
        }
    }
    assert!(succeeded, "{}", survivor.log());
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT status, error FROM sync.runs WHERE job = 'rabot_mirror' ORDER BY id LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(status, "failed", "the killed run is visibly not succeeded");
    assert!(error.unwrap().contains("abandoned"));
    survivor.stop_cleanly().await;
}

/// Picks a port that is free now, for a daemon whose public URL must be known before it starts.

#[tokio::test]
async fn sighup_can_enable_a_partner_and_its_callback() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(&file, "[rabobank]\nenabled = false\n").unwrap();
    // Everything Rabobank needs comes from the environment; only `enabled` changes.
    let mut env: Vec<(String, String)> =
        crate::rabobank::rabobank_env(&sandbox, &db.url, &public_url)
            .into_iter()
            .filter(|(k, _)| {
                k != "PARTNER_SYNC__RABOBANK__ENABLED" && k != "PARTNER_SYNC__RABOT__ENABLED"
            })
            .collect();
    env.push(("PARTNER_SYNC__RABOT__ENABLED".into(), "true".into()));
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
    env.push((
        "PARTNER_SYNC__SERVER__LISTEN".into(),
        format!("127.0.0.1:{port}"),
    ));
    env.push(("PARTNER_SYNC_CONFIG".into(), file.to_str().unwrap().into()));
    let daemon = Daemon::run_ready(env).await;

    let callback = format!("{public_url}/oauth/rabobank/callback");
    let http = reqwest::Client::new();
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 404);

    std::fs::write(&file, "[rabobank]\nenabled = true\n").unwrap();
    daemon.signal(Signal::Hup);
    assert!(
        daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await
    );
    // The callback now exists (a request without a state is refused, not unknown).
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 400);
    // And the rotation job with it.
    daemon.signal(Signal::Usr2);
    assert!(
        wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabobank_token_rotation' AND status = 'succeeded'",
            1,
            Duration::from_secs(5)
        )
        .await,
        "{}",
        daemon.log()
    );
    daemon.stop_cleanly().await;
}

/// `resync` takes partner names like `sync` does: `rabot` (and `rabot_mirror` with it, once)
/// runs the RABOT mirror on the daemon, and `--wait` exits 0 when that run succeeded.
#[tokio::test]
async fn resync_rabot_wait_runs_the_mirror_on_the_daemon_and_exits_0() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let env = quiet_env(&sandbox, &db);
    let daemon = Daemon::run(env.clone());
    assert!(
        daemon
            .wait_for_log("listening for resync requests", Duration::from_secs(20))
            .await,
        "{}",
        daemon.log()
    );

    let out = run_binary(
        &[
            "resync",
            "rabot",
            "rabot_mirror",
            "--wait",
            "--timeout",
            "60s",
        ],
        env.clone(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("requested rabot_mirror (request")
            && stdout.contains("rabot_mirror run")
            && stdout.contains("succeeded"),
        "{stdout}"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'notify' AND status = 'succeeded'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_customers").await,
        3
    );
    daemon.stop_cleanly().await;
}

#[tokio::test]
async fn the_listener_reconnects_and_a_run_that_loses_the_database_fails_cleanly() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(200),
        ..small_sandbox(60)
    })
    .await;
    let mut env = quiet_env(&sandbox, &db);
    // One customer's contracts at a time: a pass takes over ten seconds.
    env.push(("PARTNER_SYNC__RABOT__CONCURRENCY".into(), "1".into()));
    let daemon = Daemon::run(env.clone());
    assert!(
        daemon
            .wait_for_log("listening for resync requests", Duration::from_secs(20))
            .await
    );

    // Cut every connection the daemon has, mid-run: the run fails, the lock goes with it.
    daemon.signal(Signal::Usr1);
    assert!(
        wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'running'",
            1,
            Duration::from_secs(5)
        )
        .await
    );
    let cut = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()
                  AND application_name = 'partner-sync'";
    let apps: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT application_name, datname::text FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let cut_count = count(&db.pool, cut).await;
    assert!(cut_count >= 2, "the daemon had connections: {apps:?}");
    assert!(
        wait_for(
            &db,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'failed'",
            1,
            Duration::from_secs(30)
        )
        .await,
        "{}",
        daemon.log()
    );

    let error: String = sqlx::query_scalar(
        "SELECT error FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'failed'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(error.contains("job lock"), "{error}");

    // The listener comes back on its own and the next request runs.
    let out = run_binary(&["resync", "--wait", "--timeout", "60s"], env).await;
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'succeeded'"
        )
        .await,
        1
    );
    daemon.stop_cleanly().await;
}

#[tokio::test]
async fn sighup_keeps_resync_requests_queued_behind_a_running_pass() {
    let db = TestDb::new().await;
    // About 15 requests of 250 ms each: a pass lasts seconds, long enough to reload under it.
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(250),
        ..small_sandbox(12)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(&file, format!("[rabot]\nschedule = \"{NEVER}\"\n")).unwrap();
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC__RABOT__CONCURRENCY".into(), "1".into()));
    env.push(("PARTNER_SYNC_CONFIG".into(), file.to_str().unwrap().into()));
    let daemon = Daemon::run(env.clone());
    assert!(
        daemon
            .wait_for_log("listening for resync requests", Duration::from_secs(20))
            .await
    );

    daemon.signal(Signal::Usr1);
    let running =
        "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'running'";
    assert!(wait_for(&db, running, 1, Duration::from_secs(5)).await);
    let resync = |env: Vec<(String, String)>| {
        tokio::spawn(async move {
            run_binary(
                &["resync", "rabot_mirror", "--wait", "--timeout", "40s"],
                env,
            )
            .await
        })
    };
    // Claimed by the daemon and queued behind the running pass; then the reload.
    let before = resync(env.clone());
    let claimed = "SELECT count(*) FROM sync.trigger_requests WHERE claimed_by IS NOT NULL";
    assert!(wait_for(&db, claimed, 1, Duration::from_secs(10)).await);
    std::fs::write(&file, "[rabot]\nschedule = \"0 0 0 1 2 *\"\n").unwrap();
    daemon.signal(Signal::Hup);
    assert!(
        daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await
    );
    // A request claimed after the reload, while the old configuration's pass still runs.
    let after = resync(env.clone());
    assert!(wait_for(&db, claimed, 2, Duration::from_secs(10)).await);
    assert_eq!(
        count(&db.pool, running).await,
        1,
        "the first pass must still run for this test to mean anything"
    );

    for waiting in [before, after] {
        let out = waiting.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("succeeded"),
            "{stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
    // Both requests answered by one run, after the first pass, neither skipped.
    let answers: Vec<(Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT run_id, skipped FROM sync.trigger_requests ORDER BY requested_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(answers.len(), 2);
    assert!(
        answers
            .iter()
            .all(|(run, skipped)| run.is_some() && skipped.is_none())
    );
    assert_eq!(answers[0].0, answers[1].0, "{answers:?}");
    let runs: Vec<(String, String)> = sqlx::query_as(
        "SELECT cause, status FROM sync.runs WHERE job = 'rabot_mirror' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        runs,
        [("signal", "succeeded"), ("notify", "succeeded")]
            .map(|(c, s)| (c.to_owned(), s.to_owned()))
            .to_vec()
    );
    daemon.stop_cleanly().await;
}

/// SIGHUP with a settings file that does not parse: the JSON log says where the error is and
/// never quotes the line (here holding a secret); the running settings stay.
#[tokio::test]
async fn sighup_with_a_broken_file_logs_where_but_never_the_line() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(&file, format!("[rabot]\nschedule = \"{NEVER}\"\n")).unwrap();
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC_CONFIG".into(), file.to_str().unwrap().into()));
    let daemon = Daemon::run_ready(env).await;

    std::fs::write(
        &file,
        format!("[rabot]\nschedule = \"{NEVER}\"\nclient_secret = \"reload-s3cr3t\n"),
    )
    .unwrap();
    daemon.signal(Signal::Hup);
    let refused_logged = daemon
        .wait_for_log("new configuration refused", Duration::from_secs(5))
        .await;
    let text = daemon.stop_cleanly().await;
    assert!(refused_logged, "{text}");
    assert!(!text.contains("reload-s3cr3t"), "{text}");
    let refused: serde_json::Value = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["message"] == "new configuration refused; the running one stays")
        .expect("a JSON log line for the refusal");
    let error = refused["error"].as_str().unwrap_or_default();
    let expected = format!(
        "settings file {}: TOML syntax error at line 3 column ",
        file.display()
    );
    assert!(
        error.starts_with(&expected) && !error.contains('\n'),
        "{refused}"
    );
}

#[tokio::test]
async fn a_resync_waits_for_a_run_of_its_job_on_another_replica_instead_of_being_skipped() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(5)).await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
    let daemon = Daemon::run(env.clone());
    assert!(
        daemon
            .wait_for_log("listening for resync requests", Duration::from_secs(20))
            .await
    );
    // "Another replica" runs rabot_mirror: it holds the job's lock, as a run does.
    let mut other = db.pool.acquire().await.unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind("rabot_mirror")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(locked);
    let resync = tokio::spawn(run_binary(&["resync", "rabot", "--wait"], env.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !resync.is_finished(),
        "the request waits while the job runs elsewhere"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM sync.runs").await, 0);
    let released = chrono::Utc::now();
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind("rabot_mirror")
        .execute(&mut *other)
        .await
        .unwrap();

    let out = tokio::time::timeout(Duration::from_secs(20), resync)
        .await
        .expect("the request ran once the lock was free")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT started_at FROM sync.runs WHERE job = 'rabot_mirror' AND cause = 'notify' AND status = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        started >= released,
        "the run started after the other one ended"
    );
    daemon.stop_cleanly().await;
}
