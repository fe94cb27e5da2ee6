//! A pass run for a person (`sync`, `rotate-tokens`, the demo): a spinner with the run's counts
//! and its estimate of what is left while it works, and one summary line when it succeeds.
//! Without a terminal nothing is drawn (the JSON log already holds the run's start and end).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::thousands;
use crate::store::runs::RunCounts;

/// Draws `counts` as they change until the sender is dropped (the run ended), then clears the
/// spinner so the summary line stands alone.
pub async fn show(mut counts: watch::Receiver<RunCounts>) {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        // `wide_msg`: cut at the terminal's width rather than wrapped, so the line is redrawn
        // in place; what matters most comes first.
        ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message("starting");
    crate::telemetry::draw_progress(Some(spinner.clone()));
    while counts.changed().await.is_ok() {
        let line = line(&counts.borrow());
        spinner.set_message(line);
    }
    crate::telemetry::draw_progress(None);
    spinner.finish_and_clear();
}

/// `1,200 of 30,000 customers, ~48m left; 1,212 requests, throttled 3; fetched 3,600: inserted
/// 3,600, …`: where the run is, by its own estimate once it has one, then its counts in the
/// summary's words.
fn line(c: &RunCounts) -> String {
    let remaining = c
        .remaining
        .map(|r| {
            format!(
                "{} of {} {}, ~{} left; ",
                thousands(r.done),
                thousands(r.total),
                r.what,
                about(r.time_left)
            )
        })
        .unwrap_or_default();
    let mut counts = vec![format!("{} requests", thousands(c.requests))];
    if c.throttled > 0 {
        counts.push(format!("throttled {}", thousands(c.throttled)));
    }
    let mut rows = vec![
        format!("inserted {}", thousands(c.inserted)),
        format!("updated {}", thousands(c.updated)),
        format!("unchanged {}", thousands(c.unchanged)),
    ];
    if c.failed > 0 {
        rows.push(format!("failed {}", thousands(c.failed)));
    }
    format!(
        "{remaining}{}; fetched {}: {}",
        counts.join(", "),
        thousands(c.fetched),
        rows.join(", ")
    )
}

/// A time left as a person reads an estimate: seconds under two minutes, then minutes, then
/// hours and minutes.
fn about(left: Duration) -> String {
    let seconds = left.as_secs();
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", (seconds + 30) / 60),
        _ => format!("{}h {:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// `rabot_mirror run 12 succeeded in 1.4s: 40 requests, fetched 60, inserted 2, …`, and the
/// partial failure the run reported, if any (at a terminal the run's own warning is not
/// logged, so this line is where it shows).
pub fn summary(
    job: impl std::fmt::Display,
    run_id: i64,
    started: Instant,
    counts: &RunCounts,
    error: Option<&str>,
) -> String {
    let partial = error
        .map(|e| format!("; {}", super::printable(e)))
        .unwrap_or_default();
    format!(
        "{job} run {run_id} succeeded in {:.1}s: {}{partial}",
        started.elapsed().as_secs_f64(),
        counts.summary()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runs::Remaining;

    #[test]
    fn the_line_leads_with_the_estimate_once_the_run_has_one() {
        let mut counts = RunCounts {
            requests: 1212,
            throttled: 3,
            fetched: 3600,
            inserted: 3600,
            ..RunCounts::default()
        };
        assert_eq!(
            line(&counts),
            "1,212 requests, throttled 3; fetched 3,600: inserted 3,600, updated 0, unchanged 0"
        );
        // 1,200 customers took 1,212 requests; 28,800 more at 10 requests/s.
        counts.remaining = Some(Remaining::at_rate("customers", 1200, 30_000, 1212, 10.0));
        assert!(
            line(&counts).starts_with("1,200 of 30,000 customers, ~48m left; 1,212 requests"),
            "{}",
            line(&counts)
        );
    }

    #[test]
    fn time_left_reads_as_seconds_minutes_then_hours() {
        assert_eq!(about(Duration::from_secs(0)), "0s");
        assert_eq!(about(Duration::from_secs(119)), "119s");
        assert_eq!(about(Duration::from_secs(150)), "3m");
        assert_eq!(about(Duration::from_secs(7199)), "120m");
        assert_eq!(about(Duration::from_secs(3 * 3600 + 5 * 60)), "3h 05m");
    }
}
