//! Rabobank OAuth 2.0 (PSD2 and Premium): the authorize URL, the code exchange and refresh with
//! HTTP Basic client authentication (through the `oauth2` crate, as the bank asks), and the
//! Consent Details Service. Nothing here stores anything.
//!
//! Requests go through the shared [`PartnerHttp`] (rate limit, no redirects), with
//! [`Replay::OnlyUnprocessed`]: codes and refresh tokens are single use, so a request whose
//! answer was lost is reported as such ([`TokenError::OutcomeUnknown`]) instead of being sent
//! again.

use super::wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::basic::{BasicErrorResponse, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AsyncHttpClient, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::http::{HttpError, PartnerHttp, RateBudget, RateLimit, Replay};
use crate::settings::{HttpSettings, RabobankSettings, RabobankVariant};
use wire::{ConsentDetails, RabobankTokenFields};

pub const PARTNER: &str = "rabobank";
/// Refreshes one consent allows; then only a new consent goes on.
pub const REFRESH_LIMIT: i32 = 4096;

type TokenAnswer = StandardTokenResponse<RabobankTokenFields, BasicTokenType>;
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What a token endpoint answered, read into our terms. Lifetimes are `None` when the server
/// did not say; the caller picks documented defaults.
pub struct TokenGrant {
    pub access_token: SecretString,
    /// `None` when the server kept the old refresh token (servers that do not rotate).
    pub refresh_token: Option<SecretString>,
    pub access_expires_in: Option<Duration>,
    pub refresh_expires_in: Option<Duration>,
    pub consented_on: Option<chrono::DateTime<chrono::Utc>>,
    pub consent_id: Option<String>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("consent_id", &self.consent_id)
            .finish_non_exhaustive()
    }
}

/// Why a token request gave no tokens. The variant decides what happens to the grant.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The code or refresh token is invalid, expired, spent or revoked: a person must consent again.
    #[error("Rabobank refused the grant (invalid_grant): {0}")]
    InvalidGrant(String),
    /// The request itself was refused (client credentials, scope, request shape): fix settings.
    #[error("Rabobank refused the token request: {0}")]
    Rejected(String),
    /// The request was certainly not processed (429/503 after retries, no connection).
    #[error("Rabobank's token endpoint is unavailable: {0}")]
    Transient(String),
    /// The request may have been processed but its answer was lost or unreadable: a refresh
    /// token sent with it may already be spent.
    #[error("the outcome of the token request is unknown: {0}")]
    OutcomeUnknown(String),
}

/// Why the consent status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// 401/403 with CONSENT_INVALID: the user revoked the consent or it expired.
    #[error("Rabobank says the consent is no longer valid (CONSENT_INVALID)")]
    ConsentInvalid,
    #[error(transparent)]
    Http(#[from] HttpError),
}

pub struct RabobankClient {
    oauth: OAuthClient,
    http: PartnerHttp,
    variant: RabobankVariant,
    client_id: String,
    scopes: Vec<String>,
    consent_api_base_url: Option<url::Url>,
}

impl std::fmt::Debug for RabobankClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabobankClient")
            .field("variant", &self.variant)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl RabobankClient {
    pub fn new(settings: &RabobankSettings, http: &HttpSettings) -> anyhow::Result<Self> {
        let base = &settings.oauth_base_url;
        let oauth = oauth2::Client::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                settings.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::new(format!("{base}/authorize"))?)
            .set_token_uri(TokenUrl::new(format!("{base}/token"))?)
            .set_redirect_uri(RedirectUrl::new(settings.redirect_uri.clone())?)
            // The bank documents HTTP Basic client authentication (also the crate's default).
            .set_auth_type(oauth2::AuthType::BasicAuth);
        let rate = RateLimit {
            requests_per_second: settings.requests_per_second,
            burst: settings.burst,
        };
        let consent_api_base_url = match settings.consent_api_base_url.as_str() {
            "" => None,
            url => Some(url::Url::parse(url)?),
        };
        Ok(Self {
            oauth,
            // PartnerHttp never follows redirects, as the oauth2 crate advises against SSRF.
            http: PartnerHttp::new(PARTNER, http, rate)?.for_credential(&settings.client_id),
            variant: settings.variant,
            client_id: settings.client_id.clone(),
            scopes: settings.scopes.clone(),
            consent_api_base_url,
        })
    }

    pub fn variant(&self) -> RabobankVariant {
        self.variant
    }

    pub fn checks_consents(&self) -> bool {
        self.consent_api_base_url.is_some()
    }

    /// Requests sent so far (tokens, refreshes; retries included), and 429s.
    pub fn tally(&self) -> crate::http::RequestTally {
        self.http.tally()
    }

    /// The rate requests go out at now, for an estimate of the time a run has left.
    pub fn effective_rate(&self) -> f64 {
        self.http.effective_rate()
    }

    /// The rate limit this client divides with replicas using the same credential.
    pub fn rate_budget(&self) -> RateBudget {
        self.http.rate_budget()
    }

    /// The URL to send the user's browser to; `state` is ours and checked on return.
    pub fn authorize_url(&self, state: &str) -> url::Url {
        let state = state.to_owned();
        let (url, _) = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .url();
        url
    }

    pub async fn exchange_code(&self, code: &str) -> Result<TokenGrant, TokenError> {
        crate::metrics::token_requested(PARTNER);
        let answer = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&OAuthTransport {
                http: &self.http,
                stop: None,
            })
            .await;
        classify(answer)
    }

    /// One refresh. Not retried beyond what cannot have reached the bank: the refresh token is
    /// single use. Once `stop` is cancelled, an attempt not yet sent is not sent (a transient
    /// failure: the token is unspent).
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        stop: &CancellationToken,
    ) -> Result<TokenGrant, TokenError> {
        crate::metrics::token_requested(PARTNER);
        let refresh_token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let answer = self
            .oauth
            .exchange_refresh_token(&refresh_token)
            .request_async(&OAuthTransport {
                http: &self.http,
                stop: Some(stop),
            })
            .await;
        classify(answer)
    }

    /// The consent's current status from the Consent Details Service. `None` when
    /// `rabobank.consent_api_base_url` is not set.
    pub async fn consent(
        &self,
        access_token: &SecretString,
        consent_id: &str,
    ) -> Option<Result<ConsentDetails, ConsentError>> {
        let base = self.consent_api_base_url.as_ref()?;
        let path = match self.variant {
            RabobankVariant::Psd2 => "oauth2/consents",
            RabobankVariant::Premium => "oauth2-premium/v1/consents",
        };
        let mut url = base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(path.split('/'))
                .push(consent_id);
        }
        Some(self.fetch_consent(access_token, &url).await)
    }

    async fn fetch_consent(
        &self,
        access_token: &SecretString,
        url: &url::Url,
    ) -> Result<ConsentDetails, ConsentError> {
        let http = &self.http;
        let response = http
            .send_with(Replay::Safe, Method::GET, url, |request| {
                request
                    .bearer_auth(access_token.expose_secret())
                    .header("X-IBM-Client-Id", &self.client_id)
                    .header(reqwest::header::ACCEPT, "application/json")
            })
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(http.json(&Method::GET, url, response).await?);
        }
        let detail = crate::http::error_body(response).await;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            && detail.contains("CONSENT_INVALID")
        {
            return Err(ConsentError::ConsentInvalid);
        }
        Err(ConsentError::Http(HttpError::Status {
            partner: PARTNER,
            method: Method::GET,
            path: url.path().to_owned(),
            status,
            detail,
        }))
    }
}

/// Turns the oauth2 crate's answer into ours. Token values never enter an error message: the
/// crate's parse errors carry the response body, which on a 200 holds the tokens.
fn classify(
    answer: Result<TokenAnswer, RequestTokenError<HttpError, BasicErrorResponse>>,
) -> Result<TokenGrant, TokenError> {
    match answer {
        Ok(answer) => {
            let extra = answer.extra_fields();
            Ok(TokenGrant {
                access_token: SecretString::from(answer.access_token().secret().to_owned()),
                refresh_token: answer
                    .refresh_token()
                    .map(|t| SecretString::from(t.secret().to_owned())),
                access_expires_in: answer.expires_in(),
                refresh_expires_in: extra.refresh_token_expires_in().map(Duration::from_secs),
                consented_on: extra.consented_on(),
                consent_id: extra.consent_id(),
                scope: answer.scopes().map(|scopes| {
                    scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            })
        }
        Err(RequestTokenError::ServerResponse(error)) => {
            let detail = match error.error_description() {
                Some(description) => format!("{}: {description}", error.error()),
                None => error.error().to_string(),
            };
            match error.error() {
                BasicErrorResponseType::InvalidGrant => Err(TokenError::InvalidGrant(detail)),
                _ => Err(TokenError::Rejected(detail)),
            }
        }
        Err(RequestTokenError::Request(error)) => Err(match &error {
            HttpError::Exhausted { .. }
            | HttpError::Transport {
                maybe_processed: false,
                ..
            } => TokenError::Transient(error.to_string()),
            // A refusal without an OAuth error object (or a redirect): not processed.
            HttpError::Status { status, .. } if !status.is_server_error() => {
                TokenError::Rejected(error.to_string())
            }
            _ => TokenError::OutcomeUnknown(error.to_string()),
        }),
        // Only a 2xx reaches the crate's parser (see OAuthTransport): the bank processed the
        // request, and its answer is unusable.
        Err(RequestTokenError::Parse(error, _body)) => Err(TokenError::OutcomeUnknown(format!(
            "the token response did not parse at {}",
            error.path()
        ))),
        Err(RequestTokenError::Other(reason)) => Err(TokenError::OutcomeUnknown(reason)),
    }
}

/// The oauth2 crate's HTTP client, backed by our stack. It hands the crate only answers it can
/// read: 2xx, and 4xx carrying an OAuth error object. Everything else becomes an [`HttpError`],
/// so [`classify`] can tell "refused" from "lost". One per request, carrying its stop signal.
struct OAuthTransport<'a> {
    http: &'a PartnerHttp,
    stop: Option<&'a CancellationToken>,
}

impl<'c> AsyncHttpClient<'c> for OAuthTransport<'_> {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

impl OAuthTransport<'_> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let http = self.http;
        let method = request.method().clone();
        let url =
            url::Url::parse(&request.uri().to_string()).map_err(|e| HttpError::Transport {
                partner: PARTNER,
                method: method.clone(),
                path: request.uri().path().to_owned(),
                reason: format!("invalid token URL: {e}"),
                maybe_processed: false,
            })?;
        let headers = request.headers().clone();
        let body = request.into_body();
        let response = http
            .send_unless_stopped(
                Replay::OnlyUnprocessed,
                self.stop,
                method.clone(),
                &url,
                |builder| builder.headers(headers.clone()).body(body.clone()),
            )
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let lost = |reason: String| HttpError::Transport {
            partner: PARTNER,
            method: method.clone(),
            path: url.path().to_owned(),
            reason,
            maybe_processed: true,
        };
        let bytes = response
            .bytes()
            .await
            .map_err(|e| lost(format!("the answer was cut off: {e}")))?;
        let readable = status.is_success() || (status.is_client_error() && is_oauth_error(&bytes));
        if !readable {
            return Err(HttpError::Status {
                partner: PARTNER,
                method,
                path: url.path().to_owned(),
                status,
                detail: crate::http::one_line(&String::from_utf8_lossy(&bytes)),
            });
        }
        let mut answer = HttpResponse::new(bytes.to_vec());
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

/// `{"error": "<code>", …}`: the RFC 6749 §5.2 error object.
fn is_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(serde_json::Value::is_string))
}
