//! Triggers and where they come from. Sources (the cron schedule, signals, NOTIFY, the CLI)
//! only emit [`Trigger`]s or [`Control`] events; the [`dispatcher`] owns the one runner per job
//! that executes them.

pub mod dispatcher;
pub mod notify;
pub mod schedule;
pub mod signals;

use crate::jobs::JobName;

/// Why a run started; recorded in `sync.runs.cause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerCause {
    Schedule,
    Startup,
    Signal,
    Cli,
    /// `partner-sync resync`, through Postgres NOTIFY.
    Notify,
    /// A customer completed a link on this replica's redirect endpoint.
    Link,
}

impl TriggerCause {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerCause::Schedule => "schedule",
            TriggerCause::Startup => "startup",
            TriggerCause::Signal => "signal",
            TriggerCause::Cli => "cli",
            TriggerCause::Notify => "notify",
            TriggerCause::Link => "link",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    pub job: JobName,
    pub cause: TriggerCause,
    /// The `sync.trigger_requests` row this trigger answers, so `resync --wait` finds its run.
    pub request: Option<uuid::Uuid>,
}

impl Trigger {
    pub fn new(job: JobName, cause: TriggerCause) -> Self {
        Self {
            job,
            cause,
            request: None,
        }
    }
}

/// What the daemon's control loop is asked to do, by signals and NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGUSR1: resync every mirror job now.
    ResyncMirrors,
    /// SIGUSR2: run the token rotation now.
    RotateTokens,
    /// SIGHUP: load the configuration again.
    Reload,
    /// A `partner-sync resync` request (a `sync.trigger_requests` id) arrived by NOTIFY.
    Request(uuid::Uuid),
    /// A customer link completed: mirror the new customer now.
    CustomerLinked,
}
