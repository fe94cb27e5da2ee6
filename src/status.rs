//! `partner-sync status`: what ops want at a glance — each job's last run and next scheduled
//! time, the grants' health, and recent failures — as a table or as JSON for scripts. The
//! tables of `links` and `grants` are rendered here too.
//!
//! Table cells hold text from outside (partners' error bodies, redirect parameters a browser
//! sent, consent ids): every such cell goes through [`printable`], so none can move the cursor,
//! recolour the terminal or start a line that looks like ours. JSON output needs no such care:
//! serde escapes control characters.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::events::schedule::{next_occurrence, parse_cron};
use crate::jobs::JobName;
use crate::settings::Settings;
use crate::store::grants::{self, GrantSummary};
use crate::store::links::LinkRow;
use crate::store::runs::{self, RunRow};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub jobs: Vec<JobStatus>,
    pub grants: Vec<GrantSummary>,
    pub recent_failures: Vec<RunRow>,
}

#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub job: &'static str,
    pub enabled: bool,
    pub schedule: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<RunRow>,
}

const RECENT_FAILURES: i64 = 5;

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

/// The report of the jobs in `only` (every job when it is empty): their rows and their recent
/// failures; the grants are listed whichever jobs are asked for.
pub async fn report(
    pool: &PgPool,
    settings: &Settings,
    only: &[JobName],
) -> Result<StatusReport, sqlx::Error> {
    let latest = runs::latest_per_job(pool).await?;
    let now = Utc::now();
    let only_names: Vec<&str> = only.iter().map(|j| j.as_str()).collect();
    let jobs = JobName::ALL
        .iter()
        .filter(|job| only.is_empty() || only.contains(job))
        .map(|&job| {
            let enabled = crate::jobs::is_enabled(settings, job);
            let schedule = crate::jobs::schedule_of(settings, job);
            JobStatus {
                job: job.as_str(),
                enabled,
                next_run_at: schedule.as_deref().and_then(|expression| {
                    next_occurrence(&parse_cron(expression).ok()?, settings.daemon.timezone, now)
                }),
                schedule,
                last_run: latest.iter().find(|r| r.job == job.as_str()).cloned(),
            }
        })
        .collect();
    Ok(StatusReport {
        jobs,
        grants: grants::list(pool).await?,
        recent_failures: runs::recent_failures(pool, &only_names, RECENT_FAILURES).await?,
    })
}

impl StatusReport {
    pub fn render_table(&self) -> String {
        let when = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        let mut out = String::from("JOBS\n");
        out.push_str(&format!(
            "{:<24} {:<8} {:<20} {:<10} {:>9} {:<20} COUNTS\n",
            "JOB", "ENABLED", "LAST RUN", "STATUS", "DURATION", "NEXT RUN"
        ));
        for job in &self.jobs {
            let run = job.last_run.as_ref();
            out.push_str(&format!(
                "{:<24} {:<8} {:<20} {:<10} {:>9} {:<20} {}\n",
                job.job,
                if job.enabled { "yes" } else { "no" },
                run.map(|r| when(r.started_at))
                    .unwrap_or_else(|| "never".into()),
                run.map(|r| r.status.as_str()).unwrap_or("-"),
                run.and_then(RunRow::duration)
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "-".into()),
                job.next_run_at.map(when).unwrap_or_else(|| "-".into()),
                run.map(RunRow::counts_summary).unwrap_or_default(),
            ));
        }
        out.push_str("\nGRANTS\n");
        if self.grants.is_empty() {
            out.push_str("(none)\n");
        } else {
            out.push_str(&render_grants(&self.grants));
        }
        out.push_str("\nRECENT FAILURES\n");
        if self.recent_failures.is_empty() {
            out.push_str("(none)\n");
        }
        for r in &self.recent_failures {
            out.push_str(&format!(
                "{} {} run {} ({}): {}\n",
                when(r.started_at),
                printable(&r.job),
                r.id,
                printable(&r.cause),
                printable(r.error.as_deref().unwrap_or(""))
            ));
        }
        out
    }
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
            printable(
                &g.label
                    .clone()
                    .unwrap_or_else(|| g.id.to_string()[..8].to_owned())
            ),
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

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_and_reordering_characters_are_escaped() {
        assert_eq!(printable("plain tekst, é"), "plain tekst, é");
        assert_eq!(
            printable("red\u{1b}[31m\nFAKE\tline\r\u{7f}\u{9b}"),
            "red\\u{1b}[31m\\nFAKE\\tline\\r\\u{7f}\\u{9b}"
        );
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
    }
}
