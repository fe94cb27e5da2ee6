//! EnergyZero client: a partner token by client credentials (the JWT comes back in the
//! `Authorization` response header), a user token per user by impersonation, and the GraphQL
//! `me` query whose contracts connection is followed page by page.
//!
//! Every request (token, impersonation, GraphQL) goes through one [`PartnerHttp`], so they share
//! one rate limit. Both kinds of token live in the shared [`TokenCache`]: the 5-minute partner
//! token is renewed after about 4 minutes and the 1-hour user tokens after 55, never per request.

use super::wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::http::authorized::{ApiError, AuthorizedHttp};
use crate::http::client_credentials::{ClientCredentials, UNSTATED_LIFETIME, stated_lifetime};
use crate::http::token_cache::{AuthError, IssuedToken, TokenCache, TokenSource};
use crate::http::{HttpError, PartnerHttp, RateBudget, RateLimit};
use crate::settings::{EnergyzeroSettings, HttpSettings};
use wire::{Contract, User};

pub const PARTNER: &str = "energyzero";

/// Contracts asked for per page; the server may cap it (the sandbox caps at 10), so the pages
/// are followed by `hasNextPage`, never by counting.
pub const PAGE_SIZE: u32 = 50;

/// Every field of the schema's `User` and `Contract`, addresses included: the payload columns
/// keep whatever is asked for here.
const ME_QUERY: &str = "query Me($first: Int, $after: String) {
  me {
    id customerNumber email firstName middleName surname phoneNumber birthDate vendor
    contracts(first: $first, after: $after) {
      edges {
        cursor
        node {
          id acceptedAt consumerType company energyContractType phase startDate
          originalStartDate endDate deliveryStoppedDate duration paymentMethod hasGas
          hasElectricity hasProduction totalYearlyUsage
          deliveryAddress { street houseNumber houseNumberAddition zipCode city country }
          billingAddress { street houseNumber houseNumberAddition zipCode city country }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}";

#[derive(Debug, thiserror::Error)]
pub enum EnergyzeroError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("energyzero answered the me query with GraphQL errors: {0}")]
    GraphQl(String),
    #[error("energyzero answered the me query with an unexpected shape: {0}")]
    Protocol(String),
}

impl EnergyzeroError {
    /// The partner credentials or scope were rejected: every user would fail the same way, and
    /// only a person fixing the settings helps.
    pub fn is_partner_rejected(&self) -> bool {
        matches!(
            self,
            EnergyzeroError::Api(ApiError::Auth(
                AuthError::CredentialsRejected { .. } | AuthError::ScopeRejected { .. }
            ))
        )
    }
}

/// A user and all their contracts, read in one complete pass over the connection.
#[derive(Debug)]
pub struct UserPass {
    pub user: User,
    pub contracts: Vec<Contract>,
    /// GraphQL requests the contracts took.
    pub pages: usize,
}

pub struct EnergyzeroClient {
    http: PartnerHttp,
    /// Bearer calls with the partner token (impersonation).
    partner_api: AuthorizedHttp,
    scopes: Vec<String>,
    impersonate_url: url::Url,
    customer_api_url: url::Url,
    /// One token cache per impersonated user, kept for the client's (the daemon's) life so a
    /// user token is reused across runs until it is due for renewal.
    users: Mutex<HashMap<String, Arc<TokenCache>>>,
}

impl std::fmt::Debug for EnergyzeroClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyzeroClient")
            .field("impersonate_url", &self.impersonate_url.as_str())
            .field("customer_api_url", &self.customer_api_url.as_str())
            .finish_non_exhaustive()
    }
}

impl EnergyzeroClient {
    pub fn new(
        settings: &EnergyzeroSettings,
        http_settings: &HttpSettings,
    ) -> anyhow::Result<Self> {
        let http = PartnerHttp::new(
            PARTNER,
            http_settings,
            RateLimit {
                requests_per_second: settings.requests_per_second,
                burst: settings.burst,
            },
        )?
        .for_credential(&settings.client_id);
        let auth_base = url::Url::parse(&settings.auth_base_url)?;
        let scopes = vec![settings.scope.clone()];
        let partner_tokens = TokenCache::new(
            PARTNER,
            PartnerToken(ClientCredentials {
                http: http.clone(),
                token_url: with_path(&auth_base, &["oauth2", "token"]),
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                scopes: scopes.clone(),
                settings_prefix: "energyzero",
            }),
        );
        Ok(Self {
            partner_api: AuthorizedHttp::new(http.clone(), Arc::new(partner_tokens), &scopes),
            http,
            scopes,
            impersonate_url: with_path(&auth_base, &["v1", "auth", "impersonate"]),
            customer_api_url: url::Url::parse(&settings.customer_api_url)?,
            users: Mutex::default(),
        })
    }

    /// Requests sent so far (tokens, impersonations, GraphQL; retries included), and 429s.
    pub fn tally(&self) -> crate::http::RequestTally {
        self.http.tally()
    }

    /// The rate limit this client divides with replicas using the same credential.
    pub fn rate_budget(&self) -> RateBudget {
        self.http.rate_budget()
    }

    pub fn partner_tokens(&self) -> &Arc<TokenCache> {
        self.partner_api.tokens()
    }

    /// The user's token cache, created on first use.
    pub fn user_tokens(&self, user_id: &str) -> Arc<TokenCache> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| {
                let mut url = self.impersonate_url.clone();
                url.query_pairs_mut().append_pair("user_id", user_id);
                Arc::new(TokenCache::new(
                    PARTNER,
                    Impersonation {
                        partner_api: self.partner_api.clone(),
                        url,
                    },
                ))
            })
            .clone()
    }

    /// The user and every contract, following `endCursor` while `hasNextPage`. A server that
    /// ignores `after` would repeat a cursor: that fails the user instead of looping forever.
    pub async fn user_with_contracts(&self, user_id: &str) -> Result<UserPass, EnergyzeroError> {
        let api = AuthorizedHttp::new(self.http.clone(), self.user_tokens(user_id), &self.scopes);
        let mut after: Option<String> = None;
        let mut cursors = HashSet::new();
        let mut user = None;
        let mut contracts = Vec::new();
        let mut pages = 0;
        loop {
            let body = json!({
                "query": ME_QUERY,
                "operationName": "Me",
                "variables": {"first": PAGE_SIZE, "after": after},
            });
            let answer: Value = api.post_json(&self.customer_api_url, &body).await?;
            let page = wire::read_me(user_id, answer).map_err(|unreadable| match unreadable {
                wire::Unreadable::Errors(text) => EnergyzeroError::GraphQl(text),
                wire::Unreadable::Shape(text) => EnergyzeroError::Protocol(text),
            })?;
            pages += 1;
            // Every page repeats the user's fields; the first page's are kept.
            user.get_or_insert(page.user);
            contracts.extend(page.contracts);
            if !page.has_next_page {
                break;
            }
            match page.end_cursor {
                None => {
                    return Err(EnergyzeroError::Protocol(
                        "hasNextPage is true but endCursor is missing".to_owned(),
                    ));
                }
                Some(cursor) if !cursors.insert(cursor.clone()) => {
                    return Err(EnergyzeroError::Protocol(format!(
                        "endCursor {cursor:?} came twice: the server ignores `after`"
                    )));
                }
                Some(cursor) => after = Some(cursor),
            }
        }
        let user = user.ok_or_else(|| EnergyzeroError::Protocol("no page was read".to_owned()))?;
        Ok(UserPass {
            user,
            contracts,
            pages,
        })
    }
}

/// `base` with `segments` appended; each segment is percent-encoded, so none can change the path.
fn with_path(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut url = base.clone();
    // A validated http(s) URL always has path segments.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The partner token: the standard client-credentials request, but the JWT is read from the
/// `Authorization` response header (or a JSON body when one comes).
struct PartnerToken(ClientCredentials);

impl TokenSource for PartnerToken {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuedToken, AuthError>> {
        Box::pin(async move {
            let response = self.0.send_request().await?;
            read_issued_token(&self.0.http, &Method::POST, &self.0.token_url, response).await
        })
    }
}

/// A user token: `GET /v1/auth/impersonate?user_id=` with the partner token. A 401 renews the
/// partner token and retries once (inside [`AuthorizedHttp`]); rejected partner credentials come
/// back as they are, so the run can tell them from a refusal of this one user.
struct Impersonation {
    partner_api: AuthorizedHttp,
    url: url::Url,
}

impl TokenSource for Impersonation {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuedToken, AuthError>> {
        Box::pin(async move {
            let response = self
                .partner_api
                .send(Method::GET, &self.url, |r| r)
                .await
                .map_err(|error| match error {
                    ApiError::Auth(error) => error,
                    ApiError::Http(error) => AuthError::Http(error),
                    // A 403 here refuses this user (not ours to impersonate), not our scopes.
                    ApiError::Forbidden {
                        partner,
                        path,
                        detail,
                        ..
                    } => AuthError::Http(HttpError::Status {
                        partner,
                        method: Method::GET,
                        path,
                        status: StatusCode::FORBIDDEN,
                        detail,
                    }),
                })?;
            read_issued_token(self.partner_api.http(), &Method::GET, &self.url, response).await
        })
    }
}

/// The token from the `Authorization` header (with or without `Bearer `), else from the JSON
/// body's `access_token`. Lifetime from `expires_in`, else the JWT's `exp`, else 5 minutes
/// (the token cache keeps whichever within 1 s to 24 h).
/// Neither the body nor the header is ever quoted in an error: both hold the token.
async fn read_issued_token(
    http: &PartnerHttp,
    method: &Method,
    url: &url::Url,
    response: reqwest::Response,
) -> Result<IssuedToken, AuthError> {
    let decode = |reason: &str| {
        AuthError::Http(HttpError::Decode {
            partner: http.partner(),
            method: method.clone(),
            path: url.path().to_owned(),
            reason: reason.to_owned(),
        })
    };
    let from_header = response
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_value);
    let bytes = response
        .bytes()
        .await
        .map_err(|_| decode("the body could not be read"))?;
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let from_body = body
        .as_ref()
        .and_then(|b| b.get("access_token"))
        .and_then(Value::as_str)
        .and_then(bearer_value);
    let token = from_header
        .or(from_body)
        .ok_or_else(|| decode("no token in the Authorization header or an access_token field"))?;
    let lifetime = body
        .as_ref()
        .and_then(|b| b.get("expires_in"))
        .and_then(stated_lifetime)
        .or_else(|| jwt_lifetime(&token))
        .unwrap_or_else(|| {
            tracing::warn!(
                assumed_s = UNSTATED_LIFETIME.as_secs(),
                "token has neither expires_in nor a readable exp"
            );
            UNSTATED_LIFETIME
        });
    Ok(IssuedToken {
        secret: SecretString::from(token),
        lifetime,
    })
}

/// `Bearer <jwt>` or a bare `<jwt>`; None when empty.
fn bearer_value(value: &str) -> Option<String> {
    let value = value.trim();
    let token = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

/// `exp - now` from the JWT's payload (not verified: it only tells us when to renew), at least 0.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let remaining = exp - now;
    remaining
        .is_finite()
        .then(|| Duration::from_secs_f64(remaining.clamp(0.0, 10.0 * 365.0 * 86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let encode = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2ln",
            encode(&json!({"alg": "HS256", "typ": "JWT"})),
            encode(&claims)
        )
    }

    #[test]
    fn bearer_prefix_is_optional() {
        assert_eq!(bearer_value("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(bearer_value("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(bearer_value("abc").as_deref(), Some("abc"));
        assert_eq!(bearer_value("Bearer "), None);
        assert_eq!(bearer_value(""), None);
    }

    #[test]
    fn lifetime_comes_from_exp_and_is_never_negative() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let lifetime = jwt_lifetime(&jwt(json!({"sub": "p", "iat": now, "exp": now + 300})))
            .expect("a readable exp");
        assert!(lifetime > Duration::from_secs(298) && lifetime <= Duration::from_secs(300));
        assert_eq!(
            jwt_lifetime(&jwt(json!({"exp": now - 60}))),
            Some(Duration::ZERO)
        );
        assert_eq!(jwt_lifetime(&jwt(json!({"sub": "p"}))), None);
        assert_eq!(jwt_lifetime("not-a-jwt"), None);
        assert_eq!(jwt_lifetime("a.!!!.c"), None);
    }
}
