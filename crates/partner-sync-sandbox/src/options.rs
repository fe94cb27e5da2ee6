//! The sandbox's command-line options (`partner-sync sandbox --…`), which are also how the demo
//! and the tests configure it. Every default is written once, in its `#[arg]` attribute:
//! `Default` parses an empty command line.

use std::num::NonZeroU32;
use std::time::Duration;

use clap::Parser as _;

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

impl Default for RabobankOptions {
    fn default() -> Self {
        *SandboxOptions::default().rabobank
    }
}

impl Default for EnergyzeroOptions {
    fn default() -> Self {
        *SandboxOptions::default().energyzero
    }
}
