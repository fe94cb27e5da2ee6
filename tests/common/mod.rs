//! Shared test plumbing for every test binary (`it`, `reliability`, `grants_chaos`): a fresh
//! database per test, a sandbox per test, settings that point the one at the other, and the real
//! binary ([`daemon::Daemon`], [`run_binary`]). Everything is real: PostgreSQL from DATABASE_URL,
//! HTTP on loopback.
// Each binary uses a part of it.
#![allow(dead_code)]

pub mod bank;
pub mod daemon;

#[allow(unused_imports)]
pub use daemon::{Daemon, Exit, NEVER, Signal};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use partner_sync::events::TriggerCause;
use partner_sync::events::dispatcher::{JobRunner, RunOutcome};
use partner_sync::job::Job;
use partner_sync::jobs::JobName;
use partner_sync::partners::rabot::mirror_job::RabotMirror;
use partner_sync::partners::rabot::{Customer, Page, RabotClient};
use partner_sync::settings::Settings;
use partner_sync::store;
use partner_sync::store::runs::{RunCounts, RunStatus};
use partner_sync_sandbox::{self as sandbox, Sandbox, SandboxOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The server the tests use. Unset DATABASE_URL falls back to the local default; an unreachable
/// server fails the test loudly.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn url_with_database(name: &str) -> String {
    let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is not a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A database of its own for one test, migrated, dropped when the test ends.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("ps_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&url_with_database("postgres"))
            .await
            .expect("cannot reach PostgreSQL at DATABASE_URL: is it running?");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = url_with_database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect to test database");
        store::migrate(&pool).await.expect("migrations apply");
        Self { pool, url, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// A unique database name that does not exist yet, for code that must create it itself;
/// dropped (if it was created) when the test ends.
pub struct ReservedDb {
    pub url: String,
    name: String,
}

impl ReservedDb {
    pub fn new() -> Self {
        let name = format!("ps_test_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: url_with_database(&name),
            name,
        }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to the created database")
    }
}

impl Drop for ReservedDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// Drop runs inside the test's runtime, which cannot be blocked on; a helper thread with its own
/// runtime removes the database and is joined, so nothing leaks between runs.
fn drop_database(name: &str) {
    let name = name.to_owned();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&url_with_database("postgres")).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            anyhow::Ok(())
        })
    })
    .join();
}

/// Runs `partner-sync <args>` to completion with `env` and nothing of the test's own settings
/// (no inherited `RUST_LOG`, `DATABASE_URL` or `PARTNER_SYNC*`), so what it sees is what the
/// test says. Awaited rather than blocking: the sandbox it talks to runs on the test's runtime.
pub async fn run_binary<K, V>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> std::process::Output
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut command = tokio::process::Command::new(daemon::BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PARTNER_SYNC") {
            command.env_remove(key);
        }
    }
    command.envs(env).output().await.expect("the binary runs")
}

/// Runs `partner-sync <args>` as a person at a terminal would: under a pseudo-terminal made by
/// util-linux's `script` (stdin, stdout and stderr all a tty), with the same clean environment
/// as [`run_binary`]. Returns the exit code and what the terminal showed (stdout and stderr
/// together, `\r\n` read as `\n`).
pub async fn run_in_terminal<K, V>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> (Option<i32>, String)
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let quote = |word: &str| format!("'{}'", word.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(daemon::BIN)
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let mut command = tokio::process::Command::new("script");
    // -q: no "Script started" lines; -e: its exit code is the command's; -c: the command;
    // /dev/null: no typescript file.
    command
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PARTNER_SYNC") {
            command.env_remove(key);
        }
    }
    let out = command
        .envs(env)
        .output()
        .await
        .expect("util-linux `script` runs (Debian: bsdutils)");
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    (out.status.code(), shown)
}

/// A port nothing listens on right now, for a daemon whose public URL must be known up front.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `sql` counts at least `at_least` rows; false after `limit`.
pub async fn wait_for(db: &TestDb, sql: &str, at_least: i64, limit: Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if count(&db.pool, sql).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub async fn start_sandbox(options: SandboxOptions) -> Sandbox {
    sandbox::start(options, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

/// `customers` customers with 2 contracts each (no heavy customers), so counts are easy to state.
pub fn small_sandbox(customers: usize) -> SandboxOptions {
    SandboxOptions {
        customers,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    }
}

/// Environment variables that point the daemon at `sandbox` and `database_url` with RABOT
/// enabled (the other partners are connected to the sandbox too, but stay off), with fast
/// retries so failure tests stay quick.
pub fn sandbox_env(sandbox: &Sandbox, database_url: &str) -> Vec<(String, String)> {
    let mut env = vec![("DATABASE_URL".to_owned(), database_url.to_owned())];
    env.extend(sandbox.env());
    env.extend(
        [
            ("PARTNER_SYNC__RABOT__ENABLED", "true"),
            ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", "1000"),
            ("PARTNER_SYNC__RABOT__BURST", "50"),
            ("PARTNER_SYNC__RABOT__PAGE_SIZE", "10"),
            ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "10ms"),
            ("PARTNER_SYNC__HTTP__BACKOFF_MAX", "50ms"),
            ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "3"),
            // Tests run side by side: every server picks a free port.
            ("PARTNER_SYNC__SERVER__LISTEN", "127.0.0.1:0"),
            ("PARTNER_SYNC__SERVER__OPS_LISTEN", "127.0.0.1:0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

/// Settings pointing at `sandbox` and `database_url`, with `overrides` (env-style keys) last.
pub fn load_settings(
    sandbox: &Sandbox,
    database_url: &str,
    overrides: &[(&str, &str)],
) -> Settings {
    let mut env = sandbox_env(sandbox, database_url);
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load_from(None, env).expect("test settings are valid")
}

pub fn settings(sandbox: &Sandbox, db: &TestDb, overrides: &[(&str, &str)]) -> Settings {
    load_settings(sandbox, &db.url, overrides)
}

/// A RABOT client on its own (no database), pointed at `sandbox`.
pub fn rabot_client(sandbox: &Sandbox, overrides: &[(&str, &str)]) -> RabotClient {
    let settings = load_settings(sandbox, &server_url(), overrides);
    RabotClient::new(&settings.rabot, &settings.http).expect("client builds")
}

/// The first page of customers, or the error that ended the listing, as text.
pub async fn first_customer_page(client: &RabotClient) -> Result<Page<Customer>, String> {
    match client.customer_pages(None).try_next().await {
        Ok(page) => Ok(page.expect("the listing has a first page")),
        Err(error) => Err(error.to_string()),
    }
}

/// One mirror pass through the real runner (lock, run row, job), as the daemon does it.
pub async fn mirror_pass(
    settings: &Settings,
    pool: &PgPool,
) -> (RunStatus, RunCounts, Option<String>) {
    run_pass(
        JobName::RabotMirror,
        Arc::new(RabotMirror::new(settings).expect("job builds")),
        pool,
    )
    .await
}

/// One costs pass through the real runner, as the daemon runs it.
pub async fn costs_pass(
    settings: &Settings,
    pool: &PgPool,
) -> (RunStatus, RunCounts, Option<String>) {
    let client = RabotClient::new(&settings.rabot, &settings.http).expect("client builds");
    run_pass(
        JobName::RabotCosts,
        Arc::new(partner_sync::partners::rabot::costs_job::RabotCosts::new(
            settings, client,
        )),
        pool,
    )
    .await
}

/// One run of `job` through the real runner; a job kept between calls keeps its clients
/// (and their token caches), as in the daemon.
pub async fn run_pass(
    name: JobName,
    job: Arc<dyn Job>,
    pool: &PgPool,
) -> (RunStatus, RunCounts, Option<String>) {
    let runner = JobRunner::new(name, job, pool.clone(), Duration::from_secs(5));
    let (counts, _) = watch::channel(RunCounts::default());
    match runner
        .run_once(
            TriggerCause::Cli,
            partner_sync::store::audit::Actor::cli_user(),
            &CancellationToken::new(),
            counts,
        )
        .await
        .expect("run is recorded")
    {
        RunOutcome::Finished {
            status,
            counts,
            error,
            ..
        } => (status, counts, error),
        RunOutcome::LockedElsewhere => panic!("nothing else should hold the lock"),
    }
}

/// Customer numbers the mirror shows tombstoned.
pub async fn tombstoned_customers(pool: &PgPool) -> std::collections::HashSet<String> {
    sqlx::query_scalar(
        "SELECT customer_number FROM mirror.rabot_customers WHERE deleted_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .expect("query")
    .into_iter()
    .collect()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Every contract the sandbox currently serves, as (customer, contract) pairs.
pub fn sandbox_contracts(sandbox: &Sandbox) -> Vec<(String, String)> {
    sandbox
        .customer_numbers()
        .into_iter()
        .flat_map(|c| {
            sandbox
                .contract_numbers(&c)
                .into_iter()
                .map(move |k| (c.clone(), k))
        })
        .collect()
}
