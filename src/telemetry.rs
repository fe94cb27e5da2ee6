//! Logging: JSON lines (or a human format) to stderr, filtered by `RUST_LOG`.
//! Standard output stays free for command output such as `check-config` and the demo summary.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// What is logged when `RUST_LOG` is unset: our own info, dependencies' warnings.
pub const DEFAULT_FILTER: &str = "warn,partner_sync=info";

/// Installs the global subscriber; `RUST_LOG` wins over `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling into the CLI twice) is harmless, so its error is ignored.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
