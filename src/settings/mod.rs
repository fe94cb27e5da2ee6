//! Typed settings: embedded defaults (`config/default.toml`), an optional file, `DATABASE_URL`,
//! then `PARTNER_SYNC__<SECTION>__<KEY>` environment variables — and the validation that turns a
//! bad value into one line naming its key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

mod energyzero;
mod finance;
mod masking;
mod rabobank;
mod rabot;
mod sources;
mod validation;

pub use energyzero::EnergyzeroSettings;
pub use finance::{MonthEndSettings, RetentionSettings};
pub use rabobank::{RABOBANK_CALLBACK_PATH, RabobankSettings, RabobankVariant};
pub use rabot::{LINKED_CUSTOMERS, RABOT_LINKS_PATH, RabotSettings};

pub use masking::mask_url_password;
use masking::{serialize_masked, serialize_masked_url, serialize_masked_url_text};
use sources::{check_environment_keys, check_file_keys, describe_load_error};
pub use validation::validate_cron;
use validation::validate_url;

/// The defaults ship inside the binary so it starts from any working directory.
const DEFAULTS: &str = include_str!("../../config/default.toml");
const ENV_PREFIX: &str = "PARTNER_SYNC";
/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "rabot.scopes",
    "rabot.external_ids",
    "rabobank.scopes",
    "energyzero.user_ids",
];
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
    pub month_end: MonthEndSettings,
    pub retention: RetentionSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "serialize_masked_url")]
    pub url: SecretString,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Time allowed to open one connection (TCP, TLS, authentication): a server that is down,
    /// unknown or refusing us is reported within it, not after `acquire_timeout`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
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
    /// The zone every cron schedule is read in (an IANA name such as `Europe/Amsterdam`).
    #[serde(with = "zone_name")]
    pub timezone: chrono_tz::Tz,
}

/// Read through a string so that a wrong value is refused naming the choices, not the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise; the daemon (`run`) always JSON.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

impl TryFrom<String> for LogFormat {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err("must be auto, json or pretty"),
        }
    }
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
    /// `sync --allow-mass-delete`: every tombstone guard accepts, for this one process, more
    /// tombstones than it allows.
    pub fn allow_mass_delete(&mut self) {
        self.rabot.tombstone_guard.allow_mass_delete = true;
        self.energyzero.tombstone_guard.allow_mass_delete = true;
    }

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
        if self.database.connect_timeout.is_zero() {
            return Err(SettingsError::invalid(
                "database.connect_timeout",
                "must be longer than 0s",
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
        if self.month_end.enabled {
            self.month_end.validate()?;
        }
        self.retention.validate()?;
        // Purged periods inside the back-fill window would be read back by the next run.
        if let Some(keep) = self.retention.raw_consumption {
            if keep < self.rabot.consumption_backfill_limit {
                return Err(SettingsError::invalid(
                    "retention.raw_consumption",
                    format!(
                        "is shorter than rabot.consumption_backfill_limit ({}): consumption \
                         purged inside that window would be read back from RABOT; keep it at \
                         least as long",
                        humantime::format_duration(self.rabot.consumption_backfill_limit)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective settings as TOML with every secret masked, for `check-config`.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
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

/// An IANA time zone name; a misspelt one is refused with the closest known name.
mod zone_name {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<chrono_tz::Tz, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.trim().parse().map_err(|_| {
            let closest = chrono_tz::TZ_VARIANTS
                .iter()
                .map(|zone| zone.name())
                .max_by(|a, b| {
                    let similarity = |known: &str| {
                        strsim::jaro_winkler(
                            &name.to_ascii_lowercase(),
                            &known.to_ascii_lowercase(),
                        )
                    };
                    similarity(a).total_cmp(&similarity(b))
                })
                .unwrap_or("UTC");
            serde::de::Error::custom(format!(
                "{name:?} is not an IANA time zone name (did you mean {closest}?)"
            ))
        })
    }

    pub fn serialize<S: Serializer>(
        zone: &chrono_tz::Tz,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(zone.name())
    }
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

/// An optional duration (`stale_after`): written `"6h"`, or `""` for none. The empty string
/// stands for "unset" because the embedded defaults must list every key (the unknown-key check
/// reads them) and TOML has no null.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        humantime::parse_duration(text)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected a duration such as 6h, or empty"))
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_str(&humantime::format_duration(*duration).to_string()),
            None => s.serialize_str(""),
        }
    }
}
