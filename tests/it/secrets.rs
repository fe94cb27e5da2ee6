//! No secret reaches the logs, even at TRACE level with every dependency's logging on.

use std::time::Duration;

use crate::common::*;

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

    let out = run_binary(&["sync", "rabot"], env).await;
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

/// The whole Rabobank life through the real binaries at TRACE: `rabobank authorize`, the
/// daemon's callback, scheduled rotations, `grants`. No code, token, state, client secret or
/// token key appears in anything they print.
#[tokio::test]
async fn the_rabobank_flow_at_trace_level_logs_no_secret_or_token() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let mut env = crate::rabobank::rabobank_env(&sandbox, &db.url, &public_url);
    env.extend(
        [
            ("RUST_LOG", "trace".to_owned()),
            ("PARTNER_SYNC__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            // Every second, and every grant is due: rotations happen while we watch.
            ("PARTNER_SYNC__RABOBANK__SCHEDULE", "* * * * * *".to_owned()),
            (
                "PARTNER_SYNC__RABOBANK__ROTATE_BEFORE",
                "400days".to_owned(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut daemon = Daemon::run(env.clone());

    let run = |args: &'static [&'static str]| run_binary(args, env.clone());
    let authorize = run(&["rabobank", "authorize", "--label", "trace-test"]).await;
    assert!(
        authorize.status.success(),
        "{}",
        String::from_utf8_lossy(&authorize.stderr)
    );
    let mut url = url::Url::parse(String::from_utf8_lossy(&authorize.stdout).trim()).unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("the URL carries a state");
    url.query_pairs_mut()
        .append_pair("sandbox_decision", "approve");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let callback = browser.get(url).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    // The daemon may still be starting.
    let mut arrived = None;
    for _ in 0..100 {
        match browser.get(&callback).send().await {
            Ok(answer) => {
                arrived = Some(answer.status());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(arrived, Some(reqwest::StatusCode::OK));
    let mut rotated = false;
    for _ in 0..100 {
        if sandbox.rabobank_stats().refreshes >= 2 {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grants = run(&["grants"]).await;
    let rotate = run(&["rotate-tokens"]).await;
    daemon.stop(Duration::from_secs(15)).await;
    let logs = format!(
        "{}{}{}{}{}",
        daemon.log(),
        String::from_utf8_lossy(&authorize.stderr),
        String::from_utf8_lossy(&grants.stdout),
        String::from_utf8_lossy(&rotate.stderr),
        String::from_utf8_lossy(&grants.stderr),
    );
    assert!(rotated, "the daemon rotated the grant: {logs}");
    assert!(rotate.status.success(), "{logs}");
    assert!(String::from_utf8_lossy(&grants.stdout).contains("trace-test"));
    assert!(
        logs.contains("rotated refresh token"),
        "rotations are logged"
    );

    let secrets = sandbox.rabobank_secrets();
    assert!(secrets.len() >= 5, "a code and at least two token pairs");
    let client_secret = sandbox.options().rabobank.client_secret.clone();
    for secret in secrets.iter().map(String::as_str).chain([
        client_secret.as_str(),
        state.as_str(),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    ]) {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
}
