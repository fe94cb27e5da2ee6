//! Command line: parse, load settings, and hand over to the library. Exit codes: 0 success,
//! 1 a failed run or other error, 2 unusable settings.

#[cfg(feature = "sandbox")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "sandbox")]
use crate::demo;
use crate::events::TriggerCause;
use crate::events::dispatcher::{JobRunner, RunOutcome};
use crate::events::signals;
use crate::finance::forget;
use crate::jobs::{self, JobName};
use crate::partners::rabobank::grants::{self, RabobankGrants, RefreshTasks};
use crate::partners::rabot::links::{LinkSpec, RabotLinks};
#[cfg(feature = "sandbox")]
use crate::sandbox::{self, SandboxOptions};
use crate::settings::{LogFormat, Settings};
use crate::store::audit::{self, Actor, Entry};
use crate::store::runs::{RunCounts, RunStatus};
use crate::{app, resync, status, store, telemetry};

mod parsers;
mod reports;

use parsers::{CustomerIdParser, JobNameParser, parse_label};
use reports::{list_audit, list_grants, list_links, show_status};

#[derive(Debug, Parser)]
#[command(
    name = "partner-sync",
    version,
    about = "Mirrors energy-partner data into PostgreSQL"
)]
pub struct Cli {
    /// A settings file layered over the built-in defaults (environment variables still win).
    #[arg(long, global = true, env = "PARTNER_SYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format; overrides log.format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: scheduled jobs until SIGTERM/SIGINT.
    Run,
    /// Run one pass of a job now and exit (0 succeeded, 1 failed). A partner name runs its
    /// scheduled job (`sync rabobank` is `rotate-tokens`).
    Sync {
        #[arg(value_name = "JOB", value_parser = JobNameParser)]
        job: JobName,
        /// Accept, for this one pass, more tombstones than the partner's `tombstone_guard`
        /// allows (the partner really deleted that many rows).
        #[arg(long)]
        allow_mass_delete: bool,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Validate the settings and print them with every secret masked.
    CheckConfig,
    /// Serve the simulated partner APIs for trials and tests.
    #[cfg(feature = "sandbox")]
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        #[command(flatten)]
        options: SandboxOptions,
    },
    /// Run the Rabobank token rotation once now and exit (0 succeeded, 1 failed).
    RotateTokens,
    /// Ask the running daemon(s) to run jobs now, through Postgres NOTIFY: exactly one replica
    /// runs each job. Without JOBs: every mirror job. A partner name stands for its scheduled
    /// job. `rabot --customer ID` refreshes one RABOT customer.
    Resync {
        /// Partner or job names.
        #[arg(value_name = "JOB", value_parser = JobNameParser)]
        jobs: Vec<JobName>,
        /// With `rabot` only: refresh this one customer (a customer number, or an external id
        /// shared by one or more customers) and its contracts now, instead of a full pass.
        #[arg(long, value_name = "ID", value_parser = CustomerIdParser)]
        customer: Option<String>,
        /// Wait for the runs and print their counts; exit 1 unless all succeeded.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (humantime).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
        timeout: std::time::Duration,
    },
    /// A table per partner: each job's last run, result, duration, rows, next run and
    /// freshness; Rabobank's grants; recent failures. With JOBs: only those jobs (and their
    /// partners' tables) and their failures. A partner name stands for its scheduled job.
    Status {
        /// Partner or job names; none = every job.
        #[arg(value_name = "JOB", value_parser = JobNameParser)]
        jobs: Vec<JobName>,
        /// One JSON document, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if the local daemon's /healthz answers on both listeners (the container HEALTHCHECK).
    Healthcheck,
    /// Rabobank consents.
    Rabobank {
        #[command(subcommand)]
        command: RabobankCommand,
    },
    /// Start a customer link: print the URL the customer opens to log in at the partner and
    /// approve. The daemon (`partner-sync run`) receives the answer; the link works once, within
    /// 10 minutes.
    Link {
        #[arg(value_enum)]
        partner: LinkPartner,
        /// Our id for the customer; the partner stores it with the customer.
        #[arg(long)]
        external_id: String,
        /// Partner account whose login page to show (e.g. rabot-charge).
        #[arg(long)]
        auth_as: Option<String>,
        /// Where the partner's login page offers to sign up.
        #[arg(long)]
        sign_up_url: Option<String>,
    },
    /// Remove a customer's link at the partner; its mirrored rows stay but are no longer refreshed.
    Unlink {
        #[arg(value_enum)]
        partner: LinkPartner,
        customer_number: String,
    },
    /// Erase a customer the partner no longer returns (tombstoned in the mirror, or unlinked
    /// when the link was its only relation) from every mirror table, history, price table,
    /// month-end snapshot and link, in one transaction; the audit trail records the customer
    /// number and the rows erased per table, nothing else. Refused (exit 1) while the mirror
    /// holds the customer live or a link of it is active.
    Forget {
        #[arg(value_enum)]
        partner: LinkPartner,
        customer_number: String,
    },
    /// List customer links: status, external id, customer number, times.
    Links {
        /// One JSON object per link, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail, oldest first: links, consents, token rotations, resync requests, manual
    /// runs, signals and guard overrides, each with who did it. The trail is append-only.
    Audit {
        /// Only entries of this last span (humantime: 7d, 12h, 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only entries about this subject (an external id, a customer number, a grant id, a
        /// job, a resync request).
        #[arg(long, value_name = "ID")]
        subject: Option<String>,
        /// One JSON object per entry, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List OAuth grants (no secrets): label, status, expiries, refresh count, consent, last error.
    Grants {
        /// One JSON object per grant, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Mirror a generated RABOT sandbox into the database named by DATABASE_URL, and report.
    #[cfg(feature = "sandbox")]
    Demo {
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        #[arg(long, default_value_t = 2)]
        contracts_per_customer: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum RabobankCommand {
    /// Print the URL that starts a consent; the user opens it in their own browser, and the
    /// daemon's callback stores the grant. The link works once, within 10 minutes.
    Authorize {
        /// A name to recognise the grant by in `grants` and logs.
        #[arg(long, value_parser = parse_label)]
        label: Option<String>,
    },
}

impl Command {
    /// Arguments each valid alone that do not go together; a usage error (exit 2).
    fn refused_combination(&self) -> Option<String> {
        let refresh = JobName::RabotCustomerRefresh;
        match self {
            Command::Sync { job, .. } if *job == refresh => Some(format!(
                "{refresh} refreshes one customer; use `partner-sync resync rabot --customer ID`"
            )),
            Command::Resync {
                jobs,
                customer: Some(_),
                ..
            } if jobs.is_empty()
                || jobs
                    .iter()
                    .any(|&job| job != JobName::RabotMirror && job != refresh) =>
            {
                Some(
                    "--customer is only valid with the rabot job: `partner-sync resync rabot \
                     --customer ID`"
                        .to_owned(),
                )
            }
            Command::Resync {
                jobs,
                customer: None,
                ..
            } if jobs.contains(&refresh) => Some(format!(
                "{refresh} needs --customer ID: `partner-sync resync rabot --customer ID`"
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LinkPartner {
    Rabot,
}

pub async fn run(cli: Cli) -> ExitCode {
    if let Some(refusal) = cli.command.refused_combination() {
        let error = <Cli as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ArgumentConflict, refusal);
        // Printing to stderr can fail only when stderr is gone; the exit code still says it.
        let _ = error.print();
        return ExitCode::from(2);
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("partner-sync: {error}");
            return ExitCode::from(2);
        }
    };
    let format = cli.log_format.unwrap_or(settings.log.format);
    // The demo talks to a person: only warnings interleave with its report.
    let default_filter = match cli.command {
        #[cfg(feature = "sandbox")]
        // The demo prints what each step did, drift included; warnings would repeat it.
        Command::Demo { .. } => "error",
        Command::CheckConfig
        | Command::Status { .. }
        | Command::Grants { .. }
        | Command::Links { .. }
        | Command::Audit { .. }
        | Command::Resync { .. }
        | Command::Healthcheck => "warn",
        _ => telemetry::DEFAULT_FILTER,
    };
    telemetry::init(format, default_filter);

    let result = match cli.command {
        Command::Run => run_daemon(settings, cli.config).await,
        Command::Sync {
            job,
            allow_mass_delete,
        } => run_job_once(settings, job, allow_mass_delete).await,
        Command::RotateTokens => {
            run_job_once(settings, JobName::RabobankTokenRotation, false).await
        }
        Command::Rabobank {
            command: RabobankCommand::Authorize { label },
        } => rabobank_authorize(&settings, label.as_deref()).await,
        Command::Grants { json } => list_grants(&settings, json).await,
        Command::Link {
            partner: LinkPartner::Rabot,
            external_id,
            auth_as,
            sign_up_url,
        } => {
            let spec = LinkSpec {
                external_id,
                auth_as,
                sign_up_url,
            };
            link_rabot(&settings, spec).await
        }
        Command::Unlink {
            partner: LinkPartner::Rabot,
            customer_number,
        } => unlink_rabot(&settings, &customer_number).await,
        Command::Forget {
            partner: LinkPartner::Rabot,
            customer_number,
        } => forget_rabot(&settings, &customer_number).await,
        Command::Links { json } => list_links(&settings, json).await,
        Command::Audit {
            since,
            subject,
            json,
        } => list_audit(&settings, since, subject.as_deref(), json).await,
        Command::Resync {
            jobs,
            customer,
            wait,
            timeout,
        } => resync(&settings, jobs, customer.as_deref(), wait, timeout).await,
        Command::Status { jobs, json } => show_status(&settings, &jobs, json).await,
        Command::Healthcheck => healthcheck(&settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::CheckConfig => {
            print!("{}", settings.to_masked_toml());
            Ok(())
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox { listen, options } => serve_sandbox(listen, options).await,
        #[cfg(feature = "sandbox")]
        Command::Demo {
            customers,
            contracts_per_customer,
        } => demo::run(cli.config.as_deref(), customers, contracts_per_customer).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon(settings: Settings, config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    app::run_daemon(settings, config_file, shutdown).await
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = store::connect(&settings.database).await?;
    store::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// One pass, recorded in `sync.runs` like a scheduled one; Ctrl-C cancels it cleanly. Audited
/// under the OS user: the override of the tombstone guards before the pass (so it is in the
/// trail whatever the pass does), the run once it has ended.
async fn run_job_once(
    mut settings: Settings,
    job: JobName,
    allow_mass_delete: bool,
) -> anyhow::Result<()> {
    let actor = Actor::cli_user();
    if allow_mass_delete {
        settings.allow_mass_delete();
    }
    let rabobank = RabobankGrants::from_settings(&settings)?;
    let rabot = RabotLinks::from_settings(&settings)?;
    let scheduled = jobs::registry(&jobs::RunnerParts {
        settings: &settings,
        rabobank: rabobank.as_ref(),
        rabot: rabot.as_ref(),
    })?
    .into_iter()
    .find(|j| j.name == job)
    .ok_or_else(|| anyhow::anyhow!("{job} is not enabled: set {}.enabled = true", job.partner()))?;
    let pool = app::open_database(&settings).await?;
    if allow_mass_delete {
        let entry = Entry::new(&actor, "guard.override")
            .partner(job.partner())
            .subject(job.as_str())
            .detail(serde_json::json!({ "job": job.as_str(), "allow_mass_delete": true }));
        audit::record(&pool, &entry).await?;
    }
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    let runner = JobRunner::new(
        job,
        scheduled.job,
        pool.clone(),
        settings.daemon.shutdown_grace,
    );
    let (counts, _) = watch::channel(RunCounts::default());
    let outcome = runner
        .run_once(TriggerCause::Cli, actor.clone(), &shutdown, counts)
        .await;
    let ran = match &outcome {
        Ok(RunOutcome::Finished { run_id, status, .. }) => {
            serde_json::json!({ "run_id": run_id, "status": status.as_str() })
        }
        Ok(RunOutcome::LockedElsewhere) => serde_json::json!({ "status": "locked elsewhere" }),
        Err(_) => serde_json::json!({ "status": "not recorded" }),
    };
    let entry = Entry::new(&actor, "sync.run")
        .partner(job.partner())
        .subject(job.as_str())
        .detail(ran);
    if let Err(error) = audit::record(&pool, &entry).await {
        tracing::error!(error = %error, "could not record the run in the audit trail");
    }
    // A refresh sent before a stop ended the run is still answered and saved.
    if let Some(rabobank) = &rabobank {
        let refreshes = rabobank.refresh_tasks();
        if !refreshes.finish(RefreshTasks::bound(&settings.http)).await {
            tracing::error!(
                "a grant refresh did not finish in time; its grant will show as in doubt"
            );
        }
    }
    match outcome? {
        RunOutcome::Finished {
            status: RunStatus::Succeeded,
            ..
        } => Ok(()),
        // The run's own error is already in the log; this line says how the command ended.
        RunOutcome::Finished { run_id, status, .. } => {
            anyhow::bail!("{job} run {run_id} {}", status.as_str())
        }
        RunOutcome::LockedElsewhere => anyhow::bail!("{job} is already running elsewhere"),
    }
}

async fn rabobank_authorize(settings: &Settings, label: Option<&str>) -> anyhow::Result<()> {
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

async fn link_rabot(settings: &Settings, spec: LinkSpec) -> anyhow::Result<()> {
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

async fn unlink_rabot(settings: &Settings, customer_number: &str) -> anyhow::Result<()> {
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

async fn forget_rabot(settings: &Settings, customer_number: &str) -> anyhow::Result<()> {
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

async fn resync(
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
                run.counts_summary(),
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
async fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
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
async fn serve_sandbox(listen: SocketAddr, options: SandboxOptions) -> anyhow::Result<()> {
    let sandbox = sandbox::start(options, listen).await?;
    println!("{}", sandbox.describe());
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    shutdown.cancelled().await;
    sandbox.shutdown().await;
    Ok(())
}
