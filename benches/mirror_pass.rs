//! Mirror-pass benchmark: `cargo bench --bench mirror_pass [-- [--json] [--rate R] CUSTOMERS...]`
//! (customer counts default to 10,000 and 100,000).
//!
//! Every figure it judges is a ratio of two rates measured in the same run, so a busy machine
//! moves both sides alike. It ends with one table of those ratios, each beside its goal; with
//! `--json` that table goes to stderr with the others and stdout holds one JSON object of them.
//!
//! 1. Per customer count, a fresh database and a sandbox process, then the real binary's
//!    `sync rabot` twice as child processes (the first pass inserts everything, the second finds
//!    nothing changed), and an "empty client" in this process sending the first pass's requests
//!    to the same sandbox and throwing the bodies away: the sandbox's own serving rate. Shows
//!    each pass's peak resident memory (from wait4).
//! 2. The store alone (no HTTP): a binary `COPY` of N contracts into the emptied table, then the
//!    batched upsert of the same N when they are new, unchanged, and all changed, with the WAL
//!    each wrote: in all, and for the mirror's contract tables and their indexes (pg_walinspect).
//! 3. Every RABOT job (`rabot_mirror`, `rabot_costs`, `rabot_consumption`) once each over 1,000
//!    customers at `--rate` requests per second (default 100) against a sandbox that enforces
//!    that rate, its wall time against `requests / rate`, and the 429s the sandbox answered.
//!
//! The sandbox of table 1 runs in its own process on purpose: a child's peak RSS as the kernel
//! reports it includes its parent's resident memory at spawn time, and an in-process sandbox
//! holding all customers would be counted as the mirror's. Table 3 measures no memory, so its
//! sandbox runs in this process, where its 429 counter can be read.

#[path = "mirror_pass/empty_client.rs"]
mod empty_client;
#[path = "mirror_pass/pgcopy.rs"]
mod pgcopy;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use partner_sync::partners::rabot::Contract;
use partner_sync::partners::rabot::store as rabot_store;
use partner_sync::store;
use partner_sync_sandbox::SandboxOptions;
use sqlx::{Connection, PgConnection, PgPool};

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

/// Table 1's daemon settings: fast enough that the sandbox and the database set the pace.
const PAGE_SIZE: usize = 500;
const CONCURRENCY: usize = 16;
/// Table 3's daemon burst, its default. The sandbox keeps its own default burst, one second
/// of its rate: with its burst at 5 as well, each job met one 429 at its start, and the adaptive
/// limiter's halving then doubled its wall time.
const RATE_TABLE_BURST: u32 = 5;
const RATE_TABLE_CUSTOMERS: usize = 1_000;
const STORE_BATCH: usize = 500;

/// Whether `--json` was given: the human tables then go to stderr.
static JSON: OnceLock<bool> = OnceLock::new();

/// A line of a human table: stdout, or stderr when stdout carries the JSON.
macro_rules! say {
    ($($arg:tt)*) => {
        if *JSON.get().unwrap_or(&false) {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

struct Args {
    counts: Vec<usize>,
    rate: u32,
    json: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let rate_at = args.iter().position(|a| a == "--rate");
    let rate = match rate_at {
        Some(i) => args
            .get(i + 1)
            .and_then(|r| r.parse().ok())
            .filter(|r: &u32| *r > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("--rate needs a whole, positive number of requests per second")
            })?,
        None => 100,
    };
    let counts: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| rate_at.is_none_or(|at| *i != at + 1))
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10_000, 100_000]
    } else {
        counts
    };
    Ok(Args { counts, rate, json })
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

/// Table 1, one customer count: both passes, the first pass's requests, the empty client.
struct MirrorRun {
    customers: usize,
    first: Pass,
    second: Pass,
    first_requests: i64,
    served: empty_client::Served,
}

impl MirrorRun {
    fn first_requests_per_second(&self) -> f64 {
        self.first_requests as f64 / self.first.elapsed.as_secs_f64()
    }

    fn vs_sandbox(&self) -> f64 {
        self.first_requests_per_second() / self.served.per_second()
    }
}

async fn mirror_run(customers: usize) -> anyhow::Result<MirrorRun> {
    fresh_database().await?;
    let options = SandboxOptions::default();
    let (mut sandbox, base) = start_sandbox(customers)?;
    let (page_size, concurrency) = (PAGE_SIZE.to_string(), CONCURRENCY.to_string());
    let env = rabot_env(
        &base,
        &options,
        &[
            ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", "100000"),
            ("PARTNER_SYNC__RABOT__BURST", "1000"),
            ("PARTNER_SYNC__RABOT__PAGE_SIZE", &page_size),
            ("PARTNER_SYNC__RABOT__CONCURRENCY", &concurrency),
        ],
    );
    let passes =
        tokio::task::spawn_blocking(move || anyhow::Ok((sync_pass(&env)?, sync_pass(&env)?)))
            .await?;
    let served = empty_client::run(&empty_client::Target {
        base: &base,
        client_id: &options.client_id,
        client_secret: &options.client_secret,
        page_size: PAGE_SIZE,
        concurrency: CONCURRENCY,
    })
    .await;
    sandbox.kill()?;
    sandbox.wait()?;
    let (first, second) = passes?;
    Ok(MirrorRun {
        customers,
        first,
        second,
        first_requests: first_run_requests("rabot_mirror").await?,
        served: served?,
    })
}

/// `sync.runs.requests` of `job`'s first run in the bench database.
async fn first_run_requests(job: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(&server_url(DATABASE)).await?;
    let requests = sqlx::query_scalar("SELECT requests FROM sync.runs WHERE job = $1 ORDER BY id")
        .bind(job)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(requests)
}

async fn mirror_table(counts: &[usize]) -> anyhow::Result<Vec<MirrorRun>> {
    say!("end to end: `sync rabot` twice, then the empty client, against one sandbox process");
    say!(
        "{:>9} {:>9} {:>8} {:>9} {:>11} {:>6} {:>8} {:>9} {:>8} {:>9} {:>9}",
        "customers",
        "contracts",
        "first s",
        "rows/s",
        "unchanged s",
        "ratio",
        "requests",
        "req/s",
        "empty/s",
        "RSS1 MiB",
        "RSS2 MiB"
    );
    let contracts_each = SandboxOptions::default().contracts_per_customer;
    let mut runs = Vec::new();
    for &customers in counts {
        let run = mirror_run(customers).await?;
        let first_s = run.first.elapsed.as_secs_f64();
        let rows = customers * (1 + contracts_each);
        say!(
            "{:>9} {:>9} {:>8.2} {:>9.0} {:>11.2} {:>6.2} {:>8} {:>9.0} {:>8.0} {:>9.1} {:>9.1}",
            customers,
            customers * contracts_each,
            first_s,
            rows as f64 / first_s,
            run.second.elapsed.as_secs_f64(),
            run.second.elapsed.as_secs_f64() / first_s,
            run.first_requests,
            run.first_requests_per_second(),
            run.served.per_second(),
            run.first.peak_rss_mib,
            run.second.peak_rss_mib,
        );
        runs.push(run);
    }
    Ok(runs)
}

/// Peak RSS of the first pass at 100,000 customers over that at 10,000, if both ran.
fn rss_ratio(runs: &[MirrorRun]) -> Option<f64> {
    let rss = |n: usize| {
        runs.iter()
            .find(|r| r.customers == n)
            .map(|r| r.first.peak_rss_mib)
    };
    Some(rss(100_000)? / rss(10_000)?)
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

/// One timed piece of work on the store and the WAL it wrote.
struct Measured {
    seconds: f64,
    wal_bytes: i64,
    /// Of `wal_bytes`, the records touching the mirror's contract tables or their indexes.
    mirror_wal_bytes: i64,
}

/// The contract tables, their TOAST tables and every index of either, by file node (the name
/// WAL records use); read again before each pass, since TRUNCATE gives new ones.
const MIRROR_FILE_NODES: &str = r#"
    WITH t AS (SELECT unnest(ARRAY['mirror.rabot_contracts'::regclass,
                                   'mirror.rabot_contracts_versions'::regclass])::oid AS oid),
    toast AS (SELECT reltoastrelid AS oid FROM pg_class
               WHERE oid IN (SELECT oid FROM t) AND reltoastrelid <> 0),
    heaps AS (SELECT oid FROM t UNION SELECT oid FROM toast)
    SELECT array_agg(pg_relation_filenode(oid)::bigint) FROM (
        SELECT oid FROM heaps
        UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM heaps)) r
"#;

/// WAL bytes since `$1` in records with a block of this database's file nodes `$2`.
const WAL_OF_FILE_NODES: &str = r#"
    SELECT coalesce(sum(w.record_length), 0)::bigint
      FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_flush_lsn()) w
     WHERE EXISTS (
        SELECT 1 FROM regexp_matches(w.block_ref, 'rel \d+/(\d+)/(\d+)', 'g') b
         WHERE b[1]::oid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND b[2]::bigint = ANY($2))
"#;

/// Holds the WAL of a pass until it is read: the server, busy with other databases, would
/// otherwise recycle segments of a long pass first. Temporary, so it goes with its session.
const WAL_SLOT: &str = "partner_sync_bench_wal";

async fn measure(
    pool: &PgPool,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Measured> {
    let mut slot = pool.acquire().await?;
    sqlx::query("SELECT pg_create_physical_replication_slot($1, true, true)")
        .bind(WAL_SLOT)
        .execute(&mut *slot)
        .await?;
    let measured = measure_holding_wal(pool, work).await;
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(WAL_SLOT)
        .execute(&mut *slot)
        .await?;
    measured
}

async fn measure_holding_wal(
    pool: &PgPool,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Measured> {
    let nodes: Vec<i64> = sqlx::query_scalar(MIRROR_FILE_NODES)
        .fetch_one(pool)
        .await?;
    let start: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    work.await?;
    let seconds = started.elapsed().as_secs_f64();
    let wal_bytes: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_flush_lsn() - $1::pg_lsn)::bigint")
            .bind(&start)
            .fetch_one(pool)
            .await?;
    let mirror_wal_bytes = if wal_bytes > 0 {
        sqlx::query_scalar(WAL_OF_FILE_NODES)
            .bind(&start)
            .bind(&nodes)
            .fetch_one(pool)
            .await?
    } else {
        0
    };
    Ok(Measured {
        seconds,
        wal_bytes,
        mirror_wal_bytes,
    })
}

/// Upserts `contracts` in batches of [`STORE_BATCH`], one transaction each, as a run would.
async fn store_pass(pool: &PgPool, run_id: i64, contracts: Vec<Contract>) -> anyhow::Result<()> {
    let mut contracts = contracts.into_iter().peekable();
    while contracts.peek().is_some() {
        let batch: Vec<Contract> = contracts.by_ref().take(STORE_BATCH).collect();
        let mut tx = pool.begin().await?;
        rabot_store::upsert_contracts(&mut tx, run_id, batch).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A store pass as run `run_id` over `n` contracts at `revision` (generated before the clock).
async fn store_measured(
    pool: &PgPool,
    n: usize,
    run_id: i64,
    revision: u32,
) -> anyhow::Result<Measured> {
    let contracts = synthetic_contracts(n, revision);
    measure(pool, store_pass(pool, run_id, contracts)).await
}

/// The binary COPY of `contracts` into the emptied contract tables, checked, then emptied again.
async fn copy_pass(pool: &PgPool, contracts: &[Contract]) -> anyhow::Result<Measured> {
    empty_contract_tables(pool).await?;
    let mut conn = pool.acquire().await?;
    let measured = measure(pool, async {
        let rows = pgcopy::copy_contracts(&mut conn, contracts).await?;
        anyhow::ensure!(rows == contracts.len() as u64, "COPY wrote {rows} rows");
        Ok(())
    })
    .await?;
    drop(conn);
    // The numeric column is the one hand-encoded type a mistake could pass unnoticed.
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contracts
          WHERE expected_annual_kwh IS DISTINCT FROM
                (payload->>'expectedAnnualConsumptionInKwhPerYear')::numeric",
    )
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(wrong == 0, "COPY encoded {wrong} numeric values wrongly");
    empty_contract_tables(pool).await?;
    Ok(measured)
}

async fn empty_contract_tables(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE mirror.rabot_contracts, mirror.rabot_contracts_versions")
        .execute(pool)
        .await?;
    Ok(())
}

/// Table 2's passes: the COPY, then the store's new, unchanged and all-changed passes.
struct StoreTable {
    copy: Measured,
    new: Measured,
    unchanged: Measured,
    changed: Measured,
}

async fn store_table(n: usize) -> anyhow::Result<StoreTable> {
    fresh_database().await?;
    let pool = PgPool::connect(&server_url(DATABASE)).await?;
    store::migrate(&pool).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .execute(&pool)
        .await?;
    let copy = copy_pass(&pool, &synthetic_contracts(n, 1)).await?;
    let table = StoreTable {
        copy,
        new: store_measured(&pool, n, 1, 1).await?,
        unchanged: store_measured(&pool, n, 2, 1).await?,
        changed: store_measured(&pool, n, 3, 2).await?,
    };
    pool.close().await;

    say!(
        "\nstore only: {n} contracts, upserted in batches of {STORE_BATCH}, against a binary COPY"
    );
    say!(
        "{:>12} {:>9} {:>10} {:>8} {:>9} {:>15}",
        "pass",
        "seconds",
        "rows/s",
        "vs COPY",
        "WAL MiB",
        "mirror WAL B"
    );
    for (label, pass) in [
        ("COPY", &table.copy),
        ("new", &table.new),
        ("unchanged", &table.unchanged),
        ("all changed", &table.changed),
    ] {
        say!(
            "{:>12} {:>9.2} {:>10.0} {:>8.2} {:>9.1} {:>15}",
            label,
            pass.seconds,
            n as f64 / pass.seconds,
            table.copy.seconds / pass.seconds,
            pass.wal_bytes as f64 / (1024.0 * 1024.0),
            pass.mirror_wal_bytes
        );
    }
    Ok(table)
}

/// Table 3's outcome over all jobs.
struct RateTable {
    vs_bound: f64,
    refused: u64,
}

/// Every RABOT job once, one after the other as separate `sync` runs, at `rate` requests per
/// second (burst [`RATE_TABLE_BURST`], the default concurrency) against a sandbox enforcing the
/// same rate; prints each job's wall time against `requests / rate`, and the sandbox's 429s.
async fn rate_table(rate: u32) -> anyhow::Result<RateTable> {
    fresh_database().await?;
    let limit = NonZeroU32::new(rate).ok_or_else(|| anyhow::anyhow!("--rate must be positive"))?;
    let options = SandboxOptions {
        customers: RATE_TABLE_CUSTOMERS,
        heavy_customer_every: 0,
        rate_limit: Some(limit),
        ..SandboxOptions::default()
    };
    let sandbox = partner_sync_sandbox::start(options.clone(), ([127, 0, 0, 1], 0).into()).await?;
    let (rate_text, burst_text) = (rate.to_string(), RATE_TABLE_BURST.to_string());
    let env = rabot_env(
        &sandbox.base_url(),
        &options,
        &[
            ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", &rate_text),
            ("PARTNER_SYNC__RABOT__BURST", &burst_text),
        ],
    );
    let jobs = ["rabot_mirror", "rabot_costs", "rabot_consumption"];
    let passes = tokio::task::spawn_blocking(move || {
        jobs.iter()
            .map(|job| sync_job(job, &env))
            .collect::<anyhow::Result<Vec<Pass>>>()
    })
    .await??;
    let refused = sandbox.stats().rate_limited;
    sandbox.shutdown().await;

    say!(
        "\nevery RABOT job, {RATE_TABLE_CUSTOMERS} customers with {} contracts each, at {rate} \
         requests/s (burst {RATE_TABLE_BURST}), the sandbox enforcing {rate}/s (burst {rate})",
        options.contracts_per_customer
    );
    say!(
        "{:>18} {:>9} {:>10} {:>14} {:>8}",
        "job",
        "requests",
        "seconds",
        "requests/rate",
        "ratio"
    );
    let mut all = (0, 0.0);
    for (job, pass) in jobs.iter().zip(&passes) {
        let requests = first_run_requests(job).await?;
        let seconds = pass.elapsed.as_secs_f64();
        all = (all.0 + requests, all.1 + seconds);
        rate_row(job, requests, seconds, rate);
    }
    let vs_bound = rate_row("all", all.0, all.1, rate);
    say!("429 answers from the sandbox: {refused}");
    Ok(RateTable { vs_bound, refused })
}

/// Prints one job's row; returns its wall time over `requests / rate`.
fn rate_row(job: &str, requests: i64, seconds: f64, rate: u32) -> f64 {
    let bound = requests as f64 / f64::from(rate);
    say!(
        "{:>18} {:>9} {:>10.2} {:>14.2} {:>8.3}",
        job,
        requests,
        seconds,
        bound,
        seconds / bound
    );
    seconds / bound
}

/// One line of the ratio table and one key of the JSON object.
struct Ratio {
    key: &'static str,
    value: Option<f64>,
    goal: &'static str,
    what: String,
}

fn ratios(mirror: &[MirrorRun], store: &StoreTable, rate: &RateTable, n: usize) -> Vec<Ratio> {
    let vs_copy = |pass: &Measured| Some(store.copy.seconds / pass.seconds);
    let largest = mirror.iter().max_by_key(|r| r.customers);
    let ratio = |key, value, goal, what: String| Ratio {
        key,
        value,
        goal,
        what,
    };
    vec![
        ratio(
            "store_new_vs_copy",
            vs_copy(&store.new),
            ">= 0.8",
            format!("upsert rows/s, {n} new contracts / binary COPY rows/s, same rows and table"),
        ),
        ratio(
            "store_unchanged_vs_copy",
            vs_copy(&store.unchanged),
            ">= 2.0",
            "upsert rows/s, the same contracts again unchanged / binary COPY rows/s".to_owned(),
        ),
        ratio(
            "unchanged_wal_bytes",
            Some(store.unchanged.mirror_wal_bytes as f64),
            "0",
            "WAL bytes of the unchanged pass in records touching rabot_contracts, \
             rabot_contracts_versions or their indexes (pg_walinspect)"
                .to_owned(),
        ),
        ratio(
            "store_changed_vs_copy",
            vs_copy(&store.changed),
            "report",
            "upsert rows/s, every contract changed / binary COPY rows/s".to_owned(),
        ),
        ratio(
            "end_to_end_vs_sandbox",
            largest.map(MirrorRun::vs_sandbox),
            "report",
            match largest {
                Some(run) => format!(
                    "first `sync rabot` pass at {} customers: its requests (sync.runs) / its \
                     wall time, over the empty client's requests / its wall time",
                    run.customers
                ),
                None => "no customer count ran".to_owned(),
            },
        ),
        ratio(
            "rate_limited_vs_bound",
            Some(rate.vs_bound),
            "<= 1.05",
            "every RABOT job's wall time / (its requests / --rate), summed over the jobs"
                .to_owned(),
        ),
        ratio(
            "rate_limited_429s",
            Some(rate.refused as f64),
            "0",
            "429 answers the rate-limited sandbox gave in those runs (its own counter)".to_owned(),
        ),
        ratio(
            "rss_100k_vs_10k",
            rss_ratio(mirror),
            "<= 1.1",
            "peak RSS of the first `sync rabot` pass, 100,000 customers / 10,000 customers"
                .to_owned(),
        ),
    ]
}

/// The keys that are counts, not ratios: shown and written as integers.
const COUNTS: [&str; 2] = ["unchanged_wal_bytes", "rate_limited_429s"];

fn print_ratios(ratios: &[Ratio]) {
    say!("\nratios, all measured in this run");
    say!("{:<24} {:>12} {:>8}  what", "ratio", "measured", "goal");
    for r in ratios {
        let value = match r.value {
            Some(v) if COUNTS.contains(&r.key) => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "-".to_owned(),
        };
        say!("{:<24} {:>12} {:>8}  {}", r.key, value, r.goal, r.what);
    }
}

/// The counts as JSON integers, the ratios as numbers, a ratio not measured as null.
fn ratios_json(ratios: &[Ratio]) -> serde_json::Value {
    ratios
        .iter()
        .map(|r| {
            let value = match r.value {
                Some(v) if COUNTS.contains(&r.key) => serde_json::json!(v as i64),
                Some(v) => serde_json::json!(v),
                None => serde_json::Value::Null,
            };
            (r.key.to_owned(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    JSON.set(args.json).expect("set once, first");
    let mirror = mirror_table(&args.counts).await?;
    let n = args.counts.iter().max().unwrap_or(&10_000) * 2;
    let store = store_table(n).await?;
    let rate = rate_table(args.rate).await?;
    let ratios = ratios(&mirror, &store, &rate, n);
    print_ratios(&ratios);
    if args.json {
        println!("{}", ratios_json(&ratios));
    }
    Ok(())
}
