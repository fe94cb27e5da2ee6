//! The job table: every job, described once ([`JOBS`]), each runner found in its partner's
//! folder. The [`registry`] decides which jobs the settings enable and on what schedule.

use std::sync::Arc;
use std::time::Duration;

use crate::finance::snapshot_job::MonthEndSnapshot;
use crate::job::Job;
use crate::partners::energyzero::mirror_job::EnergyzeroMirror;
use crate::partners::rabobank::grants::RabobankGrants;
use crate::partners::rabobank::rotation_job::RabobankRotation;
use crate::partners::rabot::consumption_job::RabotConsumption;
use crate::partners::rabot::costs_job::RabotCosts;
use crate::partners::rabot::customer_refresh_job::RabotCustomerRefresh;
use crate::partners::rabot::links::RabotLinks;
use crate::partners::rabot::mirror_job::RabotMirror;
use crate::settings::Settings;

/// Stable job names: they appear in `sync.runs.job`, logs, and advisory-lock keys. What each
/// job is (its name, partner, settings, schedule, runner) is written once, in [`JOBS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobName {
    RabotMirror,
    RabotLinkMirror,
    RabotCustomerRefresh,
    RabotCosts,
    RabotConsumption,
    EnergyzeroMirror,
    RabobankTokenRotation,
    MonthEndSnapshot,
}

/// What starts a job's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// Its cron schedule (and signals, `resync`, `sync`, start-up with `run_on_start`).
    Schedule,
    /// Each completed customer link.
    Link,
    /// One request each (`resync rabot --customer ID`): requests run one by one, never
    /// coalesced, and a run waits for the job lock rather than being skipped while another
    /// replica runs the job (that run does other work).
    Request,
}

/// What the job runners are built from: the clients the daemon's HTTP callbacks share with
/// the jobs (one client and rate limit per partner).
pub struct RunnerParts<'a> {
    pub settings: &'a Settings,
    /// Present when Rabobank is enabled.
    pub rabobank: Option<&'a Arc<RabobankGrants>>,
    /// Present when RABOT is enabled.
    pub rabot: Option<&'a Arc<RabotLinks>>,
}

/// Builds a job's runner; `None` when its partner's clients are not there (the partner is off).
pub type BuildRunner = fn(&RunnerParts<'_>) -> anyhow::Result<Option<Arc<dyn Job>>>;

/// One job, described once: the dispatcher, `sync`, `resync`, `status`, metrics labels,
/// freshness and validation all read this.
pub struct JobSpec {
    pub job: JobName,
    /// The stable name (see [`JobName`]).
    pub name: &'static str,
    /// The partner, which is also the settings section holding `enabled`, `schedule` and
    /// `stale_after`.
    pub partner: &'static str,
    /// The partner name that stands for this job on the command line, if any.
    pub alias: Option<&'static str>,
    /// One line for `--help`.
    pub help: &'static str,
    pub runs_on: RunsOn,
    /// Copies partner data on a schedule: SIGUSR1 and a bare `resync` run it.
    pub mirror: bool,
    pub enabled: fn(&Settings) -> bool,
    /// The cron expression, for a job that runs on a schedule.
    pub schedule: Option<fn(&Settings) -> &str>,
    /// `<partner>.stale_after` as configured.
    pub stale_after: fn(&Settings) -> Option<Duration>,
    /// The runner, when its partner's clients are there.
    pub build: BuildRunner,
}

/// Every job, in the order `status` and `--help` list them.
pub static JOBS: [JobSpec; 8] = [
    JobSpec {
        job: JobName::RabotMirror,
        name: "rabot_mirror",
        partner: "rabot",
        alias: Some("rabot"),
        help: "RABOT customers and contracts, on rabot.schedule",
        runs_on: RunsOn::Schedule,
        mirror: true,
        enabled: |s| s.rabot.enabled,
        schedule: Some(|s| &s.rabot.schedule),
        stale_after: |s| s.rabot.stale_after,
        build: |parts| {
            Ok(parts.rabot.map(|rabot| {
                Arc::new(RabotMirror::scheduled(
                    parts.settings,
                    rabot.client().clone(),
                )) as Arc<dyn Job>
            }))
        },
    },
    // Triggered by each completed link, never by the clock: the scheduled mirror catches up
    // links whose trigger was lost (a replica stopped, or the job was busy elsewhere).
    JobSpec {
        job: JobName::RabotLinkMirror,
        name: "rabot_link_mirror",
        partner: "rabot",
        alias: None,
        help: "RABOT customers linked since the last pass",
        runs_on: RunsOn::Link,
        mirror: false,
        enabled: |s| s.rabot.enabled,
        schedule: None,
        stale_after: |_| None,
        build: |parts| {
            Ok(parts.rabot.map(|rabot| {
                Arc::new(RabotMirror::newly_linked(
                    parts.settings,
                    rabot.client().clone(),
                )) as Arc<dyn Job>
            }))
        },
    },
    JobSpec {
        job: JobName::RabotCustomerRefresh,
        name: "rabot_customer_refresh",
        partner: "rabot",
        alias: None,
        help: "one RABOT customer now: `resync rabot --customer ID`",
        runs_on: RunsOn::Request,
        mirror: false,
        enabled: |s| s.rabot.enabled,
        schedule: None,
        stale_after: |_| None,
        build: |parts| {
            Ok(parts.rabot.map(|rabot| {
                Arc::new(RabotCustomerRefresh::new(
                    parts.settings,
                    rabot.client().clone(),
                )) as Arc<dyn Job>
            }))
        },
    },
    // Prices change rarely and each contract costs a request: a schedule of its own, and
    // `rabot` on the command line keeps meaning the customer and contract mirror.
    JobSpec {
        job: JobName::RabotCosts,
        name: "rabot_costs",
        partner: "rabot",
        alias: None,
        help: "RABOT contract price components, on rabot.costs_schedule",
        runs_on: RunsOn::Schedule,
        mirror: true,
        enabled: |s| s.rabot.enabled,
        schedule: Some(|s| &s.rabot.costs_schedule),
        // rabot.stale_after is set for the frequent mirror; this job's threshold follows its
        // own schedule (2 × its longest gap).
        stale_after: |_| None,
        build: |parts| {
            Ok(parts.rabot.map(|rabot| {
                Arc::new(RabotCosts::new(parts.settings, rabot.client().clone())) as Arc<dyn Job>
            }))
        },
    },
    // One request per contract, and most periods never change once Final: a daily schedule
    // of its own, after the costs job's.
    JobSpec {
        job: JobName::RabotConsumption,
        name: "rabot_consumption",
        partner: "rabot",
        alias: None,
        help: "RABOT contract consumption, on rabot.consumption_schedule",
        runs_on: RunsOn::Schedule,
        mirror: true,
        enabled: |s| s.rabot.enabled,
        schedule: Some(|s| &s.rabot.consumption_schedule),
        stale_after: |_| None,
        build: |parts| {
            Ok(parts.rabot.map(|rabot| {
                Arc::new(RabotConsumption::new(
                    parts.settings,
                    rabot.client().clone(),
                )) as Arc<dyn Job>
            }))
        },
    },
    JobSpec {
        job: JobName::EnergyzeroMirror,
        name: "energyzero_mirror",
        partner: "energyzero",
        alias: Some("energyzero"),
        help: "EnergyZero contracts, on energyzero.schedule",
        runs_on: RunsOn::Schedule,
        mirror: true,
        enabled: |s| s.energyzero.enabled,
        schedule: Some(|s| &s.energyzero.schedule),
        stale_after: |s| s.energyzero.stale_after,
        build: |parts| {
            if !parts.settings.energyzero.enabled {
                return Ok(None);
            }
            let job = EnergyzeroMirror::new(parts.settings)?;
            Ok(Some(Arc::new(job) as Arc<dyn Job>))
        },
    },
    JobSpec {
        job: JobName::RabobankTokenRotation,
        name: "rabobank_token_rotation",
        partner: "rabobank",
        alias: Some("rabobank"),
        help: "Rabobank token rotation, on rabobank.schedule",
        runs_on: RunsOn::Schedule,
        mirror: false,
        enabled: |s| s.rabobank.enabled,
        schedule: Some(|s| &s.rabobank.schedule),
        stale_after: |s| s.rabobank.stale_after,
        build: |parts| {
            Ok(parts.rabobank.map(|grants| {
                Arc::new(RabobankRotation::new(parts.settings, grants.clone())) as Arc<dyn Job>
            }))
        },
    },
    // Not a partner's: it freezes the RABOT mirror's closed months (so only while RABOT is
    // mirrored) and applies `[retention]` after them, so no month loses history before it is
    // frozen. Its section is `[month_end]`.
    JobSpec {
        job: JobName::MonthEndSnapshot,
        name: "month_end_snapshot",
        partner: "month_end",
        alias: None,
        help: "freeze closed months' RABOT contracts, then apply retention, on month_end.schedule",
        runs_on: RunsOn::Schedule,
        mirror: false,
        enabled: |s| s.month_end.enabled && s.rabot.enabled,
        schedule: Some(|s| &s.month_end.schedule),
        stale_after: |_| None,
        build: |parts| {
            Ok(is_enabled(parts.settings, JobName::MonthEndSnapshot)
                .then(|| Arc::new(MonthEndSnapshot::new(parts.settings)) as Arc<dyn Job>))
        },
    },
];

impl JobName {
    /// Every job, in [`JOBS`] order.
    pub fn all() -> impl Iterator<Item = JobName> + Clone {
        JOBS.iter().map(|spec| spec.job)
    }

    pub fn spec(self) -> &'static JobSpec {
        // `JOBS` lists the variants in declaration order (a unit test checks), so a job's
        // discriminant is its place in the table; no search, and no fallback that could name
        // the wrong job.
        &JOBS[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(name: &str) -> Option<JobName> {
        JOBS.iter()
            .find(|spec| spec.name == name)
            .map(|spec| spec.job)
    }

    /// Partner names the commands accept, each standing for that partner's scheduled job
    /// (RABOT's link mirror runs only when a link completes, so `rabot` is its scheduled
    /// mirror).
    pub fn aliases() -> impl Iterator<Item = (&'static str, JobName)> {
        JOBS.iter().filter_map(|spec| Some((spec.alias?, spec.job)))
    }

    /// A job as an operator names it on the command line: a partner name (see
    /// [`Self::aliases`]) or a job name.
    pub fn from_cli_name(name: &str) -> Option<JobName> {
        Self::aliases()
            .find(|(alias, _)| *alias == name)
            .map(|(_, job)| job)
            .or_else(|| Self::parse(name))
    }

    /// Every name [`Self::from_cli_name`] accepts: partner names first, then job names.
    pub fn cli_names() -> impl Iterator<Item = &'static str> {
        Self::aliases()
            .map(|(alias, _)| alias)
            .chain(JOBS.iter().map(|spec| spec.name))
    }

    /// Jobs that copy partner data on a schedule (SIGUSR1 and a bare `resync` run these).
    pub fn is_mirror(self) -> bool {
        self.spec().mirror
    }

    /// Jobs with a cron schedule; the others run only when an event asks (a completed link, a
    /// customer's refresh requested).
    pub fn is_scheduled(self) -> bool {
        self.spec().runs_on == RunsOn::Schedule
    }

    /// Jobs whose every run is one request's own work: see [`RunsOn::Request`].
    pub fn serves_one_request_per_run(self) -> bool {
        self.spec().runs_on == RunsOn::Request
    }

    pub fn partner(self) -> &'static str {
        self.spec().partner
    }
}

/// Every partner, in [`JOBS`] order (the order `status` shows them in).
pub fn partners() -> Vec<&'static str> {
    let mut partners: Vec<&'static str> = Vec::new();
    for spec in &JOBS {
        if !partners.contains(&spec.partner) {
            partners.push(spec.partner);
        }
    }
    partners
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the settings enable the job.
pub fn is_enabled(settings: &Settings, job: JobName) -> bool {
    (job.spec().enabled)(settings)
}

/// The job's cron expression when the settings enable it and it runs on a schedule.
pub fn schedule_of(settings: &Settings, job: JobName) -> Option<String> {
    let schedule = job.spec().schedule?;
    is_enabled(settings, job).then(|| schedule(settings).to_owned())
}

/// A job with the cron expression that triggers it; `None` for a job only events trigger.
#[derive(Clone)]
pub struct ScheduledJob {
    pub name: JobName,
    pub job: Arc<dyn Job>,
    pub schedule: Option<String>,
}

/// The jobs the settings enable, each built from `parts` (see [`JobSpec::build`]).
pub fn registry(parts: &RunnerParts<'_>) -> anyhow::Result<Vec<ScheduledJob>> {
    let mut jobs = Vec::new();
    for spec in &JOBS {
        if let Some(job) = (spec.build)(parts)? {
            jobs.push(ScheduledJob {
                name: spec.job,
                job,
                schedule: schedule_of(parts.settings, spec.job),
            });
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_job_once_under_a_unique_snake_case_name() {
        let variants: std::collections::BTreeSet<_> = JobName::all().collect();
        assert_eq!(variants.len(), JOBS.len(), "a job listed twice");
        for (place, spec) in JOBS.iter().enumerate() {
            assert_eq!(
                spec.job as usize, place,
                "{} is out of declaration order",
                spec.name
            );
            assert_eq!(spec.job.spec().name, spec.name);
            assert!(
                spec.name.starts_with(spec.partner),
                "{} of {}",
                spec.name,
                spec.partner
            );
            assert_eq!(
                spec.schedule.is_some(),
                spec.runs_on == RunsOn::Schedule,
                "{}",
                spec.name
            );
        }
        // Every variant is in the table. (A new variant breaks this match, the reminder to
        // add it to the list below and to `JOBS`.)
        let in_table = |job: JobName| match job {
            JobName::RabotMirror
            | JobName::RabotLinkMirror
            | JobName::RabotCustomerRefresh
            | JobName::RabotCosts
            | JobName::RabotConsumption
            | JobName::RabobankTokenRotation
            | JobName::EnergyzeroMirror
            | JobName::MonthEndSnapshot => JOBS.iter().any(|spec| spec.job == job),
        };
        for job in [
            JobName::RabotMirror,
            JobName::RabotLinkMirror,
            JobName::RabotCustomerRefresh,
            JobName::RabotCosts,
            JobName::RabotConsumption,
            JobName::EnergyzeroMirror,
            JobName::RabobankTokenRotation,
            JobName::MonthEndSnapshot,
        ] {
            assert!(in_table(job), "{job:?} is not in JOBS");
        }
        let names: std::collections::BTreeSet<_> = JOBS.iter().map(|spec| spec.name).collect();
        assert_eq!(names.len(), JOBS.len());
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn every_default_schedule_parses() {
        let defaults = Settings::load_from(None, std::iter::empty()).unwrap();
        for spec in &JOBS {
            if let Some(schedule) = spec.schedule {
                let expression = schedule(&defaults);
                assert!(
                    crate::cron::parse_cron(expression).is_ok(),
                    "{}: {expression:?}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn partner_names_stand_for_their_scheduled_job_and_job_names_for_themselves() {
        assert_eq!(JobName::from_cli_name("rabot"), Some(JobName::RabotMirror));
        assert_eq!(
            JobName::from_cli_name("energyzero"),
            Some(JobName::EnergyzeroMirror)
        );
        assert_eq!(
            JobName::from_cli_name("rabobank"),
            Some(JobName::RabobankTokenRotation)
        );
        for job in JobName::all() {
            assert_eq!(JobName::from_cli_name(job.as_str()), Some(job));
        }
        for (partner, job) in JobName::aliases() {
            assert_eq!(job.partner(), partner);
            assert!(job.is_scheduled());
        }
        assert_eq!(JobName::from_cli_name("Rabot"), None);
        assert_eq!(JobName::from_cli_name(""), None);
        assert_eq!(JobName::cli_names().count(), 11);
        // The costs job has no partner name of its own: `rabot` stays the mirror.
        assert_eq!(
            JobName::from_cli_name("rabot_costs"),
            Some(JobName::RabotCosts)
        );
        assert!(JobName::RabotCosts.is_mirror() && JobName::RabotCosts.is_scheduled());
        assert_eq!(
            JobName::from_cli_name("rabot_consumption"),
            Some(JobName::RabotConsumption)
        );
        assert!(JobName::RabotConsumption.is_mirror() && JobName::RabotConsumption.is_scheduled());
    }
}
