//! EnergyZero's tests over HTTP: the identity provider (`identity.rs`), the customer API
//! (`customer_api.rs`) and the generated data (`data.rs`), with the requests they share and the
//! tests of what the partner as a whole answers here.

use std::time::Duration;

use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde_json::{Value, json};

use super::{Energyzero, MAX_CONTRACTS, MAX_USERS};
use crate::tests::started;
use crate::{EnergyzeroOptions, Fault, Sandbox, SandboxOptions};

mod customer_api;
mod data;
mod identity;

const ME_QUERY: &str = "query Me($first: Int, $after: String) {
    me {
        id firstName middleName surname phoneNumber vendor
        contracts(first: $first, after: $after) {
            totalCount
            pageInfo { hasNextPage endCursor }
            edges { cursor node { ...contract } }
        }
    }
}
fragment contract on Contract {
    id phase endDate duration hasGas totalYearlyUsage
    deliveryAddress { street houseNumber houseNumberAddition zipCode city country }
}";

/// Default sandbox options with EnergyZero's edited.
fn with_energyzero(edit: impl FnOnce(&mut EnergyzeroOptions)) -> SandboxOptions {
    let mut options = SandboxOptions {
        customers: 1,
        ..SandboxOptions::default()
    };
    edit(&mut options.energyzero);
    options
}

fn token_url(sandbox: &Sandbox) -> String {
    format!("{}/oauth2/token", sandbox.energyzero_auth_base_url())
}

fn credentials() -> Vec<(&'static str, &'static str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("scope", "openid offline"),
        ("client_id", "sandbox-ez-client"),
        ("client_secret", "sandbox-ez-secret"),
    ]
}

/// The form with one field replaced, or removed when `value` is None.
fn credentials_with(name: &str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    credentials()
        .into_iter()
        .filter_map(|(field, old)| {
            if field == name {
                value.map(|new| (field, new))
            } else {
                Some((field, old))
            }
        })
        .collect()
}

async fn token_request(sandbox: &Sandbox, form: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(token_url(sandbox))
        .form(form)
        .send()
        .await
        .expect("token request")
}

/// The JWT from the `Authorization` response header.
fn header_token(response: &reqwest::Response) -> String {
    let value = response.headers()[header::AUTHORIZATION]
        .to_str()
        .expect("ASCII header");
    value
        .strip_prefix("Bearer ")
        .expect("Bearer prefix")
        .to_owned()
}

async fn partner_token(sandbox: &Sandbox) -> String {
    let response = token_request(sandbox, &credentials()).await;
    assert_eq!(response.status(), StatusCode::OK);
    header_token(&response)
}

async fn impersonation(
    sandbox: &Sandbox,
    authorization: Option<&str>,
    user_id: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!(
        "{}/v1/auth/impersonate",
        sandbox.energyzero_auth_base_url()
    ));
    if let Some(user_id) = user_id {
        request = request.query(&[("user_id", user_id)]);
    }
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    request.send().await.expect("impersonation request")
}

async fn user_token(sandbox: &Sandbox, user_id: &str) -> String {
    let partner = partner_token(sandbox).await;
    let response = impersonation(sandbox, Some(&format!("Bearer {partner}")), Some(user_id)).await;
    assert_eq!(response.status(), StatusCode::OK);
    header_token(&response)
}

async fn graphql(sandbox: &Sandbox, token: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(sandbox.energyzero_customer_api_url())
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("GraphQL request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

/// Every contract of the token's user, following `hasNextPage`/`endCursor`, asking for
/// more than the cap allows.
async fn all_contracts(sandbox: &Sandbox, token: &str) -> (Vec<Value>, usize) {
    let mut contracts = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let body = json!({ "query": ME_QUERY, "variables": { "first": 50, "after": after } });
        let (status, answer) = graphql(sandbox, token, body).await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer.get("errors").is_none(), "{answer}");
        let connection = &answer["data"]["me"]["contracts"];
        let edges = connection["edges"].as_array().expect("edges");
        assert!(edges.len() <= 10, "the page cap holds");
        contracts.extend(edges.iter().map(|edge| edge["node"].clone()));
        pages += 1;
        if connection["pageInfo"]["hasNextPage"] == false {
            assert_eq!(connection["totalCount"], contracts.len());
            return (contracts, pages);
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
}

fn claims(jwt: &str) -> Value {
    let segments: Vec<&str> = jwt.split('.').collect();
    assert_eq!(segments.len(), 3, "header.payload.signature");
    let payload = BASE64URL.decode(segments[1]).expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON payload")
}

fn error_code(answer: &Value) -> &Value {
    &answer["errors"][0]["extensions"]["code"]
}

#[tokio::test]
async fn the_gate_answers_in_energyzero_shapes() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let user = sandbox.energyzero_user_ids()[0].clone();
    let token = user_token(&sandbox, &user).await;
    sandbox.inject_fault(Fault {
        path_contains: "/energyzero/auth/oauth2/token".to_owned(),
        status: 503,
        retry_after: Some("2".to_owned()),
        times: 1,
    });
    sandbox.inject_fault(Fault {
        path_contains: "/energyzero/auth/v1".to_owned(),
        status: 500,
        retry_after: None,
        times: 1,
    });
    sandbox.inject_fault(Fault {
        path_contains: "/energyzero/customer".to_owned(),
        status: 429,
        retry_after: Some("1".to_owned()),
        times: 1,
    });

    let response = token_request(&sandbox, &credentials()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"], "temporarily_unavailable");

    let partner = partner_token(&sandbox).await;
    let response = impersonation(&sandbox, Some(&partner), Some(&user)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"], "server_error");

    let (status, answer) = graphql(&sandbox, &token, json!({ "query": "{ me { id } }" })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&answer), "RATE_LIMITED");
    let (status, answer) = graphql(&sandbox, &token, json!({ "query": "{ me { id } }" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["data"]["me"]["id"], user.as_str());

    let stats = sandbox.energyzero_stats();
    // user_token's partner token, the faulted one and the retry; two GraphQL requests.
    assert_eq!(
        (stats.partner_token_requests, stats.partner_tokens_issued),
        (3, 2)
    );
    assert_eq!((stats.graphql_requests, stats.graphql_errors), (2, 0));
    assert_eq!(sandbox.stats().injected_faults, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn describe_prints_the_energyzero_environment() {
    let sandbox = started(with_energyzero(|options| options.users = 2)).await;
    let description = sandbox.describe();
    let users = sandbox.energyzero_user_ids().join(",");
    for line in [
        "PARTNER_SYNC__ENERGYZERO__ENABLED=true".to_owned(),
        format!(
            "PARTNER_SYNC__ENERGYZERO__AUTH_BASE_URL={}",
            sandbox.energyzero_auth_base_url()
        ),
        format!(
            "PARTNER_SYNC__ENERGYZERO__CUSTOMER_API_URL={}",
            sandbox.energyzero_customer_api_url()
        ),
        "PARTNER_SYNC__ENERGYZERO__CLIENT_ID=sandbox-ez-client".to_owned(),
        "PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET=sandbox-ez-secret".to_owned(),
        format!("PARTNER_SYNC__ENERGYZERO__USER_IDS={users}"),
    ] {
        assert!(
            description.lines().any(|printed| printed == line),
            "{line} missing from:\n{description}"
        );
    }
    assert!(
        sandbox
            .energyzero_auth_base_url()
            .ends_with("/energyzero/auth")
    );
    assert!(
        sandbox
            .energyzero_customer_api_url()
            .ends_with("/energyzero/customer")
    );
    sandbox.shutdown().await;
}

#[test]
fn oversized_data_or_a_zero_page_cap_is_refused() {
    for edit in [
        (|options: &mut EnergyzeroOptions| options.users = MAX_USERS + 1)
            as fn(&mut EnergyzeroOptions),
        |options| options.heavy_contracts = MAX_CONTRACTS,
        |options| options.page_cap = 0,
    ] {
        let mut options = EnergyzeroOptions::default();
        edit(&mut options);
        assert!(Energyzero::new(&options, 42).is_err());
    }
    assert!(Energyzero::new(&EnergyzeroOptions::default(), 42).is_ok());
}
