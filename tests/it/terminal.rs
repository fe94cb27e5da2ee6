//! The one-shot commands as a person at a terminal sees them (under a pseudo-terminal): a
//! failure is one plain line, at once; without a terminal, or with `--log-format json`, the
//! same failure is a JSON line for scripts.

use std::time::{Duration, Instant};

use partner_sync_sandbox::{Fault, SandboxOptions};

use crate::common::*;

/// The lines the terminal shows once everything is drawn: of a line redrawn in place (a
/// spinner's frames, each ended by `\r` and erased with `ESC[2K`) only its last text is left;
/// blank lines are left out.
fn lines(shown: &str) -> Vec<&str> {
    shown
        .split('\n')
        .map(|line| {
            let last = line
                .rsplit('\r')
                .find(|part| !part.is_empty())
                .unwrap_or("");
            last.trim_start_matches("\u{1b}[2K")
        })
        .filter(|line| !line.trim().is_empty())
        .collect()
}

fn assert_one_plain_line<'a>(shown: &'a str, start: &str) -> &'a str {
    let lines = lines(shown);
    assert_eq!(lines.len(), 1, "not one line: {shown:?}");
    let line = lines[0];
    assert!(line.starts_with(start), "{line:?}");
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err() && !line.contains("\"level\""),
        "JSON: {line:?}"
    );
    line
}

#[tokio::test]
async fn status_against_a_closed_port_is_one_plain_line_within_seconds() {
    let port = free_port();
    let url = format!("postgres://postgres:s3cret-pw@127.0.0.1:{port}/partner_sync");
    let started = Instant::now();
    let (code, shown) = run_in_terminal(&["status"], [("DATABASE_URL", url.as_str())]).await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{shown}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let line = assert_one_plain_line(&shown, "partner-sync: status: cannot connect to PostgreSQL");
    assert!(
        line.contains(&format!("is PostgreSQL running on 127.0.0.1:{port}?")),
        "{line}"
    );
    assert!(!line.contains("s3cret-pw"), "{line}");
}

#[tokio::test]
async fn a_disabled_partner_is_one_plain_line_at_a_terminal_and_json_elsewhere() {
    let env = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused")];
    let (code, shown) = run_in_terminal(&["sync", "rabot"], env).await;
    assert_eq!(code, Some(1), "{shown}");
    assert_eq!(
        assert_one_plain_line(&shown, "partner-sync: "),
        "partner-sync: sync: rabot_mirror is not enabled: set rabot.enabled = true"
    );

    // No terminal: the same failure as one JSON line.
    let piped = run_binary(&["sync", "rabot"], env).await;
    assert_eq!(piped.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let last = records.last().expect("a log line");
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert_eq!(last["command"], "sync", "{stderr}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rabot.enabled"),
        "{stderr}"
    );

    // At a terminal, `--log-format json` still gives scripts JSON.
    let (code, shown) = run_in_terminal(&["--log-format", "json", "sync", "rabot"], env).await;
    assert_eq!(code, Some(1), "{shown}");
    for line in lines(&shown) {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(record["level"], "ERROR", "{line}");
    }
}

#[tokio::test]
async fn a_failed_run_at_a_terminal_is_one_line_with_the_runs_error() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push((
        "PARTNER_SYNC__RABOT__CLIENT_SECRET".into(),
        "not-the-secret-5f3a".into(),
    ));
    let (code, shown) = run_in_terminal(&["sync", "rabot"], env.clone()).await;
    assert_eq!(code, Some(1), "{shown}");
    let line = assert_one_plain_line(&shown, "partner-sync: sync: rabot_mirror run ");
    assert!(
        line.contains(" failed: ") && line.contains("rejected the client credentials"),
        "{line}"
    );
    assert!(
        !line.contains("not-the-secret-5f3a"),
        "the secret is in the line: {line}"
    );

    // Settings that cannot be used: exit 2, one line naming the key.
    env.push(("PARTNER_SYNC__LOG__FORMAT".into(), "xml".into()));
    let (code, shown) = run_in_terminal(&["sync", "rabot"], env).await;
    assert_eq!(code, Some(2), "{shown}");
    assert_one_plain_line(
        &shown,
        "partner-sync: invalid setting log.format: must be auto",
    );
}

/// A partner that allows 10 requests/s while 40 are configured, and whose `count` gives the
/// list's size: the spinner says how many customers of how many and the time left, and counts
/// the 429s; the summary and `sync.runs` count them as the partner does. Two 503s are retried
/// with a warning each, written on a line of its own above the spinner, not into it.
#[tokio::test]
async fn a_pass_at_a_terminal_shows_its_429s_and_the_time_left() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        contracts_per_customer: 1,
        count_is_total: true,
        rate_limit: std::num::NonZeroU32::new(10),
        rate_limit_burst: std::num::NonZeroU32::new(2),
        ..small_sandbox(40)
    })
    .await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push((
        "PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND".into(),
        "40".into(),
    ));
    sandbox.inject_fault(Fault {
        path_contains: "/contracts".into(),
        status: 503,
        retry_after: Some("0".into()),
        times: 2,
    });
    let (code, shown) = run_in_terminal(&["sync", "rabot"], env).await;
    assert_eq!(code, Some(0), "{shown}");

    // The frames drawn while it ran, before the summary replaced them.
    assert!(
        shown.contains(" of 40 customers, ~") && shown.contains("s left; "),
        "no estimate in {shown:?}"
    );
    assert!(
        shown.contains(" requests, throttled "),
        "no 429s in {shown:?}"
    );

    let stats = sandbox.stats();
    assert!(stats.rate_limited > 0, "the partner refused nothing");
    let (requests, throttled): (i64, i64) =
        sqlx::query_as("SELECT requests, throttled FROM sync.runs WHERE job = 'rabot_mirror'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(throttled as u64, stats.rate_limited);
    assert_eq!(requests as u64, stats.token_requests + stats.api_requests);
    let shown_lines = lines(&shown);
    let (last, warnings) = shown_lines.split_last().expect("a summary line");
    assert!(
        last.starts_with("partner-sync: rabot_mirror run ")
            && last.contains(&format!(
                "{requests} requests, throttled {throttled}, fetched 80"
            )),
        "{last}"
    );
    // The 429s are counted, not warned about; each 503 is a warning line that starts with its
    // timestamp (dimmed), not with a spinner frame.
    assert_eq!(warnings.len(), 2, "{shown:?}");
    for warning in warnings {
        assert!(
            warning.trim_start_matches("\u{1b}[2m").starts_with("20")
                && warning.contains("retrying")
                && warning.contains("503"),
            "{warning:?}"
        );
    }
}

#[tokio::test]
async fn a_pass_at_a_terminal_ends_with_a_summary_line_and_without_one_stays_json() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(4)).await;
    let env = sandbox_env(&sandbox, &db.url);
    let (code, shown) = run_in_terminal(&["sync", "rabot"], env.clone()).await;
    assert_eq!(code, Some(0), "{shown}");
    // The spinner's frames end with its line cleared: the summary is the one line left.
    let last = assert_one_plain_line(&shown, "partner-sync: ");
    assert!(
        last.starts_with("partner-sync: rabot_mirror run ") && last.contains(" succeeded in "),
        "{shown:?}"
    );
    assert!(
        last.contains("inserted 12"),
        "4 customers, 8 contracts: {last}"
    );

    let piped = run_binary(&["sync", "rabot"], env).await;
    assert_eq!(piped.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    }
}

/// The usual first mistake with a partner: scopes without the role contracts need. One line
/// names the setting to change and keeps the partner's own explanation.
#[tokio::test]
async fn a_scope_without_the_contracts_role_is_one_line_naming_the_setting() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(2)).await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC__RABOT__SCOPES".into(), "api:partner".into()));
    let (code, shown) = run_in_terminal(&["sync", "rabot"], env).await;
    assert_eq!(code, Some(1), "{shown}");
    let line = assert_one_plain_line(&shown, "partner-sync: sync: rabot_mirror run ");
    assert!(
        line.contains("with 403: the scopes requested [api:partner] do not allow it")
            && line.contains("set rabot.scopes to what the partner grants this client")
            && line.contains("role:finance-reporting"),
        "{line}"
    );
}
