//! `[rabobank]`: the Rabobank OAuth client, its variant and rotation, and its validation.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::masking::{serialize_masked, serialize_masked_url_text};
use super::validation::{validate_cron, validate_stale_after, validate_url};
use super::{SettingsError, list, optional_duration};

/// Where the bank sends the user back to, below `server.public_url`.
pub const RABOBANK_CALLBACK_PATH: &str = "/oauth/rabobank/callback";

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
    pub(super) fn default_oauth_base_url(self) -> &'static str {
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
    /// See [`optional_duration`]; `None` = 2 × the schedule's interval.
    #[serde(with = "optional_duration")]
    pub stale_after: Option<Duration>,
    #[serde(serialize_with = "serialize_masked_url_text")]
    pub consent_api_base_url: String,
    pub requests_per_second: f64,
    pub burst: u32,
}

impl RabobankSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
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
        validate_stale_after("rabobank.stale_after", self.stale_after)?;
        validate_cron("rabobank.schedule", &self.schedule)
    }
}
