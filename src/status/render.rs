//! The tables of `status` (one per partner), `grants` and `links`. Every text that came from
//! outside goes through [`printable`].

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::table::{Align, Cell, Table, Tone};
use super::{JobStatus, StatusReport};
use crate::jobs::{self, RunsOn};
use crate::partners::rabobank::grant_store::GrantSummary;
use crate::partners::rabobank::{PARTNER as RABOBANK, REFRESH_LIMIT};
use crate::partners::rabot::link_store::LinkRow;
use crate::store::audit::AuditRow;
use crate::store::runs::RunRow;

const INDENT: usize = 2;

/// `text` safe to print on a terminal: control characters (newlines, escape sequences, C1
/// codes) and the invisible characters that reorder text (bidi overrides, zero-width marks)
/// are written as Rust escapes (`\n`, `\u{1b}`), everything else as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A point in time as the report shows it: in `daemon.timezone`, the zone the schedules are
/// read in, with the zone's abbreviation (`CET`, `CEST`, `UTC`).
fn when(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// `4096` → `4,096`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn took(duration: Duration) -> String {
    if duration < Duration::from_secs(60) {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
    }
}

/// "in 29 days", "in <1 day", or "expired" (red).
fn days_left(until: DateTime<Utc>, now: DateTime<Utc>) -> Cell {
    let seconds = (until - now).num_seconds();
    match seconds / 86_400 {
        _ if seconds <= 0 => Cell::new("expired", Tone::Bad),
        0 => Cell::plain("in <1 day"),
        1 => Cell::plain("in 1 day"),
        days => Cell::plain(format!("in {} days", thousands(days))),
    }
}

/// Drift lines `status` shows before it points to `--json`.
const MAX_DRIFT_LINES: usize = 20;

impl StatusReport {
    /// One table per partner (of the jobs in the report), the grants under Rabobank, then the
    /// recent failures. `colour`: see [`super::colour_wanted`].
    pub fn render_table(&self, colour: bool) -> String {
        let mut out = format!(
            "partner-sync status at {}\n",
            when(self.generated_at, self.timezone)
        );
        for partner in jobs::partners() {
            let jobs: Vec<&JobStatus> = self
                .jobs
                .iter()
                .filter(|j| j.freshness.facts.job.partner() == partner)
                .collect();
            let Some(first) = jobs.first() else {
                continue;
            };
            out.push('\n');
            out.push_str(&partner.to_ascii_uppercase());
            if !first.enabled {
                out.push_str(&format!(" (off: {partner}.enabled = false)"));
            }
            out.push('\n');
            out.push_str(&self.jobs_table(&jobs).render(INDENT, colour));
            if partner == RABOBANK {
                out.push('\n');
                if self.grants.is_empty() {
                    out.push_str(
                        "  no grants: connect one with `partner-sync rabobank authorize`\n",
                    );
                } else {
                    out.push_str(&self.grants_table().render(INDENT, colour));
                }
            }
        }
        out.push_str(&self.drift_lines());
        out.push_str("\nRECENT FAILURES\n");
        if self.recent_failures.is_empty() {
            out.push_str("  (none)\n");
        }
        for r in &self.recent_failures {
            out.push_str(&format!(
                "  {} {} run {} ({}): {}\n",
                when(r.started_at, self.timezone),
                printable(&r.job),
                r.id,
                printable(&r.cause),
                printable(r.error.as_deref().unwrap_or(""))
            ));
        }
        out
    }

    /// The schema drift section: nothing when there was none.
    fn drift_lines(&self) -> String {
        if self.drift.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "\nSCHEMA DRIFT (last {} days: names the typed columns do not know, kept in raw)\n",
            super::DRIFT_WINDOW.num_days()
        );
        for seen in self.drift.iter().take(MAX_DRIFT_LINES) {
            out.push_str(&format!(
                "  {} {}: {} ({} items in {} runs, last {})\n",
                printable(&seen.job),
                printable(&seen.place),
                printable(&seen.name),
                thousands(seen.items),
                thousands(seen.runs),
                when(seen.last_seen, self.timezone)
            ));
        }
        if self.drift.len() > MAX_DRIFT_LINES {
            out.push_str(&format!(
                "  … and {} more (`status --json` lists them all)\n",
                self.drift.len() - MAX_DRIFT_LINES
            ));
        }
        out
    }

    fn jobs_table(&self, jobs: &[&JobStatus]) -> Table {
        let mut table = Table::new(&[
            ("JOB", Align::Left),
            ("LAST RUN", Align::Left),
            ("RESULT", Align::Left),
            ("DURATION", Align::Right),
            ("INSERTED", Align::Right),
            ("UPDATED", Align::Right),
            ("TOMBSTONED", Align::Right),
            ("NEXT RUN", Align::Left),
            ("FRESHNESS", Align::Left),
        ]);
        for job in jobs {
            let run = job.last_run.as_ref();
            let count =
                |n: fn(&RunRow) -> i64| Cell::plain(run.map_or("-".into(), |r| thousands(n(r))));
            table.row(vec![
                Cell::plain(job.job),
                Cell::plain(run.map_or("never".into(), |r| when(r.started_at, self.timezone))),
                result(job),
                Cell::plain(run.and_then(RunRow::duration).map_or("-".into(), took)),
                count(|r| r.inserted),
                count(|r| r.updated),
                count(|r| r.deleted),
                Cell::plain(next_run(job, self.timezone)),
                freshness(job, self.timezone),
            ]);
        }
        table
    }

    fn grants_table(&self) -> Table {
        let mut table = Table::new(&[
            ("GRANT", Align::Left),
            ("STATE", Align::Left),
            ("REFRESH TOKEN", Align::Left),
            ("CONSENT", Align::Left),
            ("REFRESHES LEFT", Align::Right),
            ("LAST ERROR", Align::Left),
        ]);
        let now = self.generated_at;
        for g in self.grants.iter().filter(|g| g.provider == RABOBANK) {
            let active = g.status == "active";
            let state = match &g.in_doubt_reason {
                Some(reason) => format!("{} ({reason})", g.state),
                None => g.state.clone(),
            };
            let tone = match g.state.as_str() {
                "active" => Tone::Good,
                "refreshing" => Tone::Plain,
                _ => Tone::Bad,
            };
            let consent = match (self.consent_lifetime, g.consented_on) {
                _ if !active => Cell::plain("-"),
                (None, _) => Cell::plain("until revoked"),
                (Some(lifetime), Some(on)) => match chrono::Duration::from_std(lifetime) {
                    Ok(lifetime) => days_left(on + lifetime, now),
                    Err(_) => Cell::plain("unknown"),
                },
                (Some(_), None) => Cell::plain("unknown"),
            };
            let remaining = REFRESH_LIMIT.saturating_sub(g.refresh_count).max(0);
            table.row(vec![
                Cell::plain(printable(&grant_name(g))),
                Cell::new(printable(&state), tone),
                if active {
                    days_left(g.refresh_expires_at, now)
                } else {
                    Cell::plain("-")
                },
                consent,
                Cell::new(
                    format!(
                        "{} of {}",
                        thousands(remaining.into()),
                        thousands(REFRESH_LIMIT.into())
                    ),
                    if remaining == 0 {
                        Tone::Bad
                    } else {
                        Tone::Plain
                    },
                ),
                Cell::plain(printable(g.last_error.as_deref().unwrap_or(""))),
            ]);
        }
        table
    }
}

/// The run's status, `partial` for a success that recorded failed items, and for a failure how
/// many in a row.
fn result(job: &JobStatus) -> Cell {
    let Some(run) = &job.last_run else {
        return Cell::plain("-");
    };
    match run.status.as_str() {
        "succeeded" if run.error.is_some() => Cell::new("partial", Tone::Warn),
        "succeeded" => Cell::new("succeeded", Tone::Good),
        "failed" => match job.freshness.facts.consecutive_failures {
            n if n > 1 => Cell::new(format!("failed ({n} in a row)"), Tone::Bad),
            _ => Cell::new("failed", Tone::Bad),
        },
        other => Cell::plain(printable(other)),
    }
}

fn next_run(job: &JobStatus, zone: Tz) -> String {
    match (&job.next_run_at, &job.schedule) {
        _ if !job.enabled => "-".into(),
        (Some(at), _) => when(*at, zone),
        (None, None) => match job.freshness.facts.job.spec().runs_on {
            RunsOn::Link => "on a link".into(),
            RunsOn::Request => "on request".into(),
            RunsOn::Schedule => "-".into(),
        },
        _ => "-".into(),
    }
}

/// "fresh as of …" (green), "STALE since …" or "never" (red, for a job that should have run);
/// a job without a threshold shows when its data is from, uncoloured.
fn freshness(job: &JobStatus, zone: Tz) -> Cell {
    let f = &job.freshness;
    match (f.stale, f.facts.last_success_at, f.stale_since) {
        (Some(true), _, Some(since)) => {
            Cell::new(format!("STALE since {}", when(since, zone)), Tone::Bad)
        }
        (Some(true), _, None) => Cell::new("never", Tone::Bad),
        (Some(false), Some(at), _) => {
            Cell::new(format!("fresh as of {}", when(at, zone)), Tone::Good)
        }
        (_, Some(at), _) => Cell::plain(format!("as of {}", when(at, zone))),
        (_, None, _) => Cell::plain("never"),
    }
}

fn grant_name(g: &GrantSummary) -> String {
    g.label
        .clone()
        .unwrap_or_else(|| g.id.to_string()[..8].to_owned())
}

/// The grants as a table: label, state (`in_doubt` with its time and reason), expiries, refresh
/// count, consent, last error.
pub fn render_grants(grants: &[GrantSummary]) -> String {
    let when = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    let mut out = format!(
        "{:<20} {:<16} {:<32} {:<17} {:<17} {:>9} {:<38} LAST ERROR\n",
        "LABEL",
        "STATUS",
        "IN DOUBT SINCE",
        "ACCESS EXPIRES",
        "REFRESH EXPIRES",
        "REFRESHES",
        "CONSENT"
    );
    for g in grants {
        let in_doubt = match (g.refresh_in_doubt_since, &g.in_doubt_reason) {
            (Some(since), Some(reason)) => {
                format!("{} UTC ({reason})", since.format("%Y-%m-%d %H:%M:%S"))
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<20} {:<16} {:<32} {:<17} {:<17} {:>9} {:<38} {}\n",
            printable(&grant_name(g)),
            printable(&g.state),
            in_doubt,
            when(g.access_expires_at),
            when(g.refresh_expires_at),
            g.refresh_count,
            printable(g.consent_id.as_deref().unwrap_or("")),
            printable(g.last_error.as_deref().unwrap_or("")),
        ));
    }
    out
}

pub fn render_links(links: &[LinkRow]) -> String {
    let when = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let mut out = format!(
        "{:<36} {:<9} {:<24} {:<12} {:<16} {:<16} DETAIL\n",
        "LINK", "STATUS", "EXTERNAL ID", "CUSTOMER", "CREATED", "COMPLETED"
    );
    for link in links {
        out.push_str(&format!(
            "{:<36} {:<9} {:<24} {:<12} {:<16} {:<16} {}\n",
            link.id,
            printable(&link.status),
            printable(&link.external_id),
            printable(link.customer_number.as_deref().unwrap_or("")),
            when(Some(link.created_at)),
            when(link.completed_at),
            printable(
                link.error_description
                    .as_deref()
                    .or(link.error_name.as_deref())
                    .unwrap_or("")
            ),
        ));
    }
    out
}

/// The audit trail as a table: time, actor, action, partner, subject and the detail's JSON. Every
/// cell may hold text from outside (a browser's customer number, a bank's error), so each is
/// made printable.
pub fn render_audit(entries: &[AuditRow]) -> String {
    let mut table = Table::new(&[
        ("AT", Align::Left),
        ("ACTOR", Align::Left),
        ("ACTION", Align::Left),
        ("PARTNER", Align::Left),
        ("SUBJECT", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for entry in entries {
        let cell = |text: &str| Cell::plain(printable(text).into_owned());
        table.row(vec![
            Cell::plain(entry.at.format("%Y-%m-%d %H:%M:%S").to_string()),
            cell(&entry.actor),
            cell(&entry.action),
            cell(entry.partner.as_deref().unwrap_or("")),
            cell(entry.subject.as_deref().unwrap_or("")),
            cell(&entry.detail.to_string()),
        ]);
    }
    table.render(0, false)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
