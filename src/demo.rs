//! `partner-sync demo`: the whole RABOT mirror against the built-in sandbox and a real
//! database, with a progress line on a terminal and a summary at the end.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::TriggerCause;
use crate::events::dispatcher::{JobRunner, RunOutcome};
use crate::events::signals;
use crate::jobs::rabot_mirror::RabotMirror;
use crate::sandbox::{self, SandboxOptions};
use crate::settings::{Settings, mask_url_password};
use crate::store::runs::{RunCounts, RunStatus};
use crate::{app, store};

pub async fn run(
    mut settings: Settings,
    customers: usize,
    contracts_per_customer: usize,
) -> anyhow::Result<()> {
    // Every customer gets the same number of contracts, so the summary is easy to check.
    let options = SandboxOptions {
        customers,
        contracts_per_customer,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    };
    let sandbox = sandbox::start(options.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    point_at_sandbox(&mut settings, &sandbox, &options);

    store::create_database_if_missing(&settings.database).await?;
    let pool = app::open_database(&settings).await?;
    println!(
        "RABOT sandbox at {} ({customers} customers, {contracts_per_customer} contracts each)\ndatabase {}",
        sandbox.base_url(),
        mask_url_password(settings.database.url.expose_secret())
    );

    let job = std::sync::Arc::new(RabotMirror::new(&settings)?);
    let runner = JobRunner::new(job, pool.clone(), settings.daemon.shutdown_grace);
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;

    let (counts, progress) = watch::channel(RunCounts::default());
    let display = tokio::spawn(show_progress(progress));
    let started = Instant::now();
    let outcome = runner.run_once(TriggerCause::Cli, &shutdown, counts).await;
    let elapsed = started.elapsed();
    display.abort();
    let _ = display.await;
    sandbox.shutdown().await;

    let RunOutcome::Finished {
        run_id,
        status,
        counts,
        error,
    } = outcome?
    else {
        anyhow::bail!("another partner-sync is running the RABOT mirror on this database");
    };
    let (mirrored_customers, mirrored_contracts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM mirror.rabot_customers WHERE deleted_at IS NULL),
                (SELECT count(*) FROM mirror.rabot_contracts WHERE deleted_at IS NULL)",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;

    println!(
        "{}",
        summary(
            run_id,
            status,
            &counts,
            elapsed,
            mirrored_customers,
            mirrored_contracts
        )
    );
    match (status, error) {
        (RunStatus::Succeeded, _) => Ok(()),
        (_, error) => anyhow::bail!(
            "run {run_id} {}: {}",
            status.as_str(),
            error.unwrap_or_default()
        ),
    }
}

/// The demo's RABOT settings: the sandbox's URLs and credentials, and a rate the sandbox
/// allows, so the demo finishes in seconds.
fn point_at_sandbox(settings: &mut Settings, sandbox: &sandbox::Sandbox, options: &SandboxOptions) {
    let rabot = &mut settings.rabot;
    rabot.enabled = true;
    rabot.token_url = sandbox.rabot_token_url();
    rabot.api_base_url = sandbox.rabot_api_base_url();
    rabot.client_id = options.client_id.clone();
    rabot.client_secret = SecretString::from(options.client_secret.clone());
    rabot.scopes = options.granted_scopes.clone();
    rabot.requests_per_second = 2000.0;
    rabot.burst = 50;
    rabot.concurrency = 8;
    rabot.external_ids.clear();
}

async fn show_progress(mut progress: watch::Receiver<RunCounts>) {
    // indicatif draws nothing when stderr is not a terminal.
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    while progress.changed().await.is_ok() {
        let c = *progress.borrow();
        spinner.set_message(format!(
            "{} items fetched: {} inserted, {} updated, {} unchanged ({} requests)",
            c.fetched, c.inserted, c.updated, c.unchanged, c.requests
        ));
    }
    spinner.finish_and_clear();
}

fn summary(
    run_id: i64,
    status: RunStatus,
    c: &RunCounts,
    elapsed: Duration,
    customers: i64,
    contracts: i64,
) -> String {
    format!(
        "run {run_id} {status} in {elapsed:.1?}
  mirrored   {customers} customers (mirror.rabot_customers), {contracts} contracts (mirror.rabot_contracts)
  this run   {} inserted, {} updated, {} unchanged, {} deleted, {} skipped
  traffic    {} requests, {} pages, {} items fetched
{}",
        c.inserted,
        c.updated,
        c.unchanged,
        c.deleted,
        c.skipped,
        c.requests,
        c.pages,
        c.fetched,
        if c.inserted + c.updated + c.deleted == 0 {
            "nothing changed since the last pass"
        } else {
            "run the demo again: the second pass finds nothing changed"
        },
        status = status.as_str(),
    )
}
