//! Wiring: the pool, the jobs the settings enable, their runners and schedules, the HTTP server,
//! and the control loop that turns signals and NOTIFY requests into triggers and reloads; then
//! run until the shutdown token is cancelled and stop within the grace period.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::dispatcher::{self, Dispatcher};
use crate::events::schedule::Schedule;
use crate::events::{Control, Trigger, TriggerCause, notify, signals};
use crate::jobs::{self, JobName, ScheduledJob};
use crate::partners::rabobank::grants::{self, RabobankGrants, RefreshTasks};
use crate::partners::rabot::links::RabotLinks;
use crate::server::{self, Partners, ScrapeSettings, ServerLimits, ServerState};
use crate::settings::Settings;
use crate::store;
use crate::store::audit::{self, Actor, Entry};
use crate::store::trigger_requests;

/// Extra time, beyond the grace period, for runners to record their final run status.
const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// Connects and, unless disabled, applies pending migrations.
pub async fn open_database(settings: &Settings) -> anyhow::Result<PgPool> {
    // A running job holds one pooled connection for its whole run (its advisory lock) besides
    // those its work takes. Without one more connection per job, jobs starting together (at
    // start-up, on SIGUSR1) could hold every connection and wait on one another for the rest.
    let mut database = settings.database.clone();
    database.max_connections += crate::jobs::JOBS.len() as u32;
    let pool = store::connect(&database).await?;
    if settings.database.migrate_on_start {
        store::migrate(&pool).await?;
    }
    Ok(pool)
}

/// The jobs of one configuration: their runners and their schedule. A reload starts a new set
/// and retires the old one, whose runs in progress finish undisturbed; the new set's runners
/// then take over what the old ones still had queued (claimed `resync` requests included).
struct JobSet {
    dispatcher: Dispatcher,
    schedule: Schedule,
    /// Ends this set's runner loops (no new runs); a run in progress only stops at shutdown.
    stop: CancellationToken,
}

impl JobSet {
    async fn start(
        settings: &Settings,
        jobs: &[ScheduledJob],
        pool: &PgPool,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        previous: Option<&Dispatcher>,
    ) -> anyhow::Result<Self> {
        let grace = settings.daemon.shutdown_grace;
        let dispatcher = match previous {
            Some(previous) => Dispatcher::succeeding(previous, pool, jobs, grace),
            None => Dispatcher::new(pool, jobs, grace),
        };
        let schedule = Schedule::start(
            jobs.iter()
                .filter_map(|j| Some((j.name, j.schedule.clone()?))),
            settings.daemon.timezone,
            dispatcher.clone(),
            pool.clone(),
        )
        .await?;
        let stop = shutdown.child_token();
        dispatcher.spawn_runners(tracker, &stop, shutdown);
        // Replicas with the same credentials divide each partner's rate between them.
        store::rate_shares::spawn_keepers(
            pool,
            jobs.iter().filter_map(|j| j.job.rate_budget()),
            tracker,
            &stop,
        );
        Ok(Self {
            dispatcher,
            schedule,
            stop,
        })
    }

    async fn retire(self) {
        self.schedule.shutdown().await;
        self.stop.cancel();
    }

    fn dispatch_all(&self, cause: TriggerCause, which: impl Fn(JobName) -> bool) -> usize {
        let jobs: Vec<JobName> = self.dispatcher.jobs().filter(|j| which(*j)).collect();
        for job in &jobs {
            self.dispatcher.dispatch(Trigger::new(*job, cause));
        }
        jobs.len()
    }
}

/// Audits a signal that asked for runs, once its triggers are dispatched. The runs go on if the
/// entry cannot be written; the log says so.
async fn record_signal(pool: &PgPool, action: &'static str, signal: &str, jobs_triggered: usize) {
    let entry = Entry::new(&Actor::Signal, action)
        .detail(serde_json::json!({ "signal": signal, "jobs_triggered": jobs_triggered }));
    if let Err(error) = audit::record(pool, &entry).await {
        tracing::error!(error = %error, signal, "could not record a signal in the audit trail");
    }
}

/// What one configuration enables: the partners the HTTP server serves, and the jobs.
struct Enabled {
    partners: Partners,
    jobs: Vec<ScheduledJob>,
}

/// The jobs a configuration enables, or why it cannot run. Grant refreshes of every
/// configuration run in `refreshes`, which the daemon's stop waits for.
fn enabled_jobs(settings: &Settings, refreshes: &RefreshTasks) -> anyhow::Result<Enabled> {
    let partners = Partners {
        rabobank: RabobankGrants::with_refresh_tasks(settings, refreshes.clone())?,
        rabot: RabotLinks::from_settings(settings)?,
    };
    let jobs = jobs::registry(&jobs::RunnerParts {
        settings,
        rabobank: partners.rabobank.as_ref(),
        rabot: partners.rabot.as_ref(),
    })?;
    if jobs.is_empty() {
        let switches: Vec<String> = jobs::partners()
            .into_iter()
            .map(|partner| format!("{partner}.enabled"))
            .collect();
        anyhow::bail!(
            "no partner is enabled: set one of {} to true (e.g. PARTNER_SYNC__RABOT__ENABLED=true)",
            switches.join(", ")
        );
    }
    Ok(Enabled { partners, jobs })
}

/// The daemon: runs scheduled and requested jobs until `shutdown` is cancelled. `config_file`
/// is read again on SIGHUP.
pub async fn run_daemon(
    settings: Settings,
    config_file: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let refreshes = RefreshTasks::new();
    let Enabled { partners, jobs } = enabled_jobs(&settings, &refreshes)?;
    // Bound before anything else starts, so a taken port stops start-up with a clear error.
    let (listener, address) = server::bind(settings.server.listen, "server.listen").await?;
    let (ops_listener, ops_address) =
        server::bind(settings.server.ops_listen, "server.ops_listen").await?;
    // A shutdown signal while the database is still being reached ends start-up at once.
    let pool = tokio::select! {
        pool = open_database(&settings) => pool?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    if partners.rabobank.is_some() {
        // A refresh this or another replica's process left in flight when it died.
        if let Err(error) = grants::record_interrupted_refreshes(&pool, &Actor::Scheduler).await {
            tracing::error!(error = %error, "cannot look for interrupted grant refreshes");
        }
    }
    let tracker = TaskTracker::new();
    let (partners_tx, partners_rx) = watch::channel(partners);
    let (scrape_tx, scrape_rx) = watch::channel(ScrapeSettings::from_settings(&settings));
    let (control_tx, mut control) = mpsc::channel(64);
    let server_state = ServerState {
        pool: pool.clone(),
        partners: partners_rx,
        control: control_tx.clone(),
        admin_token: settings.server.admin_token.clone(),
        link_done_url: settings.server.link_done_url.clone(),
        metrics: crate::metrics::install(),
        stuck_after: settings.daemon.stuck_after,
        scrape: scrape_rx,
    };
    let limits = ServerLimits::from_settings(&settings);
    tracker.spawn(server::serve(
        listener,
        server::public_router(server_state.clone()),
        limits,
        shutdown.clone(),
    ));
    tracker.spawn(server::serve(
        ops_listener,
        server::ops_router(server_state),
        limits,
        shutdown.clone(),
    ));
    tracing::info!(%address, "HTTP server listening");
    tracing::info!(address = %ops_address, "operations server listening");

    signals::spawn_control_handler(control_tx.clone())?;
    tracker.spawn(notify::listen(pool.clone(), control_tx, shutdown.clone()));

    let mut settings = settings;
    let mut current = JobSet::start(&settings, &jobs, &pool, &tracker, &shutdown, None).await?;
    if settings.daemon.run_on_start {
        current.dispatch_all(TriggerCause::Startup, JobName::is_scheduled);
    }
    tracing::info!(jobs = jobs.len(), "daemon running");

    let host = dispatcher::host_id();
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(event) = control.recv() => event,
        };
        match event {
            Control::ResyncMirrors => {
                let triggered = current.dispatch_all(TriggerCause::Signal, JobName::is_mirror);
                if triggered == 0 {
                    tracing::warn!("SIGUSR1: no mirror job is enabled");
                }
                record_signal(&pool, "signal.resync", "SIGUSR1", triggered).await;
            }
            Control::RotateTokens => {
                let triggered = current.dispatch_all(TriggerCause::Signal, |j| {
                    j == JobName::RabobankTokenRotation
                });
                if triggered == 0 {
                    tracing::warn!("SIGUSR2: the token rotation is not enabled (rabobank.enabled)");
                }
                record_signal(&pool, "signal.rotate", "SIGUSR2", triggered).await;
            }
            Control::CustomerLinked => {
                current.dispatch_all(TriggerCause::Link, |j| j == JobName::RabotLinkMirror);
            }
            Control::Reload => {
                if let Some((next_settings, next_partners, next)) = reload(
                    config_file.as_deref(),
                    &settings,
                    &current,
                    &pool,
                    &tracker,
                    &refreshes,
                    &shutdown,
                )
                .await
                {
                    std::mem::replace(&mut current, next).retire().await;
                    partners_tx.send_replace(next_partners);
                    scrape_tx.send_replace(ScrapeSettings::from_settings(&next_settings));
                    settings = next_settings;
                    // Only now is all of it in force: the schedules, and the partners the
                    // HTTP server answers for (a callback enabled by this reload).
                    tracing::info!(
                        jobs = current.dispatcher.jobs().count(),
                        "configuration reloaded"
                    );
                }
            }
            Control::Request(id) => claim_request(&current, &pool, id, &host).await,
        }
    }

    let grace = settings.daemon.shutdown_grace;
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: no new runs; waiting for running ones"
    );
    current.retire().await;
    tracker.close();
    if tokio::time::timeout(grace + RECORD_MARGIN, tracker.wait())
        .await
        .is_err()
    {
        tracing::error!("runners did not stop in time; exiting anyway");
    }
    // A run abandoned above may have left a refresh request in flight: the bank may already
    // have rotated the token, so its answer is awaited and saved before the pool closes.
    if !refreshes.finish(RefreshTasks::bound(&settings.http)).await {
        tracing::error!(
            running = refreshes.running(),
            "a grant refresh did not finish in time; its grant will show as in doubt"
        );
    }
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Takes the jobs of a resync request that this replica runs; another replica that claimed
/// them first runs them instead.
async fn claim_request(current: &JobSet, pool: &PgPool, id: uuid::Uuid, host: &str) {
    let enabled: Vec<&str> = current.dispatcher.jobs().map(JobName::as_str).collect();
    match trigger_requests::claim(pool, id, &enabled, host).await {
        Ok(claimed) => {
            for job in claimed.iter().filter_map(|name| JobName::parse(name)) {
                tracing::info!(%job, request = %id, "resync requested");
                current.dispatcher.dispatch(Trigger {
                    job,
                    cause: TriggerCause::Notify,
                    request: Some(id),
                });
            }
        }
        Err(error) => {
            tracing::error!(error = %error, request = %id, "cannot claim a resync request")
        }
    }
}

/// Loads and starts a new configuration; `None` (with the reason logged) keeps the running one.
async fn reload(
    config_file: Option<&std::path::Path>,
    running: &Settings,
    running_jobs: &JobSet,
    pool: &PgPool,
    tracker: &TaskTracker,
    refreshes: &RefreshTasks,
    shutdown: &CancellationToken,
) -> Option<(Settings, Partners, JobSet)> {
    let refuse = |error: &dyn std::fmt::Display| {
        tracing::error!(error = %error, "new configuration refused; the running one stays");
    };
    let next = match Settings::load(config_file) {
        Ok(next) => next,
        Err(error) => {
            refuse(&error);
            return None;
        }
    };
    // Grants are sealed with the running key; a different one could not open them.
    if next.security.token_key.expose_secret() != running.security.token_key.expose_secret() {
        refuse(
            &"security.token_key cannot change while running: the stored grants are sealed with the running key",
        );
        return None;
    }
    let Enabled { partners, jobs } = match enabled_jobs(&next, refreshes) {
        Ok(enabled) => enabled,
        Err(error) => {
            refuse(&format!("{error:#}"));
            return None;
        }
    };
    // The pool and the listening socket were made at start-up.
    let restart_only = [
        (
            "database",
            next.database.url.expose_secret() != running.database.url.expose_secret()
                || next.database.max_connections != running.database.max_connections,
        ),
        (
            "server",
            next.server.listen != running.server.listen
                || next.server.ops_listen != running.server.ops_listen
                || next.server.request_timeout != running.server.request_timeout
                || next.server.header_read_timeout != running.server.header_read_timeout
                || next.server.body_limit != running.server.body_limit
                || next.server.max_connections != running.server.max_connections
                || next.server.public_url != running.server.public_url
                || next.server.link_done_url != running.server.link_done_url
                || next.server.admin_token.expose_secret()
                    != running.server.admin_token.expose_secret(),
        ),
    ];
    for (section, _) in restart_only.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(section, "changed settings take effect only after a restart");
    }
    match JobSet::start(
        &next,
        &jobs,
        pool,
        tracker,
        shutdown,
        Some(&running_jobs.dispatcher),
    )
    .await
    {
        Ok(set) => Some((next, partners, set)),
        Err(error) => {
            refuse(&format!("{error:#}"));
            None
        }
    }
}
