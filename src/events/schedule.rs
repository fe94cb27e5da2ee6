//! Cron schedules with tokio-cron-scheduler. A tick only emits a trigger: the scheduler spawns
//! detached tasks and does not wait for them at shutdown, so no work may live here.
//!
//! With several replicas every scheduler fires; the first replica to claim the occurrence in
//! `sync.schedule_ticks` triggers the run. (The job lock alone would let a quick run end
//! before another replica's scheduler fires, and the job would run twice for one occurrence.)
//! The claim is keyed by the occurrence the cron expression names, worked out from the local
//! clock by [`occurrence_of_tick`]: replicas whose clocks disagree, or a tick that fires a few
//! milliseconds before its second, still name the same occurrence.

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use super::dispatcher::{Dispatcher, host_id};
use super::{Trigger, TriggerCause};
use crate::jobs::JobName;
use crate::store::schedule_ticks;

/// How early a tick may fire and still stand for the coming occurrence (at most; never more
/// than a quarter of the gap between occurrences). A timer or a clock step can wake a few
/// milliseconds before the second turns; ticks are otherwise late (tokio-cron-scheduler looks
/// every 500 ms), so a tick further before the next occurrence is a late one of the last.
pub const EARLY_TOLERANCE: Duration = Duration::from_secs(1);

/// Parses like the scheduler does (seconds required, UTC), so validation and scheduling agree.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// The occurrence of `cron` a tick stands for that fired when this replica's clock read
/// `fired_at`: the coming occurrence if the tick is early by at most [`EARLY_TOLERANCE`] (and a
/// quarter of the gap since the last occurrence), otherwise the last occurrence at or before
/// `fired_at`, which the tick is late for. `None` only when the expression has no occurrence
/// near `fired_at` at all.
pub fn occurrence_of_tick(cron: &croner::Cron, fired_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Occurrences are whole seconds; searching from the whole second keeps croner's answers so.
    let second = fired_at.trunc_subsecs(0);
    let previous = cron
        .find_previous_occurrence(&second, true)
        .ok()
        .map(|at| at.trunc_subsecs(0));
    let next = cron
        .find_next_occurrence(&second, false)
        .ok()
        .map(|at| at.trunc_subsecs(0));
    match (previous, next) {
        (Some(previous), Some(next)) => {
            let early_by = (next - fired_at).to_std().unwrap_or_default();
            let gap = (next - previous).to_std().unwrap_or_default();
            if early_by <= EARLY_TOLERANCE.min(gap / 4) {
                Some(next)
            } else {
                Some(previous)
            }
        }
        (Some(previous), _) => Some(previous),
        (None, next) => next,
    }
}

/// Claims the occurrence a tick stands for; true when this replica is to run it.
pub async fn claim_tick(
    pool: &PgPool,
    job: JobName,
    cron: &croner::Cron,
    fired_at: DateTime<Utc>,
    host: &str,
) -> Result<bool, sqlx::Error> {
    // No occurrence near the clock (cannot happen for a tick of this expression): fall back to
    // the second, which still claims once per replica clock.
    let occurrence =
        occurrence_of_tick(cron, fired_at).unwrap_or_else(|| fired_at.trunc_subsecs(0));
    schedule_ticks::claim(pool, job.as_str(), occurrence, host).await
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
            let cron = std::sync::Arc::new(
                parse_cron(&expression)
                    .map_err(|error| anyhow::anyhow!("schedule of {job}: {error}"))?,
            );
            let cron_job = CronJob::new_async(expression.as_str(), move |_id, _scheduler| {
                let (dispatcher, pool, host, cron) =
                    (dispatcher.clone(), pool.clone(), host.clone(), cron.clone());
                Box::pin(async move {
                    match claim_tick(&pool, job, &cron, Utc::now(), &host).await {
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

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_tick_just_before_or_after_its_second_is_the_same_occurrence() {
        let every_minute = parse_cron("0 * * * * *").unwrap();
        let occurrence = at("2026-12-03T10:01:00Z");
        for fired in [
            "2026-12-03T10:00:59.995Z",
            "2026-12-03T10:01:00Z",
            "2026-12-03T10:01:00.010Z",
            // Late, even by seconds: still the occurrence it is late for.
            "2026-12-03T10:01:02.500Z",
            "2026-12-03T10:01:40Z",
        ] {
            assert_eq!(
                occurrence_of_tick(&every_minute, at(fired)),
                Some(occurrence),
                "{fired}"
            );
        }
        assert_eq!(
            occurrence_of_tick(&every_minute, at("2026-12-03T10:00:59.100Z")),
            Some(occurrence)
        );
        // More than the tolerance early is not the coming occurrence.
        assert_eq!(
            occurrence_of_tick(&every_minute, at("2026-12-03T10:00:58.500Z")),
            Some(at("2026-12-03T10:00:00Z"))
        );
    }

    #[test]
    fn every_second_schedules_keep_neighbouring_occurrences_apart() {
        let every_second = parse_cron("* * * * * *").unwrap();
        assert_eq!(
            occurrence_of_tick(&every_second, at("2026-12-03T10:00:04.995Z")),
            Some(at("2026-12-03T10:00:05Z"))
        );
        assert_eq!(
            occurrence_of_tick(&every_second, at("2026-12-03T10:00:05.010Z")),
            Some(at("2026-12-03T10:00:05Z"))
        );
        // Half a second late (the scheduler looks every 500 ms) is not the next one yet.
        assert_eq!(
            occurrence_of_tick(&every_second, at("2026-12-03T10:00:05.600Z")),
            Some(at("2026-12-03T10:00:05Z"))
        );
        let every_two = parse_cron("*/2 * * * * *").unwrap();
        assert_eq!(
            occurrence_of_tick(&every_two, at("2026-12-03T10:00:05.995Z")),
            Some(at("2026-12-03T10:00:06Z"))
        );
        assert_eq!(
            occurrence_of_tick(&every_two, at("2026-12-03T10:00:04.999Z")),
            Some(at("2026-12-03T10:00:04Z"))
        );
    }

    #[test]
    fn six_field_expressions_parse_and_garbage_does_not() {
        assert!(parse_cron("*/10 * * * * *").is_ok());
        assert!(parse_cron("0 */15 * * * *").is_ok());
        assert!(parse_cron("61 * * * * *").is_err());
        assert!(parse_cron("every tuesday").is_err());
    }
}
