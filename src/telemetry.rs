//! Logging: JSON lines (or a human format) to stderr, filtered by `RUST_LOG`.
//! Standard output stays free for command output such as `check-config` and the demo summary.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// What `log.format` (or `--log-format`) comes to for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JSON lines, for log collectors and scripts.
    Json,
    /// Lines for a person; a failing command ends with one plain line.
    Human,
}

impl Output {
    /// `auto` is human-readable only for a one-shot command whose stderr is a terminal: the
    /// daemon's lines go to a collector even when started by hand, unless told `pretty`.
    pub fn resolve(format: LogFormat, daemon: bool) -> Self {
        match format {
            LogFormat::Json => Output::Json,
            LogFormat::Pretty => Output::Human,
            LogFormat::Auto if !daemon && std::io::stderr().is_terminal() => Output::Human,
            LogFormat::Auto => Output::Json,
        }
    }
}

/// What is logged when `RUST_LOG` is unset: our own info, dependencies' warnings.
pub const DEFAULT_FILTER: &str = "warn,partner_sync=info";

/// Installs the global subscriber; `RUST_LOG` wins over `default_filter`.
pub fn init(output: Output, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AroundProgress);
    // A second init (tests calling into the CLI twice) is harmless, so its error is ignored.
    let _ = match output {
        Output::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .try_init(),
        Output::Human => builder.try_init(),
    };
}

/// The progress line drawn on stderr now, if any (see [`draw_progress`]).
static PROGRESS: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Makes `bar` the line log lines are written above: while it is drawn, each log line clears
/// it, is written, and has it drawn again below, instead of being written into its middle.
/// `None` when it is gone.
pub fn draw_progress(bar: Option<indicatif::ProgressBar>) {
    *PROGRESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bar;
}

/// stderr, around the progress line. The fmt layer writes each event with one `write_all`.
struct AroundProgress;

impl std::io::Write for AroundProgress {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let bar = PROGRESS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `error` and each of its causes, `: `-separated: how an error is written into a log field, a
/// run's `error` column or an answer. Each error's own message names only itself, so every
/// cause appears once (as anyhow's `{:#}` writes them).
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn the_daemon_logs_json_unless_told_pretty() {
        assert_eq!(Output::resolve(LogFormat::Auto, true), Output::Json);
        assert_eq!(Output::resolve(LogFormat::Json, false), Output::Json);
        assert_eq!(Output::resolve(LogFormat::Pretty, true), Output::Human);
    }

    #[test]
    fn every_cause_is_written_once_in_order() {
        let error = Outer(Inner(std::io::Error::other("root")));
        assert_eq!(with_causes(&error), "outer: inner: root");
        assert_eq!(with_causes(&std::io::Error::other("alone")), "alone");
    }
}
