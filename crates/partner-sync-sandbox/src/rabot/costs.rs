//! `GET /customers/{customerNumber}/contracts/{contractNumber}/costs`: a contract's price
//! components, period by period, as RABOT's reference describes them ("Get most recent contract
//! fees and cost components"): `data` is an array of periods, each with its `validFrom` and one
//! `{value, unit {main, per}, unitText}` object per component.
//!
//! The periods are generated from the seed and the contract number, so they need no memory
//! until a test edits them ([`Sandbox::update_rabot_costs`]); an edited contract keeps its own
//! copy. The knobs bend the answer the ways RABOT's documents leave open: `data` as one object
//! (as one open-source client reads it) and component names the documents do not list.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::api::{ApiError, authenticate, has_contract_role};
use super::{Customer, Rabot};
use crate::prng::{Prng, add_months, date, last_day_of};
use crate::{Sandbox, Shared, lock};

/// The documented components: name, the unit's `main` and `per`, its text, and the range its
/// value is drawn from (in thousandths).
const COMPONENTS: [(&str, &str, &str, &str, u32, u32); 15] = [
    ("baseServiceFee", "Euro", "Month", "€/Monat", 4_990, 14_990),
    (
        "variableServiceFee",
        "Cent",
        "KilowattHour",
        "ct/kWh",
        0,
        2_500,
    ),
    ("baseGridFee", "Euro", "Year", "€/Jahr", 40_000, 160_000),
    (
        "variableGridFee",
        "Cent",
        "KilowattHour",
        "ct/kWh",
        5_000,
        12_500,
    ),
    ("meteringFee", "Euro", "Year", "€/Jahr", 10_000, 100_000),
    (
        "expectedEnergyCost",
        "Cent",
        "KilowattHour",
        "ct/kWh",
        8_000,
        22_000,
    ),
    (
        "guaranteeOfOrigin",
        "Cent",
        "KilowattHour",
        "ct/kWh",
        50,
        900,
    ),
    (
        "concessionFee",
        "Cent",
        "KilowattHour",
        "ct/kWh",
        1_320,
        2_390,
    ),
    ("kwkgFee", "Cent", "KilowattHour", "ct/kWh", 200, 400),
    (
        "electricityTax",
        "Cent",
        "KilowattHour",
        "ct/kWh",
        2_050,
        2_050,
    ),
    ("savingsShare", "Percent", "None", "%", 0, 30_000),
    (
        "estimatedConsumption",
        "KilowattHour",
        "Year",
        "kWh/Jahr",
        900_000,
        9_500_000,
    ),
    ("offshoreFee", "Cent", "KilowattHour", "ct/kWh", 600, 900),
    ("p19Fee", "Cent", "KilowattHour", "ct/kWh", 400, 1_600),
    ("exchangeFee", "Cent", "KilowattHour", "ct/kWh", 0, 500),
];

/// The documented component names, in the reference's order.
pub fn documented_components() -> impl Iterator<Item = &'static str> {
    COMPONENTS.iter().map(|(name, ..)| *name)
}

/// The stream of a contract's costs: its number hashed (FNV-1a), apart from every customer's
/// and contract's stream in `data.rs`.
fn stream(contract_number: &str) -> u64 {
    let hash = contract_number
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        });
    hash ^ 0xC057_5000_0000_0000
}

/// 1–3 periods, oldest first, each starting on the first of a month.
pub(super) fn generate_periods(seed: u64, contract_number: &str) -> Vec<Value> {
    let mut rng = Prng::new(seed, stream(contract_number));
    let periods = rng.between(1, 3);
    let mut start = (2023 + rng.below(2), 1 + rng.below(12));
    (0..periods)
        .map(|_| {
            // Midnight in Germany (winter time, for simple data), written either with the
            // German offset or in UTC (the evening before).
            let valid_from = if rng.percent(50) {
                format!("{}T00:00:00+01:00", date(start.0, start.1, 1))
            } else {
                let previous = if start.1 == 1 {
                    (start.0 - 1, 12)
                } else {
                    (start.0, start.1 - 1)
                };
                format!("{}T23:00:00Z", last_day_of(previous))
            };
            let mut period = Map::new();
            period.insert("validFrom".to_owned(), Value::from(valid_from));
            for (name, main, per, text, low, high) in COMPONENTS {
                let value = f64::from(rng.between(low, high)) / 1000.0;
                period.insert(
                    name.to_owned(),
                    json!({"value": value, "unit": {"main": main, "per": per}, "unitText": text}),
                );
            }
            start = add_months(start, rng.between(3, 12));
            Value::Object(period)
        })
        .collect()
}

/// What a costs request finds.
enum Costs {
    Found(Vec<Value>),
    UnknownCustomer,
    UnknownContract,
    NotPermitted,
}

impl Customer {
    fn periods(&self, seed: u64, contract_number: &str) -> Option<Vec<Value>> {
        self.contract_position(contract_number)?;
        Some(
            self.costs
                .get(contract_number)
                .cloned()
                .unwrap_or_else(|| generate_periods(seed, contract_number)),
        )
    }
}

impl Rabot {
    fn costs(
        &self,
        seed: u64,
        customer_number: &str,
        contract_number: &str,
        has_role: bool,
    ) -> Costs {
        let customers = lock(&self.customers);
        match customers.get(customer_number) {
            // As for the contract list: without a role nothing says which customers exist.
            None if has_role => Costs::UnknownCustomer,
            None => Costs::NotPermitted,
            Some(customer) if has_role || customer.is_linked() => {
                match customer.periods(seed, contract_number) {
                    Some(periods) => Costs::Found(periods),
                    None => Costs::UnknownContract,
                }
            }
            Some(_) => Costs::NotPermitted,
        }
    }

    fn update_costs(
        &self,
        seed: u64,
        customer_number: &str,
        contract_number: &str,
        edit: impl FnOnce(&mut Vec<Value>),
    ) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        let Some(mut periods) = customer.periods(seed, contract_number) else {
            return false;
        };
        edit(&mut periods);
        customer.costs.insert(contract_number.to_owned(), periods);
        true
    }
}

pub(super) async fn contract_costs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let scopes = authenticate(&shared, &headers)?;
    let Ok(Path((customer_number, contract_number))) = path else {
        return Err(ApiError::validation_failed(
            "The customer or contract number in the path is not valid.",
        ));
    };
    let rabot = &shared.rabot;
    let periods = match rabot.costs(
        shared.options.seed,
        &customer_number,
        &contract_number,
        has_contract_role(&scopes),
    ) {
        Costs::Found(periods) => periods,
        Costs::UnknownCustomer => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("Customer {customer_number} was not found."),
            ));
        }
        Costs::UnknownContract => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("Contract {contract_number} of customer {customer_number} was not found."),
            ));
        }
        Costs::NotPermitted => {
            return Err(ApiError::insufficient_scope(
                "Contract costs need the role:finance-reporting scope (or a broader role) or a linked customer.",
            ));
        }
    };
    let data = if rabot.costs_as_object.load(Ordering::Relaxed) {
        // The most recent period alone, as a client that reads one object expects.
        periods.last().cloned().unwrap_or(Value::Null)
    } else {
        Value::Array(periods)
    };
    Ok(Json(json!({
        "isSuccess": true,
        "message": null,
        "error": null,
        "refUri": null,
        "data": data,
    }))
    .into_response())
}

/// RABOT's contract costs: what is served, and the knobs that change it.
impl Sandbox {
    /// The periods `…/contracts/{contract}/costs` serves now, oldest first; None for an
    /// unknown customer or contract.
    pub fn rabot_costs(&self, customer_number: &str, contract_number: &str) -> Option<Vec<Value>> {
        let customers = lock(&self.shared.rabot.customers);
        customers
            .get(customer_number)?
            .periods(self.options().seed, contract_number)
    }

    /// Edits a contract's periods (change a value, add a component, drop a period); false if
    /// the customer or contract does not exist.
    pub fn update_rabot_costs(
        &self,
        customer_number: &str,
        contract_number: &str,
        edit: impl FnOnce(&mut Vec<Value>),
    ) -> bool {
        self.shared
            .rabot
            .update_costs(self.options().seed, customer_number, contract_number, edit)
    }

    /// Adds a component the documents do not list to every period of a contract.
    pub fn add_rabot_cost_component(
        &self,
        customer_number: &str,
        contract_number: &str,
        name: &str,
        value: f64,
    ) -> bool {
        self.update_rabot_costs(customer_number, contract_number, |periods| {
            for period in periods.iter_mut() {
                period[name] = json!({
                    "value": value,
                    "unit": {"main": "Euro", "per": "Month"},
                    "unitText": "€/Monat",
                });
            }
        })
    }

    /// Stops serving the contract's oldest period; false if it has none left to drop.
    pub fn drop_rabot_cost_period(&self, customer_number: &str, contract_number: &str) -> bool {
        let mut dropped = false;
        let found = self.update_rabot_costs(customer_number, contract_number, |periods| {
            if !periods.is_empty() {
                periods.remove(0);
                dropped = true;
            }
        });
        found && dropped
    }

    /// From now on `data` is the most recent period as one object instead of an array of
    /// periods (`false` goes back to the documented array).
    pub fn set_rabot_costs_as_object(&self, as_object: bool) {
        self.shared
            .rabot
            .costs_as_object
            .store(as_object, Ordering::Relaxed);
    }
}

/// The component names of a period: every key but `validFrom`.
#[cfg(test)]
pub(super) fn component_names(period: &Value) -> Vec<&str> {
    period
        .as_object()
        .map(|fields| {
            fields
                .keys()
                .map(String::as_str)
                .filter(|key| *key != "validFrom")
                .collect()
        })
        .unwrap_or_default()
}
