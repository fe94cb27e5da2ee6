//! `GET /oauth/rabobank/callback`: where the bank sends the user back. The state is checked
//! (and consumed) before anything else; a bad state sends no token request and stores nothing.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{ServerState, page};
use crate::partners::rabobank::grants::{CallbackError, CallbackParams, ConsentOutcome};
use crate::store::audit::Actor;

pub async fn rabobank(
    State(state): State<ServerState>,
    params: Result<Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let grants = state.partners.borrow().rabobank.clone();
    let Some(grants) = grants else {
        return page::render(
            StatusCode::NOT_FOUND,
            "Not available",
            "Rabobank consents are not enabled on this server.",
        );
    };
    let Ok(Query(params)) = params else {
        return page::render(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The link is malformed. Start the consent again.",
        );
    };
    // Apart from the request: neither a browser that goes away nor `server.request_timeout` may
    // cancel a code exchange halfway, since the code is single use and the bank's answer would
    // be lost with the future.
    let pool = state.pool.clone();
    let completion = tokio::spawn(async move {
        grants
            .complete_consent(&pool, &params, &Actor::Browser)
            .await
    })
    .await;
    let Ok(outcome) = completion else {
        tracing::error!("the Rabobank callback's completion did not finish");
        return page::render(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Consent not completed",
            "The server could not record the consent. Start the consent again.",
        );
    };
    match outcome {
        Ok(ConsentOutcome::Granted { label, .. }) => page::render(
            StatusCode::OK,
            "Consent connected",
            &match label {
                Some(label) => format!(
                    "The Rabobank consent \"{label}\" is connected. You can close this window."
                ),
                None => "The Rabobank consent is connected. You can close this window.".to_owned(),
            },
        ),
        Ok(ConsentOutcome::Refused { error, description }) => page::render(
            StatusCode::OK,
            "Consent not given",
            &format!(
                "Rabobank reported {error}{}. Nothing was connected; start again if this was a mistake.",
                description.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        ),
        Err(error @ (CallbackError::BadState(_) | CallbackError::NoCode)) => {
            tracing::warn!(error = %error, "refused a Rabobank callback");
            page::render(
                StatusCode::BAD_REQUEST,
                "Link not valid",
                "This consent link is unknown, expired or already used. Start the consent again.",
            )
        }
        Err(CallbackError::Exchange(_)) => page::render(
            StatusCode::BAD_GATEWAY,
            "Consent not completed",
            "Rabobank did not accept the authorization. Start the consent again.",
        ),
        Err(CallbackError::Database(error)) => {
            tracing::error!(error = %error, "Rabobank callback failed on the database");
            page::render(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Consent not completed",
                "The server could not record the consent. Start the consent again.",
            )
        }
    }
}
