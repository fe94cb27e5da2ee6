//! Rabobank's OAuth 2.0 authorization server (PSD2 and Premium share one flow) and its Consent
//! Details Service, as the bank's developer documentation and its example OAuth exchange
//! describe them.
//!
//! The flow is the authorization code grant: a browser is sent to `/authorize`, the user
//! approves or denies on a consent page (or a test skips the page with `sandbox_decision`), the
//! client exchanges the code at `/token` with HTTP Basic client authentication, and from then on
//! rotates single-use refresh tokens. What makes the bank hard to integrate with is simulated
//! faithfully: codes live five minutes and work once, a refresh token presented twice kills the
//! whole grant, a consent allows a bounded number of refreshes, and the user may revoke at any
//! time. `--rabobank-standard-oauth` drops the bank's extra response fields so a client can be
//! checked against a plain RFC 6749 server too.
//!
//! Every JSON shape here is written by hand from those documents; nothing is borrowed from the
//! client in src/partners, so the integration tests check the client against the docs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};
use url::Url;

use super::web::{escape_html, page_response, redirect_to, usable_redirect};
use super::{
    Endpoint, OAuthError, PartnerPaths, RabobankOptions, Shared, bearer_token, bump,
    duration_to_nanos, is_form, lock, oauth_error_code, unique_fields, unix_now,
};

pub(super) const OAUTH_BASE_PATH: &str = "/rabobank/oauth2";
const AUTHORIZE_PATH: &str = "/rabobank/oauth2/authorize";
const TOKEN_PATH: &str = "/rabobank/oauth2/token";
pub(super) const CONSENT_API_BASE_PATH: &str = "/rabobank/api";
const PREFIX: &str = "/rabobank";

/// The realm of the Basic challenge sent with `invalid_client` (RFC 6749 §5.2).
const BASIC_CHALLENGE: &str = r#"Basic realm="rabobank-sandbox""#;
/// What the docs' example `metadata` puts in front of the consent id.
const METADATA_PREFIX: &str = "a:consentId ";
/// The resource APIs' word for a consent the user revoked (or that expired).
const CONSENT_INVALID: &str = "CONSENT_INVALID";
/// Accounts listed in the consent details are valid until revoked; the docs show this date.
const VALID_UNTIL: &str = "9999-12-31";

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(AUTHORIZE_PATH, get(authorize_page).post(authorize_decision))
        .route(TOKEN_PATH, post(issue_token))
        .route(
            "/rabobank/api/oauth2/consents/{consent_id}",
            get(consent_details),
        )
        .route(
            "/rabobank/api/oauth2-premium/v1/consents/{consent_id}",
            get(consent_details),
        )
}

/// Where this partner's paths lie, for the gate.
pub(super) const PATHS: PartnerPaths = PartnerPaths {
    prefix: PREFIX,
    token: TOKEN_PATH,
    api_base: CONSENT_API_BASE_PATH,
    reject: rejection,
    count_request: None,
};

/// The bank's answer when the gate (rate limit, injected fault, random error) or the fallback
/// answers in its place.
fn rejection(endpoint: Endpoint, status: StatusCode, message: &str) -> Response {
    match endpoint {
        // A client's OAuth library only understands RFC 6749 error bodies from the token
        // endpoint, whatever went wrong.
        Endpoint::Token => {
            let answer = OAuthError::new(status, oauth_error_code(status), message);
            if status == StatusCode::UNAUTHORIZED {
                answer.with_challenge(BASIC_CHALLENGE).into_response()
            } else {
                answer.into_response()
            }
        }
        Endpoint::Api => ApiError::new(status, message).into_response(),
        // The authorize endpoint is looked at by a person in a browser.
        Endpoint::Other => error_page(status, message),
    }
}

// ---------------------------------------------------------------------------------------------
// Error answers.

/// The bank's own token-endpoint errors; the shape is the RFC 6749 §5.2 one the docs show.
impl OAuthError {
    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed: send Authorization: Basic base64(client_id:client_secret).",
        )
        .with_challenge(BASIC_CHALLENGE)
    }

    /// The docs answer a bad authorization code with 400 ...
    fn invalid_code(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// ... but a bad refresh token with 401.
    fn invalid_refresh(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_grant", description)
    }
}

/// An error from the Consent Details Service. The docs give no shape; this is the API gateway
/// envelope Rabobank's resource APIs answer with.
struct ApiError {
    status: StatusCode,
    more_information: String,
}

impl ApiError {
    fn new(status: StatusCode, more_information: impl Into<String>) -> Self {
        Self {
            status,
            more_information: more_information.into(),
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "The access token is missing, invalid, expired or revoked.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "httpCode": self.status.as_u16().to_string(),
            "httpMessage": self.status.canonical_reason().unwrap_or("Error"),
            "moreInformation": self.more_information,
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// The authorization endpoint.

/// A validated authorization request: where to send the user back, and what they are asked for.
struct AuthorizationRequest {
    /// The redirect URI the code is bound to, exactly as given (or registered).
    redirect_uri: String,
    /// The same, parsed, to build the redirect from.
    redirect_url: Url,
    state: Option<String>,
    scopes: Vec<String>,
    /// The request's own parameters, carried through the consent form as hidden fields.
    echoed: Vec<(&'static str, String)>,
}

/// Why an authorization request cannot go on, and so where the answer goes (RFC 6749 §4.1.2.1).
enum Refusal {
    /// Shown to the user: the client or its redirect URI cannot be trusted with a redirect.
    Page(String),
    /// Sent back to the client through its (verified) redirect URI.
    Redirect {
        target: Box<Url>,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Page(message) => error_page(StatusCode::BAD_REQUEST, &message),
            Self::Redirect {
                target,
                error,
                description,
                state,
            } => {
                let mut params = vec![("error", error), ("error_description", &description)];
                if let Some(state) = &state {
                    params.push(("state", state));
                }
                redirect_to(*target, &params)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Approve,
    Deny,
    ServerError,
}

impl Decision {
    fn parse(value: &str, allow_server_error: bool) -> Option<Self> {
        match value {
            "approve" => Some(Self::Approve),
            "deny" => Some(Self::Deny),
            "server_error" if allow_server_error => Some(Self::ServerError),
            _ => None,
        }
    }
}

async fn authorize_page(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let fields = match unique_fields(query.unwrap_or_default().as_bytes()) {
        Ok(fields) => fields,
        Err(name) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("Parameter {name} was sent more than once."),
            );
        }
    };
    let bank = &shared.rabobank;
    let request = match bank.check_authorization(&fields) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    match fields.get("sandbox_decision") {
        None => consent_page(bank, &request),
        Some(value) => match Decision::parse(value, true) {
            Some(decision) => bank.decide(request, decision),
            None => error_page(
                StatusCode::BAD_REQUEST,
                "sandbox_decision must be approve, deny or server_error.",
            ),
        },
    }
}

/// The consent form's submission: the same parameters again, plus the user's `decision`.
async fn authorize_decision(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Expected an application/x-www-form-urlencoded body.",
        );
    }
    let fields = match unique_fields(&body) {
        Ok(fields) => fields,
        Err(name) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("Parameter {name} was sent more than once."),
            );
        }
    };
    let bank = &shared.rabobank;
    // The form is as much under the user's control as the query was, so it is checked again.
    let request = match bank.check_authorization(&fields) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    match fields
        .get("decision")
        .and_then(|value| Decision::parse(value, false))
    {
        Some(decision) => bank.decide(request, decision),
        None => error_page(StatusCode::BAD_REQUEST, "decision must be approve or deny."),
    }
}

/// The HTML page that stands in for the bank's login and consent screens.
fn consent_page(bank: &Rabobank, request: &AuthorizationRequest) -> Response {
    let scopes: String = request
        .scopes
        .iter()
        .map(|scope| format!("      <li>{}</li>\n", escape_html(scope)))
        .collect();
    let hidden: String = request
        .echoed
        .iter()
        .map(|(name, value)| {
            format!(
                "      <input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape_html(value)
            )
        })
        .collect();
    let page = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head><meta charset=\"utf-8\"><title>Rabobank sandbox: give consent</title></head>\n\
         <body>\n\
         \x20 <h1>Rabobank sandbox</h1>\n\
         \x20 <p>Application <strong>{client}</strong> asks for access to:</p>\n\
         \x20 <ul>\n{scopes}  </ul>\n\
         \x20 <p>After your decision you return to {redirect}.</p>\n\
         \x20 <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n{hidden}\
         \x20     <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\n\
         \x20     <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n\
         \x20 </form>\n\
         </body>\n\
         </html>\n",
        client = escape_html(&bank.client_id),
        redirect = escape_html(&request.redirect_uri),
    );
    page_response(StatusCode::OK, page)
}

/// An error shown to the user instead of a redirect: RFC 6749 §4.1.2.1 forbids redirecting
/// to a URI that could not be verified, and an unknown client has no URI at all.
fn error_page(status: StatusCode, message: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head><meta charset=\"utf-8\"><title>Rabobank sandbox: error</title></head>\n\
         <body>\n\
         \x20 <h1>{status}</h1>\n\
         \x20 <p>{message}</p>\n\
         </body>\n\
         </html>\n",
        status = escape_html(&status.to_string()),
        message = escape_html(message),
    );
    page_response(status, page)
}

// ---------------------------------------------------------------------------------------------
// The token endpoint.

async fn issue_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bank = &shared.rabobank;
    let form = is_form(&headers).then(|| unique_fields(&body));
    let grant_type = form
        .as_ref()
        .and_then(|form| form.as_ref().ok())
        .and_then(|form| form.get("grant_type"))
        .map(String::as_str);
    if grant_type == Some("refresh_token") {
        bank.count(|stats| stats.refresh_requests += 1);
    }
    let answer = bank.token_answer(&headers, form);
    // Processed (tokens issued, a refresh token spent) before the answer is held back: a
    // client that gives up or dies meanwhile has lost the rotation.
    let delay = bank.answer_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Ok(body) => {
            bump(&shared.counters.tokens_issued);
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(body),
            )
                .into_response()
        }
        Err(error) => {
            match error.error {
                "invalid_grant" => bank.count(|stats| stats.invalid_grant_answers += 1),
                "invalid_client" => bank.count(|stats| stats.invalid_client_answers += 1),
                _ => {}
            }
            error.into_response()
        }
    }
}

/// `client_id:client_secret` from a Basic Authorization header. The docs encode the pair as is
/// (no RFC 6749 §2.3.1 form-encoding first), and so does this comparison.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// The Consent Details Service.

async fn consent_details(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    consent_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let bank = &shared.rabobank;
    bank.count(|stats| stats.consent_requests += 1);
    let Some(token) = bearer_token(&headers) else {
        bump(&shared.counters.unauthorized);
        return Err(ApiError::unauthorized());
    };
    let Ok(Path(consent_id)) = consent_id else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The consent id in the path is not valid.",
        ));
    };
    match bank.consent_details(token, &consent_id) {
        Ok(details) => Ok(Json(details).into_response()),
        Err(error) => {
            if error.status == StatusCode::UNAUTHORIZED {
                bump(&shared.counters.unauthorized);
            }
            Err(error)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bank's state.

/// What the bank has counted since it started; see `Sandbox::rabobank_stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RabobankStats {
    /// Grants approved at /authorize (the knob or the consent form).
    pub authorizations: u64,
    /// Authorizations the user denied.
    pub denials: u64,
    /// Successful authorization-code exchanges.
    pub code_exchanges: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Every `grant_type=refresh_token` request, any outcome.
    pub refresh_requests: u64,
    /// Refresh tokens presented after they were spent; each revoked its grant.
    pub reuse_detections: u64,
    /// `invalid_grant` answers from the token endpoint (codes and refresh tokens).
    pub invalid_grant_answers: u64,
    /// `invalid_client` answers from the token endpoint.
    pub invalid_client_answers: u64,
    /// Requests that reached the Consent Details Service, any outcome.
    pub consent_requests: u64,
}

/// One consent as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabobankGrantView {
    pub consent_id: String,
    pub refresh_count: u32,
    /// True once the user revoked it or a reused code or refresh token killed it.
    pub revoked: bool,
    /// The granted scopes, space separated.
    pub scope: String,
}

/// The simulated bank: its one registered client, its consents and the credentials issued
/// against them.
pub(super) struct Rabobank {
    client_id: String,
    client_secret: String,
    scopes: Vec<String>,
    redirect_uri: Option<String>,
    access_lifetime: Duration,
    refresh_lifetime: Duration,
    code_lifetime: Duration,
    refresh_limit: u32,
    standard_oauth: bool,
    /// Atomic so a test can change it while requests wait.
    answer_delay_nanos: AtomicU64,
    ledger: Mutex<Ledger>,
    stats: Mutex<RabobankStats>,
}

/// Everything the bank issued, under one lock so that a code exchange or a refresh-token
/// rotation is atomic: two concurrent refreshes with one token see exactly one success and
/// one reuse, as at the real bank.
#[derive(Default)]
struct Ledger {
    grants: HashMap<String, Grant>,
    /// Consent ids in creation order.
    consent_order: Vec<String>,
    codes: HashMap<String, IssuedCode>,
    access_tokens: HashMap<String, IssuedToken>,
    refresh_tokens: HashMap<String, IssuedRefreshToken>,
    /// Every code and token ever issued, so tests can search logs for any of them.
    secrets: Vec<String>,
}

/// One consent. Grants are never pruned: they are created by hand, one per authorization.
struct Grant {
    consented_on: u64,
    scopes: Vec<String>,
    refresh_count: u32,
    revocation: Option<Revocation>,
    /// (scope, account) in the order the consent details list them.
    accounts: Vec<(String, Account)>,
}

struct Account {
    iban: String,
    status: String,
}

/// Why a grant's tokens stopped working; the resource APIs answer differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// The user withdrew consent: resource APIs answer 403 CONSENT_INVALID.
    ByUser,
    /// A code or refresh token was used twice (RFC 6749 §4.1.2, §10.4): the bank voids the
    /// tokens, so they answer 401 like any revoked token.
    Reuse,
}

struct IssuedCode {
    consent_id: String,
    client_id: String,
    redirect_uri: String,
    /// None when the lifetime is too long to represent: then it never expires.
    expires_at: Option<Instant>,
    spent: bool,
}

struct IssuedToken {
    consent_id: String,
    expires_at: Option<Instant>,
}

struct IssuedRefreshToken {
    consent_id: String,
    expires_at: Option<Instant>,
    /// A spent token stays until it expires, so that presenting it again is recognised as
    /// reuse rather than as an unknown token.
    spent: bool,
}

/// A fresh access and refresh token for a grant.
struct Issued {
    access_token: String,
    refresh_token: String,
    consented_on: u64,
    scope: String,
}

fn alive(expires_at: Option<Instant>, now: Instant) -> bool {
    expires_at.is_none_or(|expires_at| now < expires_at)
}

impl Ledger {
    /// Pruning on every issue keeps a long demo's memory flat without a background task.
    fn prune(&mut self, now: Instant) {
        self.codes.retain(|_, code| alive(code.expires_at, now));
        self.access_tokens
            .retain(|_, token| alive(token.expires_at, now));
        self.refresh_tokens
            .retain(|_, token| alive(token.expires_at, now));
    }

    fn revoke(&mut self, consent_id: &str, revocation: Revocation) {
        if let Some(grant) = self.grants.get_mut(consent_id) {
            // A user's revocation is the more specific answer and replaces a reuse revocation.
            if grant.revocation != Some(Revocation::ByUser) {
                grant.revocation = Some(revocation);
            }
        }
    }
}

impl Rabobank {
    pub(super) fn new(options: &RabobankOptions) -> anyhow::Result<Self> {
        if options.scopes.is_empty() {
            bail!("the Rabobank sandbox needs at least one scope a user may grant");
        }
        if let Some(scope) = options
            .scopes
            .iter()
            .find(|scope| scope.is_empty() || scope.contains(char::is_whitespace))
        {
            bail!("Rabobank sandbox scope {scope:?} is empty or contains whitespace");
        }
        if options.client_id.contains(':') {
            bail!("a Rabobank sandbox client id cannot contain ':' (HTTP Basic splits on it)");
        }
        if let Some(uri) = &options.redirect_uri {
            usable_redirect(uri)
                .map_err(anyhow::Error::msg)
                .context("the registered Rabobank redirect URI is unusable")?;
        }
        Ok(Self {
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            scopes: options.scopes.clone(),
            redirect_uri: options.redirect_uri.clone(),
            access_lifetime: options.access_lifetime,
            refresh_lifetime: options.refresh_lifetime,
            code_lifetime: options.code_lifetime,
            refresh_limit: options.refresh_limit,
            standard_oauth: options.standard_oauth,
            answer_delay_nanos: AtomicU64::new(duration_to_nanos(options.token_answer_delay)),
            ledger: Mutex::new(Ledger::default()),
            stats: Mutex::new(RabobankStats::default()),
        })
    }

    fn answer_delay(&self) -> Duration {
        Duration::from_nanos(self.answer_delay_nanos.load(Ordering::Relaxed))
    }

    pub(super) fn set_answer_delay(&self, delay: Duration) {
        self.answer_delay_nanos
            .store(duration_to_nanos(delay), Ordering::Relaxed);
    }

    fn count(&self, update: impl FnOnce(&mut RabobankStats)) {
        update(&mut lock(&self.stats));
    }

    /// Checks an authorization request in RFC 6749 §4.1.2.1 order: problems with the client or
    /// the redirect URI are shown to the user (`Err` holds a page); once the redirect URI is
    /// trusted, every other problem goes back to the client as a redirect (`Err` holds that).
    fn check_authorization(
        &self,
        fields: &HashMap<String, String>,
    ) -> Result<AuthorizationRequest, Refusal> {
        let field = |name: &str| fields.get(name).map(String::as_str);
        if field("client_id") != Some(self.client_id.as_str()) {
            return Err(Refusal::Page(
                "Unknown client_id: no application is registered under it.".to_owned(),
            ));
        }
        let redirect_uri = match (field("redirect_uri"), &self.redirect_uri) {
            (Some(given), Some(registered)) if given != registered => {
                return Err(Refusal::Page(
                    "redirect_uri does not match the redirect URI registered for this application."
                        .to_owned(),
                ));
            }
            (_, Some(registered)) => registered.clone(),
            (Some(given), None) => given.to_owned(),
            (None, None) => {
                return Err(Refusal::Page(
                    "redirect_uri is required: this application has no registered redirect URI."
                        .to_owned(),
                ));
            }
        };
        let redirect_url = usable_redirect(&redirect_uri).map_err(Refusal::Page)?;
        let state = field("state").map(str::to_owned);

        let refuse = |error: &'static str, description: &str| Refusal::Redirect {
            target: Box::new(redirect_url.clone()),
            error,
            description: description.to_owned(),
            state: state.clone(),
        };
        match field("response_type") {
            Some("code") => {}
            None => return Err(refuse("invalid_request", "response_type is required.")),
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "Only response_type=code is supported.",
                ));
            }
        }
        let mut scopes: Vec<String> = Vec::new();
        for scope in field("scope").unwrap_or_default().split(' ') {
            if scope.is_empty() || scopes.iter().any(|known| known == scope) {
                continue;
            }
            if !self.scopes.iter().any(|allowed| allowed == scope) {
                return Err(refuse(
                    "invalid_scope",
                    &format!("Scope {scope} is not available to this application."),
                ));
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            return Err(refuse("invalid_scope", "At least one scope is required."));
        }

        let echoed = [
            "response_type",
            "scope",
            "client_id",
            "state",
            "redirect_uri",
        ]
        .into_iter()
        .filter_map(|name| Some((name, field(name)?.to_owned())))
        .collect();
        Ok(AuthorizationRequest {
            redirect_uri,
            redirect_url,
            state,
            scopes,
            echoed,
        })
    }

    /// The redirect that ends an authorization; approval creates the consent and its code.
    fn decide(&self, request: AuthorizationRequest, decision: Decision) -> Response {
        let mut params: Vec<(&str, String)> = match decision {
            Decision::Approve => {
                let code = self.approve(request.scopes, request.redirect_uri);
                self.count(|stats| stats.authorizations += 1);
                vec![("code", code)]
            }
            Decision::Deny => {
                self.count(|stats| stats.denials += 1);
                vec![("error", "access_denied".to_owned())]
            }
            Decision::ServerError => vec![
                ("error", "server_error".to_owned()),
                (
                    "error_description",
                    "The sandbox was asked to fail this authorization.".to_owned(),
                ),
            ],
        };
        if let Some(state) = request.state {
            params.push(("state", state));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        redirect_to(request.redirect_url, &params)
    }

    /// Creates a consent for `scopes` and returns the code that redeems it.
    fn approve(&self, scopes: Vec<String>, redirect_uri: String) -> String {
        let consent_id = uuid::Uuid::new_v4().to_string();
        let mut rng = rand::rng();
        let accounts = scopes
            .iter()
            .flat_map(|scope| {
                let count = rng.random_range(1..=2);
                (0..count)
                    .map(|_| {
                        let account = Account {
                            iban: dutch_iban(&mut rng),
                            status: "valid".to_owned(),
                        };
                        (scope.clone(), account)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let code = random_secret(43, 43);
        let now = Instant::now();

        let mut ledger = lock(&self.ledger);
        ledger.prune(now);
        ledger.grants.insert(
            consent_id.clone(),
            Grant {
                consented_on: unix_now(),
                scopes,
                refresh_count: 0,
                revocation: None,
                accounts,
            },
        );
        ledger.consent_order.push(consent_id.clone());
        ledger.codes.insert(
            code.clone(),
            IssuedCode {
                consent_id,
                client_id: self.client_id.clone(),
                redirect_uri,
                expires_at: now.checked_add(self.code_lifetime),
                spent: false,
            },
        );
        ledger.secrets.push(code.clone());
        code
    }

    /// The token endpoint's answer: the JSON body, or the error to send.
    fn token_answer(
        &self,
        headers: &HeaderMap,
        form: Option<Result<HashMap<String, String>, String>>,
    ) -> Result<Value, OAuthError> {
        match basic_credentials(headers) {
            Some((id, secret)) if id == self.client_id && secret == self.client_secret => {}
            _ => return Err(OAuthError::invalid_client()),
        }
        let form = form
            .ok_or_else(|| {
                OAuthError::invalid_request("Expected an application/x-www-form-urlencoded body.")
            })?
            .map_err(|name| {
                OAuthError::invalid_request(format!("Parameter {name} was sent more than once."))
            })?;
        let field = |name: &str| form.get(name).map(String::as_str);
        match field("grant_type") {
            Some("authorization_code") => {
                let code = field("code")
                    .ok_or_else(|| OAuthError::invalid_request("The code parameter is missing."))?;
                let (issued, consent_id) = self.exchange_code(code, field("redirect_uri"))?;
                self.count(|stats| stats.code_exchanges += 1);
                Ok(self.token_body(issued, Some(consent_id)))
            }
            Some("refresh_token") => {
                let refresh_token = field("refresh_token").ok_or_else(|| {
                    OAuthError::invalid_request("The refresh_token parameter is missing.")
                })?;
                let issued = self.refresh(refresh_token)?;
                self.count(|stats| stats.refreshes += 1);
                Ok(self.token_body(issued, None))
            }
            None => Err(OAuthError::invalid_request(
                "The grant_type parameter is missing.",
            )),
            Some(_) => Err(OAuthError::invalid_request(
                "grant_type must be authorization_code or refresh_token.",
            )),
        }
    }

    /// Redeems a code for the grant's first tokens; returns them and the consent id.
    fn exchange_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<(Issued, String), OAuthError> {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        let Some(issued) = ledger.codes.get(code) else {
            return Err(OAuthError::invalid_code(
                "The authorization code is unknown or expired.",
            ));
        };
        // Expiry first: an expired code may or may not have been pruned yet, and the answer
        // must not depend on which.
        if !alive(issued.expires_at, now) {
            return Err(OAuthError::invalid_code("The authorization code expired."));
        }
        let consent_id = issued.consent_id.clone();
        if issued.spent {
            // RFC 6749 §4.1.2: a code used twice may have been stolen, so everything issued
            // from it is voided.
            ledger.revoke(&consent_id, Revocation::Reuse);
            return Err(OAuthError::invalid_code(
                "The authorization code was already used; its tokens are revoked.",
            ));
        }
        if issued.client_id != self.client_id {
            return Err(OAuthError::invalid_code(
                "The authorization code was issued to another client.",
            ));
        }
        if redirect_uri.is_some_and(|given| given != issued.redirect_uri) {
            return Err(OAuthError::invalid_code(
                "redirect_uri does not match the one used at the authorization endpoint.",
            ));
        }
        if ledger
            .grants
            .get(&consent_id)
            .is_none_or(|grant| grant.revocation.is_some())
        {
            return Err(OAuthError::invalid_code("The consent was revoked."));
        }
        if let Some(issued) = ledger.codes.get_mut(code) {
            issued.spent = true;
        }
        let tokens = self.issue_tokens(&mut ledger, &consent_id, now);
        Ok((tokens, consent_id))
    }

    /// Rotates a refresh token: the presented one is spent, a new pair is issued.
    fn refresh(&self, refresh_token: &str) -> Result<Issued, OAuthError> {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        let Some(presented) = ledger.refresh_tokens.get(refresh_token) else {
            return Err(OAuthError::invalid_refresh(
                "The refresh token is unknown or expired.",
            ));
        };
        // Expiry first, as for codes: a spent token counts as reuse only while it would still
        // have been valid.
        if !alive(presented.expires_at, now) {
            return Err(OAuthError::invalid_refresh("The refresh token expired."));
        }
        let consent_id = presented.consent_id.clone();
        if presented.spent {
            // Either the client lost a rotation or someone else holds a copy; the bank cannot
            // tell which, so the whole grant goes.
            ledger.revoke(&consent_id, Revocation::Reuse);
            drop(ledger);
            self.count(|stats| stats.reuse_detections += 1);
            return Err(OAuthError::invalid_refresh(
                "The refresh token was already used; the consent's tokens are revoked.",
            ));
        }
        let Some(grant) = ledger.grants.get(&consent_id) else {
            return Err(OAuthError::invalid_refresh("The consent does not exist."));
        };
        if grant.revocation.is_some() {
            return Err(OAuthError::invalid_refresh(
                "The consent was revoked; ask the user to authorize again.",
            ));
        }
        if grant.refresh_count >= self.refresh_limit {
            return Err(OAuthError::invalid_refresh(format!(
                "The consent reached its limit of {} refreshes; ask the user to authorize again.",
                self.refresh_limit
            )));
        }
        if let Some(presented) = ledger.refresh_tokens.get_mut(refresh_token) {
            presented.spent = true;
        }
        if let Some(grant) = ledger.grants.get_mut(&consent_id) {
            grant.refresh_count += 1;
        }
        Ok(self.issue_tokens(&mut ledger, &consent_id, now))
    }

    fn issue_tokens(&self, ledger: &mut Ledger, consent_id: &str, now: Instant) -> Issued {
        ledger.prune(now);
        // The docs warn that token lengths are not fixed; varying them catches a client that
        // sized a column to the first token it saw.
        let access_token = random_secret(64, 128);
        let refresh_token = random_secret(64, 128);
        ledger.access_tokens.insert(
            access_token.clone(),
            IssuedToken {
                consent_id: consent_id.to_owned(),
                expires_at: now.checked_add(self.access_lifetime),
            },
        );
        ledger.refresh_tokens.insert(
            refresh_token.clone(),
            IssuedRefreshToken {
                consent_id: consent_id.to_owned(),
                expires_at: now.checked_add(self.refresh_lifetime),
                spent: false,
            },
        );
        ledger.secrets.push(access_token.clone());
        ledger.secrets.push(refresh_token.clone());
        let (consented_on, scope) = ledger
            .grants
            .get(consent_id)
            .map(|grant| (grant.consented_on, grant.scopes.join(" ")))
            .unwrap_or_default();
        Issued {
            access_token,
            refresh_token,
            consented_on,
            scope,
        }
    }

    /// The success body: the docs' shape, or plain RFC 6749 in standard mode. `consent_id` is
    /// Some for a code exchange, the only answer that carries `metadata`.
    fn token_body(&self, issued: Issued, consent_id: Option<String>) -> Value {
        let mut body = Map::new();
        body.insert("token_type".to_owned(), json!("bearer"));
        body.insert("access_token".to_owned(), json!(issued.access_token));
        body.insert(
            "expires_in".to_owned(),
            json!(self.access_lifetime.as_secs()),
        );
        if !self.standard_oauth {
            body.insert("consented_on".to_owned(), json!(issued.consented_on));
            if let Some(consent_id) = consent_id {
                body.insert(
                    "metadata".to_owned(),
                    json!(format!("{METADATA_PREFIX}{consent_id}")),
                );
            }
        }
        body.insert("scope".to_owned(), json!(issued.scope));
        body.insert("refresh_token".to_owned(), json!(issued.refresh_token));
        if !self.standard_oauth {
            body.insert(
                "refresh_token_expires_in".to_owned(),
                json!(self.refresh_lifetime.as_secs()),
            );
        }
        Value::Object(body)
    }

    /// The Consent Details answer for `consent_id`, read with `access_token`.
    fn consent_details(&self, access_token: &str, consent_id: &str) -> Result<Value, ApiError> {
        let now = Instant::now();
        let ledger = lock(&self.ledger);
        let token = ledger
            .access_tokens
            .get(access_token)
            .filter(|token| alive(token.expires_at, now))
            .ok_or_else(ApiError::unauthorized)?;
        let grant = ledger
            .grants
            .get(&token.consent_id)
            .ok_or_else(ApiError::unauthorized)?;
        match grant.revocation {
            Some(Revocation::ByUser) => {
                return Err(ApiError::new(StatusCode::FORBIDDEN, CONSENT_INVALID));
            }
            Some(Revocation::Reuse) => return Err(ApiError::unauthorized()),
            None => {}
        }
        if token.consent_id != consent_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Not authorized for this consent.",
            ));
        }
        let mut access: Map<String, Value> = Map::new();
        for (scope, account) in &grant.accounts {
            let listed = access
                .entry(scope.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(listed) = listed {
                listed.push(json!({
                    "iban": account.iban,
                    "currency": "EUR",
                    "status": account.status,
                    "validUntil": VALID_UNTIL,
                }));
            }
        }
        Ok(json!({ "consentId": consent_id, "access": access }))
    }

    pub(super) fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(super) fn client_secret(&self) -> &str {
        &self.client_secret
    }

    pub(super) fn scopes(&self) -> &[String] {
        &self.scopes
    }

    pub(super) fn registered_redirect_uri(&self) -> Option<&str> {
        self.redirect_uri.as_deref()
    }

    pub(super) fn stats(&self) -> RabobankStats {
        lock(&self.stats).clone()
    }

    pub(super) fn consent_ids(&self) -> Vec<String> {
        lock(&self.ledger).consent_order.clone()
    }

    pub(super) fn grant(&self, consent_id: &str) -> Option<RabobankGrantView> {
        let ledger = lock(&self.ledger);
        let grant = ledger.grants.get(consent_id)?;
        Some(RabobankGrantView {
            consent_id: consent_id.to_owned(),
            refresh_count: grant.refresh_count,
            revoked: grant.revocation.is_some(),
            scope: grant.scopes.join(" "),
        })
    }

    pub(super) fn revoke_consent(&self, consent_id: &str) -> bool {
        let mut ledger = lock(&self.ledger);
        let Some(grant) = ledger.grants.get_mut(consent_id) else {
            return false;
        };
        grant.revocation = Some(Revocation::ByUser);
        for (_, account) in &mut grant.accounts {
            account.status = "revokedByPsu".to_owned();
        }
        true
    }

    pub(super) fn set_account_status(&self, consent_id: &str, status: &str) -> bool {
        let mut ledger = lock(&self.ledger);
        let Some(grant) = ledger.grants.get_mut(consent_id) else {
            return false;
        };
        for (_, account) in &mut grant.accounts {
            status.clone_into(&mut account.status);
        }
        true
    }

    pub(super) fn secrets(&self) -> Vec<String> {
        lock(&self.ledger).secrets.clone()
    }
}

/// A random URL-safe string of `min..=max` alphanumerics (5.95 bits each, so 43 give 256 bits).
fn random_secret(min: usize, max: usize) -> String {
    let mut rng = rand::rng();
    let length = rng.random_range(min..=max);
    (&mut rng)
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// A Rabobank IBAN (NLkk RABO + 10 digits) with correct ISO 13616 check digits, so a client
/// that validates IBANs accepts it.
fn dutch_iban(rng: &mut impl rand::Rng) -> String {
    let digits: String = (0..10)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    iban("NL", &format!("RABO{digits}"))
}

/// `country` + check digits + `bban`; letters count as 10 (A) to 35 (Z) in the mod-97 check.
fn iban(country: &str, bban: &str) -> String {
    let rearranged = format!("{bban}{country}00");
    let remainder = rearranged.chars().fold(0u32, |acc, character| {
        let value = character.to_digit(36).unwrap_or(0);
        if value >= 10 {
            (acc * 100 + value) % 97
        } else {
            (acc * 10 + value) % 97
        }
    });
    format!("{country}{:02}{bban}", 98 - remainder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::started;
    use crate::{Fault, Sandbox, SandboxOptions, start};

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
    async fn approval_redirects_with_code_and_state_keeping_the_redirect_query() {
        let sandbox = started(SandboxOptions::default()).await;
        let state = "a b&c=d/é";
        let response = authorize(&sandbox, &approve_params(state)).await;
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let (target, params) = redirected(&response);
        assert_eq!(target, "https://app.example/rabobank/callback");
        assert_eq!(params["tenant"], "7");
        assert_eq!(params["state"], state);
        let code = &params["code"];
        assert!(code.len() >= 22 && code.bytes().all(|b| b.is_ascii_alphanumeric()));

        // No state given, none echoed.
        let mut params = approve_params("unused");
        params.retain(|(name, _)| *name != "state");
        let (_, answer) = redirected(&authorize(&sandbox, &params).await);
        assert!(answer.contains_key("code") && !answer.contains_key("state"));

        let consent_ids = sandbox.rabobank_consent_ids();
        assert_eq!(consent_ids.len(), 2);
        assert!(uuid::Uuid::parse_str(&consent_ids[0]).is_ok());
        assert_eq!(
            sandbox.rabobank_grant(&consent_ids[0]),
            Some(RabobankGrantView {
                consent_id: consent_ids[0].clone(),
                refresh_count: 0,
                revoked: false,
                scope: SCOPE.to_owned(),
            })
        );
        assert_eq!(sandbox.rabobank_stats().authorizations, 2);
        assert!(sandbox.rabobank_secrets().contains(code));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn denial_and_server_error_redirect_with_the_error() {
        let sandbox = started(SandboxOptions::default()).await;
        let mut params = approve_params("xyz");
        params[5].1 = "deny";
        let (_, denied) = redirected(&authorize(&sandbox, &params).await);
        assert_eq!(denied["error"], "access_denied");
        assert_eq!(denied["state"], "xyz");
        assert!(!denied.contains_key("code"));

        params[5].1 = "server_error";
        let (_, failed) = redirected(&authorize(&sandbox, &params).await);
        assert_eq!(failed["error"], "server_error");
        assert!(failed.contains_key("error_description"));
        assert_eq!(failed["state"], "xyz");

        let stats = sandbox.rabobank_stats();
        assert_eq!((stats.authorizations, stats.denials), (0, 1));
        assert!(sandbox.rabobank_consent_ids().is_empty());
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_scope_or_response_type_redirects_with_the_error() {
        let sandbox = started(SandboxOptions::default()).await;
        let cases = [
            (
                "scope",
                "ais.balances.read pis.payments.write",
                "invalid_scope",
            ),
            ("scope", "", "invalid_scope"),
            ("response_type", "token", "unsupported_response_type"),
        ];
        for (name, value, error) in cases {
            let mut params = approve_params("st");
            for param in &mut params {
                if param.0 == name {
                    param.1 = value;
                }
            }
            let (target, answer) = redirected(&authorize(&sandbox, &params).await);
            assert_eq!(target, "https://app.example/rabobank/callback");
            assert_eq!(answer["error"], error, "{name}={value}");
            assert!(answer.contains_key("error_description"));
            assert_eq!(answer["state"], "st");
        }
        assert!(sandbox.rabobank_consent_ids().is_empty());
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_client_or_unusable_redirect_gets_a_page_never_a_redirect() {
        let sandbox = started(SandboxOptions::default()).await;
        let cases: [(&str, Option<&str>); 4] = [
            ("client_id", Some("someone-else")),
            ("redirect_uri", None),
            ("redirect_uri", Some("javascript:alert(1)")),
            ("redirect_uri", Some("/relative/callback")),
        ];
        for (name, value) in cases {
            let mut params = approve_params("s");
            params.retain(|param| param.0 != name);
            if let Some(value) = value {
                params.push((name, value));
            }
            let response = authorize(&sandbox, &params).await;
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{name}={value:?}"
            );
            assert!(response.headers().get(header::LOCATION).is_none());
            let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(content_type.starts_with("text/html"), "{content_type}");
        }
        sandbox.shutdown().await;

        // With a registered redirect URI, another one is refused and none means that one.
        let registered = "http://127.0.0.1:9/registered";
        let sandbox = started(with_bank(|bank| {
            bank.redirect_uri = Some(registered.to_owned())
        }))
        .await;
        let response = authorize(&sandbox, &approve_params("s")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let mut params = approve_params("s");
        params.retain(|param| param.0 != "redirect_uri");
        let (target, answer) = redirected(&authorize(&sandbox, &params).await);
        assert_eq!(target, registered);
        let code = &answer["code"];
        // The code is bound to the registered URI.
        let (status, _, body) = token_request(
            &sandbox,
            CLIENT,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", registered),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        sandbox.shutdown().await;

        let refused = start(
            with_bank(|bank| bank.redirect_uri = Some("ftp://example.com/cb".to_owned())),
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        )
        .await;
        assert!(refused.is_err());
    }

    #[tokio::test]
    async fn consent_page_escapes_what_it_echoes_and_its_form_decides() {
        let sandbox = started(SandboxOptions::default()).await;
        let state = "\"><script>alert(1)</script>";
        let mut params = approve_params(state);
        params.retain(|param| param.0 != "sandbox_decision");
        let response = authorize(&sandbox, &params).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
        let page = response.text().await.expect("page");
        assert!(page.contains(r#"<form method="post" action="/rabobank/oauth2/authorize">"#));
        assert!(page.contains(r#"name="decision" value="approve""#));
        assert!(page.contains(r#"name="decision" value="deny""#));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
        assert!(page.contains(
            r#"name="redirect_uri" value="https://app.example/rabobank/callback?tenant=7""#
        ));
        assert!(!page.to_lowercase().contains("<script"));

        let mut form = params.clone();
        form.push(("decision", "approve"));
        let response = client()
            .post(authorize_url(&sandbox))
            .form(&form)
            .send()
            .await
            .expect("form post");
        let (_, approved) = redirected(&response);
        assert_eq!(approved["state"], state);
        let (status, _) = exchange(&sandbox, &approved["code"]).await;
        assert_eq!(status, StatusCode::OK);

        form.last_mut().expect("decision").1 = "deny";
        let response = client()
            .post(authorize_url(&sandbox))
            .form(&form)
            .send()
            .await
            .expect("form post");
        assert_eq!(redirected(&response).1["error"], "access_denied");

        let stats = sandbox.rabobank_stats();
        assert_eq!((stats.authorizations, stats.denials), (1, 1));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn code_exchange_answers_the_documented_fields_and_a_reused_code_revokes() {
        let sandbox = started(SandboxOptions::default()).await;
        let before = unix_now();
        let code = approved_code(&sandbox).await;
        let (status, headers, body) = token_request(
            &sandbox,
            CLIENT,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let consent_id = sandbox.rabobank_consent_ids()[0].clone();
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["refresh_token_expires_in"], 2_592_000);
        assert_eq!(body["scope"], SCOPE);
        assert_eq!(body["metadata"], format!("a:consentId {consent_id}"));
        let consented_on = body["consented_on"].as_u64().expect("consented_on");
        assert!(consented_on >= before && consented_on <= unix_now());
        let access = text(&body, "access_token").to_owned();
        let refresh_token = text(&body, "refresh_token").to_owned();
        assert!(access.len() >= 64 && refresh_token.len() >= 64);
        let secrets = sandbox.rabobank_secrets();
        for secret in [&code, &access, &refresh_token] {
            assert!(secrets.contains(secret));
        }
        let url = consent_url(&sandbox, &consent_id);
        assert_eq!(consent(&url, &access).await.0, StatusCode::OK);

        let (status, again) = exchange(&sandbox, &code).await;
        assert_eq!(
            (status, &again["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
        );
        assert!(sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
        let (status, refused) = refresh(&sandbox, &refresh_token).await;
        assert_eq!(
            (status, &refused["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
        );
        assert_eq!(consent(&url, &access).await.0, StatusCode::UNAUTHORIZED);

        // Unknown codes and a redirect_uri other than the one used are refused without harm.
        let (status, unknown) = exchange(&sandbox, "no-such-code").await;
        assert_eq!(
            (status, &unknown["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
        );
        let code = approved_code(&sandbox).await;
        let (status, _, mismatch) = token_request(
            &sandbox,
            CLIENT,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://app.example/other"),
            ],
        )
        .await;
        assert_eq!(
            (status, &mismatch["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
        );
        assert_eq!(exchange(&sandbox, &code).await.0, StatusCode::OK);

        let stats = sandbox.rabobank_stats();
        assert_eq!((stats.code_exchanges, stats.invalid_grant_answers), (2, 4));
        assert_eq!(sandbox.stats().tokens_issued, 2);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn client_authentication_and_grant_type_errors() {
        let sandbox = started(SandboxOptions::default()).await;
        let code = approved_code(&sandbox).await;
        let exchange_form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
        ];
        let body_credentials = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", "sandbox-bank-client"),
            ("client_secret", "sandbox-bank-secret"),
        ];
        let cases: [(Basic<'_>, &[(&str, &str)]); 3] = [
            (Some(("sandbox-bank-client", "wrong")), &exchange_form),
            (
                Some(("someone-else", "sandbox-bank-secret")),
                &exchange_form,
            ),
            (None, &body_credentials),
        ];
        for (credentials, form) in cases {
            let (status, headers, body) = token_request(&sandbox, credentials, form).await;
            assert_eq!(
                (status, &body["error"]),
                (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
            );
            assert_eq!(
                headers[header::WWW_AUTHENTICATE],
                r#"Basic realm="rabobank-sandbox""#
            );
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            assert!(body["error_description"].is_string());
        }
        let garbled = client()
            .post(token_url(&sandbox))
            .header(header::AUTHORIZATION, "Basic !!!")
            .form(&exchange_form)
            .send()
            .await
            .expect("request");
        assert_eq!(garbled.status(), StatusCode::UNAUTHORIZED);

        for form in [
            &[("code", code.as_str())][..],
            &[("grant_type", "password")],
        ] {
            let (status, headers, body) = token_request(&sandbox, CLIENT, form).await;
            assert_eq!(
                (status, &body["error"]),
                (StatusCode::BAD_REQUEST, &json!("invalid_request"))
            );
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        }
        // None of that spent the code.
        assert_eq!(exchange(&sandbox, &code).await.0, StatusCode::OK);
        let stats = sandbox.rabobank_stats();
        assert_eq!(stats.invalid_client_answers, 4);
        assert_eq!(sandbox.stats().token_requests, 7);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_grant() {
        let sandbox = started(SandboxOptions::default()).await;
        let (first, consent_id) = granted(&sandbox).await;
        let first_refresh = text(&first, "refresh_token");

        let (status, second) = refresh(&sandbox, first_refresh).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert!(second.get("metadata").is_none());
        assert_eq!(second["consented_on"], first["consented_on"]);
        assert_eq!(second["refresh_token_expires_in"], 2_592_000);
        assert_eq!(second["scope"], SCOPE);
        let second_refresh = text(&second, "refresh_token");
        assert_ne!(second_refresh, first_refresh);
        assert_ne!(second["access_token"], first["access_token"]);
        assert_eq!(
            sandbox
                .rabobank_grant(&consent_id)
                .expect("grant")
                .refresh_count,
            1
        );
        let url = consent_url(&sandbox, &consent_id);
        assert_eq!(
            consent(&url, text(&second, "access_token")).await.0,
            StatusCode::OK
        );

        // The spent token comes back: the whole grant goes, the fresh pair with it.
        let (status, reused) = refresh(&sandbox, first_refresh).await;
        assert_eq!(
            (status, &reused["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
        );
        let grant = sandbox.rabobank_grant(&consent_id).expect("grant");
        assert!(grant.revoked);
        assert_eq!(grant.refresh_count, 1);
        let (status, after) = refresh(&sandbox, second_refresh).await;
        assert_eq!(
            (status, &after["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
        );
        assert_eq!(
            consent(&url, text(&second, "access_token")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, _) = refresh(&sandbox, "never-issued").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let stats = sandbox.rabobank_stats();
        assert_eq!(stats.reuse_detections, 1);
        assert_eq!((stats.refreshes, stats.refresh_requests), (1, 4));
        assert_eq!(stats.invalid_grant_answers, 3);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_consent_allows_only_the_refresh_limit() {
        let sandbox = started(with_bank(|bank| bank.refresh_limit = 2)).await;
        let (mut tokens, consent_id) = granted(&sandbox).await;
        for _ in 0..2 {
            let (status, next) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
            assert_eq!(status, StatusCode::OK);
            tokens = next;
        }
        let (status, refused) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
        assert_eq!(
            (status, &refused["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
        );
        let grant = sandbox.rabobank_grant(&consent_id).expect("grant");
        assert_eq!((grant.refresh_count, grant.revoked), (2, false));
        assert_eq!(sandbox.rabobank_stats().reuse_detections, 0);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn expired_codes_and_refresh_tokens_are_invalid_grants() {
        // Only ever waiting past a lifetime, never racing one, keeps this steady on a busy box.
        let sandbox = started(with_bank(|bank| {
            bank.code_lifetime = Duration::from_millis(50);
        }))
        .await;
        let stale = approved_code(&sandbox).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, body) = exchange(&sandbox, &stale).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
        );
        sandbox.shutdown().await;

        let sandbox = started(with_bank(|bank| {
            bank.refresh_lifetime = Duration::from_millis(50);
        }))
        .await;
        let (tokens, consent_id) = granted(&sandbox).await;
        // Whole seconds, rounded down: a client never believes a token lives longer than it does.
        assert_eq!(tokens["refresh_token_expires_in"], 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, body) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
        );
        // Expired is not reuse, and does not revoke.
        assert_eq!(sandbox.rabobank_stats().reuse_detections, 0);
        assert!(!sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn standard_mode_answers_plain_rfc_6749_and_still_rotates() {
        let sandbox = started(with_bank(|bank| bank.standard_oauth = true)).await;
        let (tokens, consent_id) = granted(&sandbox).await;
        let mut fields: Vec<&String> = tokens.as_object().expect("object").keys().collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "access_token",
                "expires_in",
                "refresh_token",
                "scope",
                "token_type"
            ]
        );
        let (status, rotated) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rotated.as_object().expect("object").len(), 5);
        let (status, _) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn consent_details_follow_the_consent() {
        let sandbox = started(SandboxOptions::default()).await;
        let (tokens, consent_id) = granted(&sandbox).await;
        let access = text(&tokens, "access_token");
        let base = sandbox.rabobank_consent_api_base_url();
        let psd2 = consent_url(&sandbox, &consent_id);
        let premium = format!("{base}/oauth2-premium/v1/consents/{consent_id}");

        let (status, details) = consent(&psd2, access).await;
        assert_eq!(status, StatusCode::OK, "{details}");
        assert_eq!(details["consentId"], consent_id.as_str());
        let access_map = details["access"].as_object().expect("access");
        assert_eq!(access_map.len(), 2);
        for scope in SCOPE.split(' ') {
            let accounts = access_map[scope].as_array().expect("accounts");
            assert!((1..=2).contains(&accounts.len()));
            for account in accounts {
                let iban = text(account, "iban");
                assert!(iban.starts_with("NL") && &iban[4..8] == "RABO" && iban.len() == 18);
                assert_eq!(iban, super::iban("NL", &iban[4..]));
                assert_eq!(
                    (
                        &account["currency"],
                        &account["status"],
                        &account["validUntil"]
                    ),
                    (&json!("EUR"), &json!("valid"), &json!("9999-12-31"))
                );
            }
        }
        assert_eq!(consent(&premium, access).await, (status, details));

        // A token of another consent may not read this one.
        let (other, _) = granted(&sandbox).await;
        let (status, body) = consent(&psd2, text(&other, "access_token")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_ne!(body["moreInformation"], "CONSENT_INVALID");

        assert!(sandbox.rabobank_set_account_status(&consent_id, "expired"));
        let (status, body) = consent(&psd2, access).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["access"][SCOPE.split(' ').next().unwrap()][0]["status"],
            "expired"
        );

        assert!(sandbox.rabobank_revoke_consent(&consent_id));
        assert!(!sandbox.rabobank_revoke_consent("no-such-consent"));
        let (status, body) = consent(&premium, access).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            json!({ "httpCode": "403", "httpMessage": "Forbidden", "moreInformation": "CONSENT_INVALID" })
        );
        let (status, body) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
        );
        assert!(sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
        // The other consent is untouched.
        let other_url = consent_url(&sandbox, &sandbox.rabobank_consent_ids()[1]);
        assert_eq!(
            consent(&other_url, text(&other, "access_token")).await.0,
            StatusCode::OK
        );

        let response = client().get(&psd2).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(
            (&body["httpCode"], &body["httpMessage"]),
            (&json!("401"), &json!("Unauthorized"))
        );
        assert_eq!(consent(&psd2, "bogus").await.0, StatusCode::UNAUTHORIZED);

        assert_eq!(sandbox.rabobank_stats().consent_requests, 8);
        let stats = sandbox.stats();
        assert_eq!((stats.api_requests, stats.unauthorized), (8, 2));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn injected_faults_on_the_token_path_answer_in_the_oauth_shape() {
        let sandbox = started(SandboxOptions::default()).await;
        let code = approved_code(&sandbox).await;
        for (status, retry_after) in [(503, Some("2")), (429, Some("1")), (500, None)] {
            sandbox.inject_fault(Fault {
                path_contains: "/rabobank/oauth2/token".to_owned(),
                status,
                retry_after: retry_after.map(str::to_owned),
                times: 1,
            });
        }
        for (status, error) in [
            (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            (StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable"),
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        ] {
            let (answer, headers, body) = token_request(
                &sandbox,
                CLIENT,
                &[("grant_type", "authorization_code"), ("code", &code)],
            )
            .await;
            assert_eq!((answer, &body["error"]), (status, &json!(error)));
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        }
        // The faults never reached the bank, so the code is still good.
        assert_eq!(exchange(&sandbox, &code).await.0, StatusCode::OK);

        sandbox.inject_fault(Fault {
            path_contains: "/rabobank/api".to_owned(),
            status: 503,
            retry_after: None,
            times: 1,
        });
        let (status, body) = consent(&consent_url(&sandbox, "x"), "t").await;
        assert_eq!(
            (status, &body["httpCode"]),
            (StatusCode::SERVICE_UNAVAILABLE, &json!("503"))
        );

        let stats = sandbox.stats();
        assert_eq!((stats.token_requests, stats.injected_faults), (4, 4));
        assert_eq!(sandbox.rabobank_stats().code_exchanges, 1);
        sandbox.shutdown().await;
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
            "PARTNER_SYNC__RABOBANK__SCOPES=ais.balances.read,ais.transactions.read-90days"
                .to_owned(),
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

    #[test]
    fn generated_ibans_pass_the_mod_97_check() {
        // A textbook example of ISO 13616 for the Netherlands.
        assert_eq!(iban("NL", "ABNA0417164300"), "NL91ABNA0417164300");
        let mut rng = rand::rng();
        for _ in 0..100 {
            let generated = dutch_iban(&mut rng);
            assert_eq!(generated, iban("NL", &generated[4..]));
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
