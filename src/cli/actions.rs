//! The commands that ask something of a partner or of the daemons and print the answer: links,
//! consents, erasure, resync requests, the health check and the sandbox.

#[cfg(feature = "sandbox")]
use std::net::SocketAddr;

use anyhow::Context as _;
#[cfg(feature = "sandbox")]
use tokio_util::sync::CancellationToken;

#[cfg(feature = "sandbox")]
use crate::events::signals;
use crate::finance::forget;
use crate::jobs::{self, JobName};
use crate::partners::rabobank::grants::{self, RabobankGrants};
use crate::partners::rabot::links::{LinkSpec, RabotLinks};
#[cfg(feature = "sandbox")]
use crate::sandbox::{self, SandboxOptions};
use crate::settings::Settings;
use crate::store::audit::Actor;
use crate::{app, resync, status};

pub(super) async fn rabobank_authorize(
    settings: &Settings,
    label: Option<&str>,
) -> anyhow::Result<()> {
    let grants = RabobankGrants::from_settings(settings)?
        .ok_or_else(|| anyhow::anyhow!("Rabobank is not enabled: set rabobank.enabled = true"))?;
    let pool = app::open_database(settings).await?;
    let url = grants.begin_consent(&pool, label).await?;
    println!("{url}");
    eprintln!(
        "Open this URL in the account holder's own browser within {} minutes. Rabobank then \
         redirects to {}, which the running daemon (`partner-sync run`) must serve.",
        grants::STATE_LIFETIME.as_secs() / 60,
        settings.rabobank.redirect_uri
    );
    Ok(())
}

fn rabot_links(settings: &Settings) -> anyhow::Result<std::sync::Arc<RabotLinks>> {
    RabotLinks::from_settings(settings)?
        .ok_or_else(|| anyhow::anyhow!("RABOT is not enabled: set rabot.enabled = true"))
}

pub(super) async fn link_rabot(settings: &Settings, spec: LinkSpec) -> anyhow::Result<()> {
    let links = rabot_links(settings)?;
    let pool = app::open_database(settings).await?;
    let link = links.begin(&pool, spec, &Actor::cli_user()).await?;
    println!("{}", link.authorization_url);
    eprintln!(
        "Send the customer to this URL before {} (link {}). RABOT then redirects to {}{}/…, \
         which the running daemon (`partner-sync run`) must serve.",
        link.expires_at.format("%H:%M:%S UTC"),
        link.id,
        settings.server.public_url.trim_end_matches('/'),
        crate::settings::RABOT_LINKS_PATH,
    );
    Ok(())
}

pub(super) async fn unlink_rabot(settings: &Settings, customer_number: &str) -> anyhow::Result<()> {
    let links = rabot_links(settings)?;
    let pool = app::open_database(settings).await?;
    let marked = links
        .unlink(&pool, customer_number, &Actor::cli_user())
        .await?;
    if marked == 0 {
        println!("unlinked customer {customer_number} at RABOT (no link of it was recorded here)");
    } else {
        println!(
            "unlinked customer {customer_number}; its mirrored rows stay but are no longer refreshed"
        );
    }
    Ok(())
}

pub(super) async fn forget_rabot(settings: &Settings, customer_number: &str) -> anyhow::Result<()> {
    let pool = app::open_database(settings).await?;
    match forget::forget_rabot_customer(&pool, customer_number, &Actor::cli_user()).await? {
        Ok(erased) => {
            let tables: Vec<String> = erased
                .iter()
                .filter(|(_, rows)| **rows > 0)
                .map(|(table, rows)| format!("{table} {rows}"))
                .collect();
            println!(
                "forgot RABOT customer {customer_number}: {} rows erased ({})",
                erased.values().sum::<u64>(),
                tables.join(", ")
            );
            Ok(())
        }
        Err(refusal) => anyhow::bail!("{}", refusal.explain(customer_number)),
    }
}

pub(super) async fn resync(
    settings: &Settings,
    jobs: Vec<JobName>,
    customer: Option<&str>,
    wait: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let jobs: Vec<JobName> = if customer.is_some() {
        // `rabot --customer ID` is the targeted refresh, not a full pass.
        vec![JobName::RabotCustomerRefresh]
    } else if jobs.is_empty() {
        // The mirror jobs these settings enable: waiting for one no daemon runs would only
        // time out. Settings that enable none (a bare ops shell) still ask for every mirror.
        let mirrors = JobName::all().filter(|j| j.is_mirror());
        let enabled: Vec<JobName> = mirrors
            .clone()
            .filter(|&j| jobs::is_enabled(settings, j))
            .collect();
        if enabled.is_empty() {
            mirrors.collect()
        } else {
            enabled
        }
    } else {
        // `rabot rabot_mirror` names one job once.
        let mut unique = Vec::with_capacity(jobs.len());
        for job in jobs {
            if !unique.contains(&job) {
                unique.push(job);
            }
        }
        unique
    };
    let pool = app::open_database(settings).await?;
    let id = resync::request(&pool, &jobs, customer, &Actor::cli_user()).await?;
    let names: Vec<&str> = jobs.iter().map(|j| j.as_str()).collect();
    let of_customer = customer
        .map(|customer| format!(" of customer {}", status::printable(customer)))
        .unwrap_or_default();
    println!("requested {}{of_customer} (request {id})", names.join(", "));
    if !wait {
        return Ok(());
    }
    let outcomes = resync::wait(&pool, id, timeout).await?;
    for outcome in &outcomes {
        match outcome {
            resync::Outcome::Ran(run) => println!(
                "{} run {} {} in {:.1}s on {}: {}{}",
                run.job,
                run.id,
                run.status,
                run.duration().unwrap_or_default().as_secs_f64(),
                run.host,
                run.counts().summary(),
                run.error
                    .as_deref()
                    .map(|e| format!("; error: {}", status::printable(e)))
                    .unwrap_or_default(),
            ),
            resync::Outcome::NotRun { job, reason } => println!("{job} not run: {reason}"),
        }
    }
    anyhow::ensure!(
        outcomes.iter().all(resync::Outcome::succeeded),
        "not every requested run succeeded"
    );
    Ok(())
}

/// GET /healthz on this machine's daemon, on both listeners (`server.listen` and
/// `server.ops_listen`): the container is healthy only while both answer.
pub(super) async fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?;
    for (key, mut address) in [
        ("server.listen", settings.server.listen),
        ("server.ops_listen", settings.server.ops_listen),
    ] {
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let url = format!("http://{address}/healthz");
        let answer = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("{url} ({key}) did not answer"))?;
        anyhow::ensure!(
            answer.status().is_success(),
            "{url} ({key}) answered {}",
            answer.status()
        );
    }
    Ok(())
}

#[cfg(feature = "sandbox")]
pub(super) async fn serve_sandbox(
    listen: SocketAddr,
    options: SandboxOptions,
) -> anyhow::Result<()> {
    let sandbox = sandbox::start(options, listen).await?;
    println!("{}", sandbox.describe());
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    shutdown.cancelled().await;
    sandbox.shutdown().await;
    Ok(())
}
