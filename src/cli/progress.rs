//! A one-shot pass at a terminal: a spinner with the run's counts while it works, and one
//! summary line when it succeeds. Without a terminal nothing is drawn (the JSON log already
//! holds the run's start and end).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::store::runs::RunCounts;

/// Draws `counts` as they change until the sender is dropped (the run ended), then clears the
/// spinner so the summary line stands alone.
pub(super) async fn show(mut counts: watch::Receiver<RunCounts>) {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message("starting");
    while counts.changed().await.is_ok() {
        let c = *counts.borrow();
        spinner.set_message(format!(
            "{} requests, {} fetched: {} inserted, {} updated, {} unchanged{}",
            c.requests,
            c.fetched,
            c.inserted,
            c.updated,
            c.unchanged,
            if c.failed > 0 {
                format!(", {} failed", c.failed)
            } else {
                String::new()
            }
        ));
    }
    spinner.finish_and_clear();
}

/// `rabot_mirror run 12 succeeded in 1.4s: 40 requests, fetched 60, inserted 2, …`, and the
/// partial failure the run reported, if any (at a terminal the run's own warning is not
/// logged, so this line is where it shows).
pub(super) fn summary(
    job: impl std::fmt::Display,
    run_id: i64,
    started: Instant,
    counts: &RunCounts,
    error: Option<&str>,
) -> String {
    let named = [
        ("fetched", counts.fetched),
        ("inserted", counts.inserted),
        ("updated", counts.updated),
        ("unchanged", counts.unchanged),
        ("deleted", counts.deleted),
        ("skipped", counts.skipped),
        ("failed", counts.failed),
    ];
    let mut parts = vec![format!("{} requests", counts.requests)];
    parts.extend(
        named
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(name, n)| format!("{name} {n}")),
    );
    let partial = error
        .map(|e| format!("; {}", crate::status::printable(e)))
        .unwrap_or_default();
    format!(
        "{job} run {run_id} succeeded in {:.1}s: {}{partial}",
        started.elapsed().as_secs_f64(),
        parts.join(", ")
    )
}
