//! No secret reaches the logs, even at TRACE level with every dependency's logging on.

use std::process::Command;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_partner-sync");

#[tokio::test]
async fn a_full_pass_at_trace_level_logs_no_secret_or_token() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(15)).await;
    let client_secret = sandbox.options().client_secret.clone();
    // Trust authentication accepts any password, so a URL with one still connects.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("db-password-never-logged")).unwrap();
    let mut env = sandbox_env(&sandbox, url.as_str());
    env.push(("RUST_LOG".into(), "trace".into()));

    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["sync", "rabot"])
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    assert!(
        logs.lines().count() > 100,
        "TRACE logging was on: {} lines",
        logs.lines().count()
    );
    // Each outbound call is a span inside the run's span, which names the job, run and partner.
    let call = logs
        .lines()
        .find(|l| l.contains("\"name\":\"http_request\""))
        .expect("outbound calls are spans");
    for field in [
        "\"job\":\"rabot_mirror\"",
        "\"run_id\":",
        "\"partner\":\"rabot\"",
        "\"path\":",
    ] {
        assert!(call.contains(field), "{field} missing from {call}");
    }

    let tokens = sandbox.issued_tokens();
    assert!(!tokens.is_empty());
    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain([client_secret.as_str(), "db-password-never-logged"])
    {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
}
