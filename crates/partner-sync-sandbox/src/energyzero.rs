//! EnergyZero's identity provider (partner token, impersonation) and its GraphQL customer API,
//! as EnergyZero's partner documentation, its example partner-auth request (a `curl --form`)
//! and the GraphQL schema agreed with the client describe them.
//!
//! The partner authenticates with client credentials sent as form fields (urlencoded or
//! multipart, as that example curl does) and gets a short-lived JWT in the `Authorization`
//! response header. With it the partner impersonates one of its users, and the user's JWT
//! reads that user's data from the customer API. The API is real GraphQL (async-graphql's
//! dynamic schema), so parsing, validation, variables, aliases and fragments behave as a
//! client will meet them; the data stays plain JSON written from the documented field names,
//! which is also what the test handles edit.
//!
//! Nothing here is borrowed from the client in src/partners, so the integration tests check the
//! client against the docs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_graphql::ErrorExtensions as _;
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Schema, TypeRef,
};
use axum::body::Bytes;
use axum::extract::{FromRequest as _, Multipart, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use rand::RngCore as _;
use serde_json::{Value, json};

use super::{
    Endpoint, EnergyzeroOptions, OAuthError, PartnerPaths, Prng, Shared, TokenStore, add_months,
    bearer_token, collect_unique_fields, date, has_media_type, is_form, last_day_of, lock,
    oauth_error_code, timestamp, unique_fields, unix_now,
};

pub(super) const AUTH_BASE_PATH: &str = "/energyzero/auth";
const TOKEN_PATH: &str = "/energyzero/auth/oauth2/token";
const IMPERSONATE_PATH: &str = "/energyzero/auth/v1/auth/impersonate";
pub(super) const CUSTOMER_API_PATH: &str = "/energyzero/customer";
const PREFIX: &str = "/energyzero";

/// The one scope set a partner is granted, space separated as EnergyZero's example request
/// sends it.
const GRANTED_SCOPE: &str = "openid offline";
const TOKEN_CHALLENGE: &str = r#"Bearer error="invalid_token""#;

/// Users 3, 6, 9, ... are heavy; the others have `ORDINARY_CONTRACTS` contracts.
const HEAVY_EVERY: usize = 3;
const ORDINARY_CONTRACTS: usize = 2;
/// Everything is generated up front, so the sizes are bounded to keep memory sane.
const MAX_USERS: usize = 100_000;
const MAX_CONTRACTS: usize = 1_000_000;
/// Contracts a page holds when the query gives no `first`.
const DEFAULT_PAGE_SIZE: i64 = 10;

/// Keeps EnergyZero's PRNG streams apart from RABOT's, which use the low 52 bits.
const STREAM_TAG: u64 = 0xE2 << 56;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(TOKEN_PATH, post(issue_partner_token))
        .route(IMPERSONATE_PATH, get(impersonate))
        .route(CUSTOMER_API_PATH, post(customer_api))
}

/// Where this partner's paths lie, for the gate. Impersonation is part of the identity
/// provider, so it is neither the token endpoint nor the API: it answers OAuth-style errors.
pub(super) const PATHS: PartnerPaths = PartnerPaths {
    prefix: PREFIX,
    token: TOKEN_PATH,
    api_base: CUSTOMER_API_PATH,
    reject: rejection,
    count_request: Some(count_request),
};

fn count_request(shared: &Shared, endpoint: Endpoint) {
    let energyzero = &shared.energyzero;
    match endpoint {
        Endpoint::Token => energyzero.count(|stats| stats.partner_token_requests += 1),
        Endpoint::Api => energyzero.count(|stats| stats.graphql_requests += 1),
        Endpoint::Other => {}
    }
}

/// EnergyZero's answer when the gate (rate limit, injected fault, random error) or the fallback
/// answers in its place.
fn rejection(endpoint: Endpoint, status: StatusCode, message: &str) -> Response {
    match endpoint {
        Endpoint::Token => {
            OAuthError::new(status, oauth_error_code(status), message).into_response()
        }
        Endpoint::Other => {
            let error = match status {
                StatusCode::UNAUTHORIZED => "invalid_token",
                StatusCode::FORBIDDEN => "insufficient_permissions",
                status => oauth_error_code(status),
            };
            OAuthError::new(status, error, message).into_response()
        }
        Endpoint::Api => {
            let code = match status {
                StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
                StatusCode::FORBIDDEN => "FORBIDDEN",
                StatusCode::NOT_FOUND => "NOT_FOUND",
                StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
                StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
                status if status.is_server_error() => "INTERNAL",
                _ => "BAD_REQUEST",
            };
            GraphqlFailure::new(status, code, message).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Error answers.

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

/// A customer-API answer that never reached GraphQL execution: a GraphQL `errors` body with a
/// non-200 status, as GraphQL servers answer when authentication or the HTTP request fails.
struct GraphqlFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl GraphqlFailure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "unauthenticated",
        )
    }
}

impl IntoResponse for GraphqlFailure {
    fn into_response(self) -> Response {
        let body = json!({
            "errors": [{ "message": self.message, "extensions": { "code": self.code } }],
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(TOKEN_CHALLENGE),
            );
        }
        response
    }
}

/// A GraphQL error with `extensions.code`, as the customer API words a failed field.
fn coded_error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, extensions| extensions.set("code", code))
}

// ---------------------------------------------------------------------------------------------
// The identity provider.

async fn issue_partner_token(
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

async fn impersonate(
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

// ---------------------------------------------------------------------------------------------
// The customer API.

async fn customer_api(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (response, failed) = match run_query(&shared, &headers, &body).await {
        Ok(answer) => {
            let failed = !answer.errors.is_empty();
            (Json(answer).into_response(), failed)
        }
        Err(failure) => (failure.into_response(), true),
    };
    if failed {
        shared.energyzero.count(|stats| stats.graphql_errors += 1);
    }
    response
}

/// Who the query runs as, for the `me` resolver.
struct Viewer(String);

async fn run_query(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<async_graphql::Response, GraphqlFailure> {
    let energyzero = &shared.energyzero;
    let Some(TokenHolder::User(user_id)) =
        bearer_token(headers).and_then(|token| energyzero.tokens.grant_of(token))
    else {
        return Err(GraphqlFailure::unauthenticated());
    };
    if !has_media_type(headers, "application/json") {
        return Err(GraphqlFailure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_REQUEST",
            "Send the query as application/json.",
        ));
    }
    let request: async_graphql::Request = serde_json::from_slice(body).map_err(|error| {
        GraphqlFailure::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("The body is not a GraphQL request: {error}"),
        )
    })?;
    let request = request.data(Arc::clone(shared)).data(Viewer(user_id));
    Ok(energyzero.schema.execute(request).await)
}

/// The schema of the contract, field by field; each object's fields read its JSON by name.
const USER_FIELDS: &[(&str, &str)] = &[
    ("id", "ID!"),
    ("customerNumber", "String"),
    ("email", "String"),
    ("firstName", "String"),
    ("middleName", "String"),
    ("surname", "String"),
    ("phoneNumber", "String"),
    ("birthDate", "String"),
    ("vendor", "String"),
];
const CONNECTION_FIELDS: &[(&str, &str)] = &[
    ("edges", "[ContractEdge!]!"),
    ("pageInfo", "PageInfo!"),
    ("totalCount", "Int!"),
];
const EDGE_FIELDS: &[(&str, &str)] = &[("cursor", "String!"), ("node", "Contract!")];
const PAGE_INFO_FIELDS: &[(&str, &str)] = &[("hasNextPage", "Boolean!"), ("endCursor", "String")];
const CONTRACT_FIELDS: &[(&str, &str)] = &[
    ("id", "ID!"),
    ("acceptedAt", "String"),
    ("consumerType", "String"),
    ("company", "String"),
    ("energyContractType", "String"),
    ("phase", "ContractPhase"),
    ("startDate", "String"),
    ("originalStartDate", "String"),
    ("endDate", "String"),
    ("deliveryStoppedDate", "String"),
    ("duration", "Int"),
    ("paymentMethod", "String"),
    ("hasGas", "Boolean"),
    ("hasElectricity", "Boolean"),
    ("hasProduction", "Boolean"),
    ("totalYearlyUsage", "Float"),
    ("deliveryAddress", "Address"),
    ("billingAddress", "Address"),
];
const ADDRESS_FIELDS: &[(&str, &str)] = &[
    ("street", "String"),
    ("houseNumber", "Int"),
    ("houseNumberAddition", "String"),
    ("zipCode", "String"),
    ("city", "String"),
    ("country", "String"),
];
const CONTRACT_PHASES: [&str; 14] = [
    "USER_INPUT",
    "USER_AGREEMENT",
    "METERING_POINTS_CHECKED",
    "DATE_CHECKED",
    "SMART_METER_CHECKED",
    "USAGE_CHECKED",
    "SMART_METER_FOUND",
    "FIRST_INVOICE_SEND",
    "FIRST_PAYMENT_DONE",
    "DELIVERY_PLANNED",
    "DELIVERY_STARTED",
    "DELIVERY_FAILED",
    "DELIVERY_STOPPED",
    "NEVER_DELIVERED",
];
/// The object types; every other named type is a scalar or the phase enum.
const OBJECT_TYPES: [&str; 6] = [
    "User",
    "ContractConnection",
    "ContractEdge",
    "PageInfo",
    "Contract",
    "Address",
];
/// Where the `me` resolver puts the user's contracts for the `contracts` resolver to page.
const CONTRACTS_KEY: &str = "contracts";

fn customer_schema() -> anyhow::Result<Schema> {
    let query = Object::new("Query").field(Field::new("me", TypeRef::named("User"), resolve_me));
    let contracts = Field::new(
        "contracts",
        TypeRef::named_nn("ContractConnection"),
        resolve_contracts,
    )
    .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
    .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)));
    Schema::build("Query", None, None)
        .register(query)
        .register(json_object("User", USER_FIELDS).field(contracts))
        .register(json_object("ContractConnection", CONNECTION_FIELDS))
        .register(json_object("ContractEdge", EDGE_FIELDS))
        .register(json_object("PageInfo", PAGE_INFO_FIELDS))
        .register(json_object("Contract", CONTRACT_FIELDS))
        .register(json_object("Address", ADDRESS_FIELDS))
        .register(Enum::new("ContractPhase").items(CONTRACT_PHASES))
        .finish()
        .context("building the EnergyZero GraphQL schema")
}

/// An object type whose value is a JSON object and whose fields read it by name.
fn json_object(name: &str, fields: &[(&'static str, &str)]) -> Object {
    fields
        .iter()
        .fold(Object::new(name), |object, &(field, sdl_type)| {
            object.field(json_field(field, type_ref(sdl_type)))
        })
}

fn json_field(name: &'static str, ty: TypeRef) -> Field {
    Field::new(name, ty.clone(), move |ctx| {
        let ty = ty.clone();
        FieldFuture::new(async move {
            let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
            output(parent.get(name).unwrap_or(&Value::Null), &ty)
        })
    })
}

/// A type written as in SDL ("[ContractEdge!]!") as a type reference.
fn type_ref(sdl: &str) -> TypeRef {
    if let Some(inner) = sdl.strip_suffix('!') {
        TypeRef::NonNull(Box::new(type_ref(inner)))
    } else if let Some(item) = sdl
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        TypeRef::List(Box::new(type_ref(item)))
    } else {
        TypeRef::named(sdl.to_owned())
    }
}

/// JSON as a field's output: objects travel on as JSON for their own fields to read, leaves
/// become GraphQL values, which async-graphql then checks against the scalar or enum type. A
/// null for a non-null type is left for async-graphql to report.
fn output<'a>(value: &Value, ty: &TypeRef) -> async_graphql::Result<Option<FieldValue<'a>>> {
    match ty {
        TypeRef::NonNull(inner) => output(value, inner),
        _ if value.is_null() => Ok(None),
        TypeRef::List(item_type) => {
            let Value::Array(items) = value else {
                return Err(coded_error("INTERNAL", "A list field holds no list."));
            };
            let items = items
                .iter()
                .map(|item| Ok(output(item, item_type)?.unwrap_or(FieldValue::NULL)))
                .collect::<async_graphql::Result<Vec<_>>>()?;
            Ok(Some(FieldValue::list(items)))
        }
        TypeRef::Named(name) if OBJECT_TYPES.contains(&name.as_ref()) => {
            Ok(Some(FieldValue::owned_any(value.clone())))
        }
        TypeRef::Named(_) => Ok(Some(FieldValue::value(async_graphql::Value::from_json(
            value.clone(),
        )?))),
    }
}

fn resolve_me(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let shared = ctx.data::<Arc<Shared>>()?;
        let Viewer(user_id) = ctx.data::<Viewer>()?;
        match shared.energyzero.me(user_id) {
            Ok(user) => Ok(Some(FieldValue::owned_any(user))),
            Err(error) => {
                null_with_error(&ctx, error);
                Ok(None)
            }
        }
    })
}

/// Records `error` at the field `ctx` resolves, for a nullable field that then answers null.
/// GraphQL nulls only the failed field (`{"data": {"me": null}, "errors": [...]}`), but
/// async-graphql 7.0's dynamic schema lets a resolver's `Err` null the whole `data`, so a
/// nullable field reports its own errors.
fn null_with_error(ctx: &ResolverContext<'_>, error: async_graphql::Error) {
    let error = error.into_server_error(ctx.item.pos);
    ctx.add_error(ctx.set_error_path(error));
}

fn resolve_contracts(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let user = ctx.parent_value.try_downcast_ref::<Value>()?;
        let contracts = user
            .get(CONTRACTS_KEY)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let first = match ctx.args.get("first") {
            Some(first) if !first.is_null() => first.i64()?,
            _ => DEFAULT_PAGE_SIZE,
        };
        let first = usize::try_from(first)
            .map_err(|_| coded_error("BAD_USER_INPUT", "first must not be negative."))?;
        let after = match ctx.args.get("after") {
            Some(after) if !after.is_null() => Some(after.string()?),
            _ => None,
        };
        let page_cap = ctx.data::<Arc<Shared>>()?.energyzero.page_cap;
        let page = contract_page(contracts, first.min(page_cap), after)?;
        Ok(Some(FieldValue::owned_any(page)))
    })
}

/// One Relay page of `contracts`: up to `size` after the one `after` points at.
fn contract_page(
    contracts: &[Value],
    size: usize,
    after: Option<&str>,
) -> async_graphql::Result<Value> {
    let start = match after {
        None => 0,
        Some(cursor) => {
            let position = cursor_contract_id(cursor).and_then(|id| {
                contracts
                    .iter()
                    .position(|contract| contract_id(contract) == Some(id.as_str()))
            });
            let Some(position) = position else {
                return Err(coded_error(
                    "BAD_USER_INPUT",
                    format!("Cursor {cursor:?} does not point at one of your contracts."),
                ));
            };
            position + 1
        }
    };
    let end = start.saturating_add(size).min(contracts.len());
    let edges: Vec<Value> = contracts
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|contract| json!({ "cursor": cursor_of(contract), "node": contract }))
        .collect();
    let end_cursor = edges.last().map(|edge| edge["cursor"].clone());
    Ok(json!({
        "edges": edges,
        "pageInfo": { "hasNextPage": end < contracts.len(), "endCursor": end_cursor },
        "totalCount": contracts.len(),
    }))
}

fn contract_id(contract: &Value) -> Option<&str> {
    contract["id"].as_str()
}

/// Opaque to the client, but keyed by the contract id rather than a position, so a removed
/// contract makes its cursor fail instead of silently shifting the next page.
fn cursor_of(contract: &Value) -> String {
    let id = contract_id(contract).unwrap_or_default();
    BASE64URL.encode(format!("contract:{id}"))
}

fn cursor_contract_id(cursor: &str) -> Option<String> {
    let decoded = String::from_utf8(BASE64URL.decode(cursor).ok()?).ok()?;
    decoded.strip_prefix("contract:").map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// The partner's state.

/// What EnergyZero has counted since it started; see `Sandbox::energyzero_stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyzeroStats {
    /// Every POST to the partner-token endpoint, any outcome (the gate's answers included).
    pub partner_token_requests: u64,
    /// Partner tokens issued.
    pub partner_tokens_issued: u64,
    /// User tokens issued by impersonation.
    pub impersonations: u64,
    /// Impersonations answered 400, 401 or 403.
    pub impersonations_refused: u64,
    /// Every request to the customer API, any outcome (the gate's answers included).
    pub graphql_requests: u64,
    /// Customer-API answers with `errors` (401s and bad requests included) from the API itself;
    /// the gate's answers are counted in `Sandbox::stats`.
    pub graphql_errors: u64,
}

/// Whom a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenHolder {
    Partner,
    User(String),
}

impl TokenHolder {
    /// The JWT's `typ` claim.
    fn kind(&self) -> &'static str {
        match self {
            Self::Partner => "partner",
            Self::User(_) => "user",
        }
    }
}

/// The simulated EnergyZero: its one partner client, the tokens it issued, the partner's users.
pub(super) struct Energyzero {
    client_id: String,
    client_secret: String,
    partner_token_lifetime: Duration,
    user_token_lifetime: Duration,
    page_cap: usize,
    token_body: bool,
    tokens: TokenStore<TokenHolder>,
    directory: Mutex<Directory>,
    schema: Schema,
    stats: Mutex<EnergyzeroStats>,
}

struct Directory {
    users: Vec<User>,
    /// Users the partner may not impersonate.
    forbidden: HashSet<String>,
    /// Users whose `me` fails with INTERNAL.
    failing: HashSet<String>,
}

struct User {
    id: String,
    /// The user's scalar fields exactly as the API serves them.
    record: Value,
    contracts: Vec<Value>,
}

impl Directory {
    fn user(&self, user_id: &str) -> Option<&User> {
        self.users.iter().find(|user| user.id == user_id)
    }

    fn user_mut(&mut self, user_id: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|user| user.id == user_id)
    }
}

impl User {
    fn contract_mut(&mut self, contract_id_wanted: &str) -> Option<&mut Value> {
        self.contracts
            .iter_mut()
            .find(|contract| contract_id(contract) == Some(contract_id_wanted))
    }
}

impl Energyzero {
    pub(super) fn new(options: &EnergyzeroOptions, seed: u64) -> anyhow::Result<Self> {
        if options.users > MAX_USERS {
            bail!(
                "the EnergyZero sandbox generates at most {MAX_USERS} users, {} were asked for",
                options.users
            );
        }
        let heavy_users = options.users / HEAVY_EVERY;
        let contracts = heavy_users
            .saturating_mul(options.heavy_contracts)
            .saturating_add((options.users - heavy_users).saturating_mul(ORDINARY_CONTRACTS));
        if contracts > MAX_CONTRACTS {
            bail!(
                "the EnergyZero sandbox generates at most {MAX_CONTRACTS} contracts, {contracts} were asked for"
            );
        }
        if options.page_cap == 0 {
            bail!("the EnergyZero sandbox page cap must be at least 1");
        }
        Ok(Self {
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            partner_token_lifetime: options.partner_token_lifetime,
            user_token_lifetime: options.user_token_lifetime,
            page_cap: options.page_cap,
            token_body: options.token_body,
            tokens: TokenStore::default(),
            directory: Mutex::new(Directory {
                users: generate_users(seed, options.users, options.heavy_contracts),
                forbidden: HashSet::new(),
                failing: HashSet::new(),
            }),
            schema: customer_schema()?,
            stats: Mutex::new(EnergyzeroStats::default()),
        })
    }

    fn count(&self, update: impl FnOnce(&mut EnergyzeroStats)) {
        update(&mut lock(&self.stats));
    }

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

    /// The user as `me` serves it, contracts included for the `contracts` field to page.
    fn me(&self, user_id: &str) -> async_graphql::Result<Value> {
        let directory = lock(&self.directory);
        if directory.failing.contains(user_id) {
            return Err(coded_error("INTERNAL", "Internal server error."));
        }
        let Some(user) = directory.user(user_id) else {
            return Err(coded_error(
                "NOT_FOUND",
                format!("User {user_id} was not found."),
            ));
        };
        let mut value = user.record.clone();
        // Records are generated as objects and no handle edits them, so this always matches.
        if let Value::Object(fields) = &mut value {
            fields.insert(
                CONTRACTS_KEY.to_owned(),
                Value::Array(user.contracts.clone()),
            );
        }
        Ok(value)
    }

    pub(super) fn user_ids(&self) -> Vec<String> {
        let directory = lock(&self.directory);
        directory.users.iter().map(|user| user.id.clone()).collect()
    }

    pub(super) fn contract_ids(&self, user_id: &str) -> Vec<String> {
        let directory = lock(&self.directory);
        directory
            .user(user_id)
            .map(|user| {
                user.contracts
                    .iter()
                    .filter_map(|contract| contract_id(contract).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn update_contract(
        &self,
        user_id: &str,
        contract_id_wanted: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let mut directory = lock(&self.directory);
        let contract = directory
            .user_mut(user_id)
            .and_then(|user| user.contract_mut(contract_id_wanted));
        match contract {
            Some(contract) => {
                edit(contract);
                true
            }
            None => false,
        }
    }

    pub(super) fn remove_contract(&self, user_id: &str, contract_id_wanted: &str) -> bool {
        let mut directory = lock(&self.directory);
        let Some(user) = directory.user_mut(user_id) else {
            return false;
        };
        let before = user.contracts.len();
        user.contracts
            .retain(|contract| contract_id(contract) != Some(contract_id_wanted));
        user.contracts.len() < before
    }

    pub(super) fn remove_user(&self, user_id: &str) -> bool {
        let mut directory = lock(&self.directory);
        let before = directory.users.len();
        directory.users.retain(|user| user.id != user_id);
        directory.users.len() < before
    }

    pub(super) fn forbid_impersonation(&self, user_id: &str) {
        lock(&self.directory).forbidden.insert(user_id.to_owned());
    }

    pub(super) fn fail_user(&self, user_id: &str) {
        lock(&self.directory).failing.insert(user_id.to_owned());
    }

    pub(super) fn stats(&self) -> EnergyzeroStats {
        lock(&self.stats).clone()
    }

    pub(super) fn issued_tokens(&self) -> Vec<String> {
        self.tokens.history()
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

// ---------------------------------------------------------------------------------------------
// Data generation, from `Prng` streams keyed by the seed and the user's (and contract's)
// position, so the same options give byte-identical answers.

/// The stream of one user (`slot` 0) or of its contract number `slot`.
fn stream(user_index: usize, slot: usize) -> u64 {
    STREAM_TAG | ((user_index as u64) << 24) | slot as u64
}

/// A UUID-shaped id (version 4 bits set) drawn from the stream.
fn uuid_from(rng: &mut Prng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

const FIRST_NAMES: [(&str, &str); 16] = [
    ("Daan", "daan"),
    ("Anouk", "anouk"),
    ("Zoë", "zoe"),
    ("Joëlle", "joelle"),
    ("Thijs", "thijs"),
    ("Sanne", "sanne"),
    ("Ruud", "ruud"),
    ("Fenna", "fenna"),
    ("Émile", "emile"),
    ("Ólafur", "olafur"),
    ("Iñaki", "inaki"),
    ("Şeyma", "seyma"),
    ("Mees", "mees"),
    ("Noor", "noor"),
    ("Björn", "bjorn"),
    ("Lotte", "lotte"),
];

/// Dutch surnames keep their prefix (tussenvoegsel) apart: it is the middleName.
const SURNAMES: [(&str, &str); 14] = [
    ("Jansen", "jansen"),
    ("Vries", "vries"),
    ("Berg", "berg"),
    ("Bakker", "bakker"),
    ("Visser", "visser"),
    ("Smit", "smit"),
    ("IJzerman", "ijzerman"),
    ("Dijkstra", "dijkstra"),
    ("Çelik", "celik"),
    ("Öztürk", "ozturk"),
    ("Nguyễn", "nguyen"),
    ("Đorđević", "djordjevic"),
    ("Mulder", "mulder"),
    ("Hoekstra", "hoekstra"),
];

const MIDDLE_NAMES: [&str; 5] = ["van", "de", "van der", "van den", "ter"];

const MAIL_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

const VENDORS: [&str; 4] = ["energyzero", "energyzero", "energyzero", "sandbox-label"];

const COMPANIES: [&str; 4] = [
    "Bakkerij van 't Hof B.V.",
    "Café De Gouden Leeuw",
    "Zonnepark Ëlst B.V.",
    "Ĳssalon Dolce V.O.F.",
];

const CITIES: [(&str, &str); 8] = [
    ("Amsterdam", "1015"),
    ("Rotterdam", "3011"),
    ("Utrecht", "3511"),
    ("Groningen", "9711"),
    ("'s-Hertogenbosch", "5211"),
    ("Leeuwarden", "8911"),
    ("Maastricht", "6211"),
    ("Zwolle", "8011"),
];

const STREETS: [&str; 6] = [
    "Keizersgracht",
    "Oudegracht",
    "Laan van Nieuw Oost-Indië",
    "Coolsingel",
    "Stationsplein",
    "Ĳsselkade",
];

fn generate_users(seed: u64, count: usize, heavy_contracts: usize) -> Vec<User> {
    (0..count)
        .map(|index| {
            let mut rng = Prng::new(seed, stream(index, 0));
            let id = uuid_from(&mut rng);
            let (first_name, first_ascii) = rng.pick(&FIRST_NAMES);
            let (surname, surname_ascii) = rng.pick(&SURNAMES);
            let middle_name = rng.percent(25).then(|| rng.pick(&MIDDLE_NAMES));
            let phone_number = (!rng.percent(30)).then(|| format!("+316{}", rng.digits(8)));
            let customer_number = rng.between(10_000_000, 99_999_999).to_string();
            let domain = rng.pick(&MAIL_DOMAINS);
            let email = format!("{first_ascii}.{surname_ascii}.{}@{domain}", index + 1);
            let birth_date = date(
                rng.between(1940, 2004),
                rng.between(1, 12),
                rng.between(1, 28),
            );
            let vendor = rng.pick(&VENDORS);
            let record = json!({
                "id": id,
                "customerNumber": customer_number,
                "email": email,
                "firstName": first_name,
                "middleName": middle_name,
                "surname": surname,
                "phoneNumber": phone_number,
                "birthDate": birth_date,
                "vendor": vendor,
            });
            let contract_count = if (index + 1) % HEAVY_EVERY == 0 {
                heavy_contracts
            } else {
                ORDINARY_CONTRACTS
            };
            let contracts = (0..contract_count)
                .map(|slot| generate_contract(seed, index, slot))
                .collect();
            User {
                id,
                record,
                contracts,
            }
        })
        .collect()
}

fn generate_contract(seed: u64, user_index: usize, slot: usize) -> Value {
    let mut rng = Prng::new(seed, stream(user_index, slot + 1));
    let id = uuid_from(&mut rng);
    let phase = match rng.below(100) {
        0..=49 => "DELIVERY_STARTED",
        50..=59 => "DELIVERY_STOPPED",
        60..=64 => "DELIVERY_FAILED",
        65..=69 => "NEVER_DELIVERED",
        _ => rng.pick(&CONTRACT_PHASES[..10]),
    };
    let company = rng.percent(15).then(|| rng.pick(&COMPANIES));
    let consumer_type = if company.is_some() {
        "BUSINESS"
    } else {
        "CONSUMER"
    };
    let contract_type = rng.pick(&["FIXED", "FIXED", "VARIABLE", "DYNAMIC"]);

    let start = (2021 + rng.below(5), 1 + rng.below(12));
    let start_date = date(start.0, start.1, 1);
    // A contract moved to another start keeps the first agreed date here.
    let original_start_date = if rng.percent(20) {
        date(start.0, start.1, rng.between(2, 28))
    } else {
        start_date.clone()
    };
    let duration = (contract_type == "FIXED").then(|| rng.pick(&[12, 24, 36]));
    let end_date = duration.map(|months| last_day_of(add_months(start, months - 1)));
    let delivery_stopped_date =
        (phase == "DELIVERY_STOPPED").then(|| last_day_of(add_months(start, rng.between(2, 30))));

    let has_electricity = !rng.percent(5);
    // Every contract delivers something: gas-only when electricity is missing.
    let has_gas = !has_electricity || rng.percent(60);
    let delivery_address = address(&mut rng);
    let billing_address = if rng.percent(80) {
        delivery_address.clone()
    } else {
        address(&mut rng)
    };
    let usage = f64::from(rng.between(900, 9500)) + f64::from(rng.below(10)) / 10.0;
    let accepted_at = timestamp(&mut rng, start.0.saturating_sub(1), start.0);
    let payment_method = if rng.percent(85) {
        "DIRECT_DEBIT"
    } else {
        "MANUAL"
    };
    let has_production = rng.percent(20);

    json!({
        "id": id,
        "acceptedAt": accepted_at,
        "consumerType": consumer_type,
        "company": company,
        "energyContractType": contract_type,
        "phase": phase,
        "startDate": start_date,
        "originalStartDate": original_start_date,
        "endDate": end_date,
        "deliveryStoppedDate": delivery_stopped_date,
        "duration": duration,
        "paymentMethod": payment_method,
        "hasGas": has_gas,
        "hasElectricity": has_electricity,
        "hasProduction": has_production,
        "totalYearlyUsage": usage,
        "deliveryAddress": delivery_address,
        "billingAddress": billing_address,
    })
}

fn address(rng: &mut Prng) -> Value {
    let (city, postcode_digits) = rng.pick(&CITIES);
    let letters: String = (0..2)
        .map(|_| char::from(rng.pick(b"ABCDEGHJKLMNPRSTVWXZ")))
        .collect();
    let addition = rng
        .percent(15)
        .then(|| rng.pick(&["A", "bis", "2-hoog", "III"]));
    json!({
        "street": rng.pick(&STREETS),
        "houseNumber": rng.between(1, 250),
        "houseNumberAddition": addition,
        "zipCode": format!("{postcode_digits} {letters}"),
        "city": city,
        "country": "NL",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::started;
    use crate::{Fault, Sandbox, SandboxOptions};

    const ME_QUERY: &str = "query Me($first: Int, $after: String) {
        me {
            id firstName middleName surname phoneNumber vendor
            contracts(first: $first, after: $after) {
                totalCount
                pageInfo { hasNextPage endCursor }
                edges { cursor node { ...contract } }
            }
        }
    }
    fragment contract on Contract {
        id phase endDate duration hasGas totalYearlyUsage
        deliveryAddress { street houseNumber houseNumberAddition zipCode city country }
    }";

    /// Default sandbox options with EnergyZero's edited.
    fn with_energyzero(edit: impl FnOnce(&mut EnergyzeroOptions)) -> SandboxOptions {
        let mut options = SandboxOptions {
            customers: 1,
            ..SandboxOptions::default()
        };
        edit(&mut options.energyzero);
        options
    }

    fn token_url(sandbox: &Sandbox) -> String {
        format!("{}/oauth2/token", sandbox.energyzero_auth_base_url())
    }

    fn credentials() -> Vec<(&'static str, &'static str)> {
        vec![
            ("grant_type", "client_credentials"),
            ("scope", "openid offline"),
            ("client_id", "sandbox-ez-client"),
            ("client_secret", "sandbox-ez-secret"),
        ]
    }

    /// The form with one field replaced, or removed when `value` is None.
    fn credentials_with(
        name: &str,
        value: Option<&'static str>,
    ) -> Vec<(&'static str, &'static str)> {
        credentials()
            .into_iter()
            .filter_map(|(field, old)| {
                if field == name {
                    value.map(|new| (field, new))
                } else {
                    Some((field, old))
                }
            })
            .collect()
    }

    async fn token_request(sandbox: &Sandbox, form: &[(&str, &str)]) -> reqwest::Response {
        reqwest::Client::new()
            .post(token_url(sandbox))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    /// The JWT from the `Authorization` response header.
    fn header_token(response: &reqwest::Response) -> String {
        let value = response.headers()[header::AUTHORIZATION]
            .to_str()
            .expect("ASCII header");
        value
            .strip_prefix("Bearer ")
            .expect("Bearer prefix")
            .to_owned()
    }

    async fn partner_token(sandbox: &Sandbox) -> String {
        let response = token_request(sandbox, &credentials()).await;
        assert_eq!(response.status(), StatusCode::OK);
        header_token(&response)
    }

    async fn impersonation(
        sandbox: &Sandbox,
        authorization: Option<&str>,
        user_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!(
            "{}/v1/auth/impersonate",
            sandbox.energyzero_auth_base_url()
        ));
        if let Some(user_id) = user_id {
            request = request.query(&[("user_id", user_id)]);
        }
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request.send().await.expect("impersonation request")
    }

    async fn user_token(sandbox: &Sandbox, user_id: &str) -> String {
        let partner = partner_token(sandbox).await;
        let response =
            impersonation(sandbox, Some(&format!("Bearer {partner}")), Some(user_id)).await;
        assert_eq!(response.status(), StatusCode::OK);
        header_token(&response)
    }

    async fn graphql(sandbox: &Sandbox, token: &str, body: Value) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(sandbox.energyzero_customer_api_url())
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("GraphQL request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// Every contract of the token's user, following `hasNextPage`/`endCursor`, asking for
    /// more than the cap allows.
    async fn all_contracts(sandbox: &Sandbox, token: &str) -> (Vec<Value>, usize) {
        let mut contracts = Vec::new();
        let mut after = Value::Null;
        let mut pages = 0;
        loop {
            let body = json!({ "query": ME_QUERY, "variables": { "first": 50, "after": after } });
            let (status, answer) = graphql(sandbox, token, body).await;
            assert_eq!(status, StatusCode::OK);
            assert!(answer.get("errors").is_none(), "{answer}");
            let connection = &answer["data"]["me"]["contracts"];
            let edges = connection["edges"].as_array().expect("edges");
            assert!(edges.len() <= 10, "the page cap holds");
            contracts.extend(edges.iter().map(|edge| edge["node"].clone()));
            pages += 1;
            if connection["pageInfo"]["hasNextPage"] == false {
                assert_eq!(connection["totalCount"], contracts.len());
                return (contracts, pages);
            }
            after = connection["pageInfo"]["endCursor"].clone();
        }
    }

    fn claims(jwt: &str) -> Value {
        let segments: Vec<&str> = jwt.split('.').collect();
        assert_eq!(segments.len(), 3, "header.payload.signature");
        let payload = BASE64URL.decode(segments[1]).expect("base64url payload");
        serde_json::from_slice(&payload).expect("JSON payload")
    }

    fn error_code(answer: &Value) -> &Value {
        &answer["errors"][0]["extensions"]["code"]
    }

    #[tokio::test]
    async fn partner_token_comes_in_the_authorization_header_from_a_form() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let response = token_request(&sandbox, &credentials()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let token = header_token(&response);
        assert_eq!(response.bytes().await.expect("body").len(), 0);

        let claims = claims(&token);
        assert_eq!(claims["sub"], "sandbox-ez-client");
        assert_eq!(claims["typ"], "partner");
        let issued_at = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["exp"].as_u64(), Some(issued_at + 300));
        // The scope may come in any order.
        let reordered = credentials_with("scope", Some("offline openid"));
        assert_eq!(
            token_request(&sandbox, &reordered).await.status(),
            StatusCode::OK
        );
        assert_eq!(sandbox.energyzero_issued_tokens().first(), Some(&token));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn partner_token_from_multipart_and_with_the_optional_body() {
        let sandbox = started(with_energyzero(|options| options.token_body = true)).await;
        // What EnergyZero's example `curl --form` sends.
        let boundary = "------------------------sandboxboundary";
        let mut body = String::new();
        for (name, value) in credentials() {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let response = reqwest::Client::new()
            .post(token_url(&sandbox))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), StatusCode::OK);
        let token = header_token(&response);
        let answer: Value = response.json().await.expect("JSON body");
        assert_eq!(answer["access_token"], token.as_str());
        assert_eq!(
            (
                &answer["expires_in"],
                &answer["token_type"],
                &answer["scope"]
            ),
            (&json!(299), &json!("bearer"), &json!("openid offline"))
        );

        let garbled = reqwest::Client::new()
            .post(token_url(&sandbox))
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
            .body("not multipart at all")
            .send()
            .await
            .expect("token request");
        assert_eq!(garbled.status(), StatusCode::BAD_REQUEST);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_token_requests_get_oauth_errors() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let cases = [
            (
                credentials_with("client_secret", Some("nope")),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            ),
            (
                credentials_with("client_id", Some("someone-else")),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            ),
            (
                credentials_with("grant_type", Some("password")),
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
            ),
            (
                credentials_with("grant_type", None),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                credentials_with("client_secret", None),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                credentials_with("scope", Some("openid offline admin")),
                StatusCode::BAD_REQUEST,
                "invalid_scope",
            ),
            (
                credentials_with("scope", Some("openid")),
                StatusCode::BAD_REQUEST,
                "invalid_scope",
            ),
        ];
        for (form, status, error) in cases {
            let response = token_request(&sandbox, &form).await;
            assert_eq!(response.status(), status, "{form:?}");
            assert!(response.headers().get(header::AUTHORIZATION).is_none());
            let body: Value = response.json().await.expect("JSON error");
            assert_eq!(body["error"], error, "{form:?}");
            assert!(body["error_description"].is_string());
        }
        let as_json = reqwest::Client::new()
            .post(token_url(&sandbox))
            .json(&json!({ "client_id": "sandbox-ez-client" }))
            .send()
            .await
            .expect("request");
        assert_eq!(as_json.status(), StatusCode::BAD_REQUEST);

        let stats = sandbox.energyzero_stats();
        assert_eq!(
            (stats.partner_token_requests, stats.partner_tokens_issued),
            (8, 0)
        );
        assert!(sandbox.energyzero_issued_tokens().is_empty());
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn impersonation_issues_user_tokens_and_refuses_what_it_must() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let users = sandbox.energyzero_user_ids();
        let partner = partner_token(&sandbox).await;
        let bearer = format!("Bearer {partner}");

        let response = impersonation(&sandbox, Some(&bearer), Some(&users[0])).await;
        assert_eq!(response.status(), StatusCode::OK);
        let token = header_token(&response);
        let answer: Value = response.json().await.expect("JSON body");
        assert_eq!(
            answer,
            json!({
                "access_token": token,
                "expires_in": 3599,
                "scope": "openid offline",
                "token_type": "bearer",
            })
        );
        let claims = claims(&token);
        assert_eq!(
            (&claims["sub"], &claims["typ"]),
            (&json!(users[0]), &json!("user"))
        );
        // The docs' curl sends the partner token without the scheme.
        let bare = impersonation(&sandbox, Some(&partner), Some(&users[1])).await;
        assert_eq!(bare.status(), StatusCode::OK);

        sandbox.energyzero_forbid_impersonation(&users[1]);
        let user_bearer = format!("Bearer {token}");
        let refusals = [
            (
                Some(bearer.as_str()),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                Some(bearer.as_str()),
                Some(""),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                None,
                Some(users[0].as_str()),
                StatusCode::UNAUTHORIZED,
                "invalid_token",
            ),
            (
                Some("Bearer forged"),
                Some(users[0].as_str()),
                StatusCode::UNAUTHORIZED,
                "invalid_token",
            ),
            (
                Some(user_bearer.as_str()),
                Some(users[0].as_str()),
                StatusCode::UNAUTHORIZED,
                "invalid_token",
            ),
            (
                Some(bearer.as_str()),
                Some("00000000-0000-4000-8000-000000000000"),
                StatusCode::FORBIDDEN,
                "insufficient_permissions",
            ),
            (
                Some(bearer.as_str()),
                Some(users[1].as_str()),
                StatusCode::FORBIDDEN,
                "insufficient_permissions",
            ),
        ];
        for (authorization, user_id, status, error) in refusals {
            let response = impersonation(&sandbox, authorization, user_id).await;
            assert_eq!(response.status(), status, "{authorization:?} {user_id:?}");
            let body: Value = response.json().await.expect("JSON error");
            assert_eq!(body["error"], error, "{authorization:?} {user_id:?}");
        }
        let missing = impersonation(&sandbox, Some(&bearer), None).await;
        let body: Value = missing.json().await.expect("JSON error");
        assert_eq!(body["error_description"], "user_id is required");

        let stats = sandbox.energyzero_stats();
        assert_eq!((stats.impersonations, stats.impersonations_refused), (2, 8));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn an_expired_partner_token_answers_401() {
        let sandbox = started(with_energyzero(|options| {
            options.partner_token_lifetime = Duration::from_secs(2);
        }))
        .await;
        let users = sandbox.energyzero_user_ids();
        let partner = partner_token(&sandbox).await;
        let claims = claims(&partner);
        assert_eq!(
            claims["exp"].as_u64(),
            claims["iat"].as_u64().map(|issued_at| issued_at + 2)
        );
        let bearer = format!("Bearer {partner}");
        assert_eq!(
            impersonation(&sandbox, Some(&bearer), Some(&users[0]))
                .await
                .status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let expired = impersonation(&sandbox, Some(&bearer), Some(&users[0])).await;
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            expired.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn me_pages_contracts_to_the_end_within_the_cap() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let users = sandbox.energyzero_user_ids();
        assert_eq!(users.len(), 6);
        // User 3 is heavy: 23 contracts, asked 50 at a time, served 10 at a time.
        let heavy = &users[2];
        let token = user_token(&sandbox, heavy).await;
        let (contracts, pages) = all_contracts(&sandbox, &token).await;
        assert_eq!(pages, 3);
        let ids: Vec<&str> = contracts.iter().filter_map(contract_id).collect();
        assert_eq!(ids, sandbox.energyzero_contract_ids(heavy));
        assert_eq!(ids.len(), 23);

        let (_, answer) = graphql(&sandbox, &token, json!({ "query": ME_QUERY })).await;
        let me = &answer["data"]["me"];
        assert_eq!(me["id"], heavy.as_str());
        assert_eq!(me["contracts"]["edges"].as_array().map(Vec::len), Some(10));
        let (_, answer) = graphql(
            &sandbox,
            &token,
            json!({ "query": "{ me { contracts(first: 4) { edges { node { id } } pageInfo { hasNextPage } } } }" }),
        )
        .await;
        let connection = &answer["data"]["me"]["contracts"];
        assert_eq!(connection["edges"].as_array().map(Vec::len), Some(4));
        assert_eq!(connection["pageInfo"]["hasNextPage"], true);

        let ordinary = user_token(&sandbox, &users[0]).await;
        let (contracts, pages) = all_contracts(&sandbox, &ordinary).await;
        assert_eq!((contracts.len(), pages), (2, 1));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn edits_and_removals_show_in_the_next_answer() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let user = sandbox.energyzero_user_ids()[0].clone();
        let contracts = sandbox.energyzero_contract_ids(&user);
        let token = user_token(&sandbox, &user).await;
        assert!(
            sandbox.energyzero_update_contract(&user, &contracts[0], |contract| {
                contract["phase"] = json!("DELIVERY_STOPPED");
            })
        );
        assert!(sandbox.energyzero_remove_contract(&user, &contracts[1]));
        assert!(!sandbox.energyzero_remove_contract(&user, &contracts[1]));
        let (listed, _) = all_contracts(&sandbox, &token).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["phase"], "DELIVERY_STOPPED");

        // A phase outside the enum is the server's fault, reported as a GraphQL error.
        assert!(
            sandbox.energyzero_update_contract(&user, &contracts[0], |contract| {
                contract["phase"] = json!("TELEPORTED");
            })
        );
        let (status, answer) = graphql(
            &sandbox,
            &token,
            json!({ "query": "{ me { contracts { edges { node { phase } } } } }" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer["errors"][0]["message"].is_string(), "{answer}");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_queries_and_cursors_answer_graphql_errors() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let user = sandbox.energyzero_user_ids()[0].clone();
        let token = user_token(&sandbox, &user).await;
        for query in ["{ me { id ", "{ me { salary } }", "{ you { id } }"] {
            let (status, answer) = graphql(&sandbox, &token, json!({ "query": query })).await;
            assert_eq!(status, StatusCode::OK, "{query}");
            assert_eq!(answer["data"], Value::Null, "{query}");
            assert!(answer["errors"][0]["message"].is_string(), "{query}");
        }
        let (_, answer) = graphql(
            &sandbox,
            &token,
            json!({ "query": ME_QUERY, "variables": { "after": "bm9uc2Vuc2U" } }),
        )
        .await;
        assert_eq!(error_code(&answer), "BAD_USER_INPUT");
        let (_, answer) = graphql(
            &sandbox,
            &token,
            json!({ "query": ME_QUERY, "variables": { "first": -1 } }),
        )
        .await;
        assert_eq!(error_code(&answer), "BAD_USER_INPUT");

        let not_json = reqwest::Client::new()
            .post(sandbox.energyzero_customer_api_url())
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body("{ me { id } }")
            .send()
            .await
            .expect("request");
        assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);

        let stats = sandbox.energyzero_stats();
        assert_eq!((stats.graphql_requests, stats.graphql_errors), (6, 6));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn removed_and_failing_users_answer_errors_under_me() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let users = sandbox.energyzero_user_ids();
        let removed = user_token(&sandbox, &users[0]).await;
        let failing = user_token(&sandbox, &users[1]).await;
        assert!(sandbox.energyzero_remove_user(&users[0]));
        assert!(!sandbox.energyzero_remove_user(&users[0]));
        assert_eq!(sandbox.energyzero_user_ids(), users[1..]);
        sandbox.energyzero_fail_user(&users[1]);

        for (token, code) in [(&removed, "NOT_FOUND"), (&failing, "INTERNAL")] {
            let (status, answer) = graphql(&sandbox, token, json!({ "query": ME_QUERY })).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(answer["data"], json!({ "me": null }), "{answer}");
            assert_eq!(error_code(&answer), code);
            assert_eq!(answer["errors"][0]["path"], json!(["me"]));
        }
        // The removed user can no longer be impersonated.
        let partner = partner_token(&sandbox).await;
        let response = impersonation(&sandbox, Some(&partner), Some(&users[0])).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_customer_api_wants_a_user_token() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let partner = partner_token(&sandbox).await;
        for token in [partner.as_str(), "forged"] {
            let (status, answer) =
                graphql(&sandbox, token, json!({ "query": "{ me { id } }" })).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                answer,
                json!({ "errors": [{ "message": "unauthenticated", "extensions": { "code": "UNAUTHENTICATED" } }] })
            );
        }
        let anonymous = reqwest::Client::new()
            .post(sandbox.energyzero_customer_api_url())
            .json(&json!({ "query": "{ me { id } }" }))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_gate_answers_in_energyzero_shapes() {
        let sandbox = started(with_energyzero(|_| {})).await;
        let user = sandbox.energyzero_user_ids()[0].clone();
        let token = user_token(&sandbox, &user).await;
        sandbox.inject_fault(Fault {
            path_contains: "/energyzero/auth/oauth2/token".to_owned(),
            status: 503,
            retry_after: Some("2".to_owned()),
            times: 1,
        });
        sandbox.inject_fault(Fault {
            path_contains: "/energyzero/auth/v1".to_owned(),
            status: 500,
            retry_after: None,
            times: 1,
        });
        sandbox.inject_fault(Fault {
            path_contains: "/energyzero/customer".to_owned(),
            status: 429,
            retry_after: Some("1".to_owned()),
            times: 1,
        });

        let response = token_request(&sandbox, &credentials()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "temporarily_unavailable");

        let partner = partner_token(&sandbox).await;
        let response = impersonation(&sandbox, Some(&partner), Some(&user)).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "server_error");

        let (status, answer) = graphql(&sandbox, &token, json!({ "query": "{ me { id } }" })).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error_code(&answer), "RATE_LIMITED");
        let (status, answer) = graphql(&sandbox, &token, json!({ "query": "{ me { id } }" })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["data"]["me"]["id"], user.as_str());

        let stats = sandbox.energyzero_stats();
        // user_token's partner token, the faulted one and the retry; two GraphQL requests.
        assert_eq!(
            (stats.partner_token_requests, stats.partner_tokens_issued),
            (3, 2)
        );
        assert_eq!((stats.graphql_requests, stats.graphql_errors), (2, 0));
        assert_eq!(sandbox.stats().injected_faults, 3);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_same_seed_serves_the_same_bytes() {
        async fn everything(options: SandboxOptions) -> Vec<u8> {
            let sandbox = started(options).await;
            let mut bytes = Vec::new();
            for user in sandbox.energyzero_user_ids() {
                let token = user_token(&sandbox, &user).await;
                let response = reqwest::Client::new()
                    .post(sandbox.energyzero_customer_api_url())
                    .bearer_auth(&token)
                    .json(&json!({
                        "query": ME_QUERY.replace("id phase", "id acceptedAt consumerType company energyContractType phase startDate originalStartDate deliveryStoppedDate paymentMethod hasElectricity hasProduction billingAddress { zipCode }"),
                        "variables": { "first": 10 },
                    }))
                    .send()
                    .await
                    .expect("request");
                bytes.extend_from_slice(&response.bytes().await.expect("body"));
            }
            sandbox.shutdown().await;
            bytes
        }
        let options = with_energyzero(|_| {});
        let first = everything(options.clone()).await;
        assert!(first.len() > 1000);
        assert_eq!(first, everything(options.clone()).await);
        let reseeded = SandboxOptions { seed: 7, ..options };
        assert_ne!(first, everything(reseeded).await);
    }

    #[test]
    fn generated_data_has_the_documented_shape() {
        let users = generate_users(42, 60, 23);
        let mut ids = HashSet::new();
        let mut phases = HashSet::new();
        let (mut middle_names, mut phones, mut open_ended, mut without_gas) = (0, 0, 0, 0);
        for (index, user) in users.iter().enumerate() {
            assert!(uuid::Uuid::parse_str(&user.id).is_ok(), "{}", user.id);
            assert!(ids.insert(user.id.clone()));
            for (field, _) in USER_FIELDS {
                assert!(
                    user.record.get(field).is_some(),
                    "user field {field} missing"
                );
            }
            middle_names += usize::from(user.record["middleName"].is_string());
            phones += usize::from(user.record["phoneNumber"].is_string());
            let expected = if (index + 1) % 3 == 0 { 23 } else { 2 };
            assert_eq!(user.contracts.len(), expected);
            for contract in &user.contracts {
                for (field, _) in CONTRACT_FIELDS {
                    assert!(
                        contract.get(field).is_some(),
                        "contract field {field} missing"
                    );
                }
                assert!(ids.insert(contract["id"].to_string()));
                assert!(contract["totalYearlyUsage"].is_f64());
                assert!(contract["hasGas"] == true || contract["hasElectricity"] == true);
                open_ended += usize::from(contract["endDate"].is_null());
                without_gas += usize::from(contract["hasGas"] == false);
                phases.insert(contract["phase"].as_str().expect("phase").to_owned());
            }
        }
        assert!(middle_names > 0 && middle_names < users.len() / 2);
        assert!(phones > users.len() / 2 && phones < users.len());
        assert!(open_ended > 0 && without_gas > 0);
        assert!(
            phases.len() > 5
                && phases
                    .iter()
                    .all(|phase| CONTRACT_PHASES.contains(&phase.as_str()))
        );
    }

    #[tokio::test]
    async fn describe_prints_the_energyzero_environment() {
        let sandbox = started(with_energyzero(|options| options.users = 2)).await;
        let description = sandbox.describe();
        let users = sandbox.energyzero_user_ids().join(",");
        for line in [
            "PARTNER_SYNC__ENERGYZERO__ENABLED=true".to_owned(),
            format!(
                "PARTNER_SYNC__ENERGYZERO__AUTH_BASE_URL={}",
                sandbox.energyzero_auth_base_url()
            ),
            format!(
                "PARTNER_SYNC__ENERGYZERO__CUSTOMER_API_URL={}",
                sandbox.energyzero_customer_api_url()
            ),
            "PARTNER_SYNC__ENERGYZERO__CLIENT_ID=sandbox-ez-client".to_owned(),
            "PARTNER_SYNC__ENERGYZERO__CLIENT_SECRET=sandbox-ez-secret".to_owned(),
            format!("PARTNER_SYNC__ENERGYZERO__USER_IDS={users}"),
        ] {
            assert!(
                description.lines().any(|printed| printed == line),
                "{line} missing from:\n{description}"
            );
        }
        assert!(
            sandbox
                .energyzero_auth_base_url()
                .ends_with("/energyzero/auth")
        );
        assert!(
            sandbox
                .energyzero_customer_api_url()
                .ends_with("/energyzero/customer")
        );
        sandbox.shutdown().await;
    }

    #[test]
    fn sdl_types_parse_into_type_refs() {
        assert_eq!(type_ref("[ContractEdge!]!").to_string(), "[ContractEdge!]!");
        assert_eq!(type_ref("Int").to_string(), "Int");
    }

    #[test]
    fn oversized_data_or_a_zero_page_cap_is_refused() {
        for edit in [
            (|options: &mut EnergyzeroOptions| options.users = MAX_USERS + 1)
                as fn(&mut EnergyzeroOptions),
            |options| options.heavy_contracts = MAX_CONTRACTS,
            |options| options.page_cap = 0,
        ] {
            let mut options = EnergyzeroOptions::default();
            edit(&mut options);
            assert!(Energyzero::new(&options, 42).is_err());
        }
        assert!(Energyzero::new(&EnergyzeroOptions::default(), 42).is_ok());
    }
}
