//! The RABOT Partner API as RABOT's partner documentation describes it: the OAuth
//! client-credentials token endpoint, the customer list and a customer's contracts, over data
//! generated from a seed.
//!
//! Every JSON shape here is written by hand from that document; nothing is borrowed from the
//! client in src/partners, so the integration tests check the client against the docs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

mod linking;

pub use linking::{CUSTOMER_PASSWORD, LinkableCustomer};

use super::{
    Endpoint, OAuthError, PartnerPaths, Prng, SandboxOptions, Shared, TokenStore, add_months,
    bearer_token, bump, date, is_form, last_day_of, lock, oauth_error_code, timestamp,
    unique_fields,
};

pub(super) const TOKEN_PATH: &str = "/rabot/connect/token";
pub(super) const API_BASE_PATH: &str = "/rabot/partner/v1";
const PREFIX: &str = "/rabot";

/// Customer ordinals are printed with 7 digits and external ids with 6; beyond this the
/// generated identifiers would stop being unique.
pub(super) const MAX_CUSTOMERS: usize = 1_000_000;

const PARTNER_SCOPE: &str = "api:partner";
/// Each role includes the ones before it, and any of them may read contracts.
const CONTRACT_ROLES: [&str; 3] = [
    "role:finance-reporting",
    "role:customer-support",
    "role:application",
];

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(TOKEN_PATH, post(issue_token))
        .route("/rabot/partner/v1/customers", get(list_customers))
        .route(
            "/rabot/partner/v1/customers/{customer_number}/contracts",
            get(list_contracts),
        )
        .merge(linking::routes())
}

/// Where this partner's paths lie, for the gate.
pub(super) const PATHS: PartnerPaths = PartnerPaths {
    prefix: PREFIX,
    token: TOKEN_PATH,
    api_base: API_BASE_PATH,
    reject: rejection,
    count_request: None,
};

fn rejection(endpoint: Endpoint, status: StatusCode, message: &str) -> Response {
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
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// WWW-Authenticate challenge for 401 and 403, as RFC 6750 asks.
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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

    fn insufficient_scope(message: impl Into<String>) -> Self {
        Self {
            challenge: Some(r#"Bearer error="insufficient_scope""#),
            ..Self::new(StatusCode::FORBIDDEN, "insufficient-scope", message)
        }
    }

    fn validation_failed(message: impl Into<String>) -> Self {
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

fn envelope_page(items: Vec<Value>, has_more_items: bool) -> Response {
    let count = items.len();
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

async fn issue_token(
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

/// The scopes of the request's bearer token, which must include `api:partner`.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
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

fn has_scope(scopes: &[String], wanted: &str) -> bool {
    scopes.iter().any(|scope| scope == wanted)
}

#[derive(Debug, Clone, Copy)]
struct Page {
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
    fn cut<T: Clone>(self, items: &[T]) -> (Vec<T>, bool) {
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

async fn list_customers(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authenticate(&shared, &headers)?;
    let (fields, page) = paged_query(query.as_deref())?;
    let external_id = fields.get("filter.externalId").map(String::as_str);
    let (items, has_more_items) = shared.rabot.customer_page(external_id, page);
    Ok(envelope_page(items, has_more_items))
}

async fn list_contracts(
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
    let has_role = CONTRACT_ROLES.iter().any(|role| has_scope(&scopes, role));
    match shared.rabot.contract_page(&customer_number, has_role, page) {
        ContractPage::Found(items, has_more_items) => Ok(envelope_page(items, has_more_items)),
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

/// The simulated RABOT: its one API client, the tokens it issued, and its customers.
pub(super) struct Rabot {
    client_id: String,
    client_secret: String,
    granted_scopes: Vec<String>,
    token_lifetime: Duration,
    pub(super) tokens: TokenStore,
    customers: Mutex<Customers>,
    /// Customer links waiting for the customer, by the `state` in their authorization URL.
    links: Mutex<HashMap<String, linking::PendingLink>>,
}

enum ContractPage {
    Found(Vec<Value>, bool),
    UnknownCustomer,
    NotPermitted,
}

struct Customers {
    list: Vec<Customer>,
    /// Position in `list` by customer number, rebuilt when a customer is removed.
    index: HashMap<String, usize>,
    /// Customers of the platform the partner cannot see (no relation to it) until they link.
    hidden: Vec<Customer>,
}

struct Customer {
    number: String,
    /// The customer object exactly as the API serves it.
    record: Value,
    contracts: Vec<Value>,
}

impl Customer {
    fn external_id(&self) -> Option<&str> {
        self.record["externalIdentifier"].as_str()
    }

    /// The docs let a partner without a role read the contracts of a customer who linked it.
    fn is_linked(&self) -> bool {
        self.record["relations"]
            .as_array()
            .is_some_and(|relations| relations.iter().any(|relation| relation == "Linked"))
    }

    fn contract_position(&self, contract_number: &str) -> Option<usize> {
        self.contracts
            .iter()
            .position(|contract| contract["contractNumber"].as_str() == Some(contract_number))
    }
}

impl Customers {
    fn new((list, hidden): (Vec<Customer>, Vec<Customer>)) -> Self {
        let mut customers = Self {
            list,
            index: HashMap::new(),
            hidden,
        };
        customers.reindex();
        customers
    }

    fn reindex(&mut self) {
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(position, customer)| (customer.number.clone(), position))
            .collect();
    }

    fn get(&self, number: &str) -> Option<&Customer> {
        self.list.get(*self.index.get(number)?)
    }

    fn get_mut(&mut self, number: &str) -> Option<&mut Customer> {
        self.list.get_mut(*self.index.get(number)?)
    }
}

impl Rabot {
    pub(super) fn generate(options: &SandboxOptions) -> Self {
        Self {
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            granted_scopes: options.granted_scopes.clone(),
            token_lifetime: options.token_lifetime,
            tokens: TokenStore::default(),
            customers: Mutex::new(Customers::new(generate_customers(options))),
            links: Mutex::new(HashMap::new()),
        }
    }

    /// The scopes a token request gets: all granted ones when it names none, else exactly the
    /// named ones, or `Err(scope)` for the first scope this client was not granted.
    fn scopes_for(&self, requested: Option<&str>) -> Result<Vec<String>, String> {
        let mut scopes: Vec<String> = Vec::new();
        for scope in requested.unwrap_or_default().split(' ') {
            if scope.is_empty() || has_scope(&scopes, scope) {
                continue;
            }
            if !has_scope(&self.granted_scopes, scope) {
                return Err(scope.to_owned());
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            scopes.clone_from(&self.granted_scopes);
        }
        Ok(scopes)
    }

    fn customer_page(&self, external_id: Option<&str>, page: Page) -> (Vec<Value>, bool) {
        let customers = lock(&self.customers);
        let matching: Vec<&Customer> = customers
            .list
            .iter()
            .filter(|customer| {
                external_id.is_none_or(|wanted| customer.external_id() == Some(wanted))
            })
            .collect();
        let (items, has_more_items) = page.cut(&matching);
        let records = items
            .into_iter()
            .map(|customer| customer.record.clone())
            .collect();
        (records, has_more_items)
    }

    fn contract_page(&self, customer_number: &str, has_role: bool, page: Page) -> ContractPage {
        let customers = lock(&self.customers);
        match customers.get(customer_number) {
            // Without a role the partner may not learn which customer numbers exist.
            None if has_role => ContractPage::UnknownCustomer,
            None => ContractPage::NotPermitted,
            Some(customer) if has_role || customer.is_linked() => {
                let (items, has_more_items) = page.cut(&customer.contracts);
                ContractPage::Found(items, has_more_items)
            }
            Some(_) => ContractPage::NotPermitted,
        }
    }

    pub(super) fn customer_count(&self) -> usize {
        lock(&self.customers).list.len()
    }

    pub(super) fn customer_numbers(&self) -> Vec<String> {
        let customers = lock(&self.customers);
        customers
            .list
            .iter()
            .map(|customer| customer.number.clone())
            .collect()
    }

    pub(super) fn external_id_of(&self, customer_number: &str) -> Option<String> {
        let customers = lock(&self.customers);
        customers
            .get(customer_number)?
            .external_id()
            .map(str::to_owned)
    }

    pub(super) fn contract_numbers(&self, customer_number: &str) -> Vec<String> {
        let customers = lock(&self.customers);
        customers
            .get(customer_number)
            .map(|customer| {
                customer
                    .contracts
                    .iter()
                    .filter_map(|contract| contract["contractNumber"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn update_contract(
        &self,
        customer_number: &str,
        contract_number: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        let Some(position) = customer.contract_position(contract_number) else {
            return false;
        };
        match customer.contracts.get_mut(position) {
            Some(contract) => {
                edit(contract);
                true
            }
            None => false,
        }
    }

    /// Edits the stored JSON object of one customer (its `customerNumber` is kept); false if
    /// it does not exist.
    pub(super) fn update_customer(
        &self,
        customer_number: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        edit(&mut customer.record);
        customer.record["customerNumber"] = Value::from(customer.number.clone());
        true
    }

    pub(super) fn remove_contract(&self, customer_number: &str, contract_number: &str) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        match customer.contract_position(contract_number) {
            Some(position) => {
                customer.contracts.remove(position);
                true
            }
            None => false,
        }
    }

    pub(super) fn remove_customer(&self, customer_number: &str) -> bool {
        let mut customers = lock(&self.customers);
        let Some(&position) = customers.index.get(customer_number) else {
            return false;
        };
        customers.list.remove(position);
        customers.reindex();
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Data generation. Everything below draws from `Prng` streams keyed by the seed and the
// customer's (and contract's) position, so the same options give byte-identical JSON, and
// adding customers leaves the earlier ones unchanged.

/// The stream of one customer (`slot` 0) or of its contract number `slot`.
fn stream(customer_index: usize, slot: usize) -> u64 {
    ((customer_index as u64) << 32) | slot as u64
}

const FIRST_NAMES: [(&str, &str); 18] = [
    ("Zoë", "zoe"),
    ("Jürgen", "juergen"),
    ("Łukasz", "lukasz"),
    ("Ådne", "aadne"),
    ("Ñusta", "nusta"),
    ("Σοφία", "sofia"),
    ("Anna", "anna"),
    ("Lena", "lena"),
    ("Mehmet", "mehmet"),
    ("Søren", "soeren"),
    ("Chloé", "chloe"),
    ("Björn", "bjoern"),
    ("Jan", "jan"),
    ("Marie", "marie"),
    ("Ömer", "oemer"),
    ("José", "jose"),
    ("Hannah", "hannah"),
    ("Paul", "paul"),
];

const LAST_NAMES: [(&str, &str); 16] = [
    ("Müller", "mueller"),
    ("Schmidt", "schmidt"),
    ("Weiß", "weiss"),
    ("Kowalczyk", "kowalczyk"),
    ("Østergaard", "oestergaard"),
    ("Παπαδοπούλου", "papadopoulou"),
    ("Quispe", "quispe"),
    ("Groß", "gross"),
    ("Yılmaz", "yilmaz"),
    ("Nguyễn", "nguyen"),
    ("O'Brien", "obrien"),
    ("Fischer", "fischer"),
    ("Becker", "becker"),
    ("Hoffmann", "hoffmann"),
    ("Dvořák", "dvorak"),
    ("Wagner", "wagner"),
];

const MAIL_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

const BUSINESS_NAMES: [&str; 5] = [
    "Müller & Söhne GmbH",
    "Bäckerei Groß e.K.",
    "Café Østerbro UG (haftungsbeschränkt)",
    "Ζαχαροπλαστείο Σοφία",
    "Solar O'Brien GbR",
];

const CITIES: [(&str, &str); 10] = [
    ("Berlin", "10115"),
    ("München", "80331"),
    ("Köln", "50667"),
    ("Düsseldorf", "40213"),
    ("Nürnberg", "90402"),
    ("Leipzig", "04109"),
    ("Hamburg", "20095"),
    ("Stuttgart", "70173"),
    ("Görlitz", "02826"),
    ("Lübeck", "23552"),
];

const STREETS: [&str; 8] = [
    "Hauptstraße",
    "Königsallee",
    "Schloßstraße",
    "Am Mühlbach",
    "Lindenweg",
    "Bahnhofstraße",
    "Gärtnerplatz",
    "Straße des 17. Juni",
];

const TARIFFS: [&str; 5] = [
    "RABOT Dynamic",
    "RABOT Flex",
    "RABOT Fix 12",
    "Ökostrom Dynamisch",
    "Wärmepumpe Dynamic",
];

const CONTRACT_NAMES: [&str; 5] = ["Zuhause", "Wärmepumpe", "Wallbox", "Ferienwohnung", "Büro"];

const OPERATORS: [(&str, &str); 6] = [
    ("9907248000005", "Stromnetz Berlin GmbH"),
    ("9900270000007", "Westnetz GmbH"),
    ("9905729000008", "Netze BW GmbH"),
    ("9900094000002", "Bayernwerk Netz GmbH"),
    ("9901068000001", "SWM Infrastruktur GmbH & Co. KG"),
    ("9907227000001", "Stromnetz Hamburg GmbH"),
];

const SUPPLIERS: [(&str, &str); 5] = [
    ("9900080000007", "E.ON Energie Deutschland GmbH"),
    ("9900073000003", "Vattenfall Europe Sales GmbH"),
    ("9903413000008", "Stadtwerke München GmbH"),
    ("9900318000000", "EnBW Energie Baden-Württemberg AG"),
    ("9907683000001", "LichtBlick SE"),
];

const BANKS: [(&str, &str); 5] = [
    ("COBADEFFXXX", "Commerzbank"),
    ("DEUTDEDBXXX", "Deutsche Bank"),
    ("GENODEM1GLS", "GLS Gemeinschaftsbank eG"),
    ("INGDDEFFXXX", "ING-DiBa"),
    ("BYLADEM1001", "Deutsche Kreditbank AG"),
];

/// The customer data a contract repeats in its addresses and bank details.
#[derive(Clone, Copy)]
struct Holder {
    first_name: &'static str,
    last_name: &'static str,
    business_name: Option<&'static str>,
}

/// The customers the partner sees, then the hidden ones that can link (`linkable_customers`).
fn generate_customers(options: &SandboxOptions) -> (Vec<Customer>, Vec<Customer>) {
    let count = options.customers.min(MAX_CUSTOMERS);
    let total = count + options.linkable_customers.min(linking::MAX_LINKABLE);
    let external_base = Prng::new(options.seed, u64::MAX).below(900_000) as usize;
    let mut taken_numbers = HashSet::with_capacity(count);
    let mut previous_external: Option<String> = None;
    let mut customers = Vec::with_capacity(total);

    for index in 0..total {
        // A linkable customer logs in with its e-mail address and has no relation to us yet.
        let linkable = index >= count;
        let mut rng = Prng::new(options.seed, stream(index, 0));
        let number = loop {
            let candidate = rng.between(10_000_000, 99_999_999);
            if taken_numbers.insert(candidate) {
                break candidate.to_string();
            }
        };
        let (first_name, first_ascii) = rng.pick(&FIRST_NAMES);
        let (last_name, last_ascii) = rng.pick(&LAST_NAMES);
        let email = if rng.percent(10) && !linkable {
            None
        } else {
            let domain = rng.pick(&MAIL_DOMAINS);
            Some(format!("{first_ascii}.{last_ascii}.{}@{domain}", index + 1))
        };
        // Some customers share their predecessor's external id, so a filter can match two.
        let external = if linkable {
            None
        } else if index % 10 == 3 && previous_external.is_some() {
            previous_external.clone()
        } else if rng.percent(10) {
            None
        } else {
            Some(format!("EXT-{:06}", (external_base + index) % 1_000_000))
        };
        previous_external.clone_from(&external);
        let business_name = rng.percent(12).then(|| rng.pick(&BUSINESS_NAMES));
        let relations: &[&str] = if linkable {
            &[]
        } else if index % 7 == 6 {
            &["Linked"]
        } else if index % 11 == 5 {
            &["Owner", "Affiliate"]
        } else {
            &["Owner"]
        };
        let created_at = timestamp(&mut rng, 2019, 2024);

        let record = json!({
            "customerNumber": number,
            "emailAddress": email,
            "externalIdentifier": external,
            "firstName": first_name,
            "lastName": last_name,
            "businessName": business_name,
            "relations": relations,
            // Not in the docs: the client must tolerate fields it does not know.
            "createdAt": created_at,
        });

        let heavy = !linkable
            && options.heavy_customer_every > 0
            && (index + 1) % options.heavy_customer_every == 0;
        let contract_count = if heavy {
            options.heavy_contracts
        } else {
            options.contracts_per_customer
        };
        let holder = Holder {
            first_name,
            last_name,
            business_name,
        };
        let contracts = (0..contract_count)
            .map(|slot| generate_contract(options.seed, index, slot, holder))
            .collect();

        customers.push(Customer {
            number,
            record,
            contracts,
        });
    }
    let hidden = customers.split_off(count);
    (customers, hidden)
}

fn generate_contract(seed: u64, customer_index: usize, slot: usize, holder: Holder) -> Value {
    let mut rng = Prng::new(seed, stream(customer_index, slot + 1));
    let contract_number = format!("C-{:07}-{:02}", customer_index + 1, slot + 1);
    let state = match rng.below(100) {
        0..=59 => "Delivery",
        60..=79 => "PendingDelivery",
        80..=94 => "Cancelled",
        // Seen once in the reference docs but not in the documented set.
        _ => "Open",
    };
    let tariff_name = rng.pick(&TARIFFS);
    let name = (!rng.percent(5)).then(|| rng.pick(&CONTRACT_NAMES));

    let start = (2021 + rng.below(5), 1 + rng.below(12));
    let actual_date_of_delivery = date(start.0, start.1, 1);
    let end_date_of_delivery = match state {
        "Cancelled" => Some(last_day_of(add_months(start, rng.between(3, 30)))),
        "Delivery" if rng.percent(10) => Some(last_day_of(add_months(start, 23))),
        _ => None,
    };

    let delivery_address = address(&mut rng, holder);
    let billing_address = if rng.percent(80) {
        delivery_address.clone()
    } else {
        address(&mut rng, holder)
    };
    let bank_detail = if rng.percent(12) {
        Value::Null
    } else {
        bank_detail(&mut rng, holder)
    };

    let meter_number = if state == "PendingDelivery" && rng.percent(50) {
        None
    } else {
        Some(format!("1EMH00{}", rng.digits(8)))
    };
    let melo_identifier = if rng.percent(10) {
        None
    } else {
        Some(melo_identifier(&mut rng))
    };
    let malo_identifier = malo_identifier(&mut rng);

    let (cancellation_period, cancellation_unit) = if rng.percent(10) {
        (2, "Week")
    } else {
        (rng.pick(&[1, 1, 3]), "Month")
    };
    let (duration_period, duration_unit) = if rng.percent(10) {
        (None, None)
    } else {
        (Some(rng.pick(&[12, 12, 24, 1])), Some("Month"))
    };
    let (renewal_period, renewal_unit) = if rng.percent(10) {
        (None, None)
    } else {
        (Some(rng.pick(&[1, 12])), Some("Month"))
    };

    let kwh = rng.between(900, 9500);
    let expected_consumption = if rng.percent(30) {
        json!(f64::from(kwh) + f64::from(rng.between(1, 99)) / 100.0)
    } else {
        json!(kwh)
    };
    let accounting_method = if rng.percent(92) { "SLP" } else { "RLM" };
    let (operator_code, operator_name) = rng.pick(&OPERATORS);
    let operator_code = (!rng.percent(5)).then_some(operator_code);
    let (supplier_code, supplier_name) = if rng.percent(15) {
        (None, None)
    } else {
        let (code, name) = rng.pick(&SUPPLIERS);
        (Some(code), Some(name))
    };
    let paragraph_14a = if rng.percent(25) {
        Value::Null
    } else {
        json!({
            "isModule1InUse": rng.percent(30),
            "isModule2InUse": rng.percent(10),
            "isModule3InUse": rng.percent(5),
        })
    };
    let created_at = timestamp(&mut rng, start.0.saturating_sub(1), start.0);

    json!({
        "contractNumber": contract_number,
        "tariffName": tariff_name,
        "contractState": state,
        "name": name,
        "deliveryAddress": delivery_address,
        "billingAddress": billing_address,
        "bankDetail": bank_detail,
        "meterNumber": meter_number,
        "meLoIdentifier": melo_identifier,
        "maLoIdentifier": malo_identifier,
        "actualDateOfDelivery": actual_date_of_delivery,
        "endDateOfDelivery": end_date_of_delivery,
        "cancellationPeriod": cancellation_period,
        "cancellationPeriodUnit": cancellation_unit,
        "durationPeriod": duration_period,
        "durationPeriodUnit": duration_unit,
        "renewalPeriod": renewal_period,
        "renewalPeriodUnit": renewal_unit,
        "expectedAnnualConsumptionInKwhPerYear": expected_consumption,
        "accountingMethod": accounting_method,
        "distributionSystemOperatorCode": operator_code,
        "distributionSystemOperatorName": operator_name,
        "previousSupplierCode": supplier_code,
        "previousSupplierName": supplier_name,
        "paragraph14AInfo": paragraph_14a,
        // Not in the docs: the client must tolerate fields it does not know.
        "createdAt": created_at,
    })
}

fn address(rng: &mut Prng, holder: Holder) -> Value {
    let title = rng
        .percent(8)
        .then(|| rng.pick(&["Dr.", "Prof.", "Dr. med."]));
    let gender = if rng.percent(15) {
        None
    } else {
        Some(rng.pick(&["Male", "Female", "Diverse"]))
    };
    let extension = rng
        .percent(15)
        .then(|| rng.pick(&["Hinterhaus", "2. OG links", "c/o Weiß", "Whg. 4"]));
    let street = rng.pick(&STREETS);
    let number = rng.between(1, 180);
    let suffix = if rng.percent(15) {
        rng.pick(&["a", "b", "c"])
    } else {
        ""
    };
    let house_number = format!("{number}{suffix}");
    let (city, post_code) = rng.pick(&CITIES);
    json!({
        "title": title,
        "firstName": holder.first_name,
        "lastName": holder.last_name,
        "businessName": holder.business_name,
        "gender": gender,
        "extension": extension,
        "streetName": street,
        "houseNumber": house_number,
        "city": city,
        "postCode": post_code,
        "countryCode": "DE",
    })
}

fn bank_detail(rng: &mut Prng, holder: Holder) -> Value {
    let (bic, bank_name) = rng.pick(&BANKS);
    let bic = (!rng.percent(15)).then_some(bic);
    let account_holder = match holder.business_name {
        Some(business) => business.to_owned(),
        None => format!("{} {}", holder.first_name, holder.last_name),
    };
    json!({
        "accountHolder": account_holder,
        "iban": german_iban(&rng.digits(18)),
        "bic": bic,
        "bankName": bank_name,
        "hasAcceptedDirectDebit": !rng.percent(10),
    })
}

/// A German IBAN with correct ISO 13616 check digits, so a client that validates IBANs
/// accepts it.
fn german_iban(bban: &str) -> String {
    // Country code DE as digits (D=13, E=14) and check digits 00, moved behind the BBAN.
    let rearranged = format!("{bban}131400");
    let remainder = rearranged
        .bytes()
        .fold(0u32, |acc, digit| (acc * 10 + u32::from(digit - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - remainder)
}

/// 33 characters: "DE", a 11-digit network operator number, 20 alphanumerics.
fn melo_identifier(rng: &mut Prng) -> String {
    const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let tail: String = (0..20)
        .map(|_| char::from(rng.pick(ALPHANUMERIC)))
        .collect();
    format!("DE{}{tail}", rng.digits(11))
}

/// 11 digits, the last a check digit over the first ten (odd positions once, even twice).
fn malo_identifier(rng: &mut Prng) -> String {
    let body = format!("{}{}", rng.between(1, 9), rng.digits(9));
    let sum: u32 = body
        .bytes()
        .enumerate()
        .map(|(position, digit)| {
            let value = u32::from(digit - b'0');
            if position % 2 == 0 { value } else { 2 * value }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::tests::{started, token};
    use crate::{Sandbox, SandboxOptions};

    async fn get(
        client: &reqwest::Client,
        url: &str,
        token: &str,
        query: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let response = client
            .get(url)
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    async fn token_answer(sandbox: &Sandbox, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(sandbox.rabot_token_url())
            .form(form)
            .send()
            .await
            .expect("token request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    fn scoped_form(scope: &str) -> [(&'static str, &str); 4] {
        [
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-secret"),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ]
    }

    /// Every page of a list endpoint, following `hasMoreItems`.
    async fn all_pages(
        client: &reqwest::Client,
        url: &str,
        token: &str,
        limit: usize,
    ) -> Vec<Value> {
        let mut items = Vec::new();
        loop {
            let offset = items.len().to_string();
            let limit = limit.to_string();
            let (status, page) = get(
                client,
                url,
                token,
                &[("offset", &offset), ("limit", &limit)],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let data = page["data"].as_array().expect("data array");
            assert_eq!(page["count"], data.len());
            items.extend(data.iter().cloned());
            if page["hasMoreItems"] == false {
                return items;
            }
        }
    }

    #[tokio::test]
    async fn token_pagination_and_external_id_filter() {
        let sandbox = started(SandboxOptions {
            customers: 23,
            heavy_customer_every: 5,
            heavy_contracts: 25,
            ..SandboxOptions::default()
        })
        .await;
        let client = reqwest::Client::new();

        let (status, answer) =
            token_answer(&sandbox, &scoped_form("api:partner role:finance-reporting")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 3599);
        assert_eq!(answer["scope"], "api:partner role:finance-reporting");
        let token = answer["access_token"].as_str().expect("token");
        assert!(token.len() >= 32);

        let customers_url = format!("{}/customers", sandbox.rabot_api_base_url());
        let (_, first_page) = get(&client, &customers_url, token, &[]).await;
        assert_eq!(
            (
                &first_page["isSuccess"],
                &first_page["message"],
                &first_page["error"],
                &first_page["refUri"]
            ),
            (&json!(true), &Value::Null, &Value::Null, &Value::Null)
        );
        assert_eq!(
            (first_page["count"].as_u64(), &first_page["hasMoreItems"]),
            (Some(10), &json!(true))
        );

        let customers = all_pages(&client, &customers_url, token, 7).await;
        let listed: Vec<&str> = customers
            .iter()
            .filter_map(|c| c["customerNumber"].as_str())
            .collect();
        assert_eq!(listed, sandbox.customer_numbers());

        // Customer 5 is heavy: 25 contracts over three pages of ten.
        let heavy = &sandbox.customer_numbers()[4];
        let contracts_url = format!("{customers_url}/{heavy}/contracts");
        let contracts = all_pages(&client, &contracts_url, token, 10).await;
        let numbers: Vec<&str> = contracts
            .iter()
            .filter_map(|c| c["contractNumber"].as_str())
            .collect();
        assert_eq!(numbers.len(), 25);
        assert_eq!(numbers, sandbox.contract_numbers(heavy));

        let mut by_external_id: HashMap<String, Vec<String>> = HashMap::new();
        for number in sandbox.customer_numbers() {
            if let Some(external) = sandbox.external_id_of(&number) {
                by_external_id.entry(external).or_default().push(number);
            }
        }
        let (shared_id, owners) = by_external_id
            .iter()
            .find(|(_, owners)| owners.len() == 2)
            .expect("some customers share an external id");
        let (_, filtered) = get(
            &client,
            &customers_url,
            token,
            &[("filter.externalId", shared_id)],
        )
        .await;
        let matched: Vec<&str> = filtered["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|c| c["customerNumber"].as_str())
            .collect();
        assert_eq!(&matched, owners);
        let (_, narrowed) = get(
            &client,
            &customers_url,
            token,
            &[
                ("filter.externalId", shared_id),
                ("offset", "1"),
                ("limit", "1"),
            ],
        )
        .await;
        assert_eq!(
            (narrowed["count"].as_u64(), &narrowed["hasMoreItems"]),
            (Some(1), &json!(false))
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_same_seed_serves_the_same_bytes() {
        async fn everything(options: SandboxOptions) -> Vec<u8> {
            let sandbox = started(options).await;
            let client = reqwest::Client::new();
            let token = token(&client, &sandbox).await;
            let base = sandbox.rabot_api_base_url();
            let mut urls = vec![format!("{base}/customers?limit=1000")];
            urls.extend(
                sandbox
                    .customer_numbers()
                    .iter()
                    .map(|number| format!("{base}/customers/{number}/contracts?limit=1000")),
            );
            let mut bytes = Vec::new();
            for url in urls {
                let response = client
                    .get(url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("request");
                bytes.extend_from_slice(&response.bytes().await.expect("body"));
            }
            sandbox.shutdown().await;
            bytes
        }
        let options = SandboxOptions {
            customers: 12,
            ..SandboxOptions::default()
        };
        let first = everything(options.clone()).await;
        assert_eq!(first, everything(options.clone()).await);
        let reseeded = SandboxOptions { seed: 7, ..options };
        assert_ne!(first, everything(reseeded).await);
    }

    #[tokio::test]
    async fn revoked_tokens_answer_401_and_new_ones_work() {
        let sandbox = started(SandboxOptions {
            customers: 3,
            ..SandboxOptions::default()
        })
        .await;
        let client = reqwest::Client::new();
        let url = format!("{}/customers", sandbox.rabot_api_base_url());
        let old = token(&client, &sandbox).await;
        assert_eq!(get(&client, &url, &old, &[]).await.0, StatusCode::OK);

        sandbox.revoke_all_tokens();
        let response = client
            .get(&url)
            .bearer_auth(&old)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        let body: Value = response.json().await.expect("envelope");
        assert_eq!(
            (&body["isSuccess"], &body["error"][0]["code"]),
            (&json!(false), &json!("unauthorized"))
        );

        let fresh = token(&client, &sandbox).await;
        assert_eq!(get(&client, &url, &fresh, &[]).await.0, StatusCode::OK);
        assert_eq!(sandbox.issued_tokens(), vec![old, fresh]);
        assert_eq!(sandbox.stats().unauthorized, 1);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_token_requests_get_oauth_errors() {
        let sandbox = started(SandboxOptions {
            customers: 1,
            ..SandboxOptions::default()
        })
        .await;
        let wrong_secret = [
            ("client_id", "sandbox-client"),
            ("client_secret", "nope"),
            ("grant_type", "client_credentials"),
        ];
        let wrong_grant = [
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-secret"),
            ("grant_type", "password"),
        ];
        let ungranted_scope = scoped_form("api:partner role:application");
        let cases = [
            (
                &wrong_secret[..],
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            ),
            (
                &wrong_grant,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
            ),
            (&ungranted_scope, StatusCode::BAD_REQUEST, "invalid_scope"),
        ];
        for (form, status, error) in cases {
            let answer = token_answer(&sandbox, form).await;
            assert_eq!((answer.0, &answer.1["error"]), (status, &json!(error)));
        }
        let as_json = reqwest::Client::new()
            .post(sandbox.rabot_token_url())
            .json(&json!({ "client_id": "sandbox-client" }))
            .send()
            .await
            .expect("request");
        assert_eq!(as_json.status(), StatusCode::BAD_REQUEST);

        let stats = sandbox.stats();
        assert_eq!((stats.token_requests, stats.tokens_issued), (4, 0));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn validation_scope_and_lookup_errors_use_the_envelope() {
        let sandbox = started(SandboxOptions {
            customers: 8,
            ..SandboxOptions::default()
        })
        .await;
        let client = reqwest::Client::new();
        let base = sandbox.rabot_api_base_url();
        let customers_url = format!("{base}/customers");
        let numbers = sandbox.customer_numbers();
        let full = token(&client, &sandbox).await;

        for query in [
            [("limit", "0")],
            [("limit", "1001")],
            [("limit", "ten")],
            [("offset", "-1")],
        ] {
            let (status, body) = get(&client, &customers_url, &full, &query).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}");
            assert_eq!(body["error"][0]["code"], "validation-failed");
            assert_eq!(body["data"], Value::Null);
        }
        let (status, body) = get(
            &client,
            &format!("{customers_url}/00000000/contracts"),
            &full,
            &[],
        )
        .await;
        assert_eq!(
            (status, &body["isSuccess"]),
            (StatusCode::NOT_FOUND, &json!(false))
        );

        // Without a role only a linked customer's contracts are readable (customer 7 is linked).
        let (_, answer) = token_answer(&sandbox, &scoped_form("api:partner")).await;
        let partner_only = answer["access_token"].as_str().expect("token");
        let owned = format!("{customers_url}/{}/contracts", numbers[0]);
        let (status, body) = get(&client, &owned, partner_only, &[]).await;
        assert_eq!(
            (status, &body["error"][0]["code"]),
            (StatusCode::FORBIDDEN, &json!("insufficient-scope"))
        );
        let linked = format!("{customers_url}/{}/contracts", numbers[6]);
        assert_eq!(
            get(&client, &linked, partner_only, &[]).await.0,
            StatusCode::OK
        );

        let (_, answer) = token_answer(&sandbox, &scoped_form("role:finance-reporting")).await;
        let role_only = answer["access_token"].as_str().expect("token");
        assert_eq!(
            get(&client, &customers_url, role_only, &[]).await.0,
            StatusCode::FORBIDDEN
        );

        let (status, body) = get(&client, &format!("{base}/tariffs"), &full, &[]).await;
        assert_eq!(
            (status, &body["isSuccess"]),
            (StatusCode::NOT_FOUND, &json!(false))
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn mutations_show_in_the_next_answer() {
        let sandbox = started(SandboxOptions {
            customers: 3,
            ..SandboxOptions::default()
        })
        .await;
        let client = reqwest::Client::new();
        let token = token(&client, &sandbox).await;
        let numbers = sandbox.customer_numbers();
        let contracts = sandbox.contract_numbers(&numbers[0]);
        let url = format!(
            "{}/customers/{}/contracts",
            sandbox.rabot_api_base_url(),
            numbers[0]
        );

        assert!(
            sandbox.update_contract(&numbers[0], &contracts[0], |contract| {
                contract["tariffName"] = json!("Edited");
            })
        );
        assert!(sandbox.remove_contract(&numbers[0], &contracts[1]));
        assert!(!sandbox.remove_contract(&numbers[0], &contracts[1]));
        let (_, page) = get(&client, &url, &token, &[]).await;
        assert_eq!(page["count"], 1);
        assert_eq!(page["data"][0]["tariffName"], "Edited");

        assert!(sandbox.remove_customer(&numbers[0]));
        assert_eq!(sandbox.customer_numbers(), numbers[1..]);
        assert_eq!(
            get(&client, &url, &token, &[]).await.0,
            StatusCode::NOT_FOUND
        );
        sandbox.shutdown().await;
    }

    #[test]
    fn generated_data_has_the_documented_shape() {
        let (customers, _) = generate_customers(&SandboxOptions {
            customers: 300,
            heavy_customer_every: 0,
            ..SandboxOptions::default()
        });
        let contract_fields = [
            "contractNumber",
            "tariffName",
            "contractState",
            "name",
            "deliveryAddress",
            "billingAddress",
            "bankDetail",
            "meterNumber",
            "meLoIdentifier",
            "maLoIdentifier",
            "actualDateOfDelivery",
            "endDateOfDelivery",
            "cancellationPeriod",
            "cancellationPeriodUnit",
            "durationPeriod",
            "durationPeriodUnit",
            "renewalPeriod",
            "renewalPeriodUnit",
            "expectedAnnualConsumptionInKwhPerYear",
            "accountingMethod",
            "distributionSystemOperatorCode",
            "distributionSystemOperatorName",
            "previousSupplierCode",
            "previousSupplierName",
            "paragraph14AInfo",
        ];
        let mut customer_numbers = HashSet::new();
        let mut contract_numbers = HashSet::new();
        let mut states = HashSet::new();
        let mut null_emails = 0;
        for customer in &customers {
            assert!(
                customer.number.len() == 8 && customer.number.bytes().all(|b| b.is_ascii_digit())
            );
            assert!(customer_numbers.insert(customer.number.clone()));
            null_emails += usize::from(customer.record["emailAddress"].is_null());
            assert_eq!(customer.contracts.len(), 2);
            for contract in &customer.contracts {
                for field in contract_fields {
                    assert!(contract.get(field).is_some(), "{field} missing");
                }
                assert!(contract_numbers.insert(contract["contractNumber"].to_string()));
                let malo = contract["maLoIdentifier"].as_str().expect("MaLo");
                assert!(malo.len() == 11 && malo.bytes().all(|b| b.is_ascii_digit()));
                let iban = contract["bankDetail"]["iban"].as_str().unwrap_or("DE");
                assert!(iban.starts_with("DE"));
                states.insert(
                    contract["contractState"]
                        .as_str()
                        .expect("state")
                        .to_owned(),
                );
            }
        }
        assert!(null_emails > 0 && null_emails < customers.len() / 4);
        for state in ["Delivery", "PendingDelivery", "Cancelled", "Open"] {
            assert!(states.contains(state), "{state} never generated");
        }
    }

    #[test]
    fn generated_ibans_pass_the_mod_97_check() {
        // The worked example of ISO 13616 for Germany.
        assert_eq!(german_iban("370400440532013000"), "DE89370400440532013000");
    }
}
