//! The one-shot passes: `migrate` and `sync` (`rotate-tokens`), each recorded like a scheduled
//! run.

use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::TriggerCause;
use crate::events::dispatcher::{JobRunner, RunOutcome};
use crate::events::signals;
use crate::jobs::{self, JobName};
use crate::partners::rabobank::grants::{RabobankGrants, RefreshTasks};
use crate::partners::rabot::links::RabotLinks;
use crate::settings::Settings;
use crate::store::audit::{self, Actor, Entry};
use crate::store::runs::{RunCounts, RunStatus};
use crate::telemetry::Output;
use crate::{app, store};

pub(super) async fn migrate(settings: &Settings, create_database: bool) -> anyhow::Result<()> {
    if create_database {
        store::create_database_if_missing(&settings.database).await?;
    }
    let pool = store::connect(&settings.database).await?;
    store::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// One pass, recorded in `sync.runs` like a scheduled one; Ctrl-C cancels it cleanly. Audited
/// under the OS user: the override of the tombstone guards before the pass (so it is in the
/// trail whatever the pass does), the run once it has ended.
pub(super) async fn run_job_once(
    mut settings: Settings,
    job: JobName,
    allow_mass_delete: bool,
    output: Output,
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
    let budget = scheduled.job.rate_budget();
    let runner = JobRunner::new(
        job,
        scheduled.job,
        pool.clone(),
        settings.daemon.shutdown_grace,
    );
    // Like a daemon's jobs, the pass takes only its share of a rate other replicas also use.
    let sharing = CancellationToken::new();
    let keepers = tokio_util::task::TaskTracker::new();
    store::rate_shares::spawn_keepers(&pool, budget, &keepers, &sharing);
    let (counts, progress) = watch::channel(RunCounts::default());
    let spinner =
        (output == Output::Human).then(|| tokio::spawn(crate::status::progress::show(progress)));
    let started = Instant::now();
    let outcome = runner
        .run_once(TriggerCause::Cli, actor.clone(), &shutdown, counts)
        .await;
    if let Some(spinner) = spinner {
        // The sender is gone with the run, so the spinner ends and clears its line.
        let _ = spinner.await;
    }
    sharing.cancel();
    keepers.close();
    keepers.wait().await;
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
            run_id,
            status: RunStatus::Succeeded,
            counts,
            error,
        } => {
            if output == Output::Human {
                let line = crate::status::progress::summary(
                    job,
                    run_id,
                    started,
                    &counts,
                    error.as_deref(),
                );
                eprintln!("partner-sync: {line}");
            }
            Ok(())
        }
        // The command's last line says how the run ended and why (at a terminal the run's own
        // error line is not logged, so this is the one place it appears).
        RunOutcome::Finished {
            run_id,
            status,
            error,
            ..
        } => match error {
            Some(error) => anyhow::bail!("{job} run {run_id} {}: {error}", status.as_str()),
            None => anyhow::bail!("{job} run {run_id} {}", status.as_str()),
        },
        RunOutcome::LockedElsewhere => anyhow::bail!("{job} is already running elsewhere"),
    }
}
