//! EnergyZero's identity provider: the partner token (client credentials from an urlencoded or
//! multipart form, the JWT in the `Authorization` response header) and impersonation, which
//! turns the partner token into a user's JWT.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest as _, Multipart, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use rand::RngCore as _;
use serde_json::{Value, json};

use super::{Energyzero, TOKEN_CHALLENGE, TokenHolder};
use crate::oauth::{
    OAuthError, bearer_token, collect_unique_fields, has_media_type, is_form, unique_fields,
};
use crate::{Shared, lock, unix_now};

/// The one scope set a partner is granted, space separated as EnergyZero's example request
/// sends it.
const GRANTED_SCOPE: &str = "openid offline";

/// The errors impersonation answers besides `invalid_request`.
impl OAuthError {
    fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
            .with_challenge(TOKEN_CHALLENGE)
    }

    fn insufficient_permissions(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
            description,
        )
    }
}

pub(super) async fn issue_partner_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Result<Response, OAuthError> {
    let energyzero = &shared.energyzero;
    let form = token_form(request).await?;
    let field = |name: &str| form.get(name).map(String::as_str);
    let required = |name: &str| {
        field(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("The {name} parameter is missing.")))
    };
    let grant_type = required("grant_type")?;
    let client_id = required("client_id")?;
    let client_secret = required("client_secret")?;

    if client_id != energyzero.client_id || client_secret != energyzero.client_secret {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Unknown client or wrong client secret.",
        ));
    }
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only the client_credentials grant is supported.",
        ));
    }
    if let Some(scope) = field("scope").filter(|scope| !is_granted_scope(scope)) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!("Scope {scope:?} is not granted to this client; ask for {GRANTED_SCOPE:?}."),
        ));
    }

    let lifetime = energyzero.partner_token_lifetime;
    let token = energyzero.issue(TokenHolder::Partner, client_id, lifetime);
    energyzero.count(|stats| stats.partner_tokens_issued += 1);
    let mut response = if energyzero.token_body {
        Json(token_body(&token, lifetime)).into_response()
    } else {
        StatusCode::OK.into_response()
    };
    add_token_headers(&mut response, &token);
    Ok(response)
}

/// The token request's fields, from an urlencoded or a multipart body (EnergyZero's example
/// curl sends `--form`, i.e. multipart).
async fn token_form(request: Request) -> Result<HashMap<String, String>, OAuthError> {
    let repeated = |name: String| {
        OAuthError::invalid_request(format!("Parameter {name} was sent more than once."))
    };
    if is_form(request.headers()) {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|_| OAuthError::invalid_request("The request body could not be read."))?;
        return unique_fields(&body).map_err(repeated);
    }
    if !has_media_type(request.headers(), "multipart/form-data") {
        return Err(OAuthError::invalid_request(
            "Expected a multipart/form-data or application/x-www-form-urlencoded body.",
        ));
    }
    let unreadable = |error: &dyn std::fmt::Display| {
        OAuthError::invalid_request(format!("The multipart body is malformed: {error}"))
    };
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|error| unreadable(&error))?;
    let mut fields = Vec::new();
    while let Some(part) = multipart
        .next_field()
        .await
        .map_err(|error| unreadable(&error))?
    {
        let Some(name) = part.name().map(str::to_owned) else {
            return Err(OAuthError::invalid_request("A multipart part has no name."));
        };
        let value = part.text().await.map_err(|error| unreadable(&error))?;
        fields.push((name, value));
    }
    collect_unique_fields(fields).map_err(repeated)
}

/// Whether `requested` names exactly the granted scopes, in any order.
fn is_granted_scope(requested: &str) -> bool {
    let granted: BTreeSet<&str> = GRANTED_SCOPE.split_whitespace().collect();
    requested.split_whitespace().collect::<BTreeSet<_>>() == granted
}

/// The JSON body the docs show for a user token, also sent for a partner token when asked.
/// `expires_in` is one second short of the lifetime, as the docs' 3599 for one hour is.
fn token_body(token: &str, lifetime: Duration) -> Value {
    json!({
        "access_token": token,
        "expires_in": lifetime.as_secs().saturating_sub(1),
        "scope": GRANTED_SCOPE,
        "token_type": "bearer",
    })
}

fn add_token_headers(response: &mut Response, token: &str) {
    let headers = response.headers_mut();
    // A JWT is base64url and dots, always a valid header value, so the `Err` arm never occurs.
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(super) async fn impersonate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, OAuthError> {
    let energyzero = &shared.energyzero;
    let answer = energyzero.impersonate(&headers, query.as_deref());
    match answer {
        Ok(_) => energyzero.count(|stats| stats.impersonations += 1),
        Err(_) => energyzero.count(|stats| stats.impersonations_refused += 1),
    }
    answer
}

/// The token in `Authorization`, with or without the `Bearer ` scheme: the docs' curl sends
/// the partner token bare.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers).or_else(|| {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
        (!value.is_empty() && !value.contains(' ')).then_some(value)
    })
}

impl Energyzero {
    /// A fresh JWT for `holder`, remembered as valid for `lifetime`.
    fn issue(&self, holder: TokenHolder, subject: &str, lifetime: Duration) -> String {
        let token = jwt(holder.kind(), subject, lifetime);
        self.tokens.record(token.clone(), holder, lifetime);
        token
    }

    fn impersonate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Response, OAuthError> {
        let holder = presented_token(headers).and_then(|token| self.tokens.grant_of(token));
        if holder != Some(TokenHolder::Partner) {
            return Err(OAuthError::invalid_token(
                "The partner token is missing, unknown or expired.",
            ));
        }
        let fields = unique_fields(query.unwrap_or_default().as_bytes()).map_err(|name| {
            OAuthError::invalid_request(format!("Query parameter {name} was sent more than once."))
        })?;
        let Some(user_id) = fields.get("user_id").filter(|user_id| !user_id.is_empty()) else {
            return Err(OAuthError::invalid_request("user_id is required"));
        };
        {
            let directory = lock(&self.directory);
            if directory.user(user_id).is_none() {
                return Err(OAuthError::insufficient_permissions(format!(
                    "User {user_id} does not belong to this partner."
                )));
            }
            if directory.forbidden.contains(user_id) {
                return Err(OAuthError::insufficient_permissions(format!(
                    "Impersonating user {user_id} is not permitted."
                )));
            }
        }
        let lifetime = self.user_token_lifetime;
        let token = self.issue(TokenHolder::User(user_id.clone()), user_id, lifetime);
        let mut response = Json(token_body(&token, lifetime)).into_response();
        add_token_headers(&mut response, &token);
        Ok(response)
    }
}

/// An unsigned-in-spirit JWT: a real header and payload, and a random signature segment, since
/// the client must not (and cannot) verify EnergyZero's signatures.
fn jwt(kind: &str, subject: &str, lifetime: Duration) -> String {
    let issued_at = unix_now();
    let header = json!({ "alg": "RS256", "typ": "JWT" });
    let payload = json!({
        "iss": "energyzero-sandbox",
        "sub": subject,
        "iat": issued_at,
        "exp": issued_at.saturating_add(lifetime.as_secs()),
        "typ": kind,
        "scope": GRANTED_SCOPE,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let mut signature = [0u8; 32];
    rand::rng().fill_bytes(&mut signature);
    format!(
        "{}.{}.{}",
        BASE64URL.encode(header.to_string()),
        BASE64URL.encode(payload.to_string()),
        BASE64URL.encode(signature)
    )
}
