//! Mirror-pass benchmark: `cargo bench --bench mirror_pass [-- CUSTOMERS...]`.
//!
//! For each customer count, a fresh database and an in-process sandbox, then the real binary's
//! `sync rabot` twice as child processes: the first pass inserts everything, the second finds
//! nothing changed. Reports wall time, rows per second, the unchanged/first ratio, and each
//! pass's peak resident memory (from wait4), so memory growth with the customer count shows.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use partner_sync::sandbox::{self, SandboxOptions};
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
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["sync", "rabot"])
        .env("RUST_LOG", "warn")
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
        "sync failed"
    );
    Ok(Pass {
        elapsed,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
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
    for customers in counts {
        fresh_database().await?;
        let options = SandboxOptions {
            customers,
            ..SandboxOptions::default()
        };
        let sandbox =
            sandbox::start(options.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", server_url(DATABASE)),
            ("PARTNER_SYNC__RABOT__ENABLED", "true".into()),
            ("PARTNER_SYNC__RABOT__TOKEN_URL", sandbox.rabot_token_url()),
            (
                "PARTNER_SYNC__RABOT__API_BASE_URL",
                sandbox.rabot_api_base_url(),
            ),
            ("PARTNER_SYNC__RABOT__CLIENT_ID", options.client_id.clone()),
            (
                "PARTNER_SYNC__RABOT__CLIENT_SECRET",
                options.client_secret.clone(),
            ),
            ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", "100000".into()),
            ("PARTNER_SYNC__RABOT__BURST", "1000".into()),
            ("PARTNER_SYNC__RABOT__PAGE_SIZE", "500".into()),
            ("PARTNER_SYNC__RABOT__CONCURRENCY", "16".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        let (first, second) =
            tokio::task::spawn_blocking(move || anyhow::Ok((sync_pass(&env)?, sync_pass(&env)?)))
                .await??;
        sandbox.shutdown().await;

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
    Ok(())
}
