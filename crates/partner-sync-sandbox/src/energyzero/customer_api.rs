//! EnergyZero's GraphQL customer API: a dynamic schema whose objects read the stored JSON by
//! field name, `me` for the token's user, and Relay paging of the user's contracts.

use std::sync::Arc;

use anyhow::Context as _;
use async_graphql::ErrorExtensions as _;
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Schema, TypeRef,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde_json::{Value, json};

use super::{Energyzero, TOKEN_CHALLENGE, TokenHolder};
use crate::oauth::{bearer_token, has_media_type};
use crate::{Shared, lock};

/// Contracts a page holds when the query gives no `first`.
const DEFAULT_PAGE_SIZE: i64 = 10;

/// A customer-API answer that never reached GraphQL execution: a GraphQL `errors` body with a
/// non-200 status, as GraphQL servers answer when authentication or the HTTP request fails.
pub(super) struct GraphqlFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl GraphqlFailure {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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

pub(super) async fn customer_api(
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
pub(super) const USER_FIELDS: &[(&str, &str)] = &[
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
pub(super) const CONTRACT_FIELDS: &[(&str, &str)] = &[
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
pub(super) const CONTRACT_PHASES: [&str; 14] = [
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

/// The customer API's schema; `new_phases` extend the documented `ContractPhase` values.
pub(super) fn customer_schema(new_phases: &[String]) -> anyhow::Result<Schema> {
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
        .register(
            Enum::new("ContractPhase").items(
                CONTRACT_PHASES
                    .iter()
                    .map(|phase| phase.to_string())
                    .chain(new_phases.iter().cloned()),
            ),
        )
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
pub(super) fn type_ref(sdl: &str) -> TypeRef {
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

pub(super) fn contract_id(contract: &Value) -> Option<&str> {
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

impl Energyzero {
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
}
