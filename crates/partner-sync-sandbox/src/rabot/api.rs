//! RABOT's Partner API answers: the OAuth client-credentials token endpoint, the customer list
//! and a customer's contracts (paged), and the documented error envelope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ContractPage, has_scope};
use crate::Shared;
use crate::gate::{Endpoint, bump};
use crate::oauth::{OAuthError, bearer_token, is_form, oauth_error_code, unique_fields};

const PARTNER_SCOPE: &str = "api:partner";
/// Each role includes the ones before it, and any of them may read contracts.
const CONTRACT_ROLES: [&str; 3] = [
    "role:finance-reporting",
    "role:customer-support",
    "role:application",
];

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

pub(super) fn rejection(endpoint: Endpoint, status: StatusCode, message: &str) -> Response {
    match endpoint {
        // The token endpoint belongs to an OAuth server, not to the partner API, so its errors
        // take the RFC 6749 shape rather than the API envelope.
        Endpoint::Token => {
            OAuthError::new(status, oauth_error_code(status), message).into_response()
        }
        Endpoint::Api | Endpoint::Other => {
            let code = match status {
                StatusCode::BAD_REQUEST => "validation-failed",
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "insufficient-scope",
                StatusCode::NOT_FOUND => "not-found",
                StatusCode::TOO_MANY_REQUESTS => "too-many-requests",
                StatusCode::SERVICE_UNAVAILABLE => "service-unavailable",
                status if status.is_server_error() => "internal-error",
                _ => "error",
            };
            ApiError::new(status, code, message).into_response()
        }
    }
}

/// An error from the partner API, in the documented envelope.
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// WWW-Authenticate challenge for 401 and 403, as RFC 6750 asks.
    challenge: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }

    fn unauthorized() -> Self {
        Self {
            challenge: Some(r#"Bearer error="invalid_token""#),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The access token is missing, invalid, expired or revoked.",
            )
        }
    }

    pub(super) fn insufficient_scope(message: impl Into<String>) -> Self {
        Self {
            challenge: Some(r#"Bearer error="insufficient_scope""#),
            ..Self::new(StatusCode::FORBIDDEN, "insufficient-scope", message)
        }
    }

    pub(super) fn validation_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation-failed", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "isSuccess": false,
            "message": self.message,
            "error": [{
                "severity": "Error",
                "code": self.code,
                "message": self.message,
                "details": null,
            }],
            "refUri": null,
            "data": null,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A list answer; `count` is the page's item count unless the list's size is given.
fn envelope_page(items: Vec<Value>, has_more_items: bool, total: Option<usize>) -> Response {
    let count = total.unwrap_or(items.len());
    Json(json!({
        "isSuccess": true,
        "message": null,
        "error": null,
        "refUri": null,
        "data": items,
        "count": count,
        "hasMoreItems": has_more_items,
    }))
    .into_response()
}

pub(super) async fn issue_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let rabot = &shared.rabot;
    if !is_form(&headers) {
        return Err(OAuthError::invalid_request(
            "Expected an application/x-www-form-urlencoded body.",
        ));
    }
    let form = unique_fields(&body).map_err(|name| {
        OAuthError::invalid_request(format!("Parameter {name} was sent more than once."))
    })?;
    let field = |name: &str| form.get(name).map(String::as_str);

    if field("client_id") != Some(rabot.client_id.as_str())
        || field("client_secret") != Some(rabot.client_secret.as_str())
    {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Unknown client or wrong client secret.",
        ));
    }
    match field("grant_type") {
        Some("client_credentials") => {}
        None => {
            return Err(OAuthError::invalid_request(
                "The grant_type parameter is missing.",
            ));
        }
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only the client_credentials grant is supported.",
            ));
        }
    }
    let scopes = rabot.scopes_for(field("scope")).map_err(|scope| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!("Scope {scope} is not granted to this client."),
        )
    })?;

    let token = rabot.tokens.issue(scopes.clone(), rabot.token_lifetime);
    bump(&shared.counters.tokens_issued);
    let body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": rabot.token_lifetime.as_secs(),
        "scope": scopes.join(" "),
    });
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Whether the token's scopes hold a role that may read every customer's contracts.
pub(super) fn has_contract_role(scopes: &[String]) -> bool {
    CONTRACT_ROLES.iter().any(|role| has_scope(scopes, role))
}

/// The scopes of the request's bearer token, which must include `api:partner`.
pub(super) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let Some(scopes) = bearer_token(headers).and_then(|token| shared.rabot.tokens.grant_of(token))
    else {
        bump(&shared.counters.unauthorized);
        return Err(ApiError::unauthorized());
    };
    if !has_scope(&scopes, PARTNER_SCOPE) {
        return Err(ApiError::insufficient_scope(
            "The api:partner scope is required.",
        ));
    }
    Ok(scopes)
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    offset: usize,
    limit: usize,
}

impl Page {
    fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let offset = match query.get("offset") {
            None => 0,
            Some(raw) => raw.parse().map_err(|_| {
                ApiError::validation_failed(format!(
                    "offset must be a non-negative integer, got {raw:?}."
                ))
            })?,
        };
        let limit = match query.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::validation_failed(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}, got {raw:?}."
                    ))
                })?,
        };
        Ok(Self { offset, limit })
    }

    /// The page's items and whether more follow it.
    pub(super) fn cut<T: Clone>(self, items: &[T]) -> (Vec<T>, bool) {
        let start = self.offset.min(items.len());
        let end = start.saturating_add(self.limit).min(items.len());
        (items[start..end].to_vec(), end < items.len())
    }
}

/// Query parameters and the page they ask for.
fn paged_query(query: Option<&str>) -> Result<(HashMap<String, String>, Page), ApiError> {
    let fields = unique_fields(query.unwrap_or_default().as_bytes()).map_err(|name| {
        ApiError::validation_failed(format!("Query parameter {name} was sent more than once."))
    })?;
    let page = Page::from_query(&fields)?;
    Ok((fields, page))
}

pub(super) async fn list_customers(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authenticate(&shared, &headers)?;
    let (fields, page) = paged_query(query.as_deref())?;
    let external_id = fields.get("filter.externalId").map(String::as_str);
    let (items, has_more_items, matching) = shared.rabot.customer_page(external_id, page);
    let total = shared.options.count_is_total.then_some(matching);
    Ok(envelope_page(items, has_more_items, total))
}

pub(super) async fn list_contracts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    customer_number: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let scopes = authenticate(&shared, &headers)?;
    let Ok(Path(customer_number)) = customer_number else {
        return Err(ApiError::validation_failed(
            "The customer number in the path is not valid.",
        ));
    };
    let (_, page) = paged_query(query.as_deref())?;
    match shared
        .rabot
        .contract_page(&customer_number, has_contract_role(&scopes), page)
    {
        ContractPage::Found(items, has_more_items) => {
            Ok(envelope_page(items, has_more_items, None))
        }
        ContractPage::UnknownCustomer => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("Customer {customer_number} was not found."),
        )),
        ContractPage::NotPermitted => Err(ApiError::insufficient_scope(
            "Contracts need the role:finance-reporting scope (or a broader role) or a linked customer.",
        )),
    }
}
