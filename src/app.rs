//! Wiring: the pool, the jobs the settings enable, their runners and schedules; then run until
//! the shutdown token is cancelled and stop within the grace period.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::dispatcher::Dispatcher;
use crate::events::schedule::Schedule;
use crate::events::{Trigger, TriggerCause};
use crate::grants::RabobankGrants;
use crate::server::{self, ServerState};
use crate::settings::Settings;
use crate::{jobs, store};

/// Extra time, beyond the grace period, for runners to record their final run status.
const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// Connects and, unless disabled, applies pending migrations.
pub async fn open_database(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = store::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        store::migrate(&pool).await?;
    }
    Ok(pool)
}

/// The daemon: runs scheduled jobs until `shutdown` is cancelled.
pub async fn run_daemon(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let rabobank = RabobankGrants::from_settings(&settings)?;
    let jobs = jobs::registry(&settings, rabobank.as_ref())?;
    anyhow::ensure!(
        !jobs.is_empty(),
        "no partner is enabled: set rabot.enabled or rabobank.enabled to true \
         (e.g. PARTNER_SYNC__RABOT__ENABLED=true)"
    );
    // Bound before anything else starts, so a taken port stops start-up with a clear error.
    let (listener, address) = server::bind(settings.server.listen).await?;
    // A shutdown signal while the database is still being reached ends start-up at once.
    let pool = tokio::select! {
        pool = open_database(&settings) => pool?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let grace = settings.daemon.shutdown_grace;
    let dispatcher = Dispatcher::new(&pool, &jobs, grace);
    let tracker = TaskTracker::new();
    dispatcher.spawn_runners(&tracker, &shutdown);
    let server_state = ServerState {
        pool: pool.clone(),
        rabobank,
        metrics: crate::metrics::install(),
        stuck_after: settings.daemon.stuck_after,
    };
    tracker.spawn(server::serve(listener, server_state, shutdown.clone()));
    tracing::info!(%address, "HTTP server listening");

    let schedule = Schedule::start(
        jobs.iter().map(|j| (j.job.name(), j.schedule.clone())),
        dispatcher.clone(),
    )
    .await?;
    if settings.daemon.run_on_start {
        for job in dispatcher.jobs() {
            dispatcher.dispatch(Trigger {
                job,
                cause: TriggerCause::Startup,
            });
        }
    }
    tracing::info!(jobs = jobs.len(), "daemon running");

    shutdown.cancelled().await;
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: no new runs; waiting for running ones"
    );
    schedule.shutdown().await;
    tracker.close();
    if tokio::time::timeout(grace + RECORD_MARGIN, tracker.wait())
        .await
        .is_err()
    {
        tracing::error!("runners did not stop in time; exiting anyway");
    }
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
