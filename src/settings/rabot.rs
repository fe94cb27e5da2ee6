//! `[rabot]`: the RABOT Partner API connection, what to mirror, and its validation.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::masking::{serialize_masked, serialize_masked_url_text};
use super::validation::{validate_cron, validate_stale_after, validate_url};
use super::{SettingsError, TombstoneGuard, list, optional_duration};

/// Below `server.public_url`: RABOT customer links are created here (admin) and RABOT sends the
/// customer back to `{this}/{secret}/success` or `/failure`.
pub const RABOT_LINKS_PATH: &str = "/links/rabot";
/// In `rabot.external_ids`: the external ids of every linked customer.
pub const LINKED_CUSTOMERS: &str = "@linked";
/// The `Interval` values RABOT documents for contract metrics.
pub const METRIC_INTERVALS: [&str; 6] = [
    "QuarterHourly",
    "Hourly",
    "Daily",
    "Weekly",
    "Monthly",
    "Yearly",
];

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
    /// When `rabot_costs` reads every live contract's price components.
    pub costs_schedule: String,
    /// When `rabot_consumption` reads every live contract's consumption.
    pub consumption_schedule: String,
    /// The `Interval` consumption is asked in (one of [`METRIC_INTERVALS`]).
    pub consumption_interval: String,
    /// Stored periods re-read before the newest one, Final or not (RABOT may correct them).
    pub consumption_lookback: u32,
    /// How far back a contract with nothing stored is read (never before its delivery start).
    #[serde(with = "humantime_serde")]
    pub consumption_backfill_limit: Duration,
    /// The zone RABOT's zone-less metric timestamps are read in.
    #[serde(with = "super::zone_name")]
    pub metrics_timezone: chrono_tz::Tz,
    /// The query parameter carrying the metric type (its name is not documented).
    pub metric_type_parameter: String,
    /// The query parameter carrying the value type (its name is not documented).
    pub value_type_parameter: String,
    /// See [`optional_duration`]; `None` = 2 × the schedule's interval.
    #[serde(with = "optional_duration")]
    pub stale_after: Option<Duration>,
    pub tombstone_guard: TombstoneGuard,
}

impl RabotSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
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
        validate_stale_after("rabot.stale_after", self.stale_after)?;
        validate_cron("rabot.schedule", &self.schedule)?;
        validate_cron("rabot.costs_schedule", &self.costs_schedule)?;
        validate_cron("rabot.consumption_schedule", &self.consumption_schedule)?;
        if !METRIC_INTERVALS.contains(&self.consumption_interval.as_str()) {
            return Err(SettingsError::invalid(
                "rabot.consumption_interval",
                format!("must be one of {}", METRIC_INTERVALS.join(", ")),
            ));
        }
        if self.consumption_backfill_limit.is_zero() {
            return Err(SettingsError::invalid(
                "rabot.consumption_backfill_limit",
                "must be longer than 0s",
            ));
        }
        for (key, name) in [
            ("rabot.metric_type_parameter", &self.metric_type_parameter),
            ("rabot.value_type_parameter", &self.value_type_parameter),
        ] {
            // A query parameter name: nothing that would need escaping or could split it.
            let well_formed = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !well_formed {
                return Err(SettingsError::invalid(
                    key,
                    "must be a query parameter name (letters, digits, '.', '_' or '-')",
                ));
            }
        }
        Ok(())
    }
}
