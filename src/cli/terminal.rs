//! How a one-shot command speaks to whoever started it: which log lines it writes by default,
//! and how it ends when it fails — one plain line for a person at a terminal, a JSON line for
//! a script — with the exit code the README documents.

use std::process::ExitCode;

use super::{Command, RabobankCommand};
use crate::settings::SettingsError;
use crate::store::StoreError;
use crate::telemetry::{self, Output};

impl Command {
    /// The command as typed (`sync rabot_mirror`, `rabobank authorize`): the start of its
    /// failure line.
    pub(super) fn label(&self) -> String {
        match self {
            Command::Run => "run".into(),
            Command::Sync { .. } => "sync".into(),
            Command::Migrate { .. } => "migrate".into(),
            Command::CheckConfig => "check-config".into(),
            #[cfg(feature = "sandbox")]
            Command::Sandbox { .. } => "sandbox".into(),
            Command::RotateTokens => "rotate-tokens".into(),
            Command::Resync { .. } => "resync".into(),
            Command::Status { .. } => "status".into(),
            Command::Healthcheck => "healthcheck".into(),
            Command::Rabobank {
                command: RabobankCommand::Authorize { .. },
            } => "rabobank authorize".into(),
            Command::Link { .. } => "link rabot".into(),
            Command::Unlink { .. } => "unlink rabot".into(),
            Command::Forget { .. } => "forget rabot".into(),
            Command::Links { .. } => "links".into(),
            Command::Audit { .. } => "audit".into(),
            Command::Grants { .. } => "grants".into(),
            Command::Completions { .. } => "completions".into(),
            Command::Man => "man".into(),
            #[cfg(feature = "sandbox")]
            Command::Demo { .. } => "demo".into(),
        }
    }

    /// What is logged when `RUST_LOG` is unset. The read-only commands and the demo talk to a
    /// person: only warnings interleave with what they print. At a terminal a pass logs
    /// warnings only, and its run's own error is not logged again: the command's last line
    /// says how the run ended, with that error.
    pub(super) fn default_filter(&self, output: Output) -> &'static str {
        match self {
            // The demo prints what each step did, drift included; warnings would repeat it.
            #[cfg(feature = "sandbox")]
            Command::Demo { .. } => "error",
            Command::CheckConfig
            | Command::Status { .. }
            | Command::Grants { .. }
            | Command::Links { .. }
            | Command::Audit { .. }
            | Command::Resync { .. }
            | Command::Healthcheck
            | Command::Completions { .. }
            | Command::Man => "warn",
            Command::Run => telemetry::DEFAULT_FILTER,
            _ if output == Output::Human => "warn,partner_sync::events::dispatcher=off",
            _ => telemetry::DEFAULT_FILTER,
        }
    }
}

/// Ends a failed command: exit 2 when the settings are unusable (a database URL that does not
/// parse), else 1. A person gets one plain line, `partner-sync: <command>: <cause chain>`; a
/// script the JSON line it always had. Neither holds a secret: no error here quotes a URL or
/// a setting's value.
pub(super) fn report_failure(output: Output, what: &str, error: &anyhow::Error) -> ExitCode {
    let code = if unusable_settings(error) { 2 } else { 1 };
    match output {
        Output::Human => eprintln!("partner-sync: {what}: {}", one_line(error)),
        Output::Json => tracing::error!(command = what, error = format!("{error:#}"), "failed"),
    }
    ExitCode::from(code)
}

/// `error` and its causes, `: `-separated, on one line (a partner's message can hold line
/// breaks; they are shown escaped, like any control character).
pub(super) fn one_line(error: &anyhow::Error) -> String {
    let chain = telemetry::with_causes(error.as_ref());
    crate::status::printable(&chain).into_owned()
}

fn unusable_settings(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<SettingsError>() || matches!(cause.downcast_ref(), Some(StoreError::BadUrl(_)))
    })
}
