//! The real binary as a daemon: scheduled runs that never overlap, and SIGTERM handling.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use partner_sync_sandbox::SandboxOptions;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_partner-sync");
/// A schedule that never fires during a test.
pub const NEVER: &str = "0 0 0 1 1 *";

/// A port nothing listens on right now, for a daemon whose public URL must be known up front.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the daemon logged `needle` (it is ready for signals once "daemon running").
pub async fn wait_for_log(log: &std::path::Path, needle: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// SIGTERM, then the daemon must exit 0 within 15 s.
pub async fn stop(mut daemon: Child) {
    sigterm(&daemon);
    let (_, status) = wait_exit(&mut daemon, Duration::from_secs(15))
        .await
        .expect("stops after SIGTERM");
    assert!(status.success());
}

pub fn spawn_daemon(env: Vec<(String, String)>, log: &std::path::Path) -> Child {
    spawn_daemon_with(env, log, |_| {})
}

/// [`spawn_daemon`], with `configure` changing the command first (e.g. the child's limits).
pub fn spawn_daemon_with(
    env: Vec<(String, String)>,
    log: &std::path::Path,
    configure: impl FnOnce(&mut Command),
) -> Child {
    let log = std::fs::File::create(log).unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .env_remove("RUST_LOG")
        .envs(env)
        .stdout(Stdio::null())
        .stderr(log);
    configure(&mut command);
    command.spawn().expect("daemon starts")
}

/// `http://{address}` of the listener the daemon's JSON log announced with `message`
/// ("HTTP server listening", "operations server listening"); port 0 picks the port.
pub async fn logged_address(log: &std::path::Path, message: &str) -> String {
    let started = Instant::now();
    loop {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        let address = logged.lines().find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            (event["message"] == message).then(|| event["address"].as_str().map(str::to_owned))?
        });
        if let Some(address) = address {
            return format!("http://{address}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {message:?} in the log: {logged}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the child to exit; returns how long that took, or None after `limit`.
pub async fn wait_exit(
    child: &mut Child,
    limit: Duration,
) -> Option<(Duration, std::process::ExitStatus)> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((started.elapsed(), status));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    None
}

pub async fn wait_for(db: &TestDb, sql: &str, at_least: i64, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if count(&db.pool, sql).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

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
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(env, &log);

    let succeeded = "SELECT count(*) FROM sync.runs WHERE status = 'succeeded'";
    let ran = wait_for(&db, succeeded, 3, Duration::from_secs(30)).await;
    assert!(
        ran,
        "three scheduled runs: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    sigterm(&daemon);
    let (took, status) = wait_exit(&mut daemon, Duration::from_secs(10))
        .await
        .expect("stopped within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10));

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
    )> = sqlx::query_as("SELECT started_at, finished_at, cause FROM sync.runs ORDER BY started_at")
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
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), "0 0 0 1 1 *".into()));
    env.push(("PARTNER_SYNC__RABOT__CONCURRENCY".into(), "1".into()));
    env.push(("PARTNER_SYNC__DAEMON__RUN_ON_START".into(), "true".into()));
    env.push(("PARTNER_SYNC__DAEMON__SHUTDOWN_GRACE".into(), "1s".into()));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(env, &log);

    let started = wait_for(
        &db,
        "SELECT count(*) FROM sync.runs",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        started,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sigterm(&daemon);
    let (took, status) = wait_exit(&mut daemon, Duration::from_secs(10))
        .await
        .expect("stops");
    assert!(status.success());
    assert!(took < Duration::from_secs(8), "grace 1 s, took {took:?}");

    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM sync.runs ORDER BY id DESC LIMIT 1")
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
