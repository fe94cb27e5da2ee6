//! `partner-sync demo`: every partner flow against the built-in sandbox and a real database.
//! A RABOT customer links (the sandbox's login page approved by a scripted browser, the redirect
//! served by the daemon's own HTTP server) and is mirrored at once; then the whole RABOT mirror
//! with each contract's costs and consumption, and the EnergyZero mirror run, each recorded in
//! `sync.runs`, with a summary of what landed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::events::TriggerCause;
use crate::events::dispatcher::{JobRunner, RunOutcome};
use crate::events::signals;
use crate::job::Job;
use crate::jobs::JobName;
use crate::partners::energyzero::mirror_job::EnergyzeroMirror;
use crate::partners::rabot::consumption_job::RabotConsumption;
use crate::partners::rabot::costs_job::RabotCosts;
use crate::partners::rabot::links::{LinkSpec, RabotLinks};
use crate::partners::rabot::mirror_job::RabotMirror;
use crate::sandbox::{self, Sandbox, SandboxOptions};
use crate::server::{self, Partners, ScrapeSettings, ServerLimits, ServerState};
use crate::settings::{Settings, SettingsError, mask_url_password};
use crate::store::audit::Actor;
use crate::store::runs::{RunCounts, RunStatus};
use crate::{app, store};

/// `config_file` is the operator's settings file, if any: the demo loads the settings again
/// with the sandbox's environment over the operator's.
pub async fn run(
    config_file: Option<&Path>,
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
    let sandbox = sandbox::start(options, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let mut settings = settings_for(&sandbox, config_file)?;
    // The daemon's HTTP server receives the customer-link redirect, as in production.
    let (listener, address) =
        server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "server.listen").await?;
    settings.server.public_url = format!("http://{address}");

    store::create_database_if_missing(&settings.database).await?;
    let pool = app::open_database(&settings).await?;
    // By the database's clock, which stamps the runs.
    let started_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    println!(
        "partner sandbox at {} (RABOT: {customers} customers, {contracts_per_customer} contracts each; \
         EnergyZero: {} users)\ndatabase {}\n",
        sandbox.base_url(),
        settings.energyzero.user_ids.len(),
        mask_url_password(settings.database.url.expose_secret())
    );
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    let links = RabotLinks::from_settings(&settings)?
        .ok_or_else(|| anyhow::anyhow!("the demo enables RABOT"))?;

    // Linked first, so the full pass after it finds the linked customer too, and a second demo
    // (a fresh sandbox, where the customer is unlinked again) finds nothing changed.
    let link = link_a_customer(&settings, &sandbox, &pool, listener, &links, &shutdown).await?;
    println!("{}\n", link.describe());

    let rabot = Arc::new(RabotMirror::scheduled(&settings, links.client().clone()));
    let rabot = run_job(
        JobName::RabotMirror,
        rabot,
        &pool,
        &settings,
        &shutdown,
        TriggerCause::Cli,
    )
    .await?;
    let (customers, contracts) = live_rows(&pool, "rabot_customers", "rabot_contracts").await?;
    println!(
        "{}\n",
        rabot.describe(
            "RABOT mirror",
            &format!(
                "{customers} customers (mirror.rabot_customers), {contracts} contracts (mirror.rabot_contracts)"
            )
        )
    );

    // What finance reads per contract: prices, then consumption (which RABOT answers only for
    // customers who linked: the demo's role:finance-reporting gets 403 for the others).
    let costs = Arc::new(RabotCosts::new(&settings, links.client().clone()));
    let costs = run_job(
        JobName::RabotCosts,
        costs,
        &pool,
        &settings,
        &shutdown,
        TriggerCause::Cli,
    )
    .await?;
    let (contracts, periods, components): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT contract_number) FROM mirror.rabot_contract_costs_periods),
                (SELECT count(*) FROM mirror.rabot_contract_costs_periods),
                (SELECT count(*) FROM mirror.rabot_contract_cost_components)",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "{}",
        costs.line(
            "RABOT costs",
            &format!("{contracts} contracts, {periods} periods, {components} components")
        )
    );
    let consumption_job = Arc::new(RabotConsumption::new(&settings, links.client().clone()));
    let consumption = run_job(
        JobName::RabotConsumption,
        consumption_job.clone(),
        &pool,
        &settings,
        &shutdown,
        TriggerCause::Cli,
    )
    .await?;
    let (contracts, periods): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT contract_number), count(*) FROM mirror.rabot_contract_consumption",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "{}\n",
        consumption.line(
            "RABOT consumption",
            &format!(
                "{contracts} contracts, {periods} periods, {} forbidden (not linked)",
                consumption_job.last_run_forbidden()
            )
        )
    );

    let energyzero = Arc::new(EnergyzeroMirror::new(&settings)?);
    let energyzero = run_job(
        JobName::EnergyzeroMirror,
        energyzero,
        &pool,
        &settings,
        &shutdown,
        TriggerCause::Cli,
    )
    .await?;
    let (users, contracts) = live_rows(&pool, "energyzero_users", "energyzero_contracts").await?;
    println!(
        "{}\n",
        energyzero.describe(
            "EnergyZero mirror",
            &format!(
                "{users} users (mirror.energyzero_users), {contracts} contracts (mirror.energyzero_contracts)"
            )
        )
    );
    print_drift(&pool, started_at).await?;
    sandbox.shutdown().await;
    pool.close().await;

    let runs = [&link.run, &rabot, &costs, &consumption, &energyzero];
    let changed: i64 = runs
        .iter()
        .map(|r| r.counts.inserted + r.counts.updated + r.counts.deleted)
        .sum();
    println!(
        "{}",
        if changed == 0 {
            "nothing changed since the last demo"
        } else {
            "run the demo again: the second time nothing has changed"
        }
    );
    match runs.iter().find(|r| r.status != RunStatus::Succeeded) {
        None => Ok(()),
        Some(failed) => anyhow::bail!(
            "run {} {}: {}",
            failed.run_id,
            failed.status.as_str(),
            failed.error.as_deref().unwrap_or_default()
        ),
    }
}

/// The names the demo's runs saw that the partners' documents do not list (the sandbox sends
/// some, as partners do), instead of the daemon's once-a-day warnings.
async fn print_drift(pool: &PgPool, since: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
    let seen = store::drift::seen_since(pool, since).await?;
    if seen.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}: {} ({} items)", s.job, s.place, s.name, s.items))
        .collect();
    println!(
        "Schema drift: the partners sent names their documents do not list, kept in raw and shown by \
         `partner-sync status`:\n  {}\n",
        names.join("\n  ")
    );
    Ok(())
}

/// One job run through the real runner (lock, run row), with a progress line on a terminal.
struct DemoRun {
    run_id: i64,
    status: RunStatus,
    counts: RunCounts,
    error: Option<String>,
    elapsed: Duration,
}

async fn run_job(
    name: JobName,
    job: Arc<dyn Job>,
    pool: &PgPool,
    settings: &Settings,
    shutdown: &CancellationToken,
    cause: TriggerCause,
) -> anyhow::Result<DemoRun> {
    let runner = JobRunner::new(name, job, pool.clone(), settings.daemon.shutdown_grace);
    let (counts, progress) = watch::channel(RunCounts::default());
    let display = tokio::spawn(crate::status::progress::show(progress));
    let started = Instant::now();
    let outcome = runner
        .run_once(cause, Actor::cli_user(), shutdown, counts)
        .await;
    let elapsed = started.elapsed();
    // The sender is gone with the run, so the spinner ends and clears its line.
    let _ = display.await;
    match outcome? {
        RunOutcome::Finished {
            run_id,
            status,
            counts,
            error,
        } => Ok(DemoRun {
            run_id,
            status,
            counts,
            error,
            elapsed,
        }),
        RunOutcome::LockedElsewhere => {
            anyhow::bail!("another partner-sync is running {name} on this database")
        }
    }
}

impl DemoRun {
    fn describe(&self, title: &str, mirrored: &str) -> String {
        let c = &self.counts;
        let mut text = format!(
            "{title}: run {} {} in {:.1?}
  mirrored   {mirrored}
  this run   {} inserted, {} updated, {} unchanged, {} deleted, {} skipped, {} failed
  traffic    {} requests, {} pages, {} items fetched",
            self.run_id,
            self.status.as_str(),
            self.elapsed,
            c.inserted,
            c.updated,
            c.unchanged,
            c.deleted,
            c.skipped,
            c.failed,
            c.requests,
            c.pages,
            c.fetched,
        );
        if let Some(error) = &self.error {
            text.push_str(&format!("\n  error      {error}"));
        }
        text
    }
}

impl DemoRun {
    /// One line: what the table holds, and what this run changed.
    fn line(&self, title: &str, stored: &str) -> String {
        let c = &self.counts;
        let mut text = format!(
            "{title}: {stored} (run {} {}: {} inserted, {} updated, {} unchanged, {} requests)",
            self.run_id,
            self.status.as_str(),
            c.inserted,
            c.updated,
            c.unchanged,
            c.requests,
        );
        if let Some(error) = &self.error {
            text.push_str(&format!("; error: {error}"));
        }
        text
    }
}

async fn live_rows(pool: &PgPool, parents: &str, children: &str) -> anyhow::Result<(i64, i64)> {
    // Table names are this module's own constants, never input.
    let sql = format!(
        "SELECT (SELECT count(*) FROM mirror.{parents} WHERE deleted_at IS NULL),
                (SELECT count(*) FROM mirror.{children} WHERE deleted_at IS NULL)"
    );
    Ok(sqlx::query_as(&sql).fetch_one(pool).await?)
}

struct DemoLink {
    customer_number: String,
    external_id: String,
    contracts: i64,
    run: DemoRun,
}

impl DemoLink {
    fn describe(&self) -> String {
        format!(
            "RABOT customer link: customer {} logged in on the sandbox's page and approved; the redirect
  reached this daemon, which recorded the link (sync.customer_links, `partner-sync links`) and
  mirrored the customer at once as {}: 1 customer and {} contracts by run {} of
  rabot_link_mirror, {} {:.1?}",
            self.customer_number,
            self.external_id,
            self.contracts,
            self.run.run_id,
            self.run.status.as_str(),
            self.run.elapsed,
        )
    }
}

/// Links one of the sandbox's hidden customers end to end and mirrors it: the link is created
/// at the sandbox, a scripted browser logs in and approves on its page and follows the redirect
/// to this process's HTTP server, whose handler records the link and asks for the link mirror.
async fn link_a_customer(
    settings: &Settings,
    sandbox: &Sandbox,
    pool: &PgPool,
    listener: tokio::net::TcpListener,
    links: &Arc<RabotLinks>,
    shutdown: &CancellationToken,
) -> anyhow::Result<DemoLink> {
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
        scrape: watch::channel(ScrapeSettings::from_settings(settings)).1,
    };
    let stop_server = shutdown.child_token();
    let served = tokio::spawn(server::serve(
        listener,
        server::public_router(state),
        ServerLimits::from_settings(settings),
        stop_server.clone(),
    ));

    let external_id = format!("DEMO-LINK-{}", customer.customer_number);
    let spec = LinkSpec {
        external_id: external_id.clone(),
        auth_as: None,
        sign_up_url: None,
    };
    let link = links.begin(pool, spec, &Actor::cli_user()).await?;
    // The login form posts back to the page's own URL, without its query.
    let mut login_url = link.authorization_url.clone();
    let state = login_url
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    login_url.set_query(None);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()?;
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
    tokio::time::timeout(Duration::from_secs(10), control.recv())
        .await
        .map_err(|_| anyhow::anyhow!("the link redirect did not ask for the link mirror"))?;
    stop_server.cancel();
    let _ = served.await;

    let job = Arc::new(RabotMirror::newly_linked(settings, links.client().clone()));
    let run = run_job(
        JobName::RabotLinkMirror,
        job,
        pool,
        settings,
        shutdown,
        TriggerCause::Link,
    )
    .await?;
    let contracts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contracts k JOIN mirror.rabot_customers c
             USING (customer_number) WHERE c.external_id = $1",
    )
    .bind(&external_id)
    .fetch_one(pool)
    .await?;
    Ok(DemoLink {
        customer_number: customer.customer_number,
        external_id,
        contracts,
        run,
    })
}

/// The demo's settings: the operator's own (file and environment) connected to the sandbox,
/// with RABOT and EnergyZero enabled at rates the sandbox allows, so the demo finishes in
/// seconds.
fn settings_for(sandbox: &Sandbox, config_file: Option<&Path>) -> Result<Settings, SettingsError> {
    let demo = [
        ("PARTNER_SYNC__RABOT__ENABLED", "true"),
        ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", "2000"),
        ("PARTNER_SYNC__RABOT__BURST", "50"),
        ("PARTNER_SYNC__RABOT__CONCURRENCY", "8"),
        // No external ids: every customer, whatever the operator's settings list.
        ("PARTNER_SYNC__RABOT__EXTERNAL_IDS", ""),
        ("PARTNER_SYNC__ENERGYZERO__ENABLED", "true"),
        ("PARTNER_SYNC__ENERGYZERO__REQUESTS_PER_SECOND", "500"),
        ("PARTNER_SYNC__ENERGYZERO__BURST", "20"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()));
    // A later variable wins over an earlier one of the same name.
    let env = std::env::vars().chain(sandbox.env()).chain(demo);
    Settings::load_from(config_file, env)
}
