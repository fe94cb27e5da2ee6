//! `partner-sync demo`: the whole RABOT mirror against the built-in sandbox and a real
//! database, with a progress line on a terminal and a summary at the end; then a customer links
//! (the sandbox's login page approved by a scripted browser, the redirect served by the daemon's
//! own HTTP server) and is mirrored at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::events::TriggerCause;
use crate::events::dispatcher::{JobRunner, RunOutcome};
use crate::events::signals;
use crate::jobs::rabot_mirror::RabotMirror;
use crate::links::{LinkSpec, RabotLinks};
use crate::sandbox::{self, SandboxOptions};
use crate::server::{self, Partners, ServerState};
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

    // The daemon's HTTP server receives the customer-link redirect, as in production.
    let (listener, address) = server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    settings.server.public_url = format!("http://{address}");
    store::create_database_if_missing(&settings.database).await?;
    let pool = app::open_database(&settings).await?;
    println!(
        "RABOT sandbox at {} ({customers} customers, {contracts_per_customer} contracts each)\ndatabase {}",
        sandbox.base_url(),
        mask_url_password(settings.database.url.expose_secret())
    );

    let links = RabotLinks::from_settings(&settings)?
        .ok_or_else(|| anyhow::anyhow!("the demo enables RABOT"))?;
    let job = Arc::new(RabotMirror::scheduled(&settings, links.client().clone()));
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
    let linked = match outcome {
        Ok(RunOutcome::Finished {
            status: RunStatus::Succeeded,
            ..
        }) => Some(link_a_customer(&settings, &sandbox, &pool, listener, links, &shutdown).await?),
        _ => None,
    };
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
    if let Some(linked) = linked {
        println!("{linked}");
    }
    match (status, error) {
        (RunStatus::Succeeded, _) => Ok(()),
        (_, error) => anyhow::bail!(
            "run {run_id} {}: {}",
            status.as_str(),
            error.unwrap_or_default()
        ),
    }
}

/// Links one of the sandbox's hidden customers end to end and mirrors it: the link is created
/// at the sandbox, a scripted browser logs in and approves on its page and follows the redirect
/// to this process's HTTP server, whose handler records the link and asks for the link mirror.
async fn link_a_customer(
    settings: &Settings,
    sandbox: &sandbox::Sandbox,
    pool: &PgPool,
    listener: tokio::net::TcpListener,
    links: Arc<RabotLinks>,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    let customer = sandbox
        .rabot_linkable_customers()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the sandbox has no customer left to link"))?;
    let (control_tx, mut control) = mpsc::channel(4);
    let state = ServerState {
        pool: pool.clone(),
        partners: watch::channel(Partners {
            rabobank: None,
            rabot: Some(links.clone()),
        })
        .1,
        control: control_tx,
        admin_token: SecretString::from(String::new()),
        link_done_url: String::new(),
        metrics: crate::metrics::install(),
        stuck_after: settings.daemon.stuck_after,
    };
    let stop_server = shutdown.child_token();
    let served = tokio::spawn(server::serve(listener, state, stop_server.clone()));

    let external_id = format!("DEMO-LINK-{}", customer.customer_number);
    let link = links
        .begin(
            pool,
            LinkSpec {
                external_id: external_id.clone(),
                auth_as: None,
                sign_up_url: None,
            },
        )
        .await?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()?;
    let state = link
        .authorization_url
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let login_url = link.authorization_url.join(link.authorization_url.path())?;
    let landed = browser
        .post(login_url)
        .form(&[
            ("state", state.as_str()),
            ("username", customer.email.as_str()),
            ("password", sandbox::RABOT_CUSTOMER_PASSWORD),
            ("decision", "approve"),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        landed.status().is_success(),
        "the link redirect answered {}",
        landed.status()
    );
    // The redirect handler asks the daemon's control loop for the link mirror; here that is us.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), control.recv())
        .await
        .map_err(|_| anyhow::anyhow!("the link redirect did not ask for the link mirror"))?;
    let job = Arc::new(RabotMirror::newly_linked(settings, links.client().clone()));
    let runner = JobRunner::new(job, pool.clone(), settings.daemon.shutdown_grace);
    let (counts, _) = watch::channel(RunCounts::default());
    let outcome = runner
        .run_once(TriggerCause::Link, shutdown, counts)
        .await?;
    stop_server.cancel();
    let _ = served.await;
    let RunOutcome::Finished { run_id, status, .. } = outcome else {
        anyhow::bail!("another partner-sync is running the link mirror on this database");
    };
    let contracts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contracts k JOIN mirror.rabot_customers c
             USING (customer_number) WHERE c.external_id = $1",
    )
    .bind(&external_id)
    .fetch_one(pool)
    .await?;
    Ok(format!(
        "  linked     customer {} approved on the sandbox's login page as {external_id}; \
run {run_id} of rabot_link_mirror {} {contracts} contracts {:.1?} after the redirect
             (sync.customer_links, `partner-sync links`)",
        customer.customer_number,
        if status == RunStatus::Succeeded {
            "mirrored"
        } else {
            "failed to mirror"
        },
        started.elapsed(),
    ))
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
