//! The validation that turns a bad value into one line naming its key: the server's, and the
//! checks every section shares (URLs, cron expressions, stale thresholds). Each partner's own
//! checks are in its section's file.

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
pub(super) fn validate_stale_after(
    key: &'static str,
    value: Option<Duration>,
) -> Result<(), SettingsError> {
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
