//! The EnergyZero client and settings without the sandbox: defaults and validation, and a
//! wiremock double playing answers the sandbox never gives.

use partner_sync::jobs;
use partner_sync::jobs::JobName;
use partner_sync::settings::Settings;

use crate::common::run_binary;

#[test]
fn settings_have_the_documented_defaults_and_validation_names_the_key() {
    let defaults = Settings::load_from(None, Vec::new()).expect("defaults are valid");
    let ez = &defaults.energyzero;
    assert!(!ez.enabled);
    assert_eq!(ez.scope, "openid offline");
    assert_eq!(ez.auth_base_url, "https://auth.api.energyzero.nl");
    assert_eq!(ez.customer_api_url, "https://customer.api.energyzero.nl");
    assert_eq!((ez.requests_per_second, ez.burst), (5.0, 5));
    assert_eq!(ez.schedule, "0 */30 * * * *");
    assert!(ez.user_ids.is_empty());

    let enabled = |extra: &[(&str, &str)]| {
        let mut env: Vec<(String, String)> = [
            ("PARTNER_SYNC__ENERGYZERO__ENABLED", "true"),
            ("PARTNER_SYNC__ENERGYZERO__CLIENT_ID", "client"),
            ("PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET", "s3cr3t-value"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Settings::load_from(None, env)
    };
    let ok = enabled(&[("PARTNER_SYNC__ENERGYZERO__USER_IDS", " u-1, u-2,,u-1 ")])
        .expect("valid settings");
    assert_eq!(ok.energyzero.user_ids, vec!["u-1", "u-2"]);
    // Enabling EnergyZero alone gives the daemon a job to run.
    let names: Vec<JobName> = jobs::registry(&jobs::RunnerParts {
        settings: &ok,
        rabobank: None,
        rabot: None,
    })
    .unwrap()
    .iter()
    .map(|j| j.name)
    .collect();
    assert_eq!(names, vec![JobName::EnergyzeroMirror]);
    assert!(JobName::EnergyzeroMirror.is_mirror());
    assert_eq!(
        JobName::parse("energyzero_mirror"),
        Some(JobName::EnergyzeroMirror)
    );

    let cases: &[(&str, &str, &str)] = &[
        (
            "PARTNER_SYNC__ENERGYZERO__AUTH_BASE_URL",
            "not a url",
            "energyzero.auth_base_url",
        ),
        (
            "PARTNER_SYNC__ENERGYZERO__CUSTOMER_API_URL",
            "ftp://x/graphql",
            "energyzero.customer_api_url",
        ),
        (
            "PARTNER_SYNC__ENERGYZERO__CLIENT_ID",
            " ",
            "energyzero.client_id",
        ),
        (
            "PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET",
            "",
            "energyzero.client_secret",
        ),
        ("PARTNER_SYNC__ENERGYZERO__SCOPE", "  ", "energyzero.scope"),
        (
            "PARTNER_SYNC__ENERGYZERO__REQUESTS_PER_SECOND",
            "0",
            "energyzero.requests_per_second",
        ),
        ("PARTNER_SYNC__ENERGYZERO__BURST", "0", "energyzero.burst"),
        (
            "PARTNER_SYNC__ENERGYZERO__SCHEDULE",
            "0 * * * *",
            "energyzero.schedule",
        ),
    ];
    for (key, value, named) in cases {
        let error = enabled(&[(key, value)]).unwrap_err().to_string();
        assert!(error.contains(named), "{key}={value}: {error}");
        assert!(!error.contains("s3cr3t-value"));
    }
    // The secret is masked in check-config's rendering.
    let masked = ok.to_masked_toml();
    assert!(!masked.contains("s3cr3t-value") && masked.contains("[energyzero]"));
}

/// Answers the sandbox never gives, from a wiremock double: a bare token in the header, a
/// token only in the body, and servers that ignore `after` or omit `endCursor`. Each ends the
/// user's pass with a clear error after a bounded number of requests.
#[tokio::test]
async fn odd_token_answers_are_read_and_broken_pagination_fails_the_user_not_loops() {
    use partner_sync::partners::energyzero::{EnergyzeroClient, EnergyzeroError};
    use serde_json::json;
    use wiremock::matchers::{body_string_contains, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    // The partner token without `Bearer ` and without a body.
    Mock::given(method("POST"))
        .and(path("/auth/oauth2/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("scope=openid+offline"))
        .respond_with(ResponseTemplate::new(200).insert_header("Authorization", "partner-jwt"))
        .expect(1)
        .mount(&server)
        .await;
    // User tokens only in the body.
    for user in ["u-1", "u-2"] {
        Mock::given(method("GET"))
            .and(path("/auth/v1/auth/impersonate"))
            .and(query_param("user_id", user))
            .and(header("authorization", "Bearer partner-jwt"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"access_token": format!("{user}-token"), "expires_in": 3599}),
            ))
            .mount(&server)
            .await;
    }
    let page = |user: &str, page_info: serde_json::Value| {
        ResponseTemplate::new(200).set_body_json(json!({"data": {"me": {"id": user,
            "contracts": {"edges": [{"cursor": "x", "node": {"id": "c-1"}}], "pageInfo": page_info}}}}))
    };
    // u-1's server ignores `after`: the same cursor comes back every time.
    Mock::given(method("POST"))
        .and(path("/graphql"))
        .and(header("authorization", "Bearer u-1-token"))
        .respond_with(page(
            "u-1",
            json!({"hasNextPage": true, "endCursor": "same"}),
        ))
        .mount(&server)
        .await;
    // u-2's server says there is more but not where.
    Mock::given(method("POST"))
        .and(path("/graphql"))
        .and(header("authorization", "Bearer u-2-token"))
        .respond_with(page("u-2", json!({"hasNextPage": true, "endCursor": null})))
        .mount(&server)
        .await;

    let env = [
        ("PARTNER_SYNC__ENERGYZERO__ENABLED", "true".to_owned()),
        ("PARTNER_SYNC__ENERGYZERO__CLIENT_ID", "id".to_owned()),
        (
            "PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET",
            "secret".to_owned(),
        ),
        (
            "PARTNER_SYNC__ENERGYZERO__AUTH_BASE_URL",
            format!("{}/auth", server.uri()),
        ),
        (
            "PARTNER_SYNC__ENERGYZERO__CUSTOMER_API_URL",
            format!("{}/graphql", server.uri()),
        ),
        (
            "PARTNER_SYNC__ENERGYZERO__REQUESTS_PER_SECOND",
            "1000".to_owned(),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let settings = Settings::load_from(None, env).unwrap();
    let client = EnergyzeroClient::new(&settings.energyzero, &settings.http).unwrap();

    let error = client.user_with_contracts("u-1").await.unwrap_err();
    assert!(
        matches!(&error, EnergyzeroError::Protocol(text) if text.contains("came twice")),
        "{error}"
    );
    let error = client.user_with_contracts("u-2").await.unwrap_err();
    assert!(
        matches!(&error, EnergyzeroError::Protocol(text) if text.contains("endCursor is missing")),
        "{error}"
    );
    assert!(!error.is_partner_rejected());
    let requests = server.received_requests().await.unwrap();
    let graphql = requests
        .iter()
        .filter(|r| r.url.path() == "/graphql")
        .count();
    // u-1: the first page and the page that repeats its cursor; u-2: one page.
    assert_eq!(graphql, 3);
    let variables: Vec<serde_json::Value> = requests
        .iter()
        .filter(|r| r.url.path() == "/graphql")
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["variables"].clone())
        .collect();
    assert_eq!(variables[0], json!({"first": 50, "after": null}));
    assert_eq!(variables[1], json!({"first": 50, "after": "same"}));
    assert_eq!(client.partner_tokens().token_requests(), 1);
}

#[tokio::test]
async fn the_daemon_without_partners_names_energyzero_enabled_among_the_switches() {
    let out = run_binary(
        &["run"],
        [
            ("PARTNER_SYNC__SERVER__LISTEN", "127.0.0.1:0"),
            ("PARTNER_SYNC__SERVER__OPS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("energyzero.enabled"), "{stderr}");
}

/// Partner and user tokens whose `expires_in` is absurd still work, with a lifetime kept
/// within 1 s to 24 h (unreadable: the 5-minute default), and nothing panics.
#[tokio::test]
async fn any_expires_in_gives_partner_and_user_tokens_a_bounded_lifetime() {
    use partner_sync::partners::energyzero::EnergyzeroClient;
    use serde_json::json;
    use std::time::Duration;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let day = Duration::from_secs(24 * 3600);
    let cases = [
        (json!(18446744073709551615u64), day),
        (json!(1e300), day),
        (json!(-5), Duration::from_secs(1)),
        (json!(0), Duration::from_secs(1)),
        (json!("abc"), Duration::from_secs(300)),
    ];
    for (expires_in, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/auth/oauth2/token"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    json!({"access_token": "partner-token", "expires_in": expires_in}),
                ),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/auth/v1/auth/impersonate"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": "user-token", "expires_in": expires_in})),
            )
            .mount(&server)
            .await;
        let env = [
            ("PARTNER_SYNC__ENERGYZERO__ENABLED", "true".to_owned()),
            ("PARTNER_SYNC__ENERGYZERO__CLIENT_ID", "id".to_owned()),
            (
                "PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET",
                "secret".to_owned(),
            ),
            (
                "PARTNER_SYNC__ENERGYZERO__AUTH_BASE_URL",
                format!("{}/auth", server.uri()),
            ),
            (
                "PARTNER_SYNC__ENERGYZERO__CUSTOMER_API_URL",
                format!("{}/graphql", server.uri()),
            ),
            (
                "PARTNER_SYNC__ENERGYZERO__REQUESTS_PER_SECOND",
                "1000".to_owned(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        let settings = Settings::load_from(None, env).unwrap();
        let client = EnergyzeroClient::new(&settings.energyzero, &settings.http).unwrap();

        let partner = client
            .partner_tokens()
            .token()
            .await
            .expect("a partner token");
        assert_eq!(
            partner.lifetime(),
            expected,
            "partner, expires_in {expires_in}"
        );
        let user = client
            .user_tokens("u-1")
            .token()
            .await
            .expect("a user token");
        assert_eq!(user.lifetime(), expected, "user, expires_in {expires_in}");
        assert_eq!(client.partner_tokens().token_requests(), 1);
    }
}
