//! Rabobank's Consent Details Service: which accounts a consent covers and their status, read
//! with one of the consent's access tokens.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{Rabobank, Revocation, alive};
use crate::gate::bump;
use crate::oauth::bearer_token;
use crate::{Shared, lock};

/// The resource APIs' word for a consent the user revoked (or that expired).
const CONSENT_INVALID: &str = "CONSENT_INVALID";
/// Accounts listed in the consent details are valid until revoked; the docs show this date.
const VALID_UNTIL: &str = "9999-12-31";

/// An error from the Consent Details Service. The docs give no shape; this is the API gateway
/// envelope Rabobank's resource APIs answer with.
pub(super) struct ApiError {
    status: StatusCode,
    more_information: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, more_information: impl Into<String>) -> Self {
        Self {
            status,
            more_information: more_information.into(),
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "The access token is missing, invalid, expired or revoked.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "httpCode": self.status.as_u16().to_string(),
            "httpMessage": self.status.canonical_reason().unwrap_or("Error"),
            "moreInformation": self.more_information,
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

pub(super) async fn consent_details(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    consent_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let bank = &shared.rabobank;
    bank.count(|stats| stats.consent_requests += 1);
    let Some(token) = bearer_token(&headers) else {
        bump(&shared.counters.unauthorized);
        return Err(ApiError::unauthorized());
    };
    let Ok(Path(consent_id)) = consent_id else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The consent id in the path is not valid.",
        ));
    };
    match bank.consent_details(token, &consent_id) {
        Ok(details) => Ok(Json(details).into_response()),
        Err(error) => {
            if error.status == StatusCode::UNAUTHORIZED {
                bump(&shared.counters.unauthorized);
            }
            Err(error)
        }
    }
}

impl Rabobank {
    /// The Consent Details answer for `consent_id`, read with `access_token`.
    fn consent_details(&self, access_token: &str, consent_id: &str) -> Result<Value, ApiError> {
        let now = Instant::now();
        let ledger = lock(&self.ledger);
        let token = ledger
            .access_tokens
            .get(access_token)
            .filter(|token| alive(token.expires_at, now))
            .ok_or_else(ApiError::unauthorized)?;
        let grant = ledger
            .grants
            .get(&token.consent_id)
            .ok_or_else(ApiError::unauthorized)?;
        match grant.revocation {
            Some(Revocation::ByUser) => {
                return Err(ApiError::new(StatusCode::FORBIDDEN, CONSENT_INVALID));
            }
            Some(Revocation::Reuse) => return Err(ApiError::unauthorized()),
            None => {}
        }
        if token.consent_id != consent_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Not authorized for this consent.",
            ));
        }
        let mut access: Map<String, Value> = Map::new();
        for (scope, account) in &grant.accounts {
            let listed = access
                .entry(scope.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(listed) = listed {
                listed.push(json!({
                    "iban": account.iban,
                    "currency": "EUR",
                    "status": account.status,
                    "validUntil": VALID_UNTIL,
                }));
            }
        }
        Ok(json!({ "consentId": consent_id, "access": access }))
    }
}
