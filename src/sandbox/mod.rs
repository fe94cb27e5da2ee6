//! Simulated partner APIs served over real HTTP, for the demo and the integration tests.
//!
//! Each partner's routes and wire shapes live in their own file and are written from the
//! partners' own API documentation, never from the client's types: a sandbox that shared the
//! client's structs would agree with every field-name mistake the client makes, and the tests
//! would then prove nothing about the real API.
//!
//! What every partner has in common runs in one gate in front of all routes, so a new partner
//! only has to classify its paths and render its own error body: added latency, the enforced
//! rate limit, injected faults, random 503s and the counters.

mod bad_days;
mod energyzero;
mod rabobank;
mod rabot;
mod web;

pub use bad_days::{Deletions, Tamper, TamperFault};
pub use energyzero::EnergyzeroStats;
pub use rabobank::{RabobankGrantView, RabobankStats};
pub use rabot::{CUSTOMER_PASSWORD as RABOT_CUSTOMER_PASSWORD, LinkableCustomer};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long `shutdown` lets in-flight requests (which may be sleeping injected latency) finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How many requests [`Sandbox::recent_requests`] remembers: a long-running sandbox stays small.
pub const REQUEST_LOG_LEN: usize = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxOptions {
    /// Number of generated customers
    #[arg(long, default_value_t = 50)]
    pub customers: usize,
    /// Contracts per ordinary customer
    #[arg(long, default_value_t = 2)]
    pub contracts_per_customer: usize,
    /// Every Nth customer (1-based: customers N, 2N, ...) is "heavy" and gets `heavy_contracts` contracts instead; 0 = none
    #[arg(long, default_value_t = 25)]
    pub heavy_customer_every: usize,
    /// Contracts of each heavy customer
    #[arg(long, default_value_t = 120)]
    pub heavy_contracts: usize,
    /// RABOT customers the partner cannot see until they link (log in with their e-mail and the sandbox password)
    #[arg(long, default_value_t = 5)]
    pub linkable_customers: usize,
    /// Seed for the deterministic data
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Client id the sandbox's token endpoints accept
    #[arg(long, default_value = "sandbox-client")]
    pub client_id: String,
    /// Client secret the sandbox's token endpoints accept
    #[arg(long, default_value = "sandbox-secret")]
    pub client_secret: String,
    /// Scopes the sandbox client is allowed to request (comma separated)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "api:partner,role:finance-reporting"
    )]
    pub granted_scopes: Vec<String>,
    /// Access-token lifetime, humantime ("3599s", "5m")
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3599s")]
    pub token_lifetime: Duration,
    /// Enforced rate limit in requests per second over ALL endpoints (token endpoint included); answers 429 with Retry-After. None = unlimited
    #[arg(long)]
    pub rate_limit: Option<NonZeroU32>,
    /// Burst allowed by the enforced rate limit (default: equal to rate_limit)
    #[arg(long)]
    pub rate_limit_burst: Option<NonZeroU32>,
    /// Fraction (0.0..=1.0) of API (non-token) requests answered with 503 at random
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Added latency per request, humantime
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub latency: Duration,
    /// The simulated Rabobank authorization server. Boxed because `SandboxOptions` travels
    /// inline in the CLI's command enum, which must stay small.
    #[command(flatten)]
    pub rabobank: Box<RabobankOptions>,
    /// The simulated EnergyZero identity provider and customer API, boxed for the same reason.
    #[command(flatten)]
    pub energyzero: Box<EnergyzeroOptions>,
}

/// The `--rabobank-*` options. Argument ids carry the prefix too, as clap needs them unique
/// across the flattened structs (`client_id` is RABOT's).
#[derive(Debug, Clone, clap::Args)]
pub struct RabobankOptions {
    /// Client id the Rabobank authorization server knows
    #[arg(
        id = "rabobank_client_id",
        value_name = "CLIENT_ID",
        long = "rabobank-client-id",
        default_value = "sandbox-bank-client"
    )]
    pub client_id: String,
    /// Client secret the Rabobank token endpoint accepts (HTTP Basic)
    #[arg(
        id = "rabobank_client_secret",
        value_name = "CLIENT_SECRET",
        long = "rabobank-client-secret",
        default_value = "sandbox-bank-secret"
    )]
    pub client_secret: String,
    /// Scopes a Rabobank user may grant (comma separated); asking for any other is invalid_scope
    #[arg(
        id = "rabobank_scopes",
        value_name = "SCOPES",
        long = "rabobank-scopes",
        value_delimiter = ',',
        default_value = "ais.balances.read,ais.transactions.read-90days"
    )]
    pub scopes: Vec<String>,
    /// The client's registered redirect URI. When set, /authorize uses it and refuses any other;
    /// when unset, /authorize needs a redirect_uri parameter and accepts any http(s) URL
    #[arg(
        id = "rabobank_redirect_uri",
        value_name = "REDIRECT_URI",
        long = "rabobank-redirect-uri"
    )]
    pub redirect_uri: Option<String>,
    /// Rabobank access-token lifetime, humantime
    #[arg(
        id = "rabobank_access_lifetime",
        value_name = "ACCESS_LIFETIME",
        long = "rabobank-access-lifetime",
        value_parser = humantime::parse_duration,
        default_value = "1h"
    )]
    pub access_lifetime: Duration,
    /// Rabobank refresh-token lifetime, humantime
    #[arg(
        id = "rabobank_refresh_lifetime",
        value_name = "REFRESH_LIFETIME",
        long = "rabobank-refresh-lifetime",
        value_parser = humantime::parse_duration,
        default_value = "30days"
    )]
    pub refresh_lifetime: Duration,
    /// Rabobank authorization-code lifetime, humantime
    #[arg(
        id = "rabobank_code_lifetime",
        value_name = "CODE_LIFETIME",
        long = "rabobank-code-lifetime",
        value_parser = humantime::parse_duration,
        default_value = "5m"
    )]
    pub code_lifetime: Duration,
    /// Refreshes one Rabobank consent allows; the next refresh answers invalid_grant
    #[arg(
        id = "rabobank_refresh_limit",
        value_name = "REFRESH_LIMIT",
        long = "rabobank-refresh-limit",
        default_value_t = 4096
    )]
    pub refresh_limit: u32,
    /// Answer Rabobank token requests like a plain RFC 6749 server: no consented_on, metadata
    /// or refresh_token_expires_in (refresh-token rotation and reuse detection stay on)
    #[arg(id = "rabobank_standard_oauth", long = "rabobank-standard-oauth")]
    pub standard_oauth: bool,
    /// How long the Rabobank token endpoint holds its answer after processing the request: the
    /// tokens are issued (the presented refresh token spent) before the answer leaves, humantime
    #[arg(
        id = "rabobank_token_answer_delay",
        value_name = "DELAY",
        long = "rabobank-token-answer-delay",
        value_parser = humantime::parse_duration,
        default_value = "0s"
    )]
    pub token_answer_delay: Duration,
}

/// The `--energyzero-*` options, with prefixed argument ids like `RabobankOptions`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnergyzeroOptions {
    /// Client id the EnergyZero token endpoint accepts
    #[arg(
        id = "energyzero_client_id",
        value_name = "CLIENT_ID",
        long = "energyzero-client-id",
        default_value = "sandbox-ez-client"
    )]
    pub client_id: String,
    /// Client secret the EnergyZero token endpoint accepts
    #[arg(
        id = "energyzero_client_secret",
        value_name = "CLIENT_SECRET",
        long = "energyzero-client-secret",
        default_value = "sandbox-ez-secret"
    )]
    pub client_secret: String,
    /// EnergyZero partner-token lifetime, humantime (whole seconds: the JWT's exp has no finer resolution)
    #[arg(
        id = "energyzero_partner_token_lifetime",
        value_name = "LIFETIME",
        long = "energyzero-partner-token-lifetime",
        value_parser = humantime::parse_duration,
        default_value = "5m"
    )]
    pub partner_token_lifetime: Duration,
    /// EnergyZero user-token (impersonation) lifetime, humantime; expires_in announces one second less
    #[arg(
        id = "energyzero_user_token_lifetime",
        value_name = "LIFETIME",
        long = "energyzero-user-token-lifetime",
        value_parser = humantime::parse_duration,
        default_value = "1h"
    )]
    pub user_token_lifetime: Duration,
    /// Number of generated EnergyZero users
    #[arg(
        id = "energyzero_users",
        value_name = "USERS",
        long = "energyzero-users",
        default_value_t = 6
    )]
    pub users: usize,
    /// Contracts of every 3rd EnergyZero user (users 3, 6, ...); the others have 2
    #[arg(
        id = "energyzero_heavy_contracts",
        value_name = "CONTRACTS",
        long = "energyzero-heavy-contracts",
        default_value_t = 23
    )]
    pub heavy_contracts: usize,
    /// Most contracts one GraphQL page holds, whatever `first` asks for
    #[arg(
        id = "energyzero_page_cap",
        value_name = "CONTRACTS",
        long = "energyzero-page-cap",
        default_value_t = 10
    )]
    pub page_cap: usize,
    /// Also answer a partner-token request with a JSON body (access_token, expires_in, ...);
    /// by default the token comes only in the Authorization response header
    #[arg(id = "energyzero_token_body", long = "energyzero-token-body")]
    pub token_body: bool,
}

impl Default for EnergyzeroOptions {
    fn default() -> Self {
        Self {
            client_id: "sandbox-ez-client".to_owned(),
            client_secret: "sandbox-ez-secret".to_owned(),
            partner_token_lifetime: Duration::from_secs(300),
            user_token_lifetime: Duration::from_secs(3600),
            users: 6,
            heavy_contracts: 23,
            page_cap: 10,
            token_body: false,
        }
    }
}

impl Default for RabobankOptions {
    fn default() -> Self {
        Self {
            client_id: "sandbox-bank-client".to_owned(),
            client_secret: "sandbox-bank-secret".to_owned(),
            scopes: vec![
                "ais.balances.read".to_owned(),
                "ais.transactions.read-90days".to_owned(),
            ],
            redirect_uri: None,
            access_lifetime: Duration::from_secs(3600),
            refresh_lifetime: Duration::from_secs(30 * 86_400),
            code_lifetime: Duration::from_secs(300),
            refresh_limit: 4096,
            standard_oauth: false,
            token_answer_delay: Duration::ZERO,
        }
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            customers: 50,
            contracts_per_customer: 2,
            heavy_customer_every: 25,
            heavy_contracts: 120,
            linkable_customers: 5,
            seed: 42,
            client_id: "sandbox-client".to_owned(),
            client_secret: "sandbox-secret".to_owned(),
            granted_scopes: vec![
                "api:partner".to_owned(),
                "role:finance-reporting".to_owned(),
            ],
            token_lifetime: Duration::from_secs(3599),
            rate_limit: None,
            rate_limit_burst: None,
            error_rate: 0.0,
            latency: Duration::ZERO,
            rabobank: Box::default(),
            energyzero: Box::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxStats {
    /// Every POST to a token endpoint (any outcome).
    pub token_requests: u64,
    /// Successful token answers.
    pub tokens_issued: u64,
    /// Every request to a partner's data API (any outcome).
    pub api_requests: u64,
    /// 429 answers from the enforced rate limit.
    pub rate_limited: u64,
    /// Answers produced by `inject_fault`.
    pub injected_faults: u64,
    /// 503 answers from `error_rate`.
    pub random_errors: u64,
    /// 401 answers on API endpoints.
    pub unauthorized: u64,
}

/// A canned error answer for the next `times` requests whose path (with its query) contains
/// `path_contains`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Matched against the request path (e.g. "/contracts", "/connect/token", "" = any).
    pub path_contains: String,
    /// e.g. 429, 500, 503.
    pub status: u16,
    /// Sent verbatim as the Retry-After header when Some ("1" or an HTTP date).
    pub retry_after: Option<String>,
    /// How many matching requests get this answer.
    pub times: u32,
}

/// Starts the sandbox on `listen` (port 0 picks a free port) and returns once it accepts
/// connections; the server runs on a spawned task until `Sandbox::shutdown` or drop.
pub async fn start(options: SandboxOptions, listen: SocketAddr) -> anyhow::Result<Sandbox> {
    if !(0.0..=1.0).contains(&options.error_rate) {
        bail!(
            "sandbox error rate must lie in 0.0..=1.0, got {}",
            options.error_rate
        );
    }
    if options.customers > rabot::MAX_CUSTOMERS {
        bail!(
            "the sandbox generates at most {} customers, {} were asked for",
            rabot::MAX_CUSTOMERS,
            options.customers
        );
    }
    if options.rate_limit.is_none() && options.rate_limit_burst.is_some() {
        bail!("a sandbox rate-limit burst needs a rate limit");
    }
    let rabobank = rabobank::Rabobank::new(&options.rabobank)?;
    let energyzero = energyzero::Energyzero::new(&options.energyzero, options.seed)?;
    let limiter = options.rate_limit.map(|rate| {
        let burst = options.rate_limit_burst.unwrap_or(rate);
        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        request_log: Mutex::new(VecDeque::new()),
        faults: Mutex::new(VecDeque::new()),
        bad_days: Mutex::default(),
        latency_nanos: AtomicU64::new(duration_to_nanos(options.latency)),
        limiter,
        rabot: rabot::Rabot::generate(&options),
        rabobank,
        energyzero,
        options,
    });

    let app = Router::new()
        .merge(rabot::routes())
        .merge(rabobank::routes())
        .merge(energyzero::routes())
        .fallback(unknown_endpoint)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared.clone());

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the sandbox to {listen}"))?;
    let local_addr = listener
        .local_addr()
        .context("reading the sandbox's bound address")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // A dropped handle closes the channel, which stops the server just like a send.
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "sandbox server failed");
        }
    });
    tracing::info!(address = %local_addr, "sandbox listening");

    Ok(Sandbox {
        shared,
        local_addr,
        stop,
        server,
    })
}

/// Handle on a running sandbox: its addresses, its counters, and the knobs tests turn.
pub struct Sandbox {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// "http://127.0.0.1:PORT"; a wildcard listen address is reported as loopback so the URL
    /// can be dialled.
    pub fn base_url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    pub fn rabot_token_url(&self) -> String {
        format!("{}{}", self.base_url(), rabot::TOKEN_PATH)
    }

    pub fn rabot_api_base_url(&self) -> String {
        format!("{}{}", self.base_url(), rabot::API_BASE_PATH)
    }

    /// "{base_url}/rabobank/oauth2": `/authorize` and `/token` live under it.
    pub fn rabobank_oauth_base_url(&self) -> String {
        format!("{}{}", self.base_url(), rabobank::OAUTH_BASE_PATH)
    }

    /// "{base_url}/rabobank/api": the Consent Details Service lives under it, at
    /// `/oauth2/consents/{id}` (PSD2) and `/oauth2-premium/v1/consents/{id}` (Premium).
    pub fn rabobank_consent_api_base_url(&self) -> String {
        format!("{}{}", self.base_url(), rabobank::CONSENT_API_BASE_PATH)
    }

    /// The options the sandbox was started with (`set_latency` does not change them).
    pub fn options(&self) -> &SandboxOptions {
        &self.shared.options
    }

    pub fn describe(&self) -> String {
        let options = self.options();
        let token_url = self.rabot_token_url();
        let api_base_url = self.rabot_api_base_url();
        let bank = &self.shared.rabobank;
        let bank_oauth_url = self.rabobank_oauth_base_url();
        let bank_consent_url = self.rabobank_consent_api_base_url();
        let ez_auth_url = self.energyzero_auth_base_url();
        let ez_customer_url = self.energyzero_customer_api_url();
        let ez_user_ids = self.energyzero_user_ids();
        format!(
            "partner sandbox listening on {base}\n\
             \n\
             RABOT\n\
             \x20 token URL:      {token_url}\n\
             \x20 API base URL:   {api_base_url}\n\
             \x20 client id:      {client_id}\n\
             \x20 client secret:  {client_secret}\n\
             \x20 granted scopes: {scopes_spaced}\n\
             \x20 data:           {customers} customers, seed {seed}\n\
             \x20 link logins:    {linkable} (password {password})\n\
             \n\
             Rabobank\n\
             \x20 OAuth base URL:   {bank_oauth_url}\n\
             \x20 consent API URL:  {bank_consent_url}\n\
             \x20 client id:        {bank_client_id}\n\
             \x20 client secret:    {bank_client_secret}\n\
             \x20 scopes:           {bank_scopes_spaced}\n\
             \x20 redirect URI:     {bank_redirect}\n\
             \n\
             EnergyZero\n\
             \x20 auth base URL:    {ez_auth_url}\n\
             \x20 customer API URL: {ez_customer_url}\n\
             \x20 client id:        {ez_client_id}\n\
             \x20 client secret:    {ez_client_secret}\n\
             \x20 users:            {ez_user_ids_spaced}\n\
             \n\
             Environment for partner-sync:\n\
             PARTNER_SYNC__RABOT__ENABLED=true\n\
             PARTNER_SYNC__RABOT__TOKEN_URL={token_url}\n\
             PARTNER_SYNC__RABOT__API_BASE_URL={api_base_url}\n\
             PARTNER_SYNC__RABOT__CLIENT_ID={client_id}\n\
             PARTNER_SYNC__RABOT__CLIENT_SECRET={client_secret}\n\
             PARTNER_SYNC__RABOT__SCOPES={scopes_listed}\n\
             PARTNER_SYNC__RABOBANK__ENABLED=true\n\
             PARTNER_SYNC__RABOBANK__OAUTH_BASE_URL={bank_oauth_url}\n\
             PARTNER_SYNC__RABOBANK__CLIENT_ID={bank_client_id}\n\
             PARTNER_SYNC__RABOBANK__CLIENT_SECRET={bank_client_secret}\n\
             PARTNER_SYNC__RABOBANK__SCOPES={bank_scopes_listed}\n\
             PARTNER_SYNC__RABOBANK__CONSENT_API_BASE_URL={bank_consent_url}\n\
             PARTNER_SYNC__ENERGYZERO__ENABLED=true\n\
             PARTNER_SYNC__ENERGYZERO__AUTH_BASE_URL={ez_auth_url}\n\
             PARTNER_SYNC__ENERGYZERO__CUSTOMER_API_URL={ez_customer_url}\n\
             PARTNER_SYNC__ENERGYZERO__CLIENT_ID={ez_client_id}\n\
             PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET={ez_client_secret}\n\
             PARTNER_SYNC__ENERGYZERO__USER_IDS={ez_user_ids_listed}\n\
             # PARTNER_SYNC__SECURITY__TOKEN_KEY needs 32 random bytes in base64 (openssl rand -base64 32)\n",
            base = self.base_url(),
            client_id = options.client_id,
            client_secret = options.client_secret,
            scopes_spaced = options.granted_scopes.join(" "),
            scopes_listed = options.granted_scopes.join(","),
            customers = self.shared.rabot.customer_count(),
            linkable = self
                .shared
                .rabot
                .linkable_customers()
                .into_iter()
                .map(|customer| customer.email)
                .collect::<Vec<_>>()
                .join(" "),
            password = RABOT_CUSTOMER_PASSWORD,
            seed = options.seed,
            bank_client_id = bank.client_id(),
            bank_client_secret = bank.client_secret(),
            bank_scopes_spaced = bank.scopes().join(" "),
            bank_scopes_listed = bank.scopes().join(","),
            bank_redirect = bank
                .registered_redirect_uri()
                .unwrap_or("none registered: pass redirect_uri to /authorize"),
            ez_client_id = options.energyzero.client_id,
            ez_client_secret = options.energyzero.client_secret,
            ez_user_ids_spaced = ez_user_ids.join(" "),
            ez_user_ids_listed = ez_user_ids.join(","),
        )
    }

    pub fn stats(&self) -> SandboxStats {
        self.shared.counters.snapshot()
    }

    /// Every token issued so far answers 401 from now on; tokens issued later work.
    pub fn revoke_all_tokens(&self) {
        self.shared.rabot.tokens.revoke_all();
    }

    /// Every access token issued so far, including expired and revoked ones, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.rabot.tokens.history()
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

    /// "{base_url}/energyzero/auth": the identity provider, with `/oauth2/token` (partner
    /// token) and `/v1/auth/impersonate` (user token) under it.
    pub fn energyzero_auth_base_url(&self) -> String {
        format!("{}{}", self.base_url(), energyzero::AUTH_BASE_PATH)
    }

    /// "{base_url}/energyzero/customer": the GraphQL endpoint itself; queries are POSTed to it.
    pub fn energyzero_customer_api_url(&self) -> String {
        format!("{}{}", self.base_url(), energyzero::CUSTOMER_API_PATH)
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
        edit: impl FnOnce(&mut serde_json::Value),
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

    /// Queues a fault; queued faults are matched in FIFO order against incoming requests.
    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.shared.faults).push_back(fault);
        }
    }

    /// Queues a tampered answer; queued tampers are matched in FIFO order against answers.
    pub fn tamper(&self, fault: TamperFault) {
        lock(&self.shared.bad_days).push_tamper(fault);
    }

    /// Deletes RABOT customers at random moments of the listings that follow.
    pub fn delete_customers_while_listing(&self, deletions: Deletions) {
        lock(&self.shared.bad_days).start_deletions(deletions);
    }

    /// Drops every queued fault and tamper and stops planned deletions: the partner's bad day
    /// is over (what was deleted stays deleted).
    pub fn end_bad_day(&self) {
        lock(&self.shared.faults).clear();
        lock(&self.shared.bad_days).end();
    }

    /// The customers [`Self::delete_customers_while_listing`] deleted so far, in order.
    pub fn deleted_while_listing(&self) -> Vec<String> {
        lock(&self.shared.bad_days).deleted.clone()
    }

    /// From now on the Rabobank token endpoint holds each answer this long after processing
    /// the request (see `--rabobank-token-answer-delay`).
    pub fn set_rabobank_token_answer_delay(&self, delay: Duration) {
        self.shared.rabobank.set_answer_delay(delay);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_nanos
            .store(duration_to_nanos(latency), Ordering::Relaxed);
    }

    /// Current customers, in list order.
    pub fn customer_numbers(&self) -> Vec<String> {
        self.shared.rabot.customer_numbers()
    }

    pub fn external_id_of(&self, customer_number: &str) -> Option<String> {
        self.shared.rabot.external_id_of(customer_number)
    }

    pub fn contract_numbers(&self, customer_number: &str) -> Vec<String> {
        self.shared.rabot.contract_numbers(customer_number)
    }

    /// Edits the stored JSON object of one contract; false if it does not exist.
    pub fn update_contract(
        &self,
        customer_number: &str,
        contract_number: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> bool {
        self.shared
            .rabot
            .update_contract(customer_number, contract_number, edit)
    }

    /// Edits the stored JSON object of one customer (not its number); false if it does not exist.
    pub fn update_customer(
        &self,
        customer_number: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> bool {
        self.shared.rabot.update_customer(customer_number, edit)
    }

    /// The last requests the sandbox received (at most [`REQUEST_LOG_LEN`]), oldest first, each
    /// as its method and target exactly as sent (`GET /rabot/partner/v1/customers?offset=0&…`).
    pub fn recent_requests(&self) -> Vec<String> {
        lock(&self.shared.request_log).iter().cloned().collect()
    }

    pub fn remove_contract(&self, customer_number: &str, contract_number: &str) -> bool {
        self.shared
            .rabot
            .remove_contract(customer_number, contract_number)
    }

    pub fn remove_customer(&self, customer_number: &str) -> bool {
        self.shared.rabot.remove_customer(customer_number)
    }

    /// RABOT customers not linked to the partner, who can log in on an authorization page.
    pub fn rabot_linkable_customers(&self) -> Vec<LinkableCustomer> {
        self.shared.rabot.linkable_customers()
    }

    /// The customer's relations to the partner as the API lists them; None if it is hidden.
    pub fn rabot_relations(&self, customer_number: &str) -> Option<Vec<String>> {
        self.shared.rabot.relations(customer_number)
    }

    /// Stops accepting connections and waits (bounded) for in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let abort = self.server.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// State every route and the gate share.
struct Shared {
    options: SandboxOptions,
    counters: Counters,
    /// The last [`REQUEST_LOG_LEN`] requests, for tests that check where requests went.
    request_log: Mutex<VecDeque<String>>,
    faults: Mutex<VecDeque<Fault>>,
    bad_days: Mutex<bad_days::BadDays>,
    // Atomic so `set_latency` never waits behind a request.
    latency_nanos: AtomicU64,
    limiter: Option<DefaultDirectRateLimiter>,
    rabot: rabot::Rabot,
    rabobank: rabobank::Rabobank,
    energyzero: energyzero::Energyzero,
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    /// `Some(wait)` when the request is over the enforced limit; `wait` is what Retry-After
    /// announces: whole seconds until a request would be allowed, at least one.
    fn rate_limited(&self) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        let not_until = limiter.check().err()?;
        let wait = not_until.wait_time_from(limiter.clock().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Some(seconds.max(1))
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|fault| path.contains(fault.path_contains.as_str()))?;
        let fault = faults.get_mut(index)?;
        fault.times = fault.times.saturating_sub(1);
        let answer = fault.clone();
        if answer.times == 0 {
            faults.remove(index);
        }
        Some(answer)
    }

    /// A planned upstream deletion, if one is due before this request.
    fn delete_customers_if_due(&self) {
        let mut bad_days = lock(&self.bad_days);
        let Some((count, mut rng)) = bad_days.deletions_due() else {
            return;
        };
        for _ in 0..count {
            let numbers = self.rabot.customer_numbers();
            if numbers.is_empty() {
                return;
            }
            let victim = numbers[rng.below(numbers.len() as u32) as usize].clone();
            if self.rabot.remove_customer(&victim) {
                bad_days.deleted.push(victim);
            }
        }
    }

    fn random_error(&self) -> bool {
        let rate = self.options.error_rate;
        rate > 0.0 && rand::rng().random_bool(rate.min(1.0))
    }
}

#[derive(Default)]
struct Counters {
    token_requests: AtomicU64,
    tokens_issued: AtomicU64,
    api_requests: AtomicU64,
    rate_limited: AtomicU64,
    injected_faults: AtomicU64,
    random_errors: AtomicU64,
    unauthorized: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SandboxStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SandboxStats {
            token_requests: read(&self.token_requests),
            tokens_issued: read(&self.tokens_issued),
            api_requests: read(&self.api_requests),
            rate_limited: read(&self.rate_limited),
            injected_faults: read(&self.injected_faults),
            random_errors: read(&self.random_errors),
            unauthorized: read(&self.unauthorized),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Which part of a partner's surface a request hits: the gate counts by it and only
/// API requests draw random errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Token,
    Api,
    Other,
}

/// A request as one partner sees it. The gate answers on the partner's behalf (429, faults,
/// 503), so it needs the partner's own error body.
#[derive(Clone, Copy)]
struct Route {
    endpoint: Endpoint,
    reject: fn(Endpoint, StatusCode, &str) -> Response,
    count_request: Option<fn(&Shared, Endpoint)>,
}

/// Where one partner's surface lies: everything under `prefix`, its token endpoint (POST) and
/// its data API, and how it words an error.
struct PartnerPaths {
    prefix: &'static str,
    token: &'static str,
    api_base: &'static str,
    reject: fn(Endpoint, StatusCode, &str) -> Response,
    /// For a partner that keeps its own request counters: called for every request the gate
    /// sees, so that requests the gate itself answers (429, faults, 503) are counted too.
    count_request: Option<fn(&Shared, Endpoint)>,
}

impl PartnerPaths {
    fn classify(&self, method: &Method, path: &str) -> Option<Route> {
        let endpoint = if path == self.token && method == Method::POST {
            Endpoint::Token
        } else if is_under(path, self.api_base) {
            Endpoint::Api
        } else if is_under(path, self.prefix) {
            Endpoint::Other
        } else {
            return None;
        };
        Some(Route {
            endpoint,
            reject: self.reject,
            count_request: self.count_request,
        })
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn classify(method: &Method, path: &str) -> Option<Route> {
    [&rabot::PATHS, &rabobank::PATHS, &energyzero::PATHS]
        .into_iter()
        .find_map(|partner| partner.classify(method, path))
}

fn reject(route: Option<Route>, status: StatusCode, message: &str) -> Response {
    match route {
        Some(route) => (route.reject)(route.endpoint, status, message),
        None => (status, axum::Json(serde_json::json!({ "error": message }))).into_response(),
    }
}

/// The checks every request passes before its handler, in the order a real gateway would
/// apply them: latency, rate limit, injected faults, random API errors.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    // Faults match the path with its query, so `/customers?` picks out the customer list.
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |target| target.as_str().to_owned());
    {
        let mut log = lock(&shared.request_log);
        if log.len() == REQUEST_LOG_LEN {
            log.pop_front();
        }
        log.push_back(format!("{} {target}", request.method()));
    }
    let route = classify(request.method(), &path);
    let endpoint = route.map(|route| route.endpoint);
    match endpoint {
        Some(Endpoint::Token) => bump(&shared.counters.token_requests),
        Some(Endpoint::Api) => bump(&shared.counters.api_requests),
        Some(Endpoint::Other) | None => {}
    }
    if let Some(Route {
        endpoint,
        count_request: Some(count_request),
        ..
    }) = route
    {
        count_request(&shared, endpoint);
    }

    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    if let Some(wait_seconds) = shared.rate_limited() {
        bump(&shared.counters.rate_limited);
        tracing::debug!(%path, wait_seconds, "sandbox rate limit hit");
        let mut response = reject(
            route,
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded, retry later.",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait_seconds));
        return response;
    }

    if let Some(fault) = shared.take_fault(&target) {
        bump(&shared.counters.injected_faults);
        tracing::debug!(%path, status = fault.status, "sandbox injected fault");
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = reject(route, status, "Injected fault.");
        if let Some(value) = fault
            .retry_after
            .as_deref()
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }

    if path.starts_with(rabot::API_BASE_PATH) {
        shared.delete_customers_if_due();
    }

    if endpoint == Some(Endpoint::Api) && shared.random_error() {
        bump(&shared.counters.random_errors);
        return reject(
            route,
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable.",
        );
    }

    let tamper = lock(&shared.bad_days).take_tamper(&target);
    let response = next.run(request).await;
    match tamper {
        Some(tamper) if response.status().is_success() => {
            bump(&shared.counters.injected_faults);
            bad_days::apply(tamper, response).await
        }
        _ => response,
    }
}

async fn unknown_endpoint(method: Method, uri: Uri) -> Response {
    reject(
        classify(&method, uri.path()),
        StatusCode::NOT_FOUND,
        "No such endpoint.",
    )
}

/// Access tokens issued by one simulated authorization server, each with what it grants
/// (`G`: RABOT's scopes, EnergyZero's partner or user).
struct TokenStore<G = Vec<String>> {
    ledger: Mutex<TokenLedger<G>>,
}

struct TokenLedger<G> {
    /// Tokens that may still be valid, by value.
    live: HashMap<String, IssuedToken<G>>,
    /// Every token ever issued, so tests can search logs for any of them.
    history: Vec<String>,
}

struct IssuedToken<G> {
    /// None when the lifetime is too long to represent: such a token never expires.
    expires_at: Option<Instant>,
    grant: G,
}

// Hand-written because a derive would demand `G: Default`, which no grant needs.
impl<G> Default for TokenStore<G> {
    fn default() -> Self {
        Self {
            ledger: Mutex::new(TokenLedger {
                live: HashMap::new(),
                history: Vec::new(),
            }),
        }
    }
}

impl<G: Clone> TokenStore<G> {
    /// A fresh opaque token of 48 alphanumerics.
    fn issue(&self, grant: G, lifetime: Duration) -> String {
        let token = random_token(48);
        self.record(token.clone(), grant, lifetime);
        token
    }

    /// Remembers a token minted elsewhere (a JWT, say) as valid for `lifetime` from now.
    fn record(&self, token: String, grant: G, lifetime: Duration) {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        // Pruning here keeps a long demo's memory flat without a background task.
        ledger.live.retain(|_, issued| issued.is_valid_at(now));
        ledger.history.push(token.clone());
        ledger.live.insert(
            token,
            IssuedToken {
                expires_at: now.checked_add(lifetime),
                grant,
            },
        );
    }

    /// What a known, unexpired and unrevoked token grants.
    fn grant_of(&self, token: &str) -> Option<G> {
        let ledger = lock(&self.ledger);
        let issued = ledger.live.get(token)?;
        issued
            .is_valid_at(Instant::now())
            .then(|| issued.grant.clone())
    }

    fn revoke_all(&self) {
        lock(&self.ledger).live.clear();
    }

    fn history(&self) -> Vec<String> {
        lock(&self.ledger).history.clone()
    }
}

impl<G> IssuedToken<G> {
    fn is_valid_at(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// A random alphanumeric string: tokens, states.
fn random_token(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// An error from a token endpoint, in the RFC 6749 §5.2 shape every partner's OAuth server uses.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// WWW-Authenticate challenge, for the answers RFC 6749 and RFC 6750 give one.
    challenge: Option<&'static str>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn with_challenge(self, challenge: &'static str) -> Self {
        Self {
            challenge: Some(challenge),
            ..self
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "error": self.error, "error_description": self.description });
        let mut response = (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(body),
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The RFC 6749 error code of an answer the gate or the fallback gives on an OAuth endpoint:
/// a client's OAuth library only understands those codes there, whatever went wrong.
fn oauth_error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            "temporarily_unavailable"
        }
        StatusCode::UNAUTHORIZED => "invalid_client",
        status if status.is_server_error() => "server_error",
        _ => "invalid_request",
    }
}

/// Form or query fields by name, for every partner. RFC 6749 forbids repeating a parameter, and
/// a repeated `offset` or `redirect_uri` is a client bug worth surfacing, so a repeat is
/// `Err(name)`.
fn unique_fields(input: &[u8]) -> Result<HashMap<String, String>, String> {
    collect_unique_fields(
        url::form_urlencoded::parse(input)
            .map(|(name, value)| (name.into_owned(), value.into_owned())),
    )
}

/// `unique_fields` for fields that arrive some other way (multipart parts, say).
fn collect_unique_fields(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, String> {
    let mut fields = HashMap::new();
    for (name, value) in pairs {
        if fields.contains_key(&name) {
            return Err(name);
        }
        fields.insert(name, value);
    }
    Ok(fields)
}

fn is_form(headers: &HeaderMap) -> bool {
    has_media_type(headers, "application/x-www-form-urlencoded")
}

/// Whether the Content-Type names `media_type`, whatever its parameters (charset, boundary).
fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(media_type))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}

/// A panic while holding a sandbox lock leaves plain data behind, still fit to serve.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn duration_to_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Deterministic data. Every partner draws its generated data from `Prng` streams keyed by the
// seed and the record's position, so the same options give byte-identical JSON.

/// SplitMix64: tiny and fully specified, so a seed yields the same data on every platform and
/// with every version of the rand crate (whose StdRng promises neither).
struct Prng(u64);

impl Prng {
    fn new(seed: u64, stream: u64) -> Self {
        Self(mix(seed ^ mix(stream)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform enough below `bound` (the modulo bias is irrelevant for test data).
    fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            0
        } else {
            (self.next_u64() % u64::from(bound)) as u32
        }
    }

    fn between(&mut self, low: u32, high: u32) -> u32 {
        low + self.below(high.saturating_sub(low).saturating_add(1))
    }

    fn percent(&mut self, chance: u32) -> bool {
        self.below(100) < chance
    }

    /// `items` are the constant tables below, never empty.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }

    fn digits(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// "YYYY-MM-DDThh:mm:ssZ" within the given years.
fn timestamp(rng: &mut Prng, first_year: u32, last_year: u32) -> String {
    let year = rng.between(first_year, last_year);
    let month = rng.between(1, 12);
    let day = rng.between(1, 28);
    let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

fn date(year: u32, month: u32, day: u32) -> String {
    format!("{year:04}-{month:02}-{day:02}")
}

/// `(year, month)` with month 1..=12, moved `months` ahead.
fn add_months((year, month): (u32, u32), months: u32) -> (u32, u32) {
    let zero_based = year * 12 + (month - 1) + months;
    (zero_based / 12, zero_based % 12 + 1)
}

fn last_day_of((year, month): (u32, u32)) -> String {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    date(year, month, days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sandbox: SandboxOptions,
    }

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
    fn default_matches_the_command_line_defaults() {
        let parsed = Cli::try_parse_from(["sandbox"]).expect("defaults parse");
        assert_eq!(
            format!("{:?}", parsed.sandbox),
            format!("{:?}", SandboxOptions::default())
        );
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
}
