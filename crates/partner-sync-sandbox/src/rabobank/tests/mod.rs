//! The bank's tests over HTTP: authorization (`authorize.rs`), tokens (`token.rs`) and consent
//! details (`consent.rs`), with the requests they share here.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use url::Url;

use crate::tests::started;
use crate::{RabobankOptions, Sandbox, SandboxOptions, start, unix_now};

mod authorize;
mod consent;
mod token;

const REDIRECT: &str = "https://app.example/rabobank/callback?tenant=7";
const SCOPE: &str = "ais.balances.read ais.transactions.read-90days";

/// Default sandbox options with the bank's edited.
fn with_bank(edit: impl FnOnce(&mut RabobankOptions)) -> SandboxOptions {
    let mut options = SandboxOptions::default();
    edit(&mut options.rabobank);
    options
}

/// The OAuth client must see redirects, not follow them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn authorize_url(sandbox: &Sandbox) -> String {
    format!("{}/authorize", sandbox.rabobank_oauth_base_url())
}

fn token_url(sandbox: &Sandbox) -> String {
    format!("{}/token", sandbox.rabobank_oauth_base_url())
}

fn consent_url(sandbox: &Sandbox, consent_id: &str) -> String {
    format!(
        "{}/oauth2/consents/{consent_id}",
        sandbox.rabobank_consent_api_base_url()
    )
}

async fn authorize(sandbox: &Sandbox, params: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(authorize_url(sandbox))
        .query(params)
        .send()
        .await
        .expect("authorize request")
}

/// The redirect's target without its query, and the query's parameters.
fn redirected(response: &reqwest::Response) -> (String, HashMap<String, String>) {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .expect("ASCII location");
    let mut url = Url::parse(location).expect("absolute location");
    let params = url.query_pairs().into_owned().collect();
    url.set_query(None);
    (url.to_string(), params)
}

fn approve_params(state: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("response_type", "code"),
        ("scope", SCOPE),
        ("client_id", "sandbox-bank-client"),
        ("state", state),
        ("redirect_uri", REDIRECT),
        ("sandbox_decision", "approve"),
    ]
}

/// A fresh consent's code.
async fn approved_code(sandbox: &Sandbox) -> String {
    let (_, params) = redirected(&authorize(sandbox, &approve_params("s")).await);
    params["code"].clone()
}

async fn token_request(
    sandbox: &Sandbox,
    credentials: Basic<'_>,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut request = client().post(token_url(sandbox)).form(form);
    if let Some((id, secret)) = credentials {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("token request");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("JSON body"))
}

/// HTTP Basic credentials, if any.
type Basic<'a> = Option<(&'a str, &'a str)>;

const CLIENT: Basic<'static> = Some(("sandbox-bank-client", "sandbox-bank-secret"));

async fn exchange(sandbox: &Sandbox, code: &str) -> (StatusCode, Value) {
    let (status, _, body) = token_request(
        sandbox,
        CLIENT,
        &[("grant_type", "authorization_code"), ("code", code)],
    )
    .await;
    (status, body)
}

async fn refresh(sandbox: &Sandbox, refresh_token: &str) -> (StatusCode, Value) {
    let (status, _, body) = token_request(
        sandbox,
        CLIENT,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    (status, body)
}

/// Tokens of a fresh consent, and its id.
async fn granted(sandbox: &Sandbox) -> (Value, String) {
    let code = approved_code(sandbox).await;
    let (status, body) = exchange(sandbox, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let consent_id = sandbox
        .rabobank_consent_ids()
        .last()
        .expect("consent")
        .clone();
    (body, consent_id)
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {body}"))
}

async fn consent(url: &str, access_token: &str) -> (StatusCode, Value) {
    let response = client()
        .get(url)
        .bearer_auth(access_token)
        .send()
        .await
        .expect("consent request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn describe_lists_the_bank_and_its_environment() {
    let sandbox = started(SandboxOptions::default()).await;
    let description = sandbox.describe();
    for line in [
        "PARTNER_SYNC__RABOBANK__ENABLED=true".to_owned(),
        format!(
            "PARTNER_SYNC__RABOBANK__OAUTH_BASE_URL={}/rabobank/oauth2",
            sandbox.base_url()
        ),
        "PARTNER_SYNC__RABOBANK__CLIENT_ID=sandbox-bank-client".to_owned(),
        "PARTNER_SYNC__RABOBANK__CLIENT_SECRET=sandbox-bank-secret".to_owned(),
        "PARTNER_SYNC__RABOBANK__SCOPES=ais.balances.read,ais.transactions.read-90days".to_owned(),
        format!(
            "PARTNER_SYNC__RABOBANK__CONSENT_API_BASE_URL={}/rabobank/api",
            sandbox.base_url()
        ),
    ] {
        assert!(
            description.lines().any(|l| l == line),
            "{line} in\n{description}"
        );
    }
    assert!(description.contains("# PARTNER_SYNC__SECURITY__TOKEN_KEY"));
    sandbox.shutdown().await;
}
