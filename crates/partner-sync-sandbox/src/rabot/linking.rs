//! RABOT customer linking as the customer-linking guide describes it: `POST /customers/link`
//! answers an authorization URL (valid 10 minutes) on the sandbox's own login page; a customer
//! who logs in and approves is sent to `successUrl?customerNumber=…`, one who refuses to
//! `failureUrl?error_description=…&error_name=access_denied`; a failed login shows the page
//! again and redirects nowhere. `DELETE /customers/{n}/link` removes the link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use url::Url;

use super::api::{ApiError, authenticate};
use super::{Customer, Rabot};
use crate::oauth::{random_token, unique_fields};
use crate::web::{escape_html, page_response, redirect_to, usable_redirect};
use crate::{Shared, lock};

/// Every sandbox customer's password on the login page (the login is their e-mail address).
pub const CUSTOMER_PASSWORD: &str = "sandbox-password";
/// At most this many hidden customers are generated.
pub(super) const MAX_LINKABLE: usize = 10_000;
pub(super) const AUTHORIZE_PATH: &str = "/rabot/connect/authorize";
const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Partner accounts whose login pages exist; customers belong to `rabot-charge`.
const DEFAULT_ACCOUNT: &str = "rabot-charge";
const ACCOUNTS: [&str; 2] = [DEFAULT_ACCOUNT, "sandbox-whitelabel"];
pub(super) const DENIED_DESCRIPTION: &str = "The authorization was denied by the end user.";

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/rabot/partner/v1/customers/link", post(create_link))
        .route(
            "/rabot/partner/v1/customers/{customer_number}/link",
            delete(delete_link),
        )
        .route(AUTHORIZE_PATH, get(login_page).post(login))
}

/// A customer who can log in on an authorization page and is not linked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkableCustomer {
    pub customer_number: String,
    pub email: String,
}

pub(super) struct PendingLink {
    success_url: Url,
    failure_url: Url,
    parameter: String,
    external_id: Option<String>,
    account: &'static str,
    expires_at: Instant,
}

async fn create_link(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authenticate(&shared, &headers)?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::validation_failed(format!("The body is not JSON: {error}.")))?;
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match request.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(ApiError::validation_failed(format!(
                "{name} must be a string."
            ))),
        }
    };
    let url = |name: &str, required: bool| -> Result<Option<Url>, ApiError> {
        match text(name)? {
            Some(raw) => usable_redirect(&raw)
                .map(Some)
                .map_err(|reason| ApiError::validation_failed(format!("{name}: {reason}"))),
            None if required => Err(ApiError::validation_failed(format!("{name} is required."))),
            None => Ok(None),
        }
    };
    let (Some(success_url), Some(failure_url)) =
        (url("successUrl", true)?, url("failureUrl", true)?)
    else {
        return Err(ApiError::validation_failed(
            "successUrl and failureUrl are required.",
        ));
    };
    url("signUpUrl", false)?;
    let account = match text("authAs")? {
        None => DEFAULT_ACCOUNT,
        Some(slug) => ACCOUNTS
            .into_iter()
            .find(|account| *account == slug)
            .ok_or_else(|| {
                ApiError::validation_failed(format!("Unknown partner account {slug:?} in authAs."))
            })?,
    };
    let parameter = text("customerNumberQueryParameterName")?
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "customerNumber".to_owned());
    let external_id = text("externalCustomerId")?.filter(|id| !id.is_empty());
    // The login page is served by this sandbox, at the host the client reached it under.
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .ok_or_else(|| ApiError::validation_failed("The request has no Host header."))?;

    let state = random_token(32);
    let rabot = &shared.rabot;
    let mut authorization_url = Url::parse(&format!("http://{host}{AUTHORIZE_PATH}"))
        .map_err(|_| ApiError::validation_failed("The Host header is not a host."))?;
    authorization_url
        .query_pairs_mut()
        .append_pair("client_id", &rabot.client_id)
        .append_pair("state", &state);
    let now = Instant::now();
    let mut links = lock(&rabot.links);
    links.retain(|_, link| link.expires_at > now);
    links.insert(
        state,
        PendingLink {
            success_url,
            failure_url,
            parameter,
            external_id,
            account,
            expires_at: now + LINK_LIFETIME,
        },
    );
    Ok(axum::Json(json!({
        "isSuccess": true,
        "message": null,
        "error": null,
        "refUri": null,
        "data": { "authorizationUrl": authorization_url.as_str() },
    }))
    .into_response())
}

async fn delete_link(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    customer_number: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authenticate(&shared, &headers)?;
    let Ok(Path(customer_number)) = customer_number else {
        return Err(ApiError::validation_failed(
            "The customer number in the path is not valid.",
        ));
    };
    if !shared.rabot.unlink(&customer_number) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("Customer {customer_number} is not linked to this partner."),
        ));
    }
    Ok(axum::Json(json!({
        "isSuccess": true, "message": null, "error": null, "refUri": null, "data": null,
    }))
    .into_response())
}

async fn login_page(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let fields = unique_fields(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let state = fields.get("state").cloned().unwrap_or_default();
    match shared.rabot.pending_account(&state) {
        Some(account) => login_form(StatusCode::OK, &state, account, None),
        None => expired_page(),
    }
}

/// The login form's answer: a failed login shows the form again; a valid one approves or
/// refuses, as the customer chose, and redirects.
async fn login(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let fields = unique_fields(&body).unwrap_or_default();
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let state = field("state");
    let rabot = &shared.rabot;
    let Some(account) = rabot.pending_account(state) else {
        return expired_page();
    };
    let Some(customer_number) = rabot.log_in(account, field("username"), field("password")) else {
        return login_form(
            StatusCode::OK,
            state,
            account,
            Some("Wrong e-mail address or password, or the account belongs to another brand."),
        );
    };
    let Some(link) = lock(&rabot.links).remove(state) else {
        return expired_page();
    };
    if field("decision") == "approve" {
        rabot.link(&customer_number, link.external_id.as_deref());
        redirect_to(
            link.success_url,
            &[(link.parameter.as_str(), &customer_number)],
        )
    } else {
        redirect_to(
            link.failure_url,
            &[
                ("error_description", DENIED_DESCRIPTION),
                ("error_name", "access_denied"),
            ],
        )
    }
}

fn login_form(status: StatusCode, state: &str, account: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|message| format!("  <p role=\"alert\">{}</p>\n", escape_html(message)))
        .unwrap_or_default();
    page_response(
        status,
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
             <title>{account}: link your account</title></head>\n<body>\n\
             \x20 <h1>Log in to {account}</h1>\n{error}\
             \x20 <p>A partner asks to read your customer and contract data.</p>\n\
             \x20 <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n\
             \x20   <input type=\"hidden\" name=\"state\" value=\"{state}\">\n\
             \x20   <label>E-mail <input name=\"username\" type=\"email\"></label>\n\
             \x20   <label>Password <input name=\"password\" type=\"password\"></label>\n\
             \x20   <button name=\"decision\" value=\"approve\">Log in and allow access</button>\n\
             \x20   <button name=\"decision\" value=\"deny\">Log in and refuse</button>\n\
             \x20 </form>\n</body>\n</html>\n",
            account = escape_html(account),
            state = escape_html(state),
        ),
    )
}

fn expired_page() -> Response {
    page_response(
        StatusCode::BAD_REQUEST,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Link expired</title></head>\
         <body><h1>This link is invalid or has expired</h1><p>Ask the partner for a new one.</p></body></html>\n"
            .to_owned(),
    )
}

impl Rabot {
    /// The account of an unexpired pending link.
    fn pending_account(&self, state: &str) -> Option<&'static str> {
        let links = lock(&self.links);
        let link = links.get(state)?;
        (link.expires_at > Instant::now()).then_some(link.account)
    }

    /// The customer number of the account's customer with this login, if the password is right.
    fn log_in(&self, account: &str, email: &str, password: &str) -> Option<String> {
        if password != CUSTOMER_PASSWORD || account != DEFAULT_ACCOUNT || email.is_empty() {
            return None;
        }
        let customers = lock(&self.customers);
        customers
            .list
            .iter()
            .chain(&customers.hidden)
            .find(|customer| {
                customer.record["emailAddress"]
                    .as_str()
                    .is_some_and(|address| address.eq_ignore_ascii_case(email.trim()))
            })
            .map(|customer| customer.number.clone())
    }

    /// Makes the customer visible with a Linked relation and our external id.
    fn link(&self, customer_number: &str, external_id: Option<&str>) {
        let mut customers = lock(&self.customers);
        if let Some(position) = customers
            .hidden
            .iter()
            .position(|customer| customer.number == customer_number)
        {
            let customer = customers.hidden.remove(position);
            customers.list.push(customer);
            customers.reindex();
        }
        if let Some(customer) = customers.get_mut(customer_number) {
            edit_relations(customer, |relations| {
                if !relations.iter().any(|r| r == "Linked") {
                    relations.push("Linked".to_owned());
                }
            });
            if let Some(id) = external_id {
                customer.record["externalIdentifier"] = json!(id);
            }
        }
    }

    /// Removes the Linked relation; a customer left with none is hidden again.
    fn unlink(&self, customer_number: &str) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        if !customer.is_linked() {
            return false;
        }
        edit_relations(customer, |relations| relations.retain(|r| r != "Linked"));
        if customer.record["relations"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            let Some(&position) = customers.index.get(customer_number) else {
                return true;
            };
            let customer = customers.list.remove(position);
            customers.hidden.push(customer);
            customers.reindex();
        }
        true
    }

    pub(crate) fn linkable_customers(&self) -> Vec<LinkableCustomer> {
        lock(&self.customers)
            .hidden
            .iter()
            .filter_map(|customer| {
                Some(LinkableCustomer {
                    customer_number: customer.number.clone(),
                    email: customer.record["emailAddress"].as_str()?.to_owned(),
                })
            })
            .collect()
    }

    pub(crate) fn relations(&self, customer_number: &str) -> Option<Vec<String>> {
        let customers = lock(&self.customers);
        let customer = customers.get(customer_number)?;
        Some(
            customer.record["relations"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}

fn edit_relations(customer: &mut Customer, edit: impl FnOnce(&mut Vec<String>)) {
    let mut relations: Vec<String> = customer.record["relations"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    edit(&mut relations);
    customer.record["relations"] = json!(relations);
}
