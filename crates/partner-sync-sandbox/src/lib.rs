//! Simulated partner APIs served over real HTTP, for the demo and the integration tests.
//!
//! Each partner's routes and wire shapes live in a folder of their own (`rabot/`, `rabobank/`,
//! `energyzero/`) and are written from the partners' published documentation, never from the
//! client's types: a sandbox that shared the client's structs would agree with every field-name
//! mistake the client makes, and the tests would then prove nothing about the real API.
//!
//! What every partner has in common runs in one gate in front of all routes (`gate.rs`), so a
//! new partner only has to classify its paths and render its own error body: added latency, the
//! enforced rate limit, injected faults, random 503s and the counters.

mod bad_days;
mod energyzero;
mod gate;
mod oauth;
mod prng;
mod rabobank;
mod rabot;
mod web;

#[cfg(test)]
mod tests;

pub use bad_days::{Deletions, Tamper, TamperFault};
pub use energyzero::EnergyzeroOptions;
pub use energyzero::EnergyzeroStats;
pub use gate::{Fault, SandboxStats};
pub use rabobank::{RabobankGrantView, RabobankOptions, RabobankStats};
pub use rabot::{
    CUSTOMER_PASSWORD as RABOT_CUSTOMER_PASSWORD, LinkableCustomer,
    UNREADABLE_METRICS_MOMENT as RABOT_UNREADABLE_METRICS_MOMENT,
    documented_cost_components as rabot_documented_cost_components,
};

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::middleware;
use clap::Parser as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use gate::{Counters, PartnerPaths};

/// Where each partner's paths lie, for the gate: a request under none of them is no partner's.
const PARTNER_PATHS: [&PartnerPaths; 3] = [&rabot::PATHS, &rabobank::PATHS, &energyzero::PATHS];

/// How long `shutdown` lets in-flight requests (which may be sleeping injected latency) finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How many requests [`Sandbox::recent_requests`] remembers: a long-running sandbox stays small.
pub const REQUEST_LOG_LEN: usize = 10_000;

/// The sandbox's command-line options (`partner-sync sandbox --…`), which are also how the demo
/// and the tests configure it: RABOT's inline, each other partner's in its own folder. Every
/// default is written once, in its `#[arg]` attribute: `Default` parses an empty command line.
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
    /// Answer the enforced rate limit's 429s without Retry-After (RABOT's documents allow both)
    #[arg(long)]
    pub rate_limit_without_retry_after: bool,
    /// Fraction (0.0..=1.0) of API (non-token) requests answered with 503 at random
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// RABOT's customer list answers give in `count` the number of matching customers instead
    /// of the page's item count (the documents' example allows both readings)
    #[arg(long)]
    pub count_is_total: bool,
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

/// The options as a whole command line, so that `Default` can parse an empty one.
#[derive(clap::Parser)]
struct CommandLine {
    #[command(flatten)]
    sandbox: SandboxOptions,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        CommandLine::try_parse_from(["sandbox"])
            .expect("every sandbox option has a constant default that parses")
            .sandbox
    }
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
    if options.rate_limit.is_none() && options.rate_limit_without_retry_after {
        bail!("answering 429 without Retry-After needs a sandbox rate limit");
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
        .fallback(gate::unknown_endpoint)
        .layer(middleware::from_fn_with_state(shared.clone(), gate::gate))
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
/// Each partner adds its own URLs and knobs in its module (`rabot_*`, `rabobank_*`,
/// `energyzero_*`).
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

    /// The options the sandbox was started with (`set_latency` does not change them).
    pub fn options(&self) -> &SandboxOptions {
        &self.shared.options
    }

    /// The daemon settings that connect partner-sync to this sandbox, as `PARTNER_SYNC__…`
    /// environment variables (lists comma separated): each partner's URLs, client credentials
    /// and what it grants. Which partners run is the caller's choice, so no `…__ENABLED` is set.
    pub fn env(&self) -> Vec<(String, String)> {
        let options = self.options();
        let rabot = [
            ("TOKEN_URL", self.rabot_token_url()),
            ("API_BASE_URL", self.rabot_api_base_url()),
            ("CLIENT_ID", options.client_id.clone()),
            ("CLIENT_SECRET", options.client_secret.clone()),
            ("SCOPES", options.granted_scopes.join(",")),
        ];
        let rabobank = [
            ("OAUTH_BASE_URL", self.rabobank_oauth_base_url()),
            ("CONSENT_API_BASE_URL", self.rabobank_consent_api_base_url()),
            ("CLIENT_ID", options.rabobank.client_id.clone()),
            ("CLIENT_SECRET", options.rabobank.client_secret.clone()),
            ("SCOPES", options.rabobank.scopes.join(",")),
        ];
        let energyzero = [
            ("AUTH_BASE_URL", self.energyzero_auth_base_url()),
            ("CUSTOMER_API_URL", self.energyzero_customer_api_url()),
            ("CLIENT_ID", options.energyzero.client_id.clone()),
            ("CLIENT_SECRET", options.energyzero.client_secret.clone()),
            ("USER_IDS", self.energyzero_user_ids().join(",")),
        ];
        [
            ("RABOT", rabot),
            ("RABOBANK", rabobank),
            ("ENERGYZERO", energyzero),
        ]
        .into_iter()
        .flat_map(|(section, settings)| {
            settings
                .into_iter()
                .map(move |(key, value)| (format!("PARTNER_SYNC__{section}__{key}"), value))
        })
        .collect()
    }

    /// What `partner-sync sandbox` prints: each partner's URLs, credentials and data, then the
    /// environment that runs partner-sync against all three.
    pub fn describe(&self) -> String {
        let options = self.options();
        let bank = &self.shared.rabobank;
        let ez_user_ids = self.energyzero_user_ids();
        let environment: String = self
            .env()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        format!(
            "partner sandbox listening on {base}\n\
             \n\
             RABOT\n\
             \x20 token URL:      {token_url}\n\
             \x20 API base URL:   {api_base_url}\n\
             \x20 client id:      {client_id}\n\
             \x20 client secret:  {client_secret}\n\
             \x20 granted scopes: {scopes}\n\
             \x20 data:           {customers} customers, seed {seed}\n\
             \x20 link logins:    {linkable} (password {password})\n\
             \n\
             Rabobank\n\
             \x20 OAuth base URL:   {bank_oauth_url}\n\
             \x20 consent API URL:  {bank_consent_url}\n\
             \x20 client id:        {bank_client_id}\n\
             \x20 client secret:    {bank_client_secret}\n\
             \x20 scopes:           {bank_scopes}\n\
             \x20 redirect URI:     {bank_redirect}\n\
             \n\
             EnergyZero\n\
             \x20 auth base URL:    {ez_auth_url}\n\
             \x20 customer API URL: {ez_customer_url}\n\
             \x20 client id:        {ez_client_id}\n\
             \x20 client secret:    {ez_client_secret}\n\
             \x20 users:            {ez_user_ids}\n\
             \n\
             Environment for partner-sync:\n\
             PARTNER_SYNC__RABOT__ENABLED=true\n\
             PARTNER_SYNC__RABOBANK__ENABLED=true\n\
             PARTNER_SYNC__ENERGYZERO__ENABLED=true\n\
             {environment}\
             # PARTNER_SYNC__SECURITY__TOKEN_KEY needs 32 random bytes in base64 (openssl rand -base64 32)\n",
            base = self.base_url(),
            token_url = self.rabot_token_url(),
            api_base_url = self.rabot_api_base_url(),
            client_id = options.client_id,
            client_secret = options.client_secret,
            scopes = options.granted_scopes.join(" "),
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
            bank_oauth_url = self.rabobank_oauth_base_url(),
            bank_consent_url = self.rabobank_consent_api_base_url(),
            bank_client_id = options.rabobank.client_id,
            bank_client_secret = options.rabobank.client_secret,
            bank_scopes = options.rabobank.scopes.join(" "),
            bank_redirect = bank
                .registered_redirect_uri()
                .unwrap_or("none registered: pass redirect_uri to /authorize"),
            ez_auth_url = self.energyzero_auth_base_url(),
            ez_customer_url = self.energyzero_customer_api_url(),
            ez_client_id = options.energyzero.client_id,
            ez_client_secret = options.energyzero.client_secret,
            ez_user_ids = ez_user_ids.join(" "),
        )
    }

    pub fn stats(&self) -> SandboxStats {
        self.shared.counters.snapshot()
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

    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_nanos
            .store(duration_to_nanos(latency), Ordering::Relaxed);
    }

    /// The last requests the sandbox received (at most [`REQUEST_LOG_LEN`]), oldest first, each
    /// as its method and target exactly as sent (`GET /rabot/partner/v1/customers?offset=0&…`).
    pub fn recent_requests(&self) -> Vec<String> {
        lock(&self.shared.request_log).iter().cloned().collect()
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
