//! The real binary as a daemon: scheduled runs that never overlap, and SIGTERM handling.

use std::time::Duration;

use partner_sync_sandbox::SandboxOptions;

use crate::common::*;

#[tokio::test]
async fn scheduled_runs_never_overlap_and_sigterm_stops_cleanly() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(150),
        ..small_sandbox(8)
    })
    .await;
    let mut env = sandbox_env(&sandbox, &db.url);
    // Every second, while a pass takes longer than that: ticks during a run must coalesce.
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), "* * * * * *".into()));
    env.push(("PARTNER_SYNC__RABOT__CONCURRENCY".into(), "2".into()));
    // A zone whose offset is not whole hours: the schedule still ticks every second.
    env.push((
        "PARTNER_SYNC__DAEMON__TIMEZONE".into(),
        "Asia/Kathmandu".into(),
    ));
    let mut daemon = Daemon::run(env);

    let succeeded =
        "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'succeeded'";
    let ran = wait_for(&db, succeeded, 3, Duration::from_secs(30)).await;
    assert!(ran, "three scheduled runs: {}", daemon.log());

    let Exit { status, took } = daemon.stop(Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(10),
        "stopped within 10 s of SIGTERM"
    );
    assert!(status.success(), "exit status {status:?}");

    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE status = 'running'"
        )
        .await,
        0
    );
    let runs: Vec<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        String,
    )> = sqlx::query_as(
        "SELECT started_at, finished_at, cause FROM sync.runs WHERE job = 'rabot_mirror' ORDER BY started_at",
    )
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlap: {pair:?}");
    }
    assert!(runs.iter().all(|r| r.2 == "schedule"));
}

#[tokio::test]
async fn sigterm_during_a_slow_pass_cancels_it_without_a_partial_batch() {
    let db = TestDb::new().await;
    // Page size 10, concurrency 1, 300 ms per request: each page takes over 3 s to fetch.
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(300),
        ..small_sandbox(30)
    })
    .await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
    env.push(("PARTNER_SYNC__RABOT__CONCURRENCY".into(), "1".into()));
    env.push(("PARTNER_SYNC__DAEMON__RUN_ON_START".into(), "true".into()));
    env.push(("PARTNER_SYNC__DAEMON__SHUTDOWN_GRACE".into(), "1s".into()));
    let mut daemon = Daemon::run(env);

    // The start-up runs every scheduled job; this test follows the mirror's.
    let started = wait_for(
        &db,
        "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror'",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(started, "{}", daemon.log());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let Exit { status, took } = daemon.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(8), "grace 1 s, took {took:?}");

    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT status, error FROM sync.runs WHERE job = 'rabot_mirror' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(status, "cancelled", "{error:?}");
    // Whole pages only: every mirrored customer has all its contracts, in multiples of a page.
    let customers = count(&db.pool, "SELECT count(*) FROM mirror.rabot_customers").await;
    let contracts = count(&db.pool, "SELECT count(*) FROM mirror.rabot_contracts").await;
    assert_eq!(customers % 10, 0, "{customers} customers");
    assert_eq!(contracts, customers * 2);
    assert!(customers < 30, "the pass was interrupted");
}

/// Every job a RABOT daemon runs at start-up starts at once, each holding a connection for its
/// lock: with a pool of one for their work, they still all finish, none waits for a connection
/// another job's lock holds.
#[tokio::test]
async fn jobs_starting_together_do_not_exhaust_the_pool() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(5)).await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.extend(
        [
            ("PARTNER_SYNC__DATABASE__MAX_CONNECTIONS", "1"),
            ("PARTNER_SYNC__DATABASE__ACQUIRE_TIMEOUT", "5s"),
            ("PARTNER_SYNC__DAEMON__RUN_ON_START", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut daemon = Daemon::run(env);
    let finished = "SELECT count(*) FROM sync.runs WHERE status <> 'running'";
    assert!(
        wait_for(&db, finished, 4, Duration::from_secs(60)).await,
        "{}",
        daemon.log()
    );
    let failed: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT job, error FROM sync.runs WHERE status <> 'succeeded'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(failed.is_empty(), "{failed:?}\n{}", daemon.log());
    let jobs: Vec<String> = sqlx::query_scalar("SELECT job FROM sync.runs ORDER BY job")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        jobs,
        [
            "month_end_snapshot",
            "rabot_consumption",
            "rabot_costs",
            "rabot_mirror"
        ]
    );
    daemon.stop(Duration::from_secs(10)).await;
}
