//! Tests of the sandbox as a whole (options, the gate, the daemon environment), and the helpers
//! every partner's tests share.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{StatusCode, header};

use crate::{EnergyzeroOptions, Fault, RabobankOptions, Sandbox, SandboxOptions, start};

pub(super) async fn started(options: SandboxOptions) -> Sandbox {
    start(options, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("sandbox starts")
}

pub(super) async fn token(client: &reqwest::Client, sandbox: &Sandbox) -> String {
    let options = sandbox.options();
    let answer: serde_json::Value = client
        .post(sandbox.rabot_token_url())
        .form(&[
            ("client_id", options.client_id.as_str()),
            ("client_secret", options.client_secret.as_str()),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request")
        .error_for_status()
        .expect("token granted")
        .json()
        .await
        .expect("token JSON");
    answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

#[test]
fn defaults_are_the_command_line_defaults() {
    let options = SandboxOptions::default();
    assert_eq!(
        (
            options.customers,
            options.heavy_customer_every,
            options.seed
        ),
        (50, 25, 42)
    );
    assert_eq!(options.client_id, "sandbox-client");
    assert_eq!(
        options.granted_scopes,
        ["api:partner", "role:finance-reporting"]
    );
    assert_eq!(options.token_lifetime, Duration::from_secs(3599));
    assert_eq!(
        (options.rate_limit, options.latency),
        (None, Duration::ZERO)
    );

    let bank = RabobankOptions::default();
    assert_eq!(bank.client_id, "sandbox-bank-client");
    assert_eq!(bank.refresh_lifetime, Duration::from_secs(30 * 86_400));
    assert!(bank.redirect_uri.is_none() && !bank.standard_oauth);
    assert_eq!(format!("{bank:?}"), format!("{:?}", options.rabobank));

    let energyzero = EnergyzeroOptions::default();
    assert_eq!((energyzero.users, energyzero.page_cap), (6, 10));
    assert_eq!(energyzero.partner_token_lifetime, Duration::from_secs(300));
    assert_eq!(
        format!("{energyzero:?}"),
        format!("{:?}", options.energyzero)
    );
}

#[tokio::test]
async fn env_connects_the_daemon_to_every_partner_and_enables_none() {
    let sandbox = started(SandboxOptions {
        customers: 1,
        ..SandboxOptions::default()
    })
    .await;
    let env = sandbox.env();
    let value = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("{name} missing from {env:?}"))
    };
    assert_eq!(
        value("PARTNER_SYNC__RABOT__TOKEN_URL"),
        sandbox.rabot_token_url()
    );
    assert_eq!(
        value("PARTNER_SYNC__RABOT__SCOPES"),
        "api:partner,role:finance-reporting"
    );
    assert_eq!(
        value("PARTNER_SYNC__RABOBANK__CONSENT_API_BASE_URL"),
        sandbox.rabobank_consent_api_base_url()
    );
    assert_eq!(
        value("PARTNER_SYNC__ENERGYZERO__USER_IDS"),
        sandbox.energyzero_user_ids().join(",")
    );
    assert_eq!(env.len(), 15);
    assert!(env.iter().all(|(name, _)| !name.ends_with("__ENABLED")));

    // `partner-sync sandbox` prints the same settings, with every partner enabled.
    let description = sandbox.describe();
    for (name, value) in &env {
        let line = format!("{name}={value}");
        assert!(
            description.lines().any(|printed| printed == line),
            "{line} missing from:\n{description}"
        );
    }
    for partner in ["RABOT", "RABOBANK", "ENERGYZERO"] {
        let line = format!("PARTNER_SYNC__{partner}__ENABLED=true");
        assert!(description.lines().any(|printed| printed == line), "{line}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn enforced_rate_limit_answers_429_with_retry_after() {
    let sandbox = started(SandboxOptions {
        customers: 3,
        rate_limit: NonZeroU32::new(1),
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let token = token(&client, &sandbox).await;

    // The token request spent the one-request burst; a loaded test machine may still let a
    // second pass before the next is refused, so allow a few tries.
    let mut limited = None;
    for _ in 0..5 {
        let response = client
            .get(format!("{}/customers", sandbox.rabot_api_base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("a request over the limit is refused");
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    assert_eq!(body["isSuccess"], false);

    assert_eq!(sandbox.stats().rate_limited, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_can_answer_429_without_retry_after() {
    let sandbox = started(SandboxOptions {
        customers: 3,
        rate_limit: NonZeroU32::new(1),
        rate_limit_without_retry_after: true,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let token = token(&client, &sandbox).await;
    let mut limited = None;
    for _ in 0..5 {
        let response = client
            .get(format!("{}/customers", sandbox.rabot_api_base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("a request over the limit is refused");
    assert!(response.headers().get(header::RETRY_AFTER).is_none());
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    assert_eq!(body["isSuccess"], false);
    sandbox.shutdown().await;

    // Without a rate limit the knob means nothing, so it is refused rather than ignored.
    let refused = start(
        SandboxOptions {
            rate_limit_without_retry_after: true,
            ..SandboxOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn injected_faults_are_served_in_order_then_run_out() {
    let sandbox = started(SandboxOptions {
        customers: 2,
        ..SandboxOptions::default()
    })
    .await;
    sandbox.inject_fault(Fault {
        path_contains: "/connect/token".to_owned(),
        status: 500,
        retry_after: None,
        times: 1,
    });
    sandbox.inject_fault(Fault {
        path_contains: "/customers".to_owned(),
        status: 503,
        retry_after: Some("7".to_owned()),
        times: 2,
    });
    let client = reqwest::Client::new();
    let failed_token = client
        .post(sandbox.rabot_token_url())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(failed_token.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let token = token(&client, &sandbox).await;

    let url = format!("{}/customers", sandbox.rabot_api_base_url());
    for _ in 0..2 {
        let response = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
    let response = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);

    let stats = sandbox.stats();
    assert_eq!(stats.injected_faults, 3);
    assert_eq!((stats.token_requests, stats.tokens_issued), (2, 1));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn out_of_range_error_rate_is_refused() {
    let options = SandboxOptions {
        error_rate: 1.5,
        ..SandboxOptions::default()
    };
    assert!(
        start(options, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .is_err()
    );
}
