//! EnergyZero wire shapes, read leniently like RABOT's: every field optional, unknown enum values
//! kept as strings, the raw JSON kept for the payload column (field names
//! as EnergyZero documents them and as the GraphQL schema of its customer API defines them).

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::partners::lenient::{date_field, decimal_field, str_field, without_nul};
use crate::store::drift::Drift;

/// The documented `ContractPhase` values. GraphQL answers only the fields the query names, so
/// a new field cannot arrive unasked; a new enum value can, and is reported as schema drift.
pub const CONTRACT_PHASES: &[&str] = &[
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

/// One `me` answer, split into the user, one page of contracts and where the next page starts.
#[derive(Debug)]
pub struct MePage {
    pub user: User,
    pub contracts: Vec<Contract>,
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub customer_number: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub surname: Option<String>,
    pub phone_number: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub vendor: Option<String>,
    /// The user as sent, without the `contracts` connection: a contract change must not look
    /// like a user change, and the contracts have their own table.
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct Contract {
    /// The impersonated user the contract was listed for.
    pub user_id: String,
    pub contract_id: String,
    pub accepted_at: Option<DateTime<Utc>>,
    pub consumer_type: Option<String>,
    pub company: Option<String>,
    pub energy_contract_type: Option<String>,
    pub phase: Option<String>,
    pub start_date: Option<NaiveDate>,
    pub original_start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub delivery_stopped_date: Option<NaiveDate>,
    pub duration_months: Option<i32>,
    pub payment_method: Option<String>,
    pub has_gas: Option<bool>,
    pub has_electricity: Option<bool>,
    pub has_production: Option<bool>,
    /// Decimal text, so no precision is lost on the way to `numeric`.
    pub total_yearly_usage_kwh: Option<String>,
    pub delivery_zip_code: Option<String>,
    pub delivery_city: Option<String>,
    pub raw: Value,
}

/// Why an answer cannot be used for this user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The answer carries GraphQL `errors` (the text joins their messages and codes).
    Errors(String),
    /// The answer does not have the expected shape.
    Shape(String),
}

/// Reads one GraphQL answer to the `me` query. An `errors` array fails the answer even when some
/// `data` came with it: a partial user must not be mirrored as if complete. So does an edge
/// without a contract id, or a connection without `pageInfo`: either would otherwise read as
/// "this contract is gone" and tombstone a live row.
pub fn read_me(user_id: &str, answer: Value) -> Result<MePage, Unreadable> {
    let Value::Object(mut answer) = without_nul(answer) else {
        return Err(Unreadable::Shape(
            "the answer is not a JSON object".to_owned(),
        ));
    };
    if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
        let text = errors_text(errors);
        if !text.is_empty() {
            return Err(Unreadable::Errors(text));
        }
    }
    let me = match answer.remove("data").map(|mut d| d["me"].take()) {
        Some(me @ Value::Object(_)) => me,
        _ => return Err(Unreadable::Shape("data.me is missing or null".to_owned())),
    };
    let Value::Object(mut me) = me else {
        return Err(Unreadable::Shape("data.me is not an object".to_owned()));
    };
    let connection = me.remove("contracts").unwrap_or(Value::Null);
    let user = User::from_wire(Value::Object(me))?;
    if user.user_id != user_id {
        // Mirroring one user's data under another's key would be worse than not mirroring it.
        return Err(Unreadable::Shape(format!(
            "me.id is {:?}, not the impersonated user",
            user.user_id
        )));
    }

    let edges = match connection.get("edges") {
        Some(Value::Array(edges)) => edges.as_slice(),
        _ => {
            return Err(Unreadable::Shape(
                "me.contracts.edges is missing or not a list".to_owned(),
            ));
        }
    };
    let mut contracts = Vec::with_capacity(edges.len());
    for (position, edge) in edges.iter().enumerate() {
        let node = edge.get("node").cloned().unwrap_or(Value::Null);
        let contract = Contract::from_wire(user_id, node).map_err(|reason| {
            Unreadable::Shape(format!("me.contracts.edges[{position}]: {reason}"))
        })?;
        contracts.push(contract);
    }
    let Some(has_next_page) = connection
        .get("pageInfo")
        .and_then(|p| p.get("hasNextPage"))
        .and_then(Value::as_bool)
    else {
        return Err(Unreadable::Shape(
            "me.contracts.pageInfo.hasNextPage is missing: the page cannot be known to be the last"
                .to_owned(),
        ));
    };
    let end_cursor = str_field(&connection["pageInfo"], "endCursor");
    Ok(MePage {
        user,
        contracts,
        has_next_page,
        end_cursor,
    })
}

/// "message (CODE); message (CODE)" from a GraphQL `errors` array.
fn errors_text(errors: &Value) -> String {
    let Value::Array(errors) = errors else {
        return format!("errors is not a list: {errors}");
    };
    errors
        .iter()
        .map(|e| {
            let message = str_field(e, "message").unwrap_or_else(|| "no message".to_owned());
            match e.get("extensions").and_then(|x| str_field(x, "code")) {
                Some(code) => format!("{message} ({code})"),
                None => message,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl User {
    pub fn from_wire(raw: Value) -> Result<Self, Unreadable> {
        let user_id =
            str_field(&raw, "id").ok_or_else(|| Unreadable::Shape("me has no id".to_owned()))?;
        Ok(Self {
            user_id,
            customer_number: str_field(&raw, "customerNumber"),
            email: str_field(&raw, "email"),
            first_name: str_field(&raw, "firstName"),
            middle_name: str_field(&raw, "middleName"),
            surname: str_field(&raw, "surname"),
            phone_number: str_field(&raw, "phoneNumber"),
            birth_date: date_field(&raw, "birthDate"),
            vendor: str_field(&raw, "vendor"),
            raw,
        })
    }
}

impl Contract {
    pub fn from_wire(user_id: &str, raw: Value) -> Result<Self, String> {
        let contract_id = str_field(&raw, "id").ok_or_else(|| "contract without id".to_owned())?;
        let delivery = raw.get("deliveryAddress").cloned().unwrap_or(Value::Null);
        Ok(Self {
            user_id: user_id.to_owned(),
            contract_id,
            accepted_at: raw
                .get("acceptedAt")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            consumer_type: str_field(&raw, "consumerType"),
            company: str_field(&raw, "company"),
            energy_contract_type: str_field(&raw, "energyContractType"),
            phase: str_field(&raw, "phase"),
            start_date: date_field(&raw, "startDate"),
            original_start_date: date_field(&raw, "originalStartDate"),
            end_date: date_field(&raw, "endDate"),
            delivery_stopped_date: date_field(&raw, "deliveryStoppedDate"),
            duration_months: raw
                .get("duration")
                .and_then(Value::as_i64)
                .and_then(|d| i32::try_from(d).ok()),
            payment_method: str_field(&raw, "paymentMethod"),
            has_gas: raw.get("hasGas").and_then(Value::as_bool),
            has_electricity: raw.get("hasElectricity").and_then(Value::as_bool),
            has_production: raw.get("hasProduction").and_then(Value::as_bool),
            total_yearly_usage_kwh: decimal_field(&raw, "totalYearlyUsage"),
            delivery_zip_code: str_field(&delivery, "zipCode"),
            delivery_city: str_field(&delivery, "city"),
            raw,
        })
    }

    /// A `phase` EnergyZero's documents do not list.
    pub fn note_drift(&self, drift: &mut Drift) {
        drift.unknown_value("contract.phase", self.phase.as_deref(), CONTRACT_PHASES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(edges: Value, page_info: Value) -> Value {
        json!({"data": {"me": {"id": "u-1", "firstName": "Zoë", "middleName": null,
            "birthDate": "1984-03-07", "contracts": {"edges": edges, "pageInfo": page_info}}}})
    }

    #[test]
    fn reads_user_contracts_and_page_info() {
        let page = read_me(
            "u-1",
            answer(
                json!([
                    {"cursor": "a", "node": {"id": "c-1", "phase": "SOMETHING_NEW",
                     "acceptedAt": "2025-01-14T09:31:00Z", "startDate": "2025-02-01",
                     "endDate": null, "duration": 12, "hasGas": false, "totalYearlyUsage": 2750.5,
                     "deliveryAddress": {"zipCode": "1011AB", "city": "Amsterdam"}}},
                ]),
                json!({"hasNextPage": true, "endCursor": "c"}),
            ),
        )
        .expect("a readable answer");
        assert_eq!(page.user.first_name.as_deref(), Some("Zoë"));
        assert_eq!(page.user.birth_date, NaiveDate::from_ymd_opt(1984, 3, 7));
        assert!(page.user.raw.get("contracts").is_none());
        assert_eq!(page.contracts.len(), 1);
        let c = &page.contracts[0];
        assert_eq!(c.phase.as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(c.end_date, None);
        assert_eq!(c.duration_months, Some(12));
        assert_eq!(c.has_gas, Some(false));
        assert_eq!(c.total_yearly_usage_kwh.as_deref(), Some("2750.5"));
        assert_eq!(c.delivery_city.as_deref(), Some("Amsterdam"));
        assert_eq!(
            c.accepted_at.map(|t| t.to_rfc3339()),
            Some("2025-01-14T09:31:00+00:00".to_owned())
        );
        assert!(page.has_next_page);
        assert_eq!(page.end_cursor.as_deref(), Some("c"));
    }

    #[test]
    fn errors_fail_the_answer_even_with_data() {
        let mut with_errors = answer(json!([]), json!({"hasNextPage": false}));
        with_errors["errors"] =
            json!([{"message": "boom", "path": ["me"], "extensions": {"code": "INTERNAL"}}]);
        assert_eq!(
            read_me("u-1", with_errors).unwrap_err(),
            Unreadable::Errors("boom (INTERNAL)".to_owned())
        );
        let null_me = json!({"data": {"me": null}});
        assert!(matches!(read_me("u-1", null_me), Err(Unreadable::Shape(_))));
        let other_user = answer(json!([]), json!({"hasNextPage": false}));
        assert!(matches!(
            read_me("u-2", other_user),
            Err(Unreadable::Shape(_))
        ));
        assert!(matches!(
            read_me("u-1", json!([1])),
            Err(Unreadable::Shape(_))
        ));
    }

    #[test]
    fn a_contract_without_id_or_a_missing_page_info_fails_the_answer() {
        for edges in [json!([{"node": {"phase": "X"}}]), json!([{"cursor": "c"}])] {
            let shape = read_me("u-1", answer(edges, json!({"hasNextPage": false})));
            assert!(
                matches!(&shape, Err(Unreadable::Shape(text)) if text.contains("edges[0]")),
                "{shape:?}"
            );
        }
        for page_info in [Value::Null, json!({}), json!({"hasNextPage": "no"})] {
            let shape = read_me("u-1", answer(json!([]), page_info));
            assert!(
                matches!(&shape, Err(Unreadable::Shape(text)) if text.contains("pageInfo")),
                "{shape:?}"
            );
        }
        let mut no_page_info = answer(json!([]), Value::Null);
        no_page_info["data"]["me"]["contracts"]
            .as_object_mut()
            .map(|c| c.remove("pageInfo"));
        assert!(matches!(
            read_me("u-1", no_page_info),
            Err(Unreadable::Shape(_))
        ));
    }

    #[test]
    fn nul_characters_are_replaced_not_refused() {
        let page = read_me(
            "u-1",
            answer(
                json!([{"node": {"id": "c-1", "company": "A\u{0}B"}}]),
                json!({"hasNextPage": false}),
            ),
        )
        .expect("readable");
        assert_eq!(page.contracts[0].company.as_deref(), Some("A\u{FFFD}B"));
    }
}
