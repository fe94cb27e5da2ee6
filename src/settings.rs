//! Typed settings: embedded defaults (`config/default.toml`), an optional file, `DATABASE_URL`,
//! then `PARTNER_SYNC__<SECTION>__<KEY>` environment variables — and the validation that turns a
//! bad value into one line naming its key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The defaults ship inside the binary so it starts from any working directory.
const DEFAULTS: &str = include_str!("../config/default.toml");
const ENV_PREFIX: &str = "PARTNER_SYNC";
/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "rabot.scopes",
    "rabot.external_ids",
    "rabobank.scopes",
    "energyzero.user_ids",
];
/// Where the bank sends the user back to, below `server.public_url`.
pub const RABOBANK_CALLBACK_PATH: &str = "/oauth/rabobank/callback";
/// Below `server.public_url`: RABOT customer links are created here (admin) and RABOT sends the
/// customer back to `{this}/{secret}/success` or `/failure`.
pub const RABOT_LINKS_PATH: &str = "/links/rabot";
/// In `rabot.external_ids`: the external ids of every linked customer.
pub const LINKED_CUSTOMERS: &str = "@linked";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub daemon: DaemonSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub rabot: RabotSettings,
    pub server: ServerSettings,
    pub security: SecuritySettings,
    pub rabobank: RabobankSettings,
    pub energyzero: EnergyzeroSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "serialize_masked_url")]
    pub url: SecretString,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DaemonSettings {
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub run_on_start: bool,
    /// A run still `running` after this long fails the readiness probe (`/readyz`).
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HttpSettings {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RabotSettings {
    pub enabled: bool,
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub token_url: String,
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub api_base_url: String,
    pub client_id: String,
    #[serde(serialize_with = "serialize_masked")]
    pub client_secret: SecretString,
    #[serde(deserialize_with = "list")]
    pub scopes: Vec<String>,
    pub requests_per_second: f64,
    pub burst: u32,
    pub page_size: u32,
    pub concurrency: usize,
    #[serde(deserialize_with = "list")]
    pub external_ids: Vec<String>,
    pub schedule: String,
    pub tombstone_guard: TombstoneGuard,
}

/// How many rows one pass may tombstone before it is taken for a partner's bad day rather than
/// real deletions: more than `max(min_rows, share × mirrored rows)` tombstones nothing and fails
/// the pass, unless the operator accepts it once (`sync … --allow-mass-delete`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct TombstoneGuard {
    pub min_rows: u64,
    pub share: f64,
    /// Set by `sync --allow-mass-delete` only; never read from files or the environment.
    #[serde(skip)]
    pub allow_mass_delete: bool,
}

impl TombstoneGuard {
    /// The most rows a pass over `mirrored` live rows may tombstone.
    pub fn limit(&self, mirrored: u64) -> u64 {
        // `share` is validated to lie in 0..=1, so the product fits.
        let by_share = (self.share * mirrored as f64).floor() as u64;
        self.min_rows.max(by_share)
    }

    /// `Err` naming the guard when tombstoning `rows` of `mirrored` is more than allowed.
    pub fn check(&self, section: &str, rows: u64, mirrored: u64) -> Result<(), String> {
        let limit = self.limit(mirrored);
        if rows <= limit || self.allow_mass_delete {
            return Ok(());
        }
        Err(format!(
            "tombstone guard: this pass would tombstone {rows} of {mirrored} mirrored rows, more \
             than {section}.tombstone_guard allows ({limit}); nothing was tombstoned. If the \
             partner really deleted them, run `partner-sync sync {section} --allow-mass-delete` once"
        ))
    }

    /// `share_key` names this guard's `share` setting in the error.
    fn validate(&self, share_key: &'static str) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(SettingsError::invalid(
                share_key,
                format!("must be between 0 and 1 (got {})", self.share),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    /// The public listener: the OAuth callback, customer links and `/healthz`.
    pub listen: SocketAddr,
    /// The operations listener: `/metrics`, `/readyz` and `/healthz`; keep it off the internet.
    pub ops_listen: SocketAddr,
    /// Longest a request may take, body included, before it is answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers; also how long an idle
    /// keep-alive connection is kept.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request body in bytes; a larger one is answered 413 without being read.
    pub body_limit: usize,
    /// Connections each listener keeps open at once.
    pub max_connections: usize,
    /// How browsers reach this server; redirect URIs are built from it.
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub public_url: String,
    /// Bearer token for the admin endpoints (`POST /links/rabot`); empty = those are off.
    #[serde(serialize_with = "serialize_masked")]
    pub admin_token: SecretString,
    /// Where a finished customer link sends the browser (with `status` and `external_id`
    /// added); empty = show a short page instead.
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub link_done_url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SecuritySettings {
    /// Base64 of 32 random bytes: the AES-256-GCM key that seals OAuth tokens at rest.
    #[serde(serialize_with = "serialize_masked")]
    pub token_key: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RabobankVariant {
    /// PSD2 APIs: consents end after 180 days, access tokens live about an hour.
    Psd2,
    /// Premium APIs: consents last until revoked, access tokens live about a day.
    Premium,
}

impl RabobankVariant {
    pub fn as_str(self) -> &'static str {
        match self {
            RabobankVariant::Psd2 => "psd2",
            RabobankVariant::Premium => "premium",
        }
    }

    /// The production OAuth base URL, used when `rabobank.oauth_base_url` is left empty.
    fn default_oauth_base_url(self) -> &'static str {
        match self {
            RabobankVariant::Psd2 => "https://oauth.rabobank.nl/openapi/oauth2",
            RabobankVariant::Premium => "https://oauth.rabobank.nl/openapi/oauth2-premium",
        }
    }

    /// How long a consent lasts from `consented_on`; None = until revoked.
    pub fn consent_lifetime(self) -> Option<Duration> {
        match self {
            RabobankVariant::Psd2 => Some(Duration::from_secs(180 * 86_400)),
            RabobankVariant::Premium => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RabobankSettings {
    pub enabled: bool,
    pub variant: RabobankVariant,
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub oauth_base_url: String,
    pub client_id: String,
    #[serde(serialize_with = "serialize_masked")]
    pub client_secret: SecretString,
    #[serde(deserialize_with = "list")]
    pub scopes: Vec<String>,
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub redirect_uri: String,
    #[serde(with = "humantime_serde")]
    pub rotate_before: Duration,
    pub schedule: String,
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub consent_api_base_url: String,
    pub requests_per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EnergyzeroSettings {
    pub enabled: bool,
    /// Identity provider: `{auth_base_url}/oauth2/token` and `/v1/auth/impersonate`.
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub auth_base_url: String,
    /// The GraphQL endpoint itself: queries are POSTed to exactly this URL.
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub customer_api_url: String,
    pub client_id: String,
    #[serde(serialize_with = "serialize_masked")]
    pub client_secret: SecretString,
    /// One space-separated string, sent as the `scope` form field.
    pub scope: String,
    #[serde(deserialize_with = "list")]
    pub user_ids: Vec<String>,
    pub requests_per_second: f64,
    pub burst: u32,
    pub schedule: String,
    pub tombstone_guard: TombstoneGuard,
}

/// A setting that cannot be used: the message names the key, so ops can find it in one read.
/// It never quotes a value or a line of a settings file, since either may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// Built by [`describe_load_error`], which keeps the key, the file and the position.
    #[error("{0}")]
    Load(String),
}

impl SettingsError {
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

impl Settings {
    /// Loads from the process environment; see the module docs for the order of layers.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`] but with the environment given explicitly, so tests need not
    /// mutate the process environment.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut env: std::collections::HashMap<String, String> = env.into_iter().collect();
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(SettingsError::Load(format!(
                    "settings file {} does not exist",
                    file.display()
                )));
            }
            check_file_keys(file)?;
            builder = builder.add_source(config::File::from(file));
        }
        check_environment_keys(&env)?;
        // DATABASE_URL sits between the files and PARTNER_SYNC__ variables (which may override it).
        if let Some(url) = env.get("DATABASE_URL").filter(|u| !u.is_empty()) {
            let layer = format!("[database]\nurl = {}\n", toml::Value::String(url.clone()));
            builder = builder.add_source(config::File::from_str(&layer, config::FileFormat::Toml));
        }
        // List keys are split here rather than by the config crate: its list parsing also
        // turns every other value into a number where it can ("0042" → 42), which would
        // silently change ids and secrets. Plain strings convert to numbers only where the
        // setting is numeric.
        for key in LIST_KEYS {
            let name = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
            if let Some(value) = env.remove(&name) {
                let items: Vec<String> = value.split(',').map(str::to_owned).collect();
                builder = builder
                    .set_override(*key, items)
                    .map_err(|error| describe_load_error(&error, file))?;
            }
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env.into_iter().collect()));
        let mut settings: Settings = builder
            .add_source(environment)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|error| describe_load_error(&error, file))?;
        settings.normalise();
        settings.validate()?;
        Ok(settings)
    }

    /// Splits list entries on commas and whitespace, as people (and OAuth, for scopes) write
    /// them, and drops empty and repeated ones: `PARTNER_SYNC__RABOT__EXTERNAL_IDS=""` means
    /// none, `"api:partner role:finance-reporting"` is two scopes, and an external id listed
    /// twice is still mirrored once.
    fn normalise(&mut self) {
        for list in [
            &mut self.rabot.scopes,
            &mut self.rabot.external_ids,
            &mut self.rabobank.scopes,
            &mut self.energyzero.user_ids,
        ] {
            let mut seen = std::collections::HashSet::new();
            *list = list
                .iter()
                .flat_map(|entry| entry.split(|c: char| c == ',' || c.is_whitespace()))
                .filter(|s| !s.is_empty() && seen.insert(s.to_string()))
                .map(str::to_owned)
                .collect();
        }
        self.rabot.client_id = self.rabot.client_id.trim().to_owned();
        self.server.link_done_url = self.server.link_done_url.trim().to_owned();
        self.rabobank.client_id = self.rabobank.client_id.trim().to_owned();
        let energyzero = &mut self.energyzero;
        energyzero.client_id = energyzero.client_id.trim().to_owned();
        // "openid  offline " and "openid offline" ask for the same thing.
        energyzero.scope = energyzero
            .scope
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        energyzero.auth_base_url = energyzero
            .auth_base_url
            .trim()
            .trim_end_matches('/')
            .to_owned();
        energyzero.customer_api_url = energyzero.customer_api_url.trim().to_owned();
        // Empty means "derived", and the derived value is what check-config shows.
        let public_url = self.server.public_url.trim_end_matches('/').to_owned();
        let rabobank = &mut self.rabobank;
        if rabobank.oauth_base_url.trim().is_empty() {
            rabobank.oauth_base_url = rabobank.variant.default_oauth_base_url().to_owned();
        }
        rabobank.oauth_base_url = rabobank.oauth_base_url.trim_end_matches('/').to_owned();
        if rabobank.redirect_uri.trim().is_empty() {
            rabobank.redirect_uri = format!("{public_url}{RABOBANK_CALLBACK_PATH}");
        }
        rabobank.consent_api_base_url = rabobank
            .consent_api_base_url
            .trim()
            .trim_end_matches('/')
            .to_owned();
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        validate_url(
            "database.url",
            self.database.url.expose_secret(),
            &["postgres", "postgresql"],
        )?;
        if self.database.max_connections == 0 {
            return Err(SettingsError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if self.daemon.stuck_after.is_zero() {
            return Err(SettingsError::invalid(
                "daemon.stuck_after",
                "must be longer than 0s (every running job would make /readyz fail)",
            ));
        }
        if self.http.max_attempts == 0 {
            return Err(SettingsError::invalid(
                "http.max_attempts",
                "must be at least 1",
            ));
        }
        validate_url(
            "server.public_url",
            &self.server.public_url,
            &["http", "https"],
        )?;
        if !self.server.link_done_url.is_empty() {
            validate_url(
                "server.link_done_url",
                &self.server.link_done_url,
                &["http", "https"],
            )?;
        }
        self.server.validate()?;
        let admin_token = self.server.admin_token.expose_secret();
        if !admin_token.is_empty() && admin_token.len() < 16 {
            return Err(SettingsError::invalid(
                "server.admin_token",
                "is shorter than 16 characters; generate one with `openssl rand -base64 32`",
            ));
        }
        if self.rabot.enabled {
            self.rabot.validate()?;
        }
        if self.rabobank.enabled {
            self.rabobank.validate()?;
            self.security.token_key_bytes()?;
        }
        if self.energyzero.enabled {
            self.energyzero.validate()?;
        }
        Ok(())
    }

    /// The effective settings as TOML with every secret masked, for `check-config`.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

impl ServerSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        // Port 0 picks a free port for each, so only fixed ports can collide.
        if self.ops_listen == self.listen && self.listen.port() != 0 {
            return Err(SettingsError::invalid(
                "server.ops_listen",
                format!(
                    "is the same address as server.listen ({}); the operations endpoints need a listener of their own",
                    self.listen
                ),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(SettingsError::invalid(
                "server.request_timeout",
                "must be longer than 0s",
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(SettingsError::invalid(
                "server.header_read_timeout",
                "must be longer than 0s",
            ));
        }
        if self.body_limit == 0 {
            return Err(SettingsError::invalid(
                "server.body_limit",
                "must be at least 1 (bytes)",
            ));
        }
        if self.max_connections == 0 {
            return Err(SettingsError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl RabotSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        validate_url("rabot.token_url", &self.token_url, &["http", "https"])?;
        validate_url("rabot.api_base_url", &self.api_base_url, &["http", "https"])?;
        if self.client_id.is_empty() {
            return Err(SettingsError::invalid(
                "rabot.client_id",
                "is empty but rabot.enabled is true",
            ));
        }
        if self.client_secret.expose_secret().is_empty() {
            return Err(SettingsError::invalid(
                "rabot.client_secret",
                "is empty but rabot.enabled is true",
            ));
        }
        if !self.scopes.iter().any(|s| s == "api:partner") {
            return Err(SettingsError::invalid(
                "rabot.scopes",
                "must include api:partner (RABOT requires it for every request)",
            ));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(SettingsError::invalid(
                "rabot.requests_per_second",
                format!("must be greater than 0 (got {})", self.requests_per_second),
            ));
        }
        if self.burst == 0 {
            return Err(SettingsError::invalid("rabot.burst", "must be at least 1"));
        }
        self.tombstone_guard
            .validate("rabot.tombstone_guard.share")?;
        if !(1..=1000).contains(&self.page_size) {
            return Err(SettingsError::invalid(
                "rabot.page_size",
                format!("must be between 1 and 1000 (got {})", self.page_size),
            ));
        }
        if self.concurrency == 0 {
            return Err(SettingsError::invalid(
                "rabot.concurrency",
                "must be at least 1",
            ));
        }
        validate_cron("rabot.schedule", &self.schedule)
    }
}

impl EnergyzeroSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        validate_url(
            "energyzero.auth_base_url",
            &self.auth_base_url,
            &["http", "https"],
        )?;
        validate_url(
            "energyzero.customer_api_url",
            &self.customer_api_url,
            &["http", "https"],
        )?;
        if self.client_id.is_empty() {
            return Err(SettingsError::invalid(
                "energyzero.client_id",
                "is empty but energyzero.enabled is true",
            ));
        }
        if self.client_secret.expose_secret().is_empty() {
            return Err(SettingsError::invalid(
                "energyzero.client_secret",
                "is empty but energyzero.enabled is true",
            ));
        }
        if self.scope.is_empty() {
            return Err(SettingsError::invalid(
                "energyzero.scope",
                "is empty: EnergyZero grants \"openid offline\"",
            ));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(SettingsError::invalid(
                "energyzero.requests_per_second",
                format!("must be greater than 0 (got {})", self.requests_per_second),
            ));
        }
        if self.burst == 0 {
            return Err(SettingsError::invalid(
                "energyzero.burst",
                "must be at least 1",
            ));
        }
        self.tombstone_guard
            .validate("energyzero.tombstone_guard.share")?;
        validate_cron("energyzero.schedule", &self.schedule)
    }
}

impl SecuritySettings {
    /// The decoded token key. The message never quotes the value.
    pub fn token_key_bytes(&self) -> Result<[u8; 32], SettingsError> {
        const KEY: &str = "security.token_key";
        let text = self.token_key.expose_secret().trim();
        if text.is_empty() {
            return Err(SettingsError::invalid(
                KEY,
                "is empty but rabobank.enabled is true; generate one with `openssl rand -base64 32`",
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| SettingsError::invalid(KEY, "is not valid base64"))?;
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            SettingsError::invalid(
                KEY,
                format!("must decode to 32 bytes (got {})", bytes.len()),
            )
        })
    }
}

impl RabobankSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        validate_url(
            "rabobank.oauth_base_url",
            &self.oauth_base_url,
            &["http", "https"],
        )?;
        validate_url(
            "rabobank.redirect_uri",
            &self.redirect_uri,
            &["http", "https"],
        )?;
        if !self.consent_api_base_url.is_empty() {
            validate_url(
                "rabobank.consent_api_base_url",
                &self.consent_api_base_url,
                &["http", "https"],
            )?;
        }
        if self.client_id.is_empty() {
            return Err(SettingsError::invalid(
                "rabobank.client_id",
                "is empty but rabobank.enabled is true",
            ));
        }
        if self.client_secret.expose_secret().is_empty() {
            return Err(SettingsError::invalid(
                "rabobank.client_secret",
                "is empty but rabobank.enabled is true",
            ));
        }
        if self.scopes.is_empty() {
            return Err(SettingsError::invalid(
                "rabobank.scopes",
                "is empty: name the scopes the consent asks for",
            ));
        }
        if self.rotate_before.is_zero() {
            return Err(SettingsError::invalid(
                "rabobank.rotate_before",
                "must be longer than 0s",
            ));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(SettingsError::invalid(
                "rabobank.requests_per_second",
                format!("must be greater than 0 (got {})", self.requests_per_second),
            ));
        }
        if self.burst == 0 {
            return Err(SettingsError::invalid(
                "rabobank.burst",
                "must be at least 1",
            ));
        }
        validate_cron("rabobank.schedule", &self.schedule)
    }
}

fn validate_url(key: &'static str, value: &str, schemes: &[&str]) -> Result<(), SettingsError> {
    // The parse error of a database URL could echo its password, so it is not repeated.
    let url =
        url::Url::parse(value).map_err(|_| SettingsError::invalid(key, "is not a valid URL"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(SettingsError::invalid(
            key,
            format!(
                "must be a {} URL (got scheme {:?})",
                schemes.join(" or "),
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) && !schemes.contains(&"postgres") {
        return Err(SettingsError::invalid(key, "has no host"));
    }
    Ok(())
}

/// Six fields (with seconds), parsed by the same parser the scheduler uses.
pub fn validate_cron(key: &'static str, expression: &str) -> Result<(), SettingsError> {
    let fields = expression.split_whitespace().count();
    if fields != 6 {
        return Err(SettingsError::invalid(
            key,
            format!(
                "{expression:?} must have 6 fields (sec min hour day month weekday), got {fields}"
            ),
        ));
    }
    crate::events::schedule::parse_cron(expression)
        .map(|_| ())
        .map_err(|reason| {
            SettingsError::invalid(
                key,
                format!("{expression:?} is not a valid cron expression: {reason}"),
            )
        })
}

/// Every setting's dotted name, from the embedded defaults, which list each one.
fn known_keys() -> Vec<String> {
    let defaults: toml::Table = DEFAULTS.parse().unwrap_or_default();
    let mut keys = Vec::new();
    collect_keys("", &defaults, &mut keys);
    keys
}

/// The dotted names of `table`'s values (arrays are values, tables are sections).
fn collect_keys(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(section) => collect_keys(&key, section, keys),
            _ => keys.push(key),
        }
    }
}

/// "unknown setting X in WHERE (did you mean Y?)": a misspelt key is silently ignored by the
/// layers, so the operator would believe a setting is in force that is not.
fn unknown_key(key: &str, place: &str, known: &[String]) -> SettingsError {
    let closest = known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!("; the closest known setting is {candidate}"))
        .unwrap_or_default();
    SettingsError::Load(format!("unknown setting {key} in {place}{closest}"))
}

/// Keys of the settings file that no setting has. A file that does not parse is left to the
/// layered load, whose error says where without quoting it.
fn check_file_keys(file: &Path) -> Result<(), SettingsError> {
    let Ok(table) = std::fs::read_to_string(file)
        .unwrap_or_default()
        .parse::<toml::Table>()
    else {
        return Ok(());
    };
    let known = known_keys();
    let mut keys = Vec::new();
    collect_keys("", &table, &mut keys);
    match keys.into_iter().find(|key| !known.contains(key)) {
        Some(key) => Err(unknown_key(
            &key,
            &format!("settings file {}", file.display()),
            &known,
        )),
        None => Ok(()),
    }
}

/// `PARTNER_SYNC__…` variables that name no setting.
fn check_environment_keys(
    env: &std::collections::HashMap<String, String>,
) -> Result<(), SettingsError> {
    let known = known_keys();
    let prefix = format!("{ENV_PREFIX}__");
    let mut names: Vec<&String> = env
        .keys()
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    for name in names {
        let key = name[prefix.len()..].to_lowercase().replace("__", ".");
        if !known.contains(&key) {
            return Err(unknown_key(
                &key,
                &format!("the environment variable {name}"),
                &known,
            ));
        }
    }
    Ok(())
}

/// A list setting written as a TOML array or as one string (`"a b"`, `"a,b"`); `normalise`
/// splits the entries.
fn list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Written::deserialize(deserializer)? {
        Written::One(text) => vec![text],
        Written::Many(items) => items,
    })
}

fn serialize_masked<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "********"
    })
}

fn serialize_masked_url<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url_password(secret.expose_secret()))
}

/// For URL settings held as plain strings: an API or redirect URL may still carry a
/// credential (`https://user:pass@host/`, `?api_key=`).
fn serialize_masked_url_text<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if url.trim().is_empty() {
        return s.serialize_str(url);
    }
    s.serialize_str(&mask_url_password(url))
}

const MASK: &str = "********";
/// Query parameter names that hold a secret, matched case-insensitively anywhere in the name:
/// `password`, `sslpassword`, `pwd`, `client_secret`, `access_token`, `api_key`, `sslkey`, `auth`, ….
const SECRET_PARAMETER_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "signature",
];

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMETER_WORDS
        .iter()
        .any(|word| name.contains(word))
}

/// Keeps a URL readable for ops (host, database, harmless options) while hiding its password,
/// in the userinfo and in any query parameter whose name looks secret
/// (`postgres://u@h/db?password=…&sslmode=require`). A URL that does not parse is hidden whole.
pub fn mask_url_password(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return MASK.to_owned();
    };
    let secret_query = url
        .query_pairs()
        .any(|(name, _)| is_secret_parameter(&name));
    if url.password().is_none() && !secret_query {
        // Nothing to hide: shown exactly as written.
        return raw.to_owned();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    }
    if secret_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_parameter(&name) {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A `config` error as one line that names the file, the key and the position, but never
/// quotes a value or a source line: the `toml` crate's syntax errors print the offending line,
/// and type errors print the value, and either may be a password.
fn describe_load_error(error: &config::ConfigError, file: Option<&Path>) -> SettingsError {
    SettingsError::Load(describe_config_error(error, file))
}

fn describe_config_error(error: &config::ConfigError, file: Option<&Path>) -> String {
    use config::ConfigError as E;
    let origin = |origin: &Option<String>| {
        origin
            .as_deref()
            .map(|o| format!(" (from {o})"))
            .unwrap_or_default()
    };
    match error {
        E::FileParse { uri, cause } => {
            // The config crate names the file relative to the working directory; the path as
            // given (`--config`) is the one ops recognise. Only that file is parsed from disk:
            // the other layers are built in.
            let path = uri.as_ref().and(file);
            let name = path
                .map(|f| f.display().to_string())
                .or_else(|| uri.clone())
                .unwrap_or_else(|| "built-in defaults".to_owned());
            let position = cause
                .downcast_ref::<toml::de::Error>()
                .and_then(toml::de::Error::span)
                .and_then(|span| {
                    // The span indexes the file the config crate read: read it again here,
                    // only to turn the offset into a line and column.
                    let text = std::fs::read_to_string(path?).ok()?;
                    Some(line_and_column(&text, span.start))
                });
            match position {
                Some((line, column)) => {
                    format!(
                        "settings file {name}: TOML syntax error at line {line} column {column}"
                    )
                }
                None => format!("settings file {name}: TOML syntax error"),
            }
        }
        E::Type {
            origin: from,
            unexpected,
            expected,
            key,
        } => {
            // `unexpected` reads `string "the value"`: keep only what kind of value it was.
            let kind = unexpected.to_string();
            let kind = kind.split(['"', '`']).next().unwrap_or_default().trim();
            format!(
                "invalid setting {}{}: expected {expected}, got a {kind}",
                key.as_deref().unwrap_or("(unknown key)"),
                origin(from),
            )
        }
        E::At {
            error,
            origin: from,
            key,
        } => match key {
            Some(key) => format!(
                "invalid setting {key}{}: {}",
                origin(from),
                describe_config_error(error, file)
            ),
            None => describe_config_error(error, file),
        },
        E::NotFound(key) => format!("missing setting {key}"),
        E::Message(text) => without_quoted_values(text),
        other => without_quoted_values(&other.to_string()),
    }
}

/// `(line, column)`, both from 1, of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Serde's messages quote the value they refused (`invalid value: string "…", expected …`):
/// every quoted part is replaced by `…`, the rest of the sentence stays.
fn without_quoted_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(open) if c == open => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '`' | '\'') => {
                quote = Some(c);
                out.push('…');
            }
            None if c.is_control() => out.push(' '),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_in_userinfo_and_query() {
        let masked = mask_url_password(
            "postgres://sync:pa55@db.internal:5432/mirror?sslmode=require&password=hunter2\
             &PassWord=two&sslpassword=three&application_name=ps&api_key=k&Token=t",
        );
        for secret in ["pa55", "hunter2", "two", "three", "=k", "=t"] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("db.internal:5432/mirror"), "{masked}");
        assert!(masked.contains("sslmode=require"), "{masked}");
        assert!(masked.contains("application_name=ps"), "{masked}");
        assert!(masked.contains("sync:********@"), "{masked}");
        assert!(masked.contains("sslpassword=********"), "{masked}");
        assert_eq!(
            mask_url_password("https://api.example/v1"),
            "https://api.example/v1"
        );
        assert_eq!(mask_url_password("not a url with pa55"), MASK);
    }

    #[test]
    fn quoted_values_are_dropped_from_messages() {
        assert_eq!(
            without_quoted_values("invalid value: string \"hunter2\", expected a duration"),
            "invalid value: string …, expected a duration"
        );
        assert_eq!(without_quoted_values("a `b` c 'd'\ne"), "a … c … e");
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "[a]\nb = 1\nsecret = \"é x\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 4), (2, 1));
        assert_eq!(line_and_column(text, text.find('x').unwrap()), (3, 13));
    }
}
