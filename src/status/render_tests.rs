//! The status report's tables as a person reads them: cells, colours, escapes, bounds.

use super::*;
use crate::freshness::Freshness;
use crate::jobs::JobName;
use crate::status::JobFreshness;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn run(job: &str, status: &str, error: Option<&str>) -> RunRow {
    RunRow {
        id: 7,
        job: job.to_owned(),
        cause: "schedule".to_owned(),
        status: status.to_owned(),
        started_at: at("2026-12-03T09:45:00Z"),
        finished_at: Some(at("2026-12-03T09:45:02.5Z")),
        pages: 1,
        requests: 3,
        throttled: 0,
        fetched: 1500,
        inserted: 1200,
        updated: 3,
        unchanged: 297,
        deleted: 1,
        skipped: 0,
        failed: 0,
        error: error.map(str::to_owned),
        host: "h".to_owned(),
    }
}

fn job(name: JobName, enabled: bool, last_run: Option<RunRow>, freshness: Freshness) -> JobStatus {
    let scheduled = enabled && name.is_scheduled();
    JobStatus {
        job: name.as_str(),
        enabled,
        schedule: scheduled.then(|| "0 */15 * * * *".to_owned()),
        next_run_at: scheduled.then(|| at("2026-12-03T10:15:00Z")),
        last_run,
        freshness: JobFreshness::from(freshness),
    }
}

fn facts(job: JobName, stale_after: Option<u64>, age: Option<f64>, failures: i64) -> Freshness {
    Freshness {
        job,
        stale_after: stale_after.map(Duration::from_secs),
        last_success_at: age.map(|_| at("2026-12-03T09:30:02Z")),
        last_success_age: age,
        consecutive_failures: failures,
    }
}

fn grant(label: &str, state: &str, refresh_count: i32, error: Option<&str>) -> GrantSummary {
    GrantSummary {
        id: uuid::Uuid::nil(),
        provider: RABOBANK.to_owned(),
        label: Some(label.to_owned()),
        status: if state == "needs_reconsent" {
            state
        } else {
            "active"
        }
        .to_owned(),
        state: state.to_owned(),
        refresh_in_doubt_since: None,
        in_doubt_reason: None,
        refresh_started_at: None,
        access_expires_at: at("2026-12-03T11:00:00Z"),
        refresh_expires_at: at("2026-12-23T10:00:00Z"),
        refresh_count,
        consent_id: None,
        consent_status: None,
        consented_on: Some(at("2026-11-03T10:00:00Z")),
        last_refreshed_at: None,
        last_error: error.map(str::to_owned),
        created_at: at("2026-11-03T10:00:00Z"),
    }
}

fn report() -> StatusReport {
    StatusReport {
        jobs: vec![
            job(
                JobName::RabotMirror,
                true,
                Some(run("rabot_mirror", "failed", Some("boom"))),
                facts(JobName::RabotMirror, Some(1800), Some(2700.0), 2),
            ),
            job(
                JobName::RabotLinkMirror,
                true,
                None,
                facts(JobName::RabotLinkMirror, None, None, 0),
            ),
            job(
                JobName::EnergyzeroMirror,
                false,
                None,
                facts(JobName::EnergyzeroMirror, None, None, 0),
            ),
            job(
                JobName::RabobankTokenRotation,
                true,
                Some(run("rabobank_token_rotation", "succeeded", None)),
                facts(JobName::RabobankTokenRotation, Some(172_800), Some(60.0), 0),
            ),
        ],
        grants: vec![
            grant("Household 17", "active", 95, None),
            grant(
                "Old\u{1b}[2J",
                "needs_reconsent",
                4096,
                Some("invalid_grant\nFAKE"),
            ),
        ],
        recent_failures: vec![run("rabot_mirror", "failed", Some("boom"))],
        drift: vec![],
        generated_at: at("2026-12-03T10:00:00Z"),
        timezone: Tz::UTC,
        consent_lifetime: Some(Duration::from_secs(180 * 86_400)),
    }
}

/// The line of `table` that starts (after the indent) with `first`.
fn line<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.trim_start().starts_with(first))
        .unwrap_or_else(|| panic!("no line for {first}:\n{table}"))
}

#[test]
fn a_table_per_partner_with_results_freshness_and_grants() {
    let table = report().render_table(false);
    assert!(!table.contains('\u{1b}'), "{table}");
    assert!(table.starts_with("partner-sync status at 2026-12-03 10:00:00 UTC\n"));
    let rabot = table.find("\nRABOT\n").expect("a RABOT table");
    let energyzero = table
        .find("\nENERGYZERO (off: energyzero.enabled = false)\n")
        .expect("an EnergyZero table, marked off");
    let rabobank = table.find("\nRABOBANK\n").expect("a Rabobank table");
    assert!(rabot < energyzero && energyzero < rabobank);

    let mirror = line(&table, "rabot_mirror ");
    for part in [
        "2026-12-03 09:45:00 UTC",
        "failed (2 in a row)",
        "2.5s",
        "1,200",
        "2026-12-03 10:15:00 UTC",
        "STALE since 2026-12-03 10:00:02 UTC",
    ] {
        assert!(mirror.contains(part), "{part:?} in {mirror:?}");
    }
    let link = line(&table, "rabot_link_mirror");
    assert!(
        link.contains("on a link") && link.ends_with("never"),
        "{link}"
    );
    let energyzero = line(&table, "energyzero_mirror");
    assert_eq!(
        energyzero.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["never", "-", "-", "-", "-", "-", "-", "never"]
    );
    let rotation = line(&table, "rabobank_token_rotation");
    assert!(
        rotation.contains("succeeded") && rotation.ends_with("fresh as of 2026-12-03 09:30:02 UTC"),
        "{rotation}"
    );

    let household = line(&table, "Household 17");
    for part in ["active", "in 20 days", "in 150 days", "4,001 of 4,096"] {
        assert!(household.contains(part), "{part:?} in {household:?}");
    }
    // Partner text is escaped; a grant that needs a new consent has no expiries to show.
    let old = line(&table, "Old\\u{1b}[2J");
    assert_eq!(
        old.split_whitespace().skip(1).collect::<Vec<_>>(),
        [
            "needs_reconsent",
            "-",
            "-",
            "0",
            "of",
            "4,096",
            "invalid_grant\\nFAKE"
        ]
    );
    assert!(table.contains(
        "\nRECENT FAILURES\n  2026-12-03 09:45:00 UTC rabot_mirror run 7 (schedule): boom\n"
    ));
    // The columns line up: every RABOT row's RESULT starts where its header does.
    let header = line(&table[rabot..], "JOB");
    let column = header.find("RESULT").unwrap();
    assert_eq!(mirror.find("failed"), Some(column));
}

#[test]
fn times_are_shown_in_the_schedules_zone() {
    let table = StatusReport {
        timezone: chrono_tz::Europe::Amsterdam,
        ..report()
    }
    .render_table(false);
    assert!(table.starts_with("partner-sync status at 2026-12-03 11:00:00 CET\n"));
    let mirror = line(&table, "rabot_mirror ");
    assert!(
        mirror.contains("2026-12-03 11:15:00 CET"),
        "next run: {mirror}"
    );
    assert!(!mirror.contains("UTC"), "{mirror}");
}

#[test]
fn colour_marks_failures_and_staleness_red_and_successes_green() {
    let coloured = report().render_table(true);
    let red = "\u{1b}[1m\u{1b}[31m";
    let green = "\u{1b}[32m";
    let mirror = line(&coloured, "rabot_mirror ");
    assert!(
        mirror.contains(&format!("{red}failed (2 in a row)")),
        "{mirror:?}"
    );
    assert!(mirror.contains(&format!("{red}STALE since")), "{mirror:?}");
    let rotation = line(&coloured, "rabobank_token_rotation");
    assert!(
        rotation.contains(&format!("{green}succeeded")),
        "{rotation:?}"
    );
    assert!(
        rotation.contains(&format!("{green}fresh as of")),
        "{rotation:?}"
    );
    // Without the escape codes it is the plain table.
    let stripped = coloured
        .replace(red, "")
        .replace(green, "")
        .replace("\u{1b}[33m", "")
        .replace("\u{1b}[0m", "");
    assert_eq!(stripped, report().render_table(false));
}

#[test]
fn numbers_and_days_read_like_a_report() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(4096), "4,096");
    assert_eq!(thousands(-1_234_567), "-1,234,567");
    let now = at("2026-12-03T10:00:00Z");
    let days = |t: &str| days_left(at(t), now).text;
    assert_eq!(days("2026-12-03T09:00:00Z"), "expired");
    assert_eq!(days("2026-12-03T20:00:00Z"), "in <1 day");
    assert_eq!(days("2026-12-04T20:00:00Z"), "in 1 day");
    assert_eq!(days("2027-01-02T10:00:00Z"), "in 30 days");
    assert_eq!(took(Duration::from_millis(2500)), "2.5s");
    assert_eq!(took(Duration::from_secs(3723)), "1h 2m 3s");
}

#[test]
fn control_and_reordering_characters_are_escaped() {
    assert_eq!(printable("plain tekst, é"), "plain tekst, é");
    assert_eq!(
        printable("red\u{1b}[31m\nFAKE\tline\r\u{7f}\u{9b}"),
        "red\\u{1b}[31m\\nFAKE\\tline\\r\\u{7f}\\u{9b}"
    );
    assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
}

#[test]
fn drift_is_listed_escaped_and_bounded_and_absent_when_there_is_none() {
    let mut report = report();
    assert!(!report.render_table(false).contains("SCHEMA DRIFT"));
    let seen = |name: &str| crate::store::drift::SeenDrift {
        job: "rabot_mirror".to_owned(),
        place: "contract.contractState".to_owned(),
        name: name.to_owned(),
        items: 1234,
        runs: 3,
        first_seen: at("2026-12-01T10:00:00Z"),
        last_seen: at("2026-12-03T09:00:00Z"),
    };
    report.drift = vec![seen("Open"), seen("Evil\u{1b}[2J")];
    let table = report.render_table(false);
    assert!(table.contains("SCHEMA DRIFT (last 7 days"), "{table}");
    assert_eq!(
        line(&table, "rabot_mirror contract.contractState: Open").trim(),
        "rabot_mirror contract.contractState: Open (1,234 items in 3 runs, last 2026-12-03 09:00:00 UTC)"
    );
    assert!(table.contains(r"Evil\u{1b}[2J"), "{table}");

    report.drift = (0..MAX_DRIFT_LINES + 5)
        .map(|i| seen(&format!("S{i}")))
        .collect();
    let table = report.render_table(false);
    assert!(table.contains("… and 5 more"), "{table}");
    assert!(!table.contains(&format!("S{MAX_DRIFT_LINES} ")), "{table}");
}

#[test]
fn audit_cells_are_escaped() {
    let entry = AuditRow {
        id: 1,
        at: at("2026-12-03T10:00:00Z"),
        actor: "alice".to_owned(),
        action: "link.refused".to_owned(),
        partner: Some("rabot".to_owned()),
        subject: Some("OUR-\u{1b}[2J".to_owned()),
        detail: serde_json::json!({"reason": "forged"}),
    };
    let table = render_audit(&[entry]);
    assert!(!table.contains('\u{1b}'), "{table}");
    assert!(table.contains("OUR-\\u{1b}[2J"), "{table}");
    assert!(
        table.contains("2026-12-03 10:00:00  alice  link.refused  rabot"),
        "{table}"
    );
    assert!(table.starts_with("AT "), "{table}");
}
