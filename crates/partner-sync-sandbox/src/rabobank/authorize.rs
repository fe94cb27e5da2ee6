//! Rabobank's authorization endpoint: the request checked in RFC 6749 §4.1.2.1 order, the
//! consent page that stands in for the bank's login (or `sandbox_decision` to skip it), and the
//! redirect that ends it, which for an approval carries the new consent's code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use url::Url;

use super::{AUTHORIZE_PATH, Account, Grant, IssuedCode, Rabobank, random_secret};
use crate::oauth::{is_form, unique_fields};
use crate::web::{escape_html, page_response, redirect_to, usable_redirect};
use crate::{Shared, lock, unix_now};

/// A validated authorization request: where to send the user back, and what they are asked for.
struct AuthorizationRequest {
    /// The redirect URI the code is bound to, exactly as given (or registered).
    redirect_uri: String,
    /// The same, parsed, to build the redirect from.
    redirect_url: Url,
    state: Option<String>,
    scopes: Vec<String>,
    /// The request's own parameters, carried through the consent form as hidden fields.
    echoed: Vec<(&'static str, String)>,
}

/// Why an authorization request cannot go on, and so where the answer goes (RFC 6749 §4.1.2.1).
enum Refusal {
    /// Shown to the user: the client or its redirect URI cannot be trusted with a redirect.
    Page(String),
    /// Sent back to the client through its (verified) redirect URI.
    Redirect {
        target: Box<Url>,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Page(message) => error_page(StatusCode::BAD_REQUEST, &message),
            Self::Redirect {
                target,
                error,
                description,
                state,
            } => {
                let mut params = vec![("error", error), ("error_description", &description)];
                if let Some(state) = &state {
                    params.push(("state", state));
                }
                redirect_to(*target, &params)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Approve,
    Deny,
    ServerError,
}

impl Decision {
    fn parse(value: &str, allow_server_error: bool) -> Option<Self> {
        match value {
            "approve" => Some(Self::Approve),
            "deny" => Some(Self::Deny),
            "server_error" if allow_server_error => Some(Self::ServerError),
            _ => None,
        }
    }
}

pub(super) async fn authorize_page(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = match unique_fields(query.unwrap_or_default().as_bytes()) {
        Ok(fields) => fields,
        Err(name) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("Parameter {name} was sent more than once."),
            );
        }
    };
    let bank = &shared.rabobank;
    let request = match bank.check_authorization(&fields) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    match fields.get("sandbox_decision") {
        None => consent_page(bank, &request),
        Some(value) => match Decision::parse(value, true) {
            Some(decision) => bank.decide(request, decision),
            None => error_page(
                StatusCode::BAD_REQUEST,
                "sandbox_decision must be approve, deny or server_error.",
            ),
        },
    }
}

/// The consent form's submission: the same parameters again, plus the user's `decision`.
pub(super) async fn authorize_decision(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Expected an application/x-www-form-urlencoded body.",
        );
    }
    let fields = match unique_fields(&body) {
        Ok(fields) => fields,
        Err(name) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("Parameter {name} was sent more than once."),
            );
        }
    };
    let bank = &shared.rabobank;
    // The form is as much under the user's control as the query was, so it is checked again.
    let request = match bank.check_authorization(&fields) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    match fields
        .get("decision")
        .and_then(|value| Decision::parse(value, false))
    {
        Some(decision) => bank.decide(request, decision),
        None => error_page(StatusCode::BAD_REQUEST, "decision must be approve or deny."),
    }
}

/// The HTML page that stands in for the bank's login and consent screens.
fn consent_page(bank: &Rabobank, request: &AuthorizationRequest) -> Response {
    let scopes: String = request
        .scopes
        .iter()
        .map(|scope| format!("      <li>{}</li>\n", escape_html(scope)))
        .collect();
    let hidden: String = request
        .echoed
        .iter()
        .map(|(name, value)| {
            format!(
                "      <input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape_html(value)
            )
        })
        .collect();
    let page = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head><meta charset=\"utf-8\"><title>Rabobank sandbox: give consent</title></head>\n\
         <body>\n\
         \x20 <h1>Rabobank sandbox</h1>\n\
         \x20 <p>Application <strong>{client}</strong> asks for access to:</p>\n\
         \x20 <ul>\n{scopes}  </ul>\n\
         \x20 <p>After your decision you return to {redirect}.</p>\n\
         \x20 <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n{hidden}\
         \x20     <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\n\
         \x20     <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n\
         \x20 </form>\n\
         </body>\n\
         </html>\n",
        client = escape_html(&bank.client_id),
        redirect = escape_html(&request.redirect_uri),
    );
    page_response(StatusCode::OK, page)
}

/// An error shown to the user instead of a redirect: RFC 6749 §4.1.2.1 forbids redirecting
/// to a URI that could not be verified, and an unknown client has no URI at all.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head><meta charset=\"utf-8\"><title>Rabobank sandbox: error</title></head>\n\
         <body>\n\
         \x20 <h1>{status}</h1>\n\
         \x20 <p>{message}</p>\n\
         </body>\n\
         </html>\n",
        status = escape_html(&status.to_string()),
        message = escape_html(message),
    );
    page_response(status, page)
}

impl Rabobank {
    /// Checks an authorization request in RFC 6749 §4.1.2.1 order: problems with the client or
    /// the redirect URI are shown to the user (`Err` holds a page); once the redirect URI is
    /// trusted, every other problem goes back to the client as a redirect (`Err` holds that).
    fn check_authorization(
        &self,
        fields: &HashMap<String, String>,
    ) -> Result<AuthorizationRequest, Refusal> {
        let field = |name: &str| fields.get(name).map(String::as_str);
        if field("client_id") != Some(self.client_id.as_str()) {
            return Err(Refusal::Page(
                "Unknown client_id: no application is registered under it.".to_owned(),
            ));
        }
        let redirect_uri = match (field("redirect_uri"), &self.redirect_uri) {
            (Some(given), Some(registered)) if given != registered => {
                return Err(Refusal::Page(
                    "redirect_uri does not match the redirect URI registered for this application."
                        .to_owned(),
                ));
            }
            (_, Some(registered)) => registered.clone(),
            (Some(given), None) => given.to_owned(),
            (None, None) => {
                return Err(Refusal::Page(
                    "redirect_uri is required: this application has no registered redirect URI."
                        .to_owned(),
                ));
            }
        };
        let redirect_url = usable_redirect(&redirect_uri).map_err(Refusal::Page)?;
        let state = field("state").map(str::to_owned);

        let refuse = |error: &'static str, description: &str| Refusal::Redirect {
            target: Box::new(redirect_url.clone()),
            error,
            description: description.to_owned(),
            state: state.clone(),
        };
        match field("response_type") {
            Some("code") => {}
            None => return Err(refuse("invalid_request", "response_type is required.")),
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "Only response_type=code is supported.",
                ));
            }
        }
        let mut scopes: Vec<String> = Vec::new();
        for scope in field("scope").unwrap_or_default().split(' ') {
            if scope.is_empty() || scopes.iter().any(|known| known == scope) {
                continue;
            }
            if !self.scopes.iter().any(|allowed| allowed == scope) {
                return Err(refuse(
                    "invalid_scope",
                    &format!("Scope {scope} is not available to this application."),
                ));
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            return Err(refuse("invalid_scope", "At least one scope is required."));
        }

        let echoed = [
            "response_type",
            "scope",
            "client_id",
            "state",
            "redirect_uri",
        ]
        .into_iter()
        .filter_map(|name| Some((name, field(name)?.to_owned())))
        .collect();
        Ok(AuthorizationRequest {
            redirect_uri,
            redirect_url,
            state,
            scopes,
            echoed,
        })
    }

    /// The redirect that ends an authorization; approval creates the consent and its code.
    fn decide(&self, request: AuthorizationRequest, decision: Decision) -> Response {
        let mut params: Vec<(&str, String)> = match decision {
            Decision::Approve => {
                let code = self.approve(request.scopes, request.redirect_uri);
                self.count(|stats| stats.authorizations += 1);
                vec![("code", code)]
            }
            Decision::Deny => {
                self.count(|stats| stats.denials += 1);
                vec![("error", "access_denied".to_owned())]
            }
            Decision::ServerError => vec![
                ("error", "server_error".to_owned()),
                (
                    "error_description",
                    "The sandbox was asked to fail this authorization.".to_owned(),
                ),
            ],
        };
        if let Some(state) = request.state {
            params.push(("state", state));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        redirect_to(request.redirect_url, &params)
    }

    /// Creates a consent for `scopes` and returns the code that redeems it.
    fn approve(&self, scopes: Vec<String>, redirect_uri: String) -> String {
        let consent_id = uuid::Uuid::new_v4().to_string();
        let mut rng = rand::rng();
        let accounts = scopes
            .iter()
            .flat_map(|scope| {
                let count = rng.random_range(1..=2);
                (0..count)
                    .map(|_| {
                        let account = Account {
                            iban: dutch_iban(&mut rng),
                            status: "valid".to_owned(),
                        };
                        (scope.clone(), account)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let code = random_secret(43, 43);
        let now = Instant::now();

        let mut ledger = lock(&self.ledger);
        ledger.prune(now);
        ledger.grants.insert(
            consent_id.clone(),
            Grant {
                consented_on: unix_now(),
                scopes,
                refresh_count: 0,
                revocation: None,
                accounts,
            },
        );
        ledger.consent_order.push(consent_id.clone());
        ledger.codes.insert(
            code.clone(),
            IssuedCode {
                consent_id,
                client_id: self.client_id.clone(),
                redirect_uri,
                expires_at: now.checked_add(self.code_lifetime),
                spent: false,
            },
        );
        ledger.secrets.push(code.clone());
        code
    }
}

/// A Rabobank IBAN (NLkk RABO + 10 digits) with correct ISO 13616 check digits, so a client
/// that validates IBANs accepts it.
pub(super) fn dutch_iban(rng: &mut impl rand::Rng) -> String {
    let digits: String = (0..10)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    iban("NL", &format!("RABO{digits}"))
}

/// `country` + check digits + `bban`; letters count as 10 (A) to 35 (Z) in the mod-97 check.
pub(super) fn iban(country: &str, bban: &str) -> String {
    let rearranged = format!("{bban}{country}00");
    let remainder = rearranged.chars().fold(0u32, |acc, character| {
        let value = character.to_digit(36).unwrap_or(0);
        if value >= 10 {
            (acc * 100 + value) % 97
        } else {
            (acc * 10 + value) % 97
        }
    });
    format!("{country}{:02}{bban}", 98 - remainder)
}
