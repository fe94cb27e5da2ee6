//! Rabobank's token endpoint: HTTP Basic client authentication, single-use authorization
//! codes, rotating single-use refresh tokens with reuse detection, a bounded number of refreshes
//! per consent, and the answer in the bank's shape or plain RFC 6749.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::{
    BASIC_CHALLENGE, Issued, IssuedRefreshToken, IssuedToken, Ledger, Rabobank, Revocation, alive,
    random_secret,
};
use crate::gate::bump;
use crate::oauth::{OAuthError, is_form, unique_fields};
use crate::{Shared, lock};

/// What the docs' example `metadata` puts in front of the consent id.
const METADATA_PREFIX: &str = "a:consentId ";

/// The bank's own token-endpoint errors; the shape is the RFC 6749 §5.2 one the docs show.
impl OAuthError {
    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed: send Authorization: Basic base64(client_id:client_secret).",
        )
        .with_challenge(BASIC_CHALLENGE)
    }

    /// The docs answer a bad authorization code with 400 ...
    fn invalid_code(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// ... but a bad refresh token with 401.
    fn invalid_refresh(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_grant", description)
    }
}

pub(super) async fn issue_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bank = &shared.rabobank;
    let form = is_form(&headers).then(|| unique_fields(&body));
    let grant_type = form
        .as_ref()
        .and_then(|form| form.as_ref().ok())
        .and_then(|form| form.get("grant_type"))
        .map(String::as_str);
    if grant_type == Some("refresh_token") {
        bank.count(|stats| stats.refresh_requests += 1);
    }
    let answer = bank.token_answer(&headers, form);
    // Processed (tokens issued, a refresh token spent) before the answer is held back: a
    // client that gives up or dies meanwhile has lost the rotation.
    let delay = bank.answer_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Ok(body) => {
            bump(&shared.counters.tokens_issued);
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(body),
            )
                .into_response()
        }
        Err(error) => {
            match error.error {
                "invalid_grant" => bank.count(|stats| stats.invalid_grant_answers += 1),
                "invalid_client" => bank.count(|stats| stats.invalid_client_answers += 1),
                _ => {}
            }
            error.into_response()
        }
    }
}

/// `client_id:client_secret` from a Basic Authorization header. The docs encode the pair as is
/// (no RFC 6749 §2.3.1 form-encoding first), and so does this comparison.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

impl Rabobank {
    /// The token endpoint's answer: the JSON body, or the error to send.
    fn token_answer(
        &self,
        headers: &HeaderMap,
        form: Option<Result<HashMap<String, String>, String>>,
    ) -> Result<Value, OAuthError> {
        match basic_credentials(headers) {
            Some((id, secret)) if id == self.client_id && secret == self.client_secret => {}
            _ => return Err(OAuthError::invalid_client()),
        }
        let form = form
            .ok_or_else(|| {
                OAuthError::invalid_request("Expected an application/x-www-form-urlencoded body.")
            })?
            .map_err(|name| {
                OAuthError::invalid_request(format!("Parameter {name} was sent more than once."))
            })?;
        let field = |name: &str| form.get(name).map(String::as_str);
        match field("grant_type") {
            Some("authorization_code") => {
                let code = field("code")
                    .ok_or_else(|| OAuthError::invalid_request("The code parameter is missing."))?;
                let (issued, consent_id) = self.exchange_code(code, field("redirect_uri"))?;
                self.count(|stats| stats.code_exchanges += 1);
                Ok(self.token_body(issued, Some(consent_id)))
            }
            Some("refresh_token") => {
                let refresh_token = field("refresh_token").ok_or_else(|| {
                    OAuthError::invalid_request("The refresh_token parameter is missing.")
                })?;
                let issued = self.refresh(refresh_token)?;
                self.count(|stats| stats.refreshes += 1);
                Ok(self.token_body(issued, None))
            }
            None => Err(OAuthError::invalid_request(
                "The grant_type parameter is missing.",
            )),
            Some(_) => Err(OAuthError::invalid_request(
                "grant_type must be authorization_code or refresh_token.",
            )),
        }
    }

    /// Redeems a code for the grant's first tokens; returns them and the consent id.
    fn exchange_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<(Issued, String), OAuthError> {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        let Some(issued) = ledger.codes.get(code) else {
            return Err(OAuthError::invalid_code(
                "The authorization code is unknown or expired.",
            ));
        };
        // Expiry first: an expired code may or may not have been pruned yet, and the answer
        // must not depend on which.
        if !alive(issued.expires_at, now) {
            return Err(OAuthError::invalid_code("The authorization code expired."));
        }
        let consent_id = issued.consent_id.clone();
        if issued.spent {
            // RFC 6749 §4.1.2: a code used twice may have been stolen, so everything issued
            // from it is voided.
            ledger.revoke(&consent_id, Revocation::Reuse);
            return Err(OAuthError::invalid_code(
                "The authorization code was already used; its tokens are revoked.",
            ));
        }
        if issued.client_id != self.client_id {
            return Err(OAuthError::invalid_code(
                "The authorization code was issued to another client.",
            ));
        }
        if redirect_uri.is_some_and(|given| given != issued.redirect_uri) {
            return Err(OAuthError::invalid_code(
                "redirect_uri does not match the one used at the authorization endpoint.",
            ));
        }
        if ledger
            .grants
            .get(&consent_id)
            .is_none_or(|grant| grant.revocation.is_some())
        {
            return Err(OAuthError::invalid_code("The consent was revoked."));
        }
        if let Some(issued) = ledger.codes.get_mut(code) {
            issued.spent = true;
        }
        let tokens = self.issue_tokens(&mut ledger, &consent_id, now);
        Ok((tokens, consent_id))
    }

    /// Rotates a refresh token: the presented one is spent, a new pair is issued.
    fn refresh(&self, refresh_token: &str) -> Result<Issued, OAuthError> {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        let Some(presented) = ledger.refresh_tokens.get(refresh_token) else {
            return Err(OAuthError::invalid_refresh(
                "The refresh token is unknown or expired.",
            ));
        };
        // Expiry first, as for codes: a spent token counts as reuse only while it would still
        // have been valid.
        if !alive(presented.expires_at, now) {
            return Err(OAuthError::invalid_refresh("The refresh token expired."));
        }
        let consent_id = presented.consent_id.clone();
        if presented.spent {
            // Either the client lost a rotation or someone else holds a copy; the bank cannot
            // tell which, so the whole grant goes.
            ledger.revoke(&consent_id, Revocation::Reuse);
            drop(ledger);
            self.count(|stats| stats.reuse_detections += 1);
            return Err(OAuthError::invalid_refresh(
                "The refresh token was already used; the consent's tokens are revoked.",
            ));
        }
        let Some(grant) = ledger.grants.get(&consent_id) else {
            return Err(OAuthError::invalid_refresh("The consent does not exist."));
        };
        if grant.revocation.is_some() {
            return Err(OAuthError::invalid_refresh(
                "The consent was revoked; ask the user to authorize again.",
            ));
        }
        if grant.refresh_count >= self.refresh_limit {
            return Err(OAuthError::invalid_refresh(format!(
                "The consent reached its limit of {} refreshes; ask the user to authorize again.",
                self.refresh_limit
            )));
        }
        if let Some(presented) = ledger.refresh_tokens.get_mut(refresh_token) {
            presented.spent = true;
        }
        if let Some(grant) = ledger.grants.get_mut(&consent_id) {
            grant.refresh_count += 1;
        }
        Ok(self.issue_tokens(&mut ledger, &consent_id, now))
    }

    fn issue_tokens(&self, ledger: &mut Ledger, consent_id: &str, now: Instant) -> Issued {
        ledger.prune(now);
        // The docs warn that token lengths are not fixed; varying them catches a client that
        // sized a column to the first token it saw.
        let access_token = random_secret(64, 128);
        let refresh_token = random_secret(64, 128);
        ledger.access_tokens.insert(
            access_token.clone(),
            IssuedToken {
                consent_id: consent_id.to_owned(),
                expires_at: now.checked_add(self.access_lifetime),
            },
        );
        ledger.refresh_tokens.insert(
            refresh_token.clone(),
            IssuedRefreshToken {
                consent_id: consent_id.to_owned(),
                expires_at: now.checked_add(self.refresh_lifetime),
                spent: false,
            },
        );
        ledger.secrets.push(access_token.clone());
        ledger.secrets.push(refresh_token.clone());
        let (consented_on, scope) = ledger
            .grants
            .get(consent_id)
            .map(|grant| (grant.consented_on, grant.scopes.join(" ")))
            .unwrap_or_default();
        Issued {
            access_token,
            refresh_token,
            consented_on,
            scope,
        }
    }

    /// The success body: the docs' shape, or plain RFC 6749 in standard mode. `consent_id` is
    /// Some for a code exchange, the only answer that carries `metadata`.
    fn token_body(&self, issued: Issued, consent_id: Option<String>) -> Value {
        let mut body = Map::new();
        body.insert("token_type".to_owned(), json!("bearer"));
        body.insert("access_token".to_owned(), json!(issued.access_token));
        body.insert(
            "expires_in".to_owned(),
            json!(self.access_lifetime.as_secs()),
        );
        if !self.standard_oauth {
            body.insert("consented_on".to_owned(), json!(issued.consented_on));
            if let Some(consent_id) = consent_id {
                body.insert(
                    "metadata".to_owned(),
                    json!(format!("{METADATA_PREFIX}{consent_id}")),
                );
            }
        }
        body.insert("scope".to_owned(), json!(issued.scope));
        body.insert("refresh_token".to_owned(), json!(issued.refresh_token));
        if !self.standard_oauth {
            body.insert(
                "refresh_token_expires_in".to_owned(),
                json!(self.refresh_lifetime.as_secs()),
            );
        }
        Value::Object(body)
    }
}
