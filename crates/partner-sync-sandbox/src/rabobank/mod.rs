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
//!
//! `authorize.rs` is the authorization endpoint and its consent page, `token.rs` the token
//! endpoint, `consent.rs` the Consent Details Service; this file holds the bank's state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng as _;
use rand::distr::Alphanumeric;

mod authorize;
mod consent;
mod options;
mod token;

#[cfg(test)]
mod tests;

pub use options::RabobankOptions;

use crate::gate::{Endpoint, PartnerPaths};
use crate::oauth::{OAuthError, oauth_error_code};
use crate::web::usable_redirect;
use crate::{Sandbox, Shared, duration_to_nanos, lock};
use authorize::error_page;
use consent::ApiError;

pub(super) const OAUTH_BASE_PATH: &str = "/rabobank/oauth2";
const AUTHORIZE_PATH: &str = "/rabobank/oauth2/authorize";
const TOKEN_PATH: &str = "/rabobank/oauth2/token";
pub(super) const CONSENT_API_BASE_PATH: &str = "/rabobank/api";
const PREFIX: &str = "/rabobank";

/// The realm of the Basic challenge sent with `invalid_client` (RFC 6749 §5.2).
const BASIC_CHALLENGE: &str = r#"Basic realm="rabobank-sandbox""#;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            AUTHORIZE_PATH,
            get(authorize::authorize_page).post(authorize::authorize_decision),
        )
        .route(TOKEN_PATH, post(token::issue_token))
        .route(
            "/rabobank/api/oauth2/consents/{consent_id}",
            get(consent::consent_details),
        )
        .route(
            "/rabobank/api/oauth2-premium/v1/consents/{consent_id}",
            get(consent::consent_details),
        )
}

/// Where this partner's paths lie, for the gate.
pub(crate) const PATHS: PartnerPaths = PartnerPaths {
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

/// Rabobank's URLs and knobs.
impl Sandbox {
    /// "{base_url}/rabobank/oauth2": `/authorize` and `/token` live under it.
    pub fn rabobank_oauth_base_url(&self) -> String {
        format!("{}{}", self.base_url(), OAUTH_BASE_PATH)
    }

    /// "{base_url}/rabobank/api": the Consent Details Service lives under it, at
    /// `/oauth2/consents/{id}` (PSD2) and `/oauth2-premium/v1/consents/{id}` (Premium).
    pub fn rabobank_consent_api_base_url(&self) -> String {
        format!("{}{}", self.base_url(), CONSENT_API_BASE_PATH)
    }

    /// What the Rabobank authorization server and consent service have counted so far.
    pub fn rabobank_stats(&self) -> RabobankStats {
        self.shared.rabobank.stats()
    }

    /// Every Rabobank consent ever approved, oldest first.
    pub fn rabobank_consent_ids(&self) -> Vec<String> {
        self.shared.rabobank.consent_ids()
    }

    pub fn rabobank_grant(&self, consent_id: &str) -> Option<RabobankGrantView> {
        self.shared.rabobank.grant(consent_id)
    }

    /// The user revokes the consent: its accounts show `revokedByPsu`, refreshing answers 401
    /// invalid_grant and the consent API 403 CONSENT_INVALID. False if it does not exist.
    pub fn rabobank_revoke_consent(&self, consent_id: &str) -> bool {
        self.shared.rabobank.revoke_consent(consent_id)
    }

    /// Sets the status of every account of the consent (e.g. "expired") while its tokens keep
    /// working, as the docs say a dead consent can still answer 200. False if it does not exist.
    pub fn rabobank_set_account_status(&self, consent_id: &str, status: &str) -> bool {
        self.shared.rabobank.set_account_status(consent_id, status)
    }

    /// Every Rabobank code, access token and refresh token ever issued, oldest first.
    pub fn rabobank_secrets(&self) -> Vec<String> {
        self.shared.rabobank.secrets()
    }

    /// From now on the Rabobank token endpoint holds each answer this long after processing
    /// the request (see `--rabobank-token-answer-delay`).
    pub fn set_rabobank_token_answer_delay(&self, delay: Duration) {
        self.shared.rabobank.set_answer_delay(delay);
    }
}
