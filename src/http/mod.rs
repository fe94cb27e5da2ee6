//! The outbound stack every partner shares: one reqwest client with timeouts, an adaptive rate
//! limiter per partner client that every request passes (token requests included; lowered when
//! the partner answers 429, see [`adaptive`]), and retries with exponential back-off and jitter
//! that honour `Retry-After`.
//!
//! Authentication sits one layer up ([`authorized::AuthorizedHttp`] with a [`token_cache::TokenCache`]),
//! so the retry loop never sees credentials.

pub mod adaptive;
pub mod authorized;
pub mod client_credentials;
pub mod retry;
pub mod token_cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::settings::HttpSettings;
pub use adaptive::AdaptiveLimiter;
pub use retry::RetryPolicy;

/// Longest part of a partner's error body quoted in an error message.
const ERROR_BODY_LIMIT: usize = 600;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The partner answered with a status we do not retry (or retried to no avail for 401 / 403).
    #[error("{partner} answered {status} to {method} {path}: {detail}")]
    Status {
        partner: &'static str,
        method: Method,
        path: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{partner} {method} {path} failed after {attempts} attempts; last: {last}")]
    Exhausted {
        partner: &'static str,
        method: Method,
        path: String,
        attempts: u32,
        last: String,
    },
    #[error("{partner} {method} {path} failed: {reason}")]
    Transport {
        partner: &'static str,
        method: Method,
        path: String,
        reason: String,
        /// False only when the request certainly never reached the partner (no connection).
        maybe_processed: bool,
    },
    #[error("{partner} sent an unreadable answer to {method} {path}: {reason}")]
    Decode {
        partner: &'static str,
        method: Method,
        path: String,
        reason: String,
    },
}

impl HttpError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Which failures a request may be sent again after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Reads and idempotent requests: 429, 502, 503, 504, timeouts and connection failures.
    Safe,
    /// Requests that must not run twice (a single-use refresh token, creating a link): only
    /// answers that say the request was not processed (429, 503) and connections that never
    /// opened. A timeout or a 502/504 leaves the outcome unknown, so it is returned, not retried.
    OnlyUnprocessed,
    /// Requests whose effect a partner may record before failing (creating a RABOT customer
    /// link): RABOT documents no status that promises "not processed", and a 503 or a dropped
    /// connection can come after the link was stored. Only a 429 (turned away by the rate
    /// limit before any work) and a connection that never opened are retried; everything
    /// else is returned at once for the caller to report as an unknown outcome.
    OnlyUnsent,
}

impl Replay {
    fn retries_status(self, status: StatusCode) -> bool {
        match self {
            Replay::Safe => retry::is_retryable_status(status),
            Replay::OnlyUnprocessed => matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ),
            Replay::OnlyUnsent => status == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn retries_error(self, error: &reqwest::Error) -> bool {
        match self {
            Replay::Safe => retry::is_retryable_error(error),
            Replay::OnlyUnprocessed | Replay::OnlyUnsent => error.is_connect(),
        }
    }
}

/// Rate settings for one partner.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// One credential's rate limit as the replicas divide it: `key` names the credential (its
/// partner and a digest of its client id, never the id itself) so that every replica using it
/// counts itself under the same name.
#[derive(Clone)]
pub struct RateBudget {
    pub key: String,
    pub limiter: Arc<AdaptiveLimiter>,
}

/// What a client has sent since it was built: requests (retries and token requests included)
/// and how many of their answers were 429. A run reports its own share with [`Self::since`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTally {
    pub sent: u64,
    pub throttled: u64,
}

impl RequestTally {
    /// What was sent after `before` was taken.
    pub fn since(self, before: RequestTally) -> RequestTally {
        RequestTally {
            sent: self.sent.saturating_sub(before.sent),
            throttled: self.throttled.saturating_sub(before.throttled),
        }
    }
}

/// One partner's HTTP client: shares connections, the rate limit and the counters.
#[derive(Clone)]
pub struct PartnerHttp {
    partner: &'static str,
    client: reqwest::Client,
    /// One per client, so every job and token request through it shares what it learns.
    limiter: Arc<AdaptiveLimiter>,
    /// The name replicas share `limiter`'s configured rate under (see [`RateBudget`]).
    budget_key: String,
    policy: RetryPolicy,
    /// Requests sent, retries and token requests included (`requests` in `sync.runs`).
    sent: Arc<AtomicU64>,
    /// Answers that were 429 (`throttled` in `sync.runs`).
    throttled: Arc<AtomicU64>,
}

impl std::fmt::Debug for PartnerHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerHttp")
            .field("partner", &self.partner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl PartnerHttp {
    pub fn new(
        partner: &'static str,
        settings: &HttpSettings,
        rate: RateLimit,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("partner-sync/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the bearer token to another host; partners' APIs do not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            partner,
            client,
            limiter: Arc::new(AdaptiveLimiter::new(
                partner,
                rate.requests_per_second,
                rate.burst,
            )),
            budget_key: partner.to_owned(),
            policy: RetryPolicy::from_settings(settings),
            sent: Arc::default(),
            throttled: Arc::default(),
        })
    }

    /// The same client, its rate budget named after the credential `client_id`: replicas
    /// with the same client id divide the configured rate between them.
    pub fn for_credential(mut self, client_id: &str) -> Self {
        let digest = sha2::Sha256::digest(client_id.as_bytes());
        self.budget_key = format!("{}:{}", self.partner, hex::encode(&digest[..8]));
        self
    }

    /// What this client's replicas divide: see [`RateBudget`].
    pub fn rate_budget(&self) -> RateBudget {
        RateBudget {
            key: self.budget_key.clone(),
            limiter: self.limiter.clone(),
        }
    }

    pub fn partner(&self) -> &'static str {
        self.partner
    }

    pub fn tally(&self) -> RequestTally {
        RequestTally {
            sent: self.sent.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }

    /// The rate this client sends at now (the configured one unless the partner answered 429).
    pub fn effective_rate(&self) -> f64 {
        self.limiter.effective_rate()
    }

    /// Sends the request built by `build` (called once per attempt), retrying 429, 502, 503,
    /// 504 and connection failures. Returns the first 2xx response; any other status fails with
    /// the body (the partner's error envelope) quoted in the error.
    pub async fn send(
        &self,
        method: Method,
        url: &url::Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        self.send_success(Replay::Safe, method, url, build).await
    }

    /// Like [`PartnerHttp::send`], with only the retries that `replay` allows.
    pub async fn send_success(
        &self,
        replay: Replay,
        method: Method,
        url: &url::Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let response = self.send_with(replay, method.clone(), url, build).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(HttpError::Status {
            partner: self.partner,
            method,
            path: url.path().to_owned(),
            status: response.status(),
            detail: error_body(response).await,
        })
    }

    /// Like [`PartnerHttp::send`], but returns whatever final answer the partner gave, any
    /// status, for callers that read error bodies themselves (an OAuth library). Only the
    /// retries that `replay` allows are made.
    pub async fn send_with(
        &self,
        replay: Replay,
        method: Method,
        url: &url::Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        self.send_unless_stopped(replay, None, method, url, build)
            .await
    }

    /// [`PartnerHttp::send_with`], except that once `stop` is cancelled no attempt starts: a
    /// request still waiting for the rate limit, or for its retry after an answer that was not
    /// processed, fails as never sent (`maybe_processed: false`). An attempt already sent is
    /// always awaited.
    pub async fn send_unless_stopped(
        &self,
        replay: Replay,
        stop: Option<&CancellationToken>,
        method: Method,
        url: &url::Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let path = url.path().to_owned();
        let stopped = move || async move {
            match stop {
                Some(stop) => stop.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let not_sent = |method: Method, path: String| HttpError::Transport {
            partner: self.partner,
            method,
            path,
            reason: "not sent: the process is stopping".to_owned(),
            maybe_processed: false,
        };
        let span =
            tracing::info_span!("http_request", partner = self.partner, %method, path = %path);
        async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let waiting = std::time::Instant::now();
                let ticket = tokio::select! {
                    biased;
                    _ = stopped() => return Err(not_sent(method, path)),
                    ticket = self.limiter.acquire() => ticket,
                };
                crate::metrics::rate_limit_waited(self.partner, waiting.elapsed());
                self.sent.fetch_add(1, Ordering::Relaxed);

                let request = build(self.client.request(method.clone(), url.clone()));
                let sent = request.send().await;
                crate::metrics::http_request(self.partner, sent.as_ref().ok().map(Response::status));
                // Only answers tell the limiter anything: a 429 lowers the rate, any other
                // answer lets it climb; no answer at all says nothing about the partner's limit.
                let throttled =
                    matches!(&sent, Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS);
                match &sent {
                    _ if throttled => {
                        self.throttled.fetch_add(1, Ordering::Relaxed);
                        self.limiter.refused(ticket)
                    }
                    Ok(_) => self.limiter.accepted(ticket),
                    Err(_) => {}
                }
                let (retry_reason, retry_after) = match sent {
                    Ok(response) if replay.retries_status(response.status()) => {
                        let status = response.status();
                        let after = retry::retry_after(response.headers());
                        let body = error_body(response).await;
                        (format!("{status}: {body}"), after)
                    }
                    Ok(response) => {
                        tracing::debug!(attempt, status = response.status().as_u16(), "answered");
                        return Ok(response);
                    }
                    Err(error) if replay.retries_error(&error) => {
                        (describe_transport_error(&error), None)
                    }
                    Err(error) => {
                        return Err(HttpError::Transport {
                            partner: self.partner,
                            method,
                            path,
                            reason: describe_transport_error(&error),
                            maybe_processed: !error.is_connect(),
                        });
                    }
                };

                let delay = match self.policy.delay(attempt, retry_after) {
                    Ok(delay) => delay,
                    Err(give_up) => {
                        return Err(HttpError::Exhausted {
                            partner: self.partner,
                            method,
                            path,
                            attempts: attempt,
                            last: format!("{retry_reason} ({give_up})"),
                        });
                    }
                };
                // A 429 is the partner pacing us: expected, answered by the limiter, counted
                // in the run (`throttled`) and the metrics, so it is no warning. Anything else
                // retried is.
                if throttled {
                    tracing::info!(attempt, delay_ms = delay.as_millis() as u64, reason = %retry_reason, "throttled; retrying");
                } else {
                    tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, reason = %retry_reason, "retrying");
                }
                tokio::select! {
                    biased;
                    _ = stopped() => return Err(not_sent(method, path)),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Reads a JSON body, naming the request in the error if it does not parse.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &Method,
        url: &url::Url,
        response: Response,
    ) -> Result<T, HttpError> {
        let decode = |reason: String| HttpError::Decode {
            partner: self.partner,
            method: method.clone(),
            path: url.path().to_owned(),
            reason,
        };
        let bytes = response
            .bytes()
            .await
            .map_err(|e| decode(describe_transport_error(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| decode(e.to_string()))
    }
}

/// The start of an error body, on one line. Error bodies are the partner's envelope or an OAuth
/// error object; successful bodies, which may hold tokens, never come through here.
pub async fn error_body(response: Response) -> String {
    match response.text().await {
        Ok(text) => one_line(&text),
        Err(e) => format!("(body unreadable: {})", describe_transport_error(&e)),
    }
}

/// An error body on one line, cut to a readable length.
pub fn one_line(text: &str) -> String {
    if text.trim().is_empty() {
        return "(empty body)".to_owned();
    }
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(ERROR_BODY_LIMIT) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// reqwest's Display repeats the URL; the path is already in our error, so the cause chain is
/// what is worth showing.
fn describe_transport_error(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
