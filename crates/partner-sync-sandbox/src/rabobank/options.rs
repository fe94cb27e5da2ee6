//! The `--rabobank-*` options of the simulated bank.

use std::time::Duration;

use crate::SandboxOptions;

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

impl Default for RabobankOptions {
    fn default() -> Self {
        *SandboxOptions::default().rabobank
    }
}
