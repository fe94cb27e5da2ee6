//! Cron schedules in the configured time zone: one small task per job that sleeps until the
//! next occurrence (worked out by [`crate::cron`]) and emits a trigger. A tick only emits a
//! trigger, so no work lives here and shutdown only has to stop the sleepers.
//! tokio-cron-scheduler, used before, turned the zone into the fixed UTC offset in force when
//! the job was created, so after a daylight-saving change every local schedule ran an hour off
//! until restart.
//!
//! With several replicas every replica's task wakes; the first to claim the occurrence in
//! `sync.schedule_ticks` triggers the run. (The job lock alone would let a quick run end before
//! another replica wakes, and the job would run twice for one occurrence.) The task knows the
//! occurrence it slept for, so replicas whose clocks disagree still claim the same key.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dispatcher::{Dispatcher, host_id};
use super::{Trigger, TriggerCause};
use crate::cron::{following_occurrence, next_occurrence, parse_cron};
use crate::jobs::JobName;
use crate::store::schedule_ticks;

/// The longest single sleep: a wall clock stepped by NTP (or a resumed VM) is noticed within
/// this, so a tick is never an hour late because a monotonic timer was armed for the old time.
const LONGEST_NAP: Duration = Duration::from_secs(30);

/// Claims `occurrence` of `job`; true when this replica is to run it.
pub async fn claim_tick(
    pool: &PgPool,
    job: JobName,
    occurrence: DateTime<Utc>,
    host: &str,
) -> Result<bool, sqlx::Error> {
    schedule_ticks::claim(pool, job.as_str(), occurrence, host).await
}

/// The running schedule: one sleeper task per scheduled job.
pub struct Schedule {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Schedule {
    pub async fn start(
        jobs: impl IntoIterator<Item = (JobName, String)>,
        zone: Tz,
        dispatcher: Dispatcher,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let host = host_id();
        let mut parsed = Vec::new();
        // Parse every expression before starting any, so a bad one starts nothing.
        for (job, expression) in jobs {
            let cron = parse_cron(&expression).with_context(|| format!("schedule of {job}"))?;
            parsed.push((job, expression, cron));
        }
        for (job, expression, cron) in parsed {
            let ticks = Ticks {
                job,
                cron,
                zone,
                dispatcher: dispatcher.clone(),
                pool: pool.clone(),
                host: host.clone(),
            };
            let next = next_occurrence(&ticks.cron, zone, Utc::now());
            tracing::info!(
                %job,
                schedule = %expression,
                timezone = zone.name(),
                next = ?next.map(|at| at.with_timezone(&zone).to_rfc3339()),
                "scheduled"
            );
            tasks.spawn(ticks.run(stop.clone()));
        }
        tasks.close();
        Ok(Self { stop, tasks })
    }

    /// Stops the sleepers; a trigger already emitted stays with the dispatcher.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// One job's sleeper.
struct Ticks {
    job: JobName,
    cron: croner::Cron,
    zone: Tz,
    dispatcher: Dispatcher,
    pool: PgPool,
    host: String,
}

impl Ticks {
    async fn run(self, stop: CancellationToken) {
        let mut next = next_occurrence(&self.cron, self.zone, Utc::now());
        while let Some(occurrence) = next {
            if !sleep_until(occurrence, &stop).await {
                return;
            }
            self.fire(occurrence).await;
            next = following_occurrence(&self.cron, self.zone, occurrence, Utc::now());
        }
        tracing::warn!(job = %self.job, "the schedule has no further occurrence");
    }

    async fn fire(&self, occurrence: DateTime<Utc>) {
        let job = self.job;
        match claim_tick(&self.pool, job, occurrence, &self.host).await {
            Ok(false) => tracing::debug!(%job, "another replica took this tick"),
            Ok(true) => self
                .dispatcher
                .dispatch(Trigger::new(job, TriggerCause::Schedule)),
            // The job lock still prevents overlapping runs; the run reports the outage.
            Err(error) => {
                tracing::warn!(%job, error = %error, "cannot claim the tick; running it");
                self.dispatcher
                    .dispatch(Trigger::new(job, TriggerCause::Schedule));
            }
        }
    }
}

/// Sleeps until the wall clock reads `at`; false when `stop` came first.
async fn sleep_until(at: DateTime<Utc>, stop: &CancellationToken) -> bool {
    loop {
        let Ok(left) = (at - Utc::now()).to_std() else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(left.min(LONGEST_NAP)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tokio_util::sync::CancellationToken;

    use super::sleep_until;

    #[tokio::test]
    async fn sleeping_stops_at_shutdown() {
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!sleep_until(Utc::now() + chrono::Duration::hours(1), &stop).await);
        assert!(
            sleep_until(
                Utc::now() - chrono::Duration::seconds(1),
                &CancellationToken::new()
            )
            .await
        );
    }
}
