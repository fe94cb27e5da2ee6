//! RABOT wire shapes, read leniently: every documented field is optional, strings may arrive as
//! numbers, unknown enum values stay strings, and the whole object is kept as `raw` so nothing
//! the partner sent is lost. The field names are those of RABOT's Partner API documentation.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::partners::lenient::{date_field, decimal_field, scalar_string, str_field};
use crate::store::drift::Drift;

/// A customer's members as RABOT documents them (`GET /customers`); any other is schema drift.
pub const CUSTOMER_FIELDS: &[&str] = &[
    "customerNumber",
    "emailAddress",
    "externalIdentifier",
    "firstName",
    "lastName",
    "businessName",
    "relations",
];

/// A contract's members as RABOT documents them (`GET /customers/{n}/contracts`), typed or
/// kept only in `raw`; any other is schema drift.
pub const CONTRACT_FIELDS: &[&str] = &[
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

/// The documented `contractState` values. One reference example shows `Open`, which is not in
/// the list: such a value is stored as sent and reported as drift.
pub const CONTRACT_STATES: &[&str] = &[
    "PendingDelivery",
    "Delivery",
    "Cancelled",
    "Revoked",
    "Unspecified",
];

/// The envelope around every RABOT answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    #[serde(default)]
    pub is_success: Option<bool>,
    #[serde(default)]
    pub message: Option<String>,
    /// Documented as an array of `{severity, code, message, details}` or null; kept loose.
    #[serde(default)]
    pub error: Option<Value>,
    /// `None` when the field is absent, `Some(Value::Null)` when it is `null`: a list answer
    /// needs to tell those apart from an empty list.
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Value>,
    #[serde(default)]
    pub has_more_items: Option<bool>,
    /// On list answers: the page's item count, or the whole list's size (the documents'
    /// example fits both). Kept loose: it only feeds a progress estimate.
    #[serde(default)]
    pub count: Option<Value>,
}

/// A field that is present, even as `null`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Envelope {
    /// The envelope's own error text, for answers that say `isSuccess: false` with a 2xx status.
    pub fn error_text(&self) -> String {
        let mut parts: Vec<String> = self.message.iter().cloned().collect();
        if let Some(Value::Array(errors)) = &self.error {
            parts.extend(errors.iter().map(|e| {
                let code = str_field(e, "code").unwrap_or_default();
                let message = str_field(e, "message").unwrap_or_default();
                format!("{code}: {message}")
            }));
        }
        if parts.is_empty() {
            "no error details given".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// `POST /customers/link`: where RABOT sends the customer afterwards, and who they are to us.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkRequest {
    pub success_url: String,
    pub failure_url: String,
    pub sign_up_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_as: Option<String>,
    pub customer_number_query_parameter_name: String,
    pub external_customer_id: String,
}

/// The answer to `POST /customers/link`. The guide shows a bare `{"authorizationUrl": …}`, the
/// reference says every answer is enveloped: either is read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkAnswer {
    #[serde(default)]
    pub authorization_url: Option<String>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

impl LinkAnswer {
    pub fn authorization_url(&self) -> Option<&str> {
        self.authorization_url.as_deref().or_else(|| {
            self.envelope
                .data
                .as_ref()?
                .get("authorizationUrl")?
                .as_str()
        })
    }
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub customer_number: String,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub business_name: Option<String>,
    pub email: Option<String>,
    pub relations: Vec<String>,
    pub raw: Value,
}

impl Customer {
    pub fn from_wire(raw: Value) -> Result<Self, String> {
        let customer_number = str_field(&raw, "customerNumber")
            .ok_or_else(|| "customer without customerNumber".to_owned())?;
        addressable(&customer_number)?;
        Ok(Self {
            customer_number,
            external_id: str_field(&raw, "externalIdentifier"),
            first_name: str_field(&raw, "firstName"),
            last_name: str_field(&raw, "lastName"),
            business_name: str_field(&raw, "businessName"),
            email: str_field(&raw, "emailAddress"),
            relations: raw
                .get("relations")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(scalar_string).collect())
                .unwrap_or_default(),
            raw,
        })
    }

    /// Members RABOT sent that its documents do not list.
    pub fn note_drift(&self, drift: &mut Drift) {
        drift.unknown_members("customer", &self.raw, CUSTOMER_FIELDS);
    }
}

/// Whether a customer number can be sent as a path segment (`/customers/{n}/contracts`). `.` and
/// `..` are read by every URL parser as "here" and "the parent", however they are encoded, so
/// such a customer could only be asked for at another path: it is set aside instead.
pub fn addressable(customer_number: &str) -> Result<(), String> {
    if matches!(customer_number, "" | "." | "..") {
        return Err(format!(
            "customer number {customer_number:?} cannot be sent in a URL path"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Contract {
    /// From the request path: contracts are listed per customer.
    pub customer_number: String,
    pub contract_number: String,
    pub name: Option<String>,
    pub state: Option<String>,
    pub tariff_name: Option<String>,
    pub delivery_start: Option<NaiveDate>,
    pub delivery_end: Option<NaiveDate>,
    pub meter_number: Option<String>,
    pub malo_id: Option<String>,
    pub melo_id: Option<String>,
    /// Kept as the decimal text RABOT sent, so no precision is lost on the way to `numeric`.
    pub expected_annual_kwh: Option<String>,
    pub accounting_method: Option<String>,
    pub grid_operator_code: Option<String>,
    pub grid_operator_name: Option<String>,
    pub raw: Value,
}

impl Contract {
    pub fn from_wire(customer_number: &str, raw: Value) -> Result<Self, String> {
        let contract_number = str_field(&raw, "contractNumber")
            .ok_or_else(|| "contract without contractNumber".to_owned())?;
        Ok(Self {
            customer_number: customer_number.to_owned(),
            contract_number,
            name: str_field(&raw, "name"),
            state: str_field(&raw, "contractState"),
            tariff_name: str_field(&raw, "tariffName"),
            delivery_start: date_field(&raw, "actualDateOfDelivery"),
            delivery_end: date_field(&raw, "endDateOfDelivery"),
            meter_number: str_field(&raw, "meterNumber"),
            malo_id: str_field(&raw, "maLoIdentifier"),
            melo_id: str_field(&raw, "meLoIdentifier"),
            expected_annual_kwh: decimal_field(&raw, "expectedAnnualConsumptionInKwhPerYear"),
            accounting_method: str_field(&raw, "accountingMethod"),
            grid_operator_code: str_field(&raw, "distributionSystemOperatorCode"),
            grid_operator_name: str_field(&raw, "distributionSystemOperatorName"),
            raw,
        })
    }

    /// Members and `contractState` values RABOT sent that its documents do not list.
    pub fn note_drift(&self, drift: &mut Drift) {
        drift.unknown_members("contract", &self.raw, CONTRACT_FIELDS);
        drift.unknown_value(
            "contract.contractState",
            self.state.as_deref(),
            CONTRACT_STATES,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_not_customer_numbers() {
        for number in ["", ".", ".."] {
            let raw = serde_json::json!({ "customerNumber": number });
            assert!(Customer::from_wire(raw).is_err(), "{number:?}");
        }
        for number in ["...", ".a", "C-1", "a/b"] {
            let raw = serde_json::json!({ "customerNumber": number });
            assert!(Customer::from_wire(raw).is_ok(), "{number:?}");
        }
    }
    use serde_json::json;

    #[test]
    fn customer_tolerates_numbers_nulls_and_unknown_fields() {
        let raw = json!({"customerNumber": 46491184, "emailAddress": null, "firstName": "Zoë",
                         "relations": ["Owner", 3, null], "somethingNew": {"x": 1}});
        let c = Customer::from_wire(raw.clone()).expect("has a customer number");
        assert_eq!(c.customer_number, "46491184");
        assert_eq!(c.email, None);
        assert_eq!(c.first_name.as_deref(), Some("Zoë"));
        assert_eq!(c.relations, vec!["Owner", "3"]);
        assert_eq!(c.raw, raw);
        assert!(Customer::from_wire(json!({"firstName": "x"})).is_err());
    }

    #[test]
    fn contract_reads_dates_decimals_and_unknown_states() {
        let raw = json!({"contractNumber": "C-1", "contractState": "Open",
                         "actualDateOfDelivery": "2025-03-01", "endDateOfDelivery": "2026-01-31T00:00:00",
                         "expectedAnnualConsumptionInKwhPerYear": 3500.5});
        let c = Contract::from_wire("1", raw).expect("has a contract number");
        assert_eq!(c.state.as_deref(), Some("Open"));
        assert_eq!(c.delivery_start, NaiveDate::from_ymd_opt(2025, 3, 1));
        assert_eq!(c.delivery_end, NaiveDate::from_ymd_opt(2026, 1, 31));
        assert_eq!(c.expected_annual_kwh.as_deref(), Some("3500.5"));

        let odd = Contract::from_wire(
            "1",
            json!({"contractNumber": 7, "actualDateOfDelivery": "soon",
                                             "expectedAnnualConsumptionInKwhPerYear": "lots"}),
        )
        .expect("a numeric contract number is read as text");
        assert_eq!(odd.contract_number, "7");
        assert_eq!(odd.delivery_start, None);
        assert_eq!(odd.expected_annual_kwh, None);
    }
}
