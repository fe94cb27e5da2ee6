//! EnergyZero's identity provider (partner token, impersonation) and its GraphQL customer API,
//! as EnergyZero's partner documentation, its example partner-auth request (a `curl --form`)
//! and the GraphQL schema agreed with the client describe them.
//!
//! The partner authenticates with client credentials sent as form fields (urlencoded or
//! multipart, as that example curl does) and gets a short-lived JWT in the `Authorization`
//! response header. With it the partner impersonates one of its users, and the user's JWT
//! reads that user's data from the customer API. The API is real GraphQL (async-graphql's
//! dynamic schema), so parsing, validation, variables, aliases and fragments behave as a
//! client will meet them; the data stays plain JSON written from the documented field names,
//! which is also what the test handles edit.
//!
//! Nothing here is borrowed from the client in src/partners, so the integration tests check the
//! client against the docs.
//!
//! `identity.rs` is the identity provider, `customer_api.rs` the GraphQL API and `data.rs`
//! generates the users; this file holds the partner's state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use async_graphql::dynamic::Schema;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

mod customer_api;
mod data;
mod identity;
mod options;

#[cfg(test)]
mod tests;

pub use options::EnergyzeroOptions;

use crate::gate::{Endpoint, PartnerPaths};
use crate::oauth::{OAuthError, TokenStore, oauth_error_code};
use crate::{Sandbox, Shared, lock};
use customer_api::{GraphqlFailure, contract_id};

pub(super) const AUTH_BASE_PATH: &str = "/energyzero/auth";
const TOKEN_PATH: &str = "/energyzero/auth/oauth2/token";
const IMPERSONATE_PATH: &str = "/energyzero/auth/v1/auth/impersonate";
pub(super) const CUSTOMER_API_PATH: &str = "/energyzero/customer";
const PREFIX: &str = "/energyzero";
/// What a 401 from the identity provider or the customer API challenges with.
const TOKEN_CHALLENGE: &str = r#"Bearer error="invalid_token""#;

/// Users 3, 6, 9, ... are heavy; the others have `ORDINARY_CONTRACTS` contracts.
const HEAVY_EVERY: usize = 3;
const ORDINARY_CONTRACTS: usize = 2;
/// Everything is generated up front, so the sizes are bounded to keep memory sane.
const MAX_USERS: usize = 100_000;
const MAX_CONTRACTS: usize = 1_000_000;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(TOKEN_PATH, post(identity::issue_partner_token))
        .route(IMPERSONATE_PATH, get(identity::impersonate))
        .route(CUSTOMER_API_PATH, post(customer_api::customer_api))
}

/// Where this partner's paths lie, for the gate. Impersonation is part of the identity
/// provider, so it is neither the token endpoint nor the API: it answers OAuth-style errors.
pub(crate) const PATHS: PartnerPaths = PartnerPaths {
    prefix: PREFIX,
    token: TOKEN_PATH,
    api_base: CUSTOMER_API_PATH,
    reject: rejection,
    count_request: Some(count_request),
};

fn count_request(shared: &Shared, endpoint: Endpoint) {
    let energyzero = &shared.energyzero;
    match endpoint {
        Endpoint::Token => energyzero.count(|stats| stats.partner_token_requests += 1),
        Endpoint::Api => energyzero.count(|stats| stats.graphql_requests += 1),
        Endpoint::Other => {}
    }
}

/// EnergyZero's answer when the gate (rate limit, injected fault, random error) or the fallback
/// answers in its place.
fn rejection(endpoint: Endpoint, status: StatusCode, message: &str) -> Response {
    match endpoint {
        Endpoint::Token => {
            OAuthError::new(status, oauth_error_code(status), message).into_response()
        }
        Endpoint::Other => {
            let error = match status {
                StatusCode::UNAUTHORIZED => "invalid_token",
                StatusCode::FORBIDDEN => "insufficient_permissions",
                status => oauth_error_code(status),
            };
            OAuthError::new(status, error, message).into_response()
        }
        Endpoint::Api => {
            let code = match status {
                StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
                StatusCode::FORBIDDEN => "FORBIDDEN",
                StatusCode::NOT_FOUND => "NOT_FOUND",
                StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
                StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
                status if status.is_server_error() => "INTERNAL",
                _ => "BAD_REQUEST",
            };
            GraphqlFailure::new(status, code, message).into_response()
        }
    }
}

/// What EnergyZero has counted since it started; see `Sandbox::energyzero_stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyzeroStats {
    /// Every POST to the partner-token endpoint, any outcome (the gate's answers included).
    pub partner_token_requests: u64,
    /// Partner tokens issued.
    pub partner_tokens_issued: u64,
    /// User tokens issued by impersonation.
    pub impersonations: u64,
    /// Impersonations answered 400, 401 or 403.
    pub impersonations_refused: u64,
    /// Every request to the customer API, any outcome (the gate's answers included).
    pub graphql_requests: u64,
    /// Customer-API answers with `errors` (401s and bad requests included) from the API itself;
    /// the gate's answers are counted in `Sandbox::stats`.
    pub graphql_errors: u64,
}

/// Whom a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenHolder {
    Partner,
    User(String),
}

impl TokenHolder {
    /// The JWT's `typ` claim.
    fn kind(&self) -> &'static str {
        match self {
            Self::Partner => "partner",
            Self::User(_) => "user",
        }
    }
}

/// The simulated EnergyZero: its one partner client, the tokens it issued, the partner's users.
pub(super) struct Energyzero {
    client_id: String,
    client_secret: String,
    partner_token_lifetime: Duration,
    user_token_lifetime: Duration,
    page_cap: usize,
    token_body: bool,
    tokens: TokenStore<TokenHolder>,
    directory: Mutex<Directory>,
    schema: Schema,
    stats: Mutex<EnergyzeroStats>,
}

struct Directory {
    users: Vec<User>,
    /// Users the partner may not impersonate.
    forbidden: HashSet<String>,
    /// Users whose `me` fails with INTERNAL.
    failing: HashSet<String>,
}

struct User {
    id: String,
    /// The user's scalar fields exactly as the API serves them.
    record: Value,
    contracts: Vec<Value>,
}

impl Directory {
    fn user(&self, user_id: &str) -> Option<&User> {
        self.users.iter().find(|user| user.id == user_id)
    }

    fn user_mut(&mut self, user_id: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|user| user.id == user_id)
    }
}

impl User {
    fn contract_mut(&mut self, contract_id_wanted: &str) -> Option<&mut Value> {
        self.contracts
            .iter_mut()
            .find(|contract| contract_id(contract) == Some(contract_id_wanted))
    }
}

impl Energyzero {
    pub(super) fn new(options: &EnergyzeroOptions, seed: u64) -> anyhow::Result<Self> {
        if options.users > MAX_USERS {
            bail!(
                "the EnergyZero sandbox generates at most {MAX_USERS} users, {} were asked for",
                options.users
            );
        }
        let heavy_users = options.users / HEAVY_EVERY;
        let contracts = heavy_users
            .saturating_mul(options.heavy_contracts)
            .saturating_add((options.users - heavy_users).saturating_mul(ORDINARY_CONTRACTS));
        if contracts > MAX_CONTRACTS {
            bail!(
                "the EnergyZero sandbox generates at most {MAX_CONTRACTS} contracts, {contracts} were asked for"
            );
        }
        if options.page_cap == 0 {
            bail!("the EnergyZero sandbox page cap must be at least 1");
        }
        Ok(Self {
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            partner_token_lifetime: options.partner_token_lifetime,
            user_token_lifetime: options.user_token_lifetime,
            page_cap: options.page_cap,
            token_body: options.token_body,
            tokens: TokenStore::default(),
            directory: Mutex::new(Directory {
                users: data::generate_users(seed, options.users, options.heavy_contracts),
                forbidden: HashSet::new(),
                failing: HashSet::new(),
            }),
            schema: customer_api::customer_schema(&options.new_phases)?,
            stats: Mutex::new(EnergyzeroStats::default()),
        })
    }

    fn count(&self, update: impl FnOnce(&mut EnergyzeroStats)) {
        update(&mut lock(&self.stats));
    }

    pub(super) fn user_ids(&self) -> Vec<String> {
        let directory = lock(&self.directory);
        directory.users.iter().map(|user| user.id.clone()).collect()
    }

    pub(super) fn contract_ids(&self, user_id: &str) -> Vec<String> {
        let directory = lock(&self.directory);
        directory
            .user(user_id)
            .map(|user| {
                user.contracts
                    .iter()
                    .filter_map(|contract| contract_id(contract).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn update_contract(
        &self,
        user_id: &str,
        contract_id_wanted: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let mut directory = lock(&self.directory);
        let contract = directory
            .user_mut(user_id)
            .and_then(|user| user.contract_mut(contract_id_wanted));
        match contract {
            Some(contract) => {
                edit(contract);
                true
            }
            None => false,
        }
    }

    pub(super) fn remove_contract(&self, user_id: &str, contract_id_wanted: &str) -> bool {
        let mut directory = lock(&self.directory);
        let Some(user) = directory.user_mut(user_id) else {
            return false;
        };
        let before = user.contracts.len();
        user.contracts
            .retain(|contract| contract_id(contract) != Some(contract_id_wanted));
        user.contracts.len() < before
    }

    pub(super) fn remove_user(&self, user_id: &str) -> bool {
        let mut directory = lock(&self.directory);
        let before = directory.users.len();
        directory.users.retain(|user| user.id != user_id);
        directory.users.len() < before
    }

    pub(super) fn forbid_impersonation(&self, user_id: &str) {
        lock(&self.directory).forbidden.insert(user_id.to_owned());
    }

    pub(super) fn fail_user(&self, user_id: &str) {
        lock(&self.directory).failing.insert(user_id.to_owned());
    }

    pub(super) fn stats(&self) -> EnergyzeroStats {
        lock(&self.stats).clone()
    }

    pub(super) fn issued_tokens(&self) -> Vec<String> {
        self.tokens.history()
    }
}

/// EnergyZero's URLs and knobs.
impl Sandbox {
    /// "{base_url}/energyzero/auth": the identity provider, with `/oauth2/token` (partner
    /// token) and `/v1/auth/impersonate` (user token) under it.
    pub fn energyzero_auth_base_url(&self) -> String {
        format!("{}{}", self.base_url(), AUTH_BASE_PATH)
    }

    /// "{base_url}/energyzero/customer": the GraphQL endpoint itself; queries are POSTed to it.
    pub fn energyzero_customer_api_url(&self) -> String {
        format!("{}{}", self.base_url(), CUSTOMER_API_PATH)
    }

    /// Current EnergyZero users, in order.
    pub fn energyzero_user_ids(&self) -> Vec<String> {
        self.shared.energyzero.user_ids()
    }

    /// The user's contracts in the order the API pages them; empty for an unknown user.
    pub fn energyzero_contract_ids(&self, user_id: &str) -> Vec<String> {
        self.shared.energyzero.contract_ids(user_id)
    }

    /// Edits the stored JSON object of one contract (the schema's field names); false if it
    /// does not exist.
    pub fn energyzero_update_contract(
        &self,
        user_id: &str,
        contract_id: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        self.shared
            .energyzero
            .update_contract(user_id, contract_id, edit)
    }

    pub fn energyzero_remove_contract(&self, user_id: &str, contract_id: &str) -> bool {
        self.shared.energyzero.remove_contract(user_id, contract_id)
    }

    /// Removes a user: tokens issued for it keep working, but `me` answers NOT_FOUND and
    /// impersonating it answers 403. False if it does not exist.
    pub fn energyzero_remove_user(&self, user_id: &str) -> bool {
        self.shared.energyzero.remove_user(user_id)
    }

    /// Impersonating this user answers 403 insufficient_permissions from now on.
    pub fn energyzero_forbid_impersonation(&self, user_id: &str) {
        self.shared.energyzero.forbid_impersonation(user_id);
    }

    /// `me` answers a GraphQL error with code INTERNAL for this user from now on.
    pub fn energyzero_fail_user(&self, user_id: &str) {
        self.shared.energyzero.fail_user(user_id);
    }

    /// What the EnergyZero identity provider and customer API have counted so far.
    pub fn energyzero_stats(&self) -> EnergyzeroStats {
        self.shared.energyzero.stats()
    }

    /// Every EnergyZero partner and user JWT ever issued, oldest first.
    pub fn energyzero_issued_tokens(&self) -> Vec<String> {
        self.shared.energyzero.issued_tokens()
    }
}
