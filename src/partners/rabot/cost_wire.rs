//! RABOT's contract costs (`GET /customers/{n}/contracts/{k}/costs`), read leniently. `data` is
//! documented as an array of periods, and one open-source client reads a single object: both
//! are accepted. A period is its `validFrom` and every other member whose value is an object
//! with a `value`: the documents list some component names and say more follow, so a name this
//! file has never heard of is a component like any other.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::partners::lenient::{decimal_field, str_field, without_nul};
use crate::store::drift::Drift;

/// The member of a period that is not a component.
const VALID_FROM: &str = "validFrom";

/// The fees RABOT documents, each a group of columns in the view `mirror.rabot_contract_costs`;
/// any other component is stored like these and reported as schema drift.
pub const FEES: &[&str] = &[
    "baseServiceFee",
    "variableServiceFee",
    "baseGridFee",
    "variableGridFee",
    "meteringFee",
    "expectedEnergyCost",
    "guaranteeOfOrigin",
    "concessionFee",
    "kwkgFee",
    "electricityTax",
    "savingsShare",
    "estimatedConsumption",
    "offshoreFee",
    "p19Fee",
    "exchangeFee",
];

/// One price period: when it starts, its components, and the period exactly as RABOT sent it.
#[derive(Debug, Clone)]
pub struct CostPeriod {
    pub valid_from: DateTime<Utc>,
    pub components: Vec<CostComponent>,
    pub raw: Value,
}

/// One price component of a period, e.g. `baseServiceFee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostComponent {
    /// The member's name as RABOT sent it.
    pub name: String,
    /// Kept as the decimal text RABOT sent, so no precision is lost on the way to `numeric`;
    /// `None` when it is null or not a number.
    pub value: Option<String>,
    pub unit_main: Option<String>,
    pub unit_per: Option<String>,
    pub unit_text: Option<String>,
}

/// A costs answer's periods, and how many could not be read (no usable `validFrom`).
#[derive(Debug, Default)]
pub struct ContractCosts {
    pub periods: Vec<CostPeriod>,
    pub skipped: usize,
}

impl ContractCosts {
    /// Reads the envelope's `data`: an array of periods or one period. Anything else is refused
    /// (`Err` says what it was), so a malformed answer is never taken for "no prices".
    pub fn from_data(data: Value) -> Result<Self, String> {
        let items = match data {
            Value::Array(items) => items,
            Value::Object(_) => vec![data],
            Value::Null => return Err("data is null".to_owned()),
            other => return Err(format!("data is {other} instead of an array of periods")),
        };
        let mut costs = Self::default();
        for item in items {
            match CostPeriod::from_wire(without_nul(item)) {
                Ok(period) => costs.periods.push(period),
                Err(reason) => {
                    tracing::warn!(partner = "rabot", %reason, "skipping a cost period that cannot be mirrored");
                    costs.skipped += 1;
                }
            }
        }
        Ok(costs)
    }
}

impl CostPeriod {
    pub fn from_wire(raw: Value) -> Result<Self, String> {
        let Some(fields) = raw.as_object() else {
            return Err("a cost period that is not an object".to_owned());
        };
        let text = str_field(&raw, VALID_FROM)
            .ok_or_else(|| "a cost period without validFrom".to_owned())?;
        let valid_from = DateTime::parse_from_rfc3339(&text)
            .map_err(|_| format!("validFrom {text:?} is not a date-time with a zone"))?
            .with_timezone(&Utc);
        let components = fields
            .iter()
            .filter(|(name, value)| name.as_str() != VALID_FROM && value.get("value").is_some())
            .map(|(name, component)| CostComponent::from_wire(name, component))
            .collect();
        Ok(Self {
            valid_from,
            components,
            raw,
        })
    }
}

impl CostPeriod {
    /// Components whose fee the view has no columns for.
    pub fn note_drift(&self, drift: &mut Drift) {
        for component in &self.components {
            drift.unknown_value("cost component", Some(&component.name), FEES);
        }
    }
}

impl CostComponent {
    fn from_wire(name: &str, component: &Value) -> Self {
        let unit = component.get("unit").unwrap_or(&Value::Null);
        Self {
            name: name.to_owned(),
            value: decimal_field(component, "value"),
            unit_main: str_field(unit, "main"),
            unit_per: str_field(unit, "per"),
            unit_text: str_field(component, "unitText"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fee(value: Value) -> Value {
        json!({"value": value, "unit": {"main": "Euro", "per": "Month"}, "unitText": "€/Monat"})
    }

    #[test]
    fn an_array_of_periods_or_one_object_is_read_and_every_component_kept() {
        let period = json!({
            "validFrom": "2023-11-07T05:31:56Z",
            "baseServiceFee": fee(json!(9.99)),
            "somethingNewFee": fee(json!("1.5")),
            "note": "not a component",
            "empty": {},
            "broken": fee(json!("lots")),
        });
        let costs = ContractCosts::from_data(json!([period.clone()])).expect("an array");
        assert_eq!(costs.skipped, 0);
        let [read] = costs.periods.as_slice() else {
            panic!("one period: {costs:?}");
        };
        assert_eq!(read.valid_from.to_rfc3339(), "2023-11-07T05:31:56+00:00");
        assert_eq!(read.raw, period);
        let mut components = read.components.clone();
        components.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["baseServiceFee", "broken", "somethingNewFee"]);
        assert_eq!(
            components[0],
            CostComponent {
                name: "baseServiceFee".to_owned(),
                value: Some("9.99".to_owned()),
                unit_main: Some("Euro".to_owned()),
                unit_per: Some("Month".to_owned()),
                unit_text: Some("€/Monat".to_owned()),
            }
        );
        assert_eq!(components[1].value, None);
        assert_eq!(components[2].value.as_deref(), Some("1.5"));

        let single = ContractCosts::from_data(period).expect("one object");
        assert_eq!(single.periods.len(), 1);
    }

    #[test]
    fn zones_are_read_and_unreadable_periods_skipped() {
        let costs = ContractCosts::from_data(json!([
            {"validFrom": "2024-01-01T00:00:00+01:00", "p19Fee": {"value": 1}},
            {"validFrom": "2024-01-01"},
            {"p19Fee": {"value": 1}},
            "a string",
        ]))
        .expect("an array");
        assert_eq!(costs.skipped, 3);
        assert_eq!(
            costs.periods[0].valid_from.to_rfc3339(),
            "2023-12-31T23:00:00+00:00"
        );
        assert_eq!(costs.periods[0].components[0].unit_main, None);
    }

    #[test]
    fn data_that_is_no_period_is_refused() {
        for data in [json!(null), json!("x"), json!(3)] {
            assert!(ContractCosts::from_data(data.clone()).is_err(), "{data}");
        }
        assert_eq!(
            ContractCosts::from_data(json!([]))
                .expect("empty")
                .periods
                .len(),
            0
        );
    }
}
