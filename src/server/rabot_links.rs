//! RABOT customer links over HTTP: `POST /links/rabot` (admin, bearer `server.admin_token`)
//! starts one for the partner's own platform; `GET /links/rabot/{secret}/success|failure` is
//! where RABOT sends the customer's browser back. Each redirect has its own secret; an unknown
//! (or the other redirect's), expired or used secret changes nothing. A success redirect's
//! customer number is confirmed with RABOT first: a number RABOT does not confirm is 400 and the
//! link stays pending; RABOT unreachable is 503 (502 when it answered with an error) and the
//! customer may reload the page.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ServerState, page};
use crate::events::Control;
use crate::partners::rabot::link_store::LinkRow;
use crate::partners::rabot::links::{CompleteError, LinkAnswer, LinkError, LinkSpec};
use crate::store::audit::Actor;
use crate::telemetry::with_causes;

/// The caller is checked before the body is read, so a client without the token cannot make
/// the server read anything.
pub async fn create(State(state): State<ServerState>, request: Request) -> Response {
    let expected = state.admin_token.expose_secret();
    let Some(links) = state
        .partners
        .borrow()
        .rabot
        .clone()
        .filter(|_| !expected.is_empty())
    else {
        return problem(
            StatusCode::NOT_FOUND,
            "customer linking is not enabled here (rabot.enabled and server.admin_token)",
        );
    };
    if !bearer_matches(request.headers(), expected) {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "a valid admin bearer token is required",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let spec = match Json::<LinkSpec>::from_request(request, &state).await {
        Ok(Json(spec)) => spec,
        Err(rejection) => return problem(rejection_status(&rejection), &rejection.body_text()),
    };
    // The trail names the caller by a digest prefix of the token, never the token.
    let actor = Actor::admin_token(expected);
    match links.begin(&state.pool, spec, &actor).await {
        Ok(link) => (
            StatusCode::CREATED,
            Json(json!({
                "id": link.id,
                "authorizationUrl": link.authorization_url.as_str(),
                "expiresAt": link.expires_at,
            })),
        )
            .into_response(),
        Err(error @ LinkError::Invalid(_)) => problem(StatusCode::BAD_REQUEST, &error.to_string()),
        Err(error @ LinkError::OutcomeUnknown(_)) => {
            let error = with_causes(&error);
            tracing::error!(%error, "RABOT gave no answer to a customer-link request");
            problem(StatusCode::BAD_GATEWAY, &error)
        }
        Err(error @ LinkError::Rabot(_)) => {
            let error = with_causes(&error);
            tracing::error!(%error, "RABOT refused to create a customer link");
            problem(StatusCode::BAD_GATEWAY, &error)
        }
        Err(LinkError::Database(error)) => {
            tracing::error!(error = %error, "could not record a customer link");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the link could not be recorded",
            )
        }
    }
}

/// A body over `server.body_limit` is 413, as the body limit answers before a handler runs;
/// any other unreadable body is the caller's mistake, 400.
fn rejection_status(rejection: &JsonRejection) -> StatusCode {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Compared as digests, so the time taken says nothing about how much of the token matched.
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn success(
    State(state): State<ServerState>,
    Path(secret): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let answer = LinkAnswer::Approved {
        customer_number: params.get("customerNumber").cloned().unwrap_or_default(),
    };
    finish(state, &secret, answer).await
}

pub async fn failure(
    State(state): State<ServerState>,
    Path(secret): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let answer = LinkAnswer::Refused {
        error_name: params
            .get("error_name")
            .filter(|name| !name.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown_error".to_owned()),
        error_description: params.get("error_description").cloned(),
    };
    finish(state, &secret, answer).await
}

async fn finish(state: ServerState, secret: &str, answer: LinkAnswer) -> Response {
    let Some(links) = state.partners.borrow().rabot.clone() else {
        return page::render(
            StatusCode::NOT_FOUND,
            "Not available",
            "Customer linking is not enabled on this server.",
        );
    };
    match links
        .complete(&state.pool, secret, answer, &Actor::Browser)
        .await
    {
        Ok(link) => {
            if link.status == "linked" {
                // Mirror the customer now rather than at the next tick. A full queue means a
                // run is already due; the link mirror's schedule catches up in any case.
                if let Err(error) = state.control.try_send(Control::CustomerLinked) {
                    tracing::warn!(error = %error, "could not trigger the link mirror");
                }
            }
            done(&state, &link)
        }
        Err(CompleteError::NotPending(why)) => {
            tracing::warn!(why, "refused a customer-link redirect");
            let status = if why == "unknown" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::GONE
            };
            page::render(
                status,
                "Link not valid",
                "This link is unknown, expired or already used. Ask for a new link.",
            )
        }
        // Logged and recorded where it was decided.
        Err(CompleteError::Refused(_)) => page::render(
            StatusCode::BAD_REQUEST,
            "Account not confirmed",
            "RABOT did not confirm this account for the link, so nothing was linked. If you approved the link on RABOT's page, use the page RABOT sent you back to, or ask for a new link.",
        ),
        Err(CompleteError::Unconfirmed(error)) => {
            // RABOT answered with an error of its own (502) or could not be reached (503).
            let status = if error.status().is_some_and(|s| s.is_client_error()) {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut response = page::render(
                status,
                "Link not completed yet",
                "RABOT could not be reached to confirm your account. Nothing was lost: please try again in a moment by reloading this page.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            response
        }
        Err(CompleteError::Database(error)) => {
            tracing::error!(error = %error, "customer-link redirect failed on the database");
            page::render(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Link not completed",
                "The server could not record the answer. Ask for a new link.",
            )
        }
    }
}

/// The page that ends the flow, or a redirect to the platform's own (`server.link_done_url`).
fn done(state: &ServerState, link: &LinkRow) -> Response {
    if let Ok(mut url) = url::Url::parse(&state.link_done_url) {
        url.query_pairs_mut()
            .append_pair("status", &link.status)
            .append_pair("external_id", &link.external_id);
        return page::redirect(&url);
    }
    if link.status == "linked" {
        page::render(
            StatusCode::OK,
            "Account linked",
            "Your energy account is now linked. You can close this window.",
        )
    } else {
        page::render(
            StatusCode::OK,
            "Account not linked",
            &format!(
                "The link was not approved ({}). Nothing was shared; ask for a new link if this was a mistake.",
                link.error_description
                    .as_deref()
                    .unwrap_or(link.error_name.as_deref().unwrap_or("refused"))
            ),
        )
    }
}
