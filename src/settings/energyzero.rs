//! `[energyzero]`: the EnergyZero connection, whose users to mirror, and its validation.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::masking::{serialize_masked, serialize_masked_url_text};
use super::validation::{validate_cron, validate_stale_after, validate_url};
use super::{SettingsError, TombstoneGuard, list, optional_duration};

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
    /// See [`optional_duration`]; `None` = 2 × the schedule's interval.
    #[serde(with = "optional_duration")]
    pub stale_after: Option<Duration>,
    pub tombstone_guard: TombstoneGuard,
}

impl EnergyzeroSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
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
        validate_stale_after("energyzero.stale_after", self.stale_after)?;
        validate_cron("energyzero.schedule", &self.schedule)
    }
}
