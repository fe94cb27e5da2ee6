//! Mirror-pass benchmark: `cargo bench --bench mirror_pass [-- CUSTOMERS...]`.
//!
//! For each customer count, a fresh database and a sandbox process, then the real binary's
//! `sync rabot` twice as child processes: the first pass inserts everything, the second finds
//! nothing changed. Reports wall time, rows per second, the unchanged/first ratio, and each
//! pass's peak resident memory (from wait4), so memory growth with the customer count shows.
//!
//! A second table measures the store alone (no HTTP): the batched upsert of N contracts when
//! they are new, unchanged, and all changed, with the WAL each pass wrote.
//!
//! A third table runs every RABOT job (`rabot_mirror`, `rabot_costs`, `rabot_consumption`) once
//! each over 1,000 customers with 2 contracts each at a fixed request rate (`--rate`, default
//! 100/s), and sets the wall time against `requests / rate`, the least any client could take.
//!
//! The sandbox runs in its own process on purpose: a child's peak RSS as the kernel reports it
//! includes its parent's resident memory at spawn time, and an in-process sandbox holding all
//! customers would be counted as the mirror's.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use partner_sync::partners::rabot::Contract;
use partner_sync::partners::rabot::store as rabot_store;
use partner_sync::store;
use partner_sync_sandbox::SandboxOptions;
use sqlx::{Connection, PgConnection};

const BIN: &str = env!("CARGO_BIN_EXE_partner-sync");
const DATABASE: &str = "partner_sync_bench";

struct Pass {
    elapsed: Duration,
    peak_rss_mib: f64,
}

fn server_url(database: &str) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

async fn fresh_database() -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&server_url("postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Runs `partner-sync sync rabot` and measures it with wait4, which reports the child's own
/// peak RSS (getrusage's RUSAGE_CHILDREN would mix passes together).
fn sync_pass(env: &[(String, String)]) -> anyhow::Result<Pass> {
    sync_job("rabot", env)
}

fn sync_job(job: &str, env: &[(String, String)]) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["sync", job])
        // Errors only: the sandbox's undocumented fields would add a drift warning per pass.
        .env("RUST_LOG", "error")
        .envs(env.iter().cloned())
        .spawn()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child.id()` is our own unwaited child; both pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    anyhow::ensure!(pid > 0, "wait4 failed: {}", std::io::Error::last_os_error());
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "sync {job} failed"
    );
    Ok(Pass {
        elapsed,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// `partner-sync sandbox` on a free port; returns once it accepts connections.
fn start_sandbox(customers: usize) -> anyhow::Result<(Child, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new(BIN)
        .args([
            "sandbox",
            "--listen",
            &address.to_string(),
            "--customers",
            &customers.to_string(),
            "--heavy-customer-every",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    while TcpStream::connect(address).is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill()?;
            anyhow::bail!("the sandbox did not start listening on {address}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, format!("http://{address}")))
}

/// N synthetic contracts shaped like RABOT's; `revision` changes every one of them.
fn synthetic_contracts(n: usize, revision: u32) -> Vec<Contract> {
    (0..n)
        .map(|i| {
            let raw = serde_json::json!({
                "contractNumber": format!("C-{i:08}"), "contractState": "Delivery",
                "tariffName": format!("Tariff rev {revision}"), "name": "Strom",
                "meterNumber": format!("1ESY{i:010}"), "maLoIdentifier": format!("{:011}", i),
                "actualDateOfDelivery": "2025-03-01", "endDateOfDelivery": null,
                "expectedAnnualConsumptionInKwhPerYear": 3500 + i % 1000,
                "deliveryAddress": {"streetName": "Hauptstraße", "houseNumber": "1", "postCode": "10115", "city": "Berlin"},
                "bankDetail": {"iban": "DE02120300000000202051", "hasAcceptedDirectDebit": true},
            });
            Contract::from_wire(&format!("{:08}", i / 2), raw).expect("synthetic contract is valid")
        })
        .collect()
}

/// Upserts `contracts` in batches of 500 as one run would; returns (seconds, WAL bytes).
async fn store_pass(
    pool: &sqlx::PgPool,
    run_id: i64,
    contracts: Vec<Contract>,
) -> anyhow::Result<(f64, i64)> {
    let wal_before: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    let mut contracts = contracts.into_iter().peekable();
    while contracts.peek().is_some() {
        let batch: Vec<Contract> = contracts.by_ref().take(500).collect();
        let mut tx = pool.begin().await?;
        rabot_store::upsert_contracts(&mut tx, run_id, batch).await?;
        tx.commit().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let wal: i64 = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint")
        .bind(wal_before)
        .fetch_one(pool)
        .await?;
    Ok((seconds, wal))
}

async fn store_only(n: usize) -> anyhow::Result<()> {
    fresh_database().await?;
    let pool = sqlx::PgPool::connect(&server_url(DATABASE)).await?;
    store::migrate(&pool).await?;
    let passes = [("new", 1, 1), ("unchanged", 1, 2), ("all changed", 2, 3)];
    let mut first = 0.0;
    for (label, revision, run_id) in passes {
        let (seconds, wal) = store_pass(&pool, run_id, synthetic_contracts(n, revision)).await?;
        if run_id == 1 {
            first = seconds;
        }
        println!(
            "{:>9} {:>12} {:>10.2} {:>10.0} {:>9.2} {:>12.1}",
            n,
            label,
            seconds,
            n as f64 / seconds,
            seconds / first,
            wal as f64 / (1024.0 * 1024.0)
        );
    }
    pool.close().await;
    Ok(())
}

/// The daemon's settings for RABOT at the sandbox at `base`, then `overrides`.
fn rabot_env(
    base: &str,
    options: &SandboxOptions,
    overrides: &[(&str, &str)],
) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", server_url(DATABASE)),
        ("PARTNER_SYNC__RABOT__ENABLED", "true".into()),
        (
            "PARTNER_SYNC__RABOT__TOKEN_URL",
            format!("{base}/rabot/connect/token"),
        ),
        (
            "PARTNER_SYNC__RABOT__API_BASE_URL",
            format!("{base}/rabot/partner/v1"),
        ),
        ("PARTNER_SYNC__RABOT__CLIENT_ID", options.client_id.clone()),
        (
            "PARTNER_SYNC__RABOT__CLIENT_SECRET",
            options.client_secret.clone(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .collect()
}

/// Every RABOT job once, one after the other as separate `sync` runs, at `rate` requests per
/// second (the default burst and concurrency); prints each job's wall time against
/// `requests / rate`.
async fn rate_limited(customers: usize, rate: f64) -> anyhow::Result<()> {
    fresh_database().await?;
    let options = SandboxOptions::default();
    let (mut sandbox, base) = start_sandbox(customers)?;
    let rate_text = rate.to_string();
    let env = rabot_env(
        &base,
        &options,
        &[("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", &rate_text)],
    );
    let jobs = ["rabot_mirror", "rabot_costs", "rabot_consumption"];
    let passes = tokio::task::spawn_blocking(move || {
        jobs.iter()
            .map(|job| sync_job(job, &env))
            .collect::<anyhow::Result<Vec<Pass>>>()
    })
    .await?;
    sandbox.kill()?;
    sandbox.wait()?;
    let passes = passes?;

    let pool = sqlx::PgPool::connect(&server_url(DATABASE)).await?;
    println!(
        "\nevery RABOT job, {customers} customers with {} contracts each, at {rate} requests/s",
        options.contracts_per_customer
    );
    println!(
        "{:>18} {:>9} {:>10} {:>14} {:>8}",
        "job", "requests", "seconds", "requests/rate", "ratio"
    );
    let (mut all_requests, mut all_seconds) = (0, 0.0);
    for (job, pass) in jobs.iter().zip(&passes) {
        let requests: i64 = sqlx::query_scalar(
            "SELECT requests FROM sync.runs WHERE job = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(job)
        .fetch_one(&pool)
        .await?;
        let seconds = pass.elapsed.as_secs_f64();
        all_requests += requests;
        all_seconds += seconds;
        println!(
            "{:>18} {:>9} {:>10.2} {:>14.2} {:>8.3}",
            job,
            requests,
            seconds,
            requests as f64 / rate,
            seconds / (requests as f64 / rate)
        );
    }
    println!(
        "{:>18} {:>9} {:>10.2} {:>14.2} {:>8.3}",
        "all",
        all_requests,
        all_seconds,
        all_requests as f64 / rate,
        all_seconds / (all_requests as f64 / rate)
    );
    pool.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rate_at = args.iter().position(|a| a == "--rate");
    let rate: f64 = match rate_at {
        Some(i) => args
            .get(i + 1)
            .and_then(|r| r.parse().ok())
            .filter(|r: &f64| *r > 0.0)
            .ok_or_else(|| {
                anyhow::anyhow!("--rate needs a positive number of requests per second")
            })?,
        None => 100.0,
    };
    let counts: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| rate_at.is_none_or(|at| *i != at + 1))
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let counts: Vec<usize> = if counts.is_empty() {
        vec![1_000, 10_000]
    } else {
        counts
    };
    println!(
        "{:>9} {:>9} {:>10} {:>10} {:>12} {:>9} {:>10} {:>10}",
        "customers",
        "contracts",
        "first s",
        "rows/s",
        "unchanged s",
        "ratio",
        "RSS1 MiB",
        "RSS2 MiB"
    );
    for &customers in &counts {
        fresh_database().await?;
        let options = SandboxOptions::default();
        let (mut sandbox, base) = start_sandbox(customers)?;
        let env = rabot_env(
            &base,
            &options,
            &[
                ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", "100000"),
                ("PARTNER_SYNC__RABOT__BURST", "1000"),
                ("PARTNER_SYNC__RABOT__PAGE_SIZE", "500"),
                ("PARTNER_SYNC__RABOT__CONCURRENCY", "16"),
            ],
        );

        let passes =
            tokio::task::spawn_blocking(move || anyhow::Ok((sync_pass(&env)?, sync_pass(&env)?)))
                .await?;
        sandbox.kill()?;
        sandbox.wait()?;
        let (first, second) = passes?;

        let rows = customers * (1 + options.contracts_per_customer);
        println!(
            "{:>9} {:>9} {:>10.2} {:>10.0} {:>12.2} {:>9.2} {:>10.1} {:>10.1}",
            customers,
            customers * options.contracts_per_customer,
            first.elapsed.as_secs_f64(),
            rows as f64 / first.elapsed.as_secs_f64(),
            second.elapsed.as_secs_f64(),
            second.elapsed.as_secs_f64() / first.elapsed.as_secs_f64(),
            first.peak_rss_mib,
            second.peak_rss_mib,
        );
    }
    println!("\nstore only (batched upsert of contracts, no HTTP)");
    println!(
        "{:>9} {:>12} {:>10} {:>10} {:>9} {:>12}",
        "contracts", "pass", "seconds", "rows/s", "vs new", "WAL MiB"
    );
    store_only(*counts.iter().max().unwrap_or(&10_000) * 2).await?;
    rate_limited(1_000, rate).await?;
    Ok(())
}
