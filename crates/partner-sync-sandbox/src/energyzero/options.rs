//! The `--energyzero-*` options of the simulated EnergyZero.

use std::time::Duration;

use crate::SandboxOptions;

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
    /// A ContractPhase value EnergyZero added after its documents (repeatable): the schema's
    /// enum grows, as a partner's does, and contracts can be given the phase
    #[arg(
        id = "energyzero_new_phase",
        value_name = "PHASE",
        long = "energyzero-new-phase"
    )]
    pub new_phases: Vec<String>,
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
        *SandboxOptions::default().energyzero
    }
}
