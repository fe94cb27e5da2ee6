//! OAuth 2.0 client-credentials token requests (RFC 6749 §4.4) sent through the partner's
//! [`PartnerHttp`], so they share its rate limit and retries.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::token_cache::{AuthError, IssuedToken, TokenSource};
use super::{HttpError, PartnerHttp};

/// Used when a token response omits `expires_in` (or it is unreadable): short, so a wrong
/// guess costs little.
pub const UNSTATED_LIFETIME: Duration = Duration::from_secs(300);

pub struct ClientCredentials {
    pub http: PartnerHttp,
    pub token_url: url::Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    /// Where the credentials live in the settings (`rabot`), named in error messages.
    pub settings_prefix: &'static str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    /// Some servers send the number as a string; anything unreadable counts as unstated.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl ClientCredentials {
    /// Sends the token request (credentials as form fields) and returns the successful answer
    /// unread, for partners that hand the token out somewhere other than the standard JSON body.
    /// Rejected credentials and scopes come back classified.
    pub async fn send_request(&self) -> Result<reqwest::Response, AuthError> {
        let scope = self.scopes.join(" ");
        self.http
            .send(Method::POST, &self.token_url, |request| {
                request.form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", self.client_id.as_str()),
                    ("client_secret", self.client_secret.expose_secret()),
                    ("scope", scope.as_str()),
                ])
            })
            .await
            .map_err(|error| self.classify(error))
    }

    async fn request(&self) -> Result<IssuedToken, AuthError> {
        let response = self.send_request().await?;
        let body: TokenResponse = self
            .http
            .json(&Method::POST, &self.token_url, response)
            .await?;
        if body.access_token.expose_secret().is_empty() {
            return Err(AuthError::Http(HttpError::Decode {
                partner: self.http.partner(),
                method: Method::POST,
                path: self.token_url.path().to_owned(),
                reason: "empty access_token".to_owned(),
            }));
        }
        let lifetime = body.expires_in.as_ref().and_then(stated_lifetime);
        let lifetime = lifetime.unwrap_or_else(|| {
            tracing::warn!(
                assumed_s = UNSTATED_LIFETIME.as_secs(),
                "token response has no expires_in"
            );
            UNSTATED_LIFETIME
        });
        Ok(IssuedToken {
            secret: body.access_token,
            lifetime,
        })
    }

    /// Tells rejected credentials and scopes apart from other failures: both are final and
    /// need a person to fix the settings.
    fn classify(&self, error: HttpError) -> AuthError {
        let HttpError::Status { status, detail, .. } = &error else {
            return error.into();
        };
        let partner = self.http.partner();
        if *status == StatusCode::FORBIDDEN || detail.contains("invalid_scope") {
            AuthError::ScopeRejected {
                partner,
                settings_prefix: self.settings_prefix,
                scopes: self.scopes.join(" "),
                detail: format!("{status}: {detail}"),
            }
        } else if *status == StatusCode::UNAUTHORIZED
            || detail.contains("invalid_client")
            || detail.contains("unauthorized_client")
        {
            AuthError::CredentialsRejected {
                partner,
                settings_prefix: self.settings_prefix,
                detail: format!("{status}: {detail}"),
            }
        } else {
            error.into()
        }
    }
}

/// `expires_in` as a lifetime: a number of seconds, or a string holding one (some servers
/// send that). Negative counts as zero and anything too large saturates, so no value can
/// panic; the token cache then bounds it ([`super::token_cache::bounded_lifetime`]).
/// Anything unreadable (`"abc"`, `NaN`, an object) counts as unstated.
pub fn stated_lifetime(value: &serde_json::Value) -> Option<Duration> {
    let seconds = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if seconds.is_nan() {
        return None;
    }
    Some(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
}

impl TokenSource for ClientCredentials {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuedToken, AuthError>> {
        Box::pin(self.request())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_expires_in_reads_without_panicking() {
        let secs = Duration::from_secs;
        assert_eq!(stated_lifetime(&json!(3599)), Some(secs(3599)));
        assert_eq!(stated_lifetime(&json!("3600")), Some(secs(3600)));
        assert_eq!(stated_lifetime(&json!(0)), Some(Duration::ZERO));
        assert_eq!(stated_lifetime(&json!(-5)), Some(Duration::ZERO));
        assert_eq!(stated_lifetime(&json!("-5")), Some(Duration::ZERO));
        assert_eq!(stated_lifetime(&json!(u64::MAX)), Some(Duration::MAX));
        assert_eq!(stated_lifetime(&json!(1e300)), Some(Duration::MAX));
        assert_eq!(stated_lifetime(&json!("inf")), Some(Duration::MAX));
        assert_eq!(stated_lifetime(&json!("abc")), None);
        assert_eq!(stated_lifetime(&json!("NaN")), None);
        assert_eq!(stated_lifetime(&json!(null)), None);
        assert_eq!(stated_lifetime(&json!({"s": 1})), None);
    }
}
