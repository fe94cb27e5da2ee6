//! What the partners' authorization servers and APIs share: the tokens a server issued, the
//! RFC 6749 error answer, and reading forms, queries and bearer tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use rand::distr::Alphanumeric;

use crate::lock;

/// Access tokens issued by one simulated authorization server, each with what it grants
/// (`G`: RABOT's scopes, EnergyZero's partner or user).
pub(crate) struct TokenStore<G = Vec<String>> {
    ledger: Mutex<TokenLedger<G>>,
}

struct TokenLedger<G> {
    /// Tokens that may still be valid, by value.
    live: HashMap<String, IssuedToken<G>>,
    /// Every token ever issued, so tests can search logs for any of them.
    history: Vec<String>,
}

struct IssuedToken<G> {
    /// None when the lifetime is too long to represent: such a token never expires.
    expires_at: Option<Instant>,
    grant: G,
}

// Hand-written because a derive would demand `G: Default`, which no grant needs.
impl<G> Default for TokenStore<G> {
    fn default() -> Self {
        Self {
            ledger: Mutex::new(TokenLedger {
                live: HashMap::new(),
                history: Vec::new(),
            }),
        }
    }
}

impl<G: Clone> TokenStore<G> {
    /// A fresh opaque token of 48 alphanumerics.
    pub(crate) fn issue(&self, grant: G, lifetime: Duration) -> String {
        let token = random_token(48);
        self.record(token.clone(), grant, lifetime);
        token
    }

    /// Remembers a token minted elsewhere (a JWT, say) as valid for `lifetime` from now.
    pub(crate) fn record(&self, token: String, grant: G, lifetime: Duration) {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        // Pruning here keeps a long demo's memory flat without a background task.
        ledger.live.retain(|_, issued| issued.is_valid_at(now));
        ledger.history.push(token.clone());
        ledger.live.insert(
            token,
            IssuedToken {
                expires_at: now.checked_add(lifetime),
                grant,
            },
        );
    }

    /// What a known, unexpired and unrevoked token grants.
    pub(crate) fn grant_of(&self, token: &str) -> Option<G> {
        let ledger = lock(&self.ledger);
        let issued = ledger.live.get(token)?;
        issued
            .is_valid_at(Instant::now())
            .then(|| issued.grant.clone())
    }

    pub(crate) fn revoke_all(&self) {
        lock(&self.ledger).live.clear();
    }

    pub(crate) fn history(&self) -> Vec<String> {
        lock(&self.ledger).history.clone()
    }
}

impl<G> IssuedToken<G> {
    fn is_valid_at(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// A random alphanumeric string: tokens, states.
pub(crate) fn random_token(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// An error from a token endpoint, in the RFC 6749 §5.2 shape every partner's OAuth server uses.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    pub(crate) error: &'static str,
    description: String,
    /// WWW-Authenticate challenge, for the answers RFC 6749 and RFC 6750 give one.
    challenge: Option<&'static str>,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn with_challenge(self, challenge: &'static str) -> Self {
        Self {
            challenge: Some(challenge),
            ..self
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "error": self.error, "error_description": self.description });
        let mut response = (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(body),
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The RFC 6749 error code of an answer the gate or the fallback gives on an OAuth endpoint:
/// a client's OAuth library only understands those codes there, whatever went wrong.
pub(crate) fn oauth_error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            "temporarily_unavailable"
        }
        StatusCode::UNAUTHORIZED => "invalid_client",
        status if status.is_server_error() => "server_error",
        _ => "invalid_request",
    }
}

/// Form or query fields by name, for every partner. RFC 6749 forbids repeating a parameter, and
/// a repeated `offset` or `redirect_uri` is a client bug worth surfacing, so a repeat is
/// `Err(name)`.
pub(crate) fn unique_fields(input: &[u8]) -> Result<HashMap<String, String>, String> {
    collect_unique_fields(
        url::form_urlencoded::parse(input)
            .map(|(name, value)| (name.into_owned(), value.into_owned())),
    )
}

/// `unique_fields` for fields that arrive some other way (multipart parts, say).
pub(crate) fn collect_unique_fields(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, String> {
    let mut fields = HashMap::new();
    for (name, value) in pairs {
        if fields.contains_key(&name) {
            return Err(name);
        }
        fields.insert(name, value);
    }
    Ok(fields)
}

pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    has_media_type(headers, "application/x-www-form-urlencoded")
}

/// Whether the Content-Type names `media_type`, whatever its parameters (charset, boundary).
pub(crate) fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(media_type))
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}
