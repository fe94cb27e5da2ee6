//! Freshness: how recent each job's last complete pass is, judged against the job's stale
//! threshold. The `/metrics` gauges and `partner-sync status` both judge here, so they agree.
//!
//! A complete pass is a run that `succeeded` with no partial failure recorded (`error` IS
//! NULL): a mirror pass in which some users failed did not bring their data up to date.
//! Staleness is for alerts only; `/readyz` never looks at it (see `server::ops`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::cron::{longest_gap, parse_cron};
use crate::jobs::{self, JobName};
use crate::metrics::JobGauges;
use crate::settings::Settings;
use crate::store::runs;

/// A job and the threshold it is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub job: JobName,
    /// `None` for a job that is off or runs only when an event asks: it is never stale.
    pub stale_after: Option<Duration>,
}

impl Policy {
    pub fn of(settings: &Settings, job: JobName) -> Self {
        Self {
            job,
            stale_after: stale_after(settings, job),
        }
    }

    /// The policies of the jobs `settings` enable.
    pub fn enabled(settings: &Settings) -> Vec<Self> {
        JobName::all()
            .filter(|&job| jobs::is_enabled(settings, job))
            .map(|job| Self::of(settings, job))
            .collect()
    }
}

/// `<partner>.stale_after` when set, otherwise 2 × the schedule's interval (its longest gap
/// between two runs: a daily job is stale after 48 h). `None` when the job is off or has no
/// schedule.
pub fn stale_after(settings: &Settings, job: JobName) -> Option<Duration> {
    let expression = jobs::schedule_of(settings, job)?;
    (job.spec().stale_after)(settings).or_else(|| {
        let cron = parse_cron(&expression).ok()?;
        Some(2 * longest_gap(&cron, settings.daemon.timezone, Utc::now())?)
    })
}

/// One job's freshness, read now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Freshness {
    #[serde(skip)]
    pub job: JobName,
    /// The threshold in force; `None`: never judged stale.
    #[serde(rename = "stale_after_s", with = "seconds")]
    pub stale_after: Option<Duration>,
    /// When the last complete pass ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Seconds since then, by the database's clock.
    #[serde(rename = "last_success_age_s")]
    pub last_success_age: Option<f64>,
    /// Failed runs since the last succeeded one.
    pub consecutive_failures: i64,
}

impl Freshness {
    /// `Some(true)` when the last complete pass is older than the threshold, or there never was
    /// one; `None` when the job has no threshold.
    pub fn stale(&self) -> Option<bool> {
        let threshold = self.stale_after?.as_secs_f64();
        Some(self.last_success_age.is_none_or(|age| age > threshold))
    }

    /// When a stale job turned stale (its last complete pass's end plus the threshold); `None`
    /// when it is not stale or never had a complete pass.
    pub fn stale_since(&self) -> Option<DateTime<Utc>> {
        if self.stale() != Some(true) {
            return None;
        }
        let threshold = chrono::Duration::from_std(self.stale_after?).ok()?;
        self.last_success_at?.checked_add_signed(threshold)
    }

    /// The values of the freshness gauges.
    pub fn gauges(&self) -> JobGauges {
        JobGauges {
            job: self.job.as_str(),
            last_success: self
                .last_success_at
                .zip(self.last_success_age)
                .map(|(at, age)| (at.timestamp_micros() as f64 / 1e6, age)),
            stale: self
                .stale()
                .zip(self.stale_after)
                .map(|(stale, threshold)| (stale, threshold.as_secs_f64())),
            consecutive_failures: self.consecutive_failures,
        }
    }
}

/// The freshness of each job in `policies`, in that order.
pub async fn read(pool: &PgPool, policies: &[Policy]) -> Result<Vec<Freshness>, sqlx::Error> {
    let names: Vec<&str> = policies.iter().map(|p| p.job.as_str()).collect();
    let recency = runs::recency(pool, &names).await?;
    Ok(policies
        .iter()
        .zip(recency)
        .map(|(policy, row)| Freshness {
            job: policy.job,
            stale_after: policy.stale_after,
            last_success_at: row.last_success_at,
            last_success_age: row.last_success_age_s,
            consecutive_failures: row.consecutive_failures,
        })
        .collect())
}

/// A threshold as whole seconds in JSON.
mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_some(&duration.as_secs()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let mut all = vec![
            ("PARTNER_SYNC__RABOT__ENABLED", "true"),
            ("PARTNER_SYNC__RABOT__CLIENT_ID", "id"),
            ("PARTNER_SYNC__RABOT__CLIENT_SECRET", "secret"),
        ];
        all.extend_from_slice(env);
        Settings::load_from(
            None,
            all.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap()
    }

    fn freshness(stale_after: Option<u64>, age: Option<f64>) -> Freshness {
        let at = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Freshness {
            job: JobName::RabotMirror,
            stale_after: stale_after.map(Duration::from_secs),
            last_success_at: age.map(|_| at),
            last_success_age: age,
            consecutive_failures: 0,
        }
    }

    #[test]
    fn the_threshold_is_twice_the_interval_unless_configured() {
        let defaults = settings(&[]);
        let minutes = |job| stale_after(&defaults, job).map(|d| d.as_secs() / 60);
        // rabot.schedule: every 15 minutes.
        assert_eq!(minutes(JobName::RabotMirror), Some(30));
        // Events only, or off.
        assert_eq!(minutes(JobName::RabotLinkMirror), None);
        assert_eq!(minutes(JobName::RabobankTokenRotation), None);
        assert_eq!(minutes(JobName::RabotCustomerRefresh), None);
        // Only RABOT is on: its jobs, scheduled or not, and the month-end snapshot of its
        // contracts.
        assert_eq!(
            Policy::enabled(&defaults)
                .iter()
                .map(|p| p.job)
                .collect::<Vec<_>>(),
            JobName::all()
                .filter(|&j| j.partner() == "rabot" || j == JobName::MonthEndSnapshot)
                .collect::<Vec<_>>()
        );

        let daily = settings(&[("PARTNER_SYNC__RABOT__SCHEDULE", "0 17 3 * * *")]);
        assert_eq!(
            stale_after(&daily, JobName::RabotMirror),
            Some(Duration::from_secs(48 * 3600))
        );
        let configured = settings(&[("PARTNER_SYNC__RABOT__STALE_AFTER", "6h")]);
        assert_eq!(
            stale_after(&configured, JobName::RabotMirror),
            Some(Duration::from_secs(6 * 3600))
        );
    }

    #[test]
    fn stale_past_the_threshold_or_never_complete() {
        assert_eq!(freshness(Some(60), Some(59.0)).stale(), Some(false));
        assert_eq!(freshness(Some(60), Some(61.0)).stale(), Some(true));
        assert_eq!(freshness(Some(60), None).stale(), Some(true));
        assert_eq!(freshness(None, None).stale(), None);
        assert_eq!(freshness(Some(60), Some(59.0)).stale_since(), None);
        assert_eq!(
            freshness(Some(60), Some(61.0)).stale_since().unwrap(),
            DateTime::parse_from_rfc3339("2026-12-03T10:01:00Z").unwrap()
        );
        assert_eq!(freshness(Some(60), None).stale_since(), None);

        let gauges = freshness(Some(60), Some(61.0)).gauges();
        assert_eq!(gauges.last_success, Some((1_796_292_000.0, 61.0)));
        assert_eq!(gauges.stale, Some((true, 60.0)));
        assert_eq!(freshness(None, None).gauges().stale, None);
    }
}
