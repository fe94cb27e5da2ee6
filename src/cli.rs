//! Command line: parse, load settings, and hand over to the library. Exit codes: 0 success,
//! 1 a failed run or other error, 2 unusable settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::TriggerCause;
use crate::events::dispatcher::{JobRunner, RunOutcome};
use crate::events::signals;
use crate::jobs::{self, JobName};
use crate::sandbox::{self, SandboxOptions};
use crate::settings::{LogFormat, Settings};
use crate::store::runs::{RunCounts, RunStatus};
use crate::{app, demo, store, telemetry};

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
    /// Run one pass of a job now and exit (0 succeeded, 1 failed).
    Sync {
        #[arg(value_enum)]
        partner: SyncTarget,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Validate the settings and print them with every secret masked.
    CheckConfig,
    /// Serve the simulated partner APIs for trials and tests.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        #[command(flatten)]
        options: SandboxOptions,
    },
    /// Mirror a generated RABOT sandbox into the database named by DATABASE_URL, and report.
    Demo {
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        #[arg(long, default_value_t = 2)]
        contracts_per_customer: usize,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncTarget {
    Rabot,
}

impl SyncTarget {
    fn job(self) -> JobName {
        match self {
            SyncTarget::Rabot => JobName::RabotMirror,
        }
    }
}

pub async fn run(cli: Cli) -> ExitCode {
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
        Command::Demo { .. } | Command::CheckConfig => "warn",
        _ => telemetry::DEFAULT_FILTER,
    };
    telemetry::init(format, default_filter);

    let result = match cli.command {
        Command::Run => run_daemon(settings).await,
        Command::Sync { partner } => sync(settings, partner.job()).await,
        Command::Migrate => migrate(&settings).await,
        Command::CheckConfig => {
            print!("{}", settings.to_masked_toml());
            Ok(())
        }
        Command::Sandbox { listen, options } => serve_sandbox(listen, options).await,
        Command::Demo {
            customers,
            contracts_per_customer,
        } => demo::run(settings, customers, contracts_per_customer).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    app::run_daemon(settings, shutdown).await
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = store::connect(&settings.database).await?;
    store::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// One pass, recorded in `sync.runs` like a scheduled one; Ctrl-C cancels it cleanly.
async fn sync(settings: Settings, job: JobName) -> anyhow::Result<()> {
    let scheduled = jobs::registry(&settings)?
        .into_iter()
        .find(|j| j.job.name() == job)
        .ok_or_else(|| {
            anyhow::anyhow!("{job} is not enabled: set {}.enabled = true", job.partner())
        })?;
    let pool = app::open_database(&settings).await?;
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    let runner = JobRunner::new(scheduled.job, pool, settings.daemon.shutdown_grace);
    let (counts, _) = watch::channel(RunCounts::default());
    match runner
        .run_once(TriggerCause::Cli, &shutdown, counts)
        .await?
    {
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

async fn serve_sandbox(listen: SocketAddr, options: SandboxOptions) -> anyhow::Result<()> {
    let sandbox = sandbox::start(options, listen).await?;
    println!("{}", sandbox.describe());
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    shutdown.cancelled().await;
    sandbox.shutdown().await;
    Ok(())
}
