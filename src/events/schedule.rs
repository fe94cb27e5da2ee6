//! Cron schedules with tokio-cron-scheduler. A tick only emits a trigger: the scheduler spawns
//! detached tasks and does not wait for them at shutdown, so no work may live here.
//!
//! With several replicas every scheduler fires; the first replica to claim the tick in
//! `sync.schedule_ticks` triggers the run. (The job lock alone would let a quick run end
//! before another replica's scheduler fires, and the job would run twice for one tick.)

use chrono::{SubsecRound as _, Utc};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use super::dispatcher::{Dispatcher, host_id};
use super::{Trigger, TriggerCause};
use crate::jobs::JobName;
use crate::store::runs;

/// Parses like the scheduler does (seconds required, UTC), so validation and scheduling agree.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

pub struct Schedule {
    scheduler: JobScheduler,
}

impl Schedule {
    pub async fn start(
        jobs: impl IntoIterator<Item = (JobName, String)>,
        dispatcher: Dispatcher,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        let scheduler = JobScheduler::new().await?;
        let host = host_id();
        for (job, expression) in jobs {
            let dispatcher = dispatcher.clone();
            let pool = pool.clone();
            let host = host.clone();
            let cron_job = CronJob::new_async(expression.as_str(), move |_id, _scheduler| {
                let (dispatcher, pool, host) = (dispatcher.clone(), pool.clone(), host.clone());
                Box::pin(async move {
                    // Schedules have whole seconds and fire a little after them: the second
                    // names the tick on every replica.
                    let tick_at = Utc::now().trunc_subsecs(0);
                    match runs::claim_tick(&pool, job.as_str(), tick_at, &host).await {
                        Ok(false) => tracing::debug!(%job, "another replica took this tick"),
                        Ok(true) => dispatcher.dispatch(Trigger::new(job, TriggerCause::Schedule)),
                        // The job lock still prevents overlapping runs; the run reports the outage.
                        Err(error) => {
                            tracing::warn!(%job, error = %error, "cannot claim the tick; running it");
                            dispatcher.dispatch(Trigger::new(job, TriggerCause::Schedule));
                        }
                    }
                })
            })?;
            scheduler.add(cron_job).await?;
            tracing::info!(%job, schedule = %expression, "scheduled");
        }
        scheduler.start().await?;
        Ok(Self { scheduler })
    }

    pub async fn shutdown(mut self) {
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(error = %error, "scheduler did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_field_expressions_parse_and_garbage_does_not() {
        assert!(parse_cron("*/10 * * * * *").is_ok());
        assert!(parse_cron("0 */15 * * * *").is_ok());
        assert!(parse_cron("61 * * * * *").is_err());
        assert!(parse_cron("every tuesday").is_err());
    }
}
