//! Cron schedules with tokio-cron-scheduler. A tick only emits a trigger: the scheduler spawns
//! detached tasks and does not wait for them at shutdown, so no work may live here.

use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use super::dispatcher::Dispatcher;
use super::{Trigger, TriggerCause};
use crate::jobs::JobName;

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
    ) -> anyhow::Result<Self> {
        let scheduler = JobScheduler::new().await?;
        for (job, expression) in jobs {
            let dispatcher = dispatcher.clone();
            let cron_job = CronJob::new_async(expression.as_str(), move |_id, _scheduler| {
                dispatcher.dispatch(Trigger::new(job, TriggerCause::Schedule));
                Box::pin(async {})
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
