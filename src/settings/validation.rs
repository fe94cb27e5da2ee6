//! The validation that turns a bad value into one line naming its key.

use super::*;

impl ServerSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
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
        validate_cron("rabot.schedule", &self.schedule)
    }
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

pub(super) fn validate_url(
    key: &'static str,
    value: &str,
    schemes: &[&str],
) -> Result<(), SettingsError> {
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

/// A stale threshold of 0 would call every job stale the moment its pass ends.
fn validate_stale_after(key: &'static str, value: Option<Duration>) -> Result<(), SettingsError> {
    if value.is_some_and(|d| d.is_zero()) {
        return Err(SettingsError::invalid(
            key,
            "must be longer than 0s (leave it empty for 2 × the schedule's interval)",
        ));
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
    crate::cron::parse_cron(expression)
        .map(|_| ())
        .map_err(|reason| {
            SettingsError::invalid(
                key,
                format!("{expression:?} is not a valid cron expression: {reason}"),
            )
        })
}
