//! Command line: parse, load settings, and hand over to the library. Exit codes: 0 success,
//! 1 a failed run or other error, 2 unusable settings.

#[cfg(feature = "sandbox")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::app;
#[cfg(feature = "sandbox")]
use crate::demo;
use crate::events::signals;
use crate::jobs::JobName;
use crate::partners::rabot::links::LinkSpec;
#[cfg(feature = "sandbox")]
use crate::sandbox::SandboxOptions;
use crate::settings::{LogFormat, Settings};
use crate::telemetry::{self, Output};

mod actions;
mod generate;
mod once;
mod parsers;
mod reports;
mod terminal;

#[cfg(feature = "sandbox")]
use actions::serve_sandbox;
use actions::{forget_rabot, healthcheck, link_rabot, rabobank_authorize, resync, unlink_rabot};
pub use generate::CompletionShell;
use once::{migrate, run_job_once};
use parsers::{CustomerIdParser, JobNameParser, parse_label};
use reports::{list_audit, list_grants, list_links, show_status};

#[derive(Debug, Parser)]
#[command(
    name = "partner-sync",
    version = generate::VERSION,
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
    /// Run the daemon until SIGTERM/SIGINT: scheduled and requested jobs (resync, signals,
    /// links), the HTTP listeners (consent callback, customer links, health, metrics); SIGHUP
    /// reloads the settings. Logs JSON unless `--log-format pretty`.
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
    Migrate {
        /// First create the database named in DATABASE_URL (database.url) if it does not
        /// exist, connecting to the server's `postgres` database to do so.
        #[arg(long)]
        create_database: bool,
    },
    /// Validate the settings and print the effective ones (TOML) with every secret masked; an
    /// unusable one exits 2 naming its key.
    CheckConfig,
    /// Serve the simulated partners (RABOT, EnergyZero, Rabobank) for trials and tests; prints
    /// URLs, credentials and ready-to-paste environment lines, then serves until Ctrl-C.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Address to serve every simulated partner on.
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
        /// The partner's customer number (as in `links`).
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
        /// The partner's customer number.
        customer_number: String,
    },
    /// List customer links: status, external id, customer number, times, refusal reason.
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
    /// Print a shell completion script, e.g. `partner-sync completions bash >
    /// /etc/bash_completion.d/partner-sync`; needs no settings.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff), e.g. `partner-sync man > /usr/share/man/man1/partner-sync.1`;
    /// needs no settings.
    Man,
    /// Every partner flow against the built-in sandbox, into the database named by
    /// DATABASE_URL (created and migrated): a RABOT customer links through a scripted browser
    /// and is mirrored at once; then the RABOT mirror (customers and contracts), each contract's
    /// costs and consumption, and the EnergyZero mirror (users by impersonation, their
    /// contracts); each step reports what it wrote. A second run changes nothing.
    #[cfg(feature = "sandbox")]
    Demo {
        /// RABOT customers the sandbox generates (the one that links comes on top).
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        /// Contracts of each generated RABOT customer.
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
    // Generated from the definitions alone: they work before any settings exist.
    let generated = match cli.command {
        Command::Completions { shell } => Some(generate::completions(shell)),
        Command::Man => Some(generate::man()),
        _ => None,
    };
    if let Some(result) = generated {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("partner-sync: {}", terminal::one_line(&error));
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("partner-sync: {error}");
            return ExitCode::from(2);
        }
    };
    let format = cli.log_format.unwrap_or(settings.log.format);
    let output = Output::resolve(format, matches!(cli.command, Command::Run));
    telemetry::init(output, cli.command.default_filter(output));
    let what = cli.command.label();

    let result = match cli.command {
        Command::Run => run_daemon(settings, cli.config).await,
        Command::Sync {
            job,
            allow_mass_delete,
        } => run_job_once(settings, job, allow_mass_delete, output).await,
        Command::RotateTokens => {
            run_job_once(settings, JobName::RabobankTokenRotation, false, output).await
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
        Command::Migrate { create_database } => migrate(&settings, create_database).await,
        // Answered above, before the settings were loaded.
        Command::Completions { .. } | Command::Man => Ok(()),
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
        Err(error) => terminal::report_failure(output, &what, &error),
    }
}

async fn run_daemon(settings: Settings, config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    signals::spawn_shutdown_handler(shutdown.clone())?;
    app::run_daemon(settings, config_file, shutdown).await
}
