//! Triggers and where they come from. Sources (the cron schedule, signals, the CLI) only emit
//! [`Trigger`]s; the [`dispatcher`] owns the one runner per job that executes them.

pub mod dispatcher;
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
}

impl TriggerCause {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerCause::Schedule => "schedule",
            TriggerCause::Startup => "startup",
            TriggerCause::Signal => "signal",
            TriggerCause::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    pub job: JobName,
    pub cause: TriggerCause,
}
