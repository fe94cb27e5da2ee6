//! `GET /customers/{customerNumber}/contracts/{contractNumber}/metrics`: a contract's
//! consumption as RABOT's reference describes it ("Returns consumption and pricing history and
//! forecasts"): query `Period.From`, `Period.To`, `Interval`, `MetricType`, `ValueType` (the
//! last two names are inferred by the documents), and `data` one object with the unit, the
//! period considered and one record per interval, timestamps written without a zone.
//!
//! Periods start at midnight in Europe/Berlin and are written in UTC, as in the documents'
//! example ("2024-09-13 22:00:00" for 14 September). Every period that overlaps the asked
//! range, the contract's delivery and the past is served; its value is generated from the
//! seed, the contract and the period, so asking again gives the same value. The period still
//! running (and with [`Sandbox::set_rabot_metrics_open_periods`] some before it) is
//! `Preliminary`, every older one `Final`.
//!
//! Like the documents say, a token with `role:finance-reporting` (or `role:customer-support`)
//! reads only the metrics of customers who linked; `role:application` reads every customer's.
//! The knobs bend the answer: a record whose moment is no date, values as strings, and values
//! revised (RABOT correcting its data).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Days, Duration, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use serde_json::{Value, json};

use super::api::{ApiError, authenticate};
use super::{Rabot, has_scope};
use crate::oauth::unique_fields;
use crate::prng::Prng;
use crate::{Sandbox, Shared, lock};

/// The role that reads every customer's metrics; the others need a Linked customer.
const APPLICATION_ROLE: &str = "role:application";
/// More records than this in one answer is refused, as a real API would cap it.
const MAX_RECORDS: usize = 10_000;
/// What a moment looks like on the wire: no zone.
const MOMENT: &str = "%Y-%m-%d %H:%M:%S";
/// The record [`Sandbox::set_rabot_metrics_unreadable_record`] puts first.
pub const UNREADABLE_MOMENT: &str = "2024-13-45 25:00:00";

/// The knobs of the metrics answers.
#[derive(Default)]
pub(super) struct MetricsKnobs {
    unreadable_record: AtomicBool,
    values_as_strings: AtomicBool,
    revision: AtomicU32,
    /// Periods at the end that are not Final yet, the running one included (0 = 1).
    open_periods: AtomicU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interval {
    QuarterHourly,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Interval {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "QuarterHourly" => Self::QuarterHourly,
            "Hourly" => Self::Hourly,
            "Daily" => Self::Daily,
            "Weekly" => Self::Weekly,
            "Monthly" => Self::Monthly,
            "Yearly" => Self::Yearly,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::QuarterHourly => "QuarterHourly",
            Self::Hourly => "Hourly",
            Self::Daily => "Daily",
            Self::Weekly => "Weekly",
            Self::Monthly => "Monthly",
            Self::Yearly => "Yearly",
        }
    }

    fn fixed(self) -> Option<Duration> {
        match self {
            Self::QuarterHourly => Some(Duration::minutes(15)),
            Self::Hourly => Some(Duration::hours(1)),
            _ => None,
        }
    }

    /// The start of the period holding `at`.
    fn start_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        if let Some(fixed) = self.fixed() {
            // Berlin's offsets are whole hours: UTC quarters and hours are Berlin's too.
            let step = fixed.num_seconds();
            let seconds = at.timestamp().div_euclid(step) * step;
            return DateTime::from_timestamp(seconds, 0).unwrap_or(at);
        }
        let local = at.with_timezone(&Berlin).date_naive();
        let day = match self {
            Self::Weekly => local - Days::new(u64::from(local.weekday().num_days_from_monday())),
            Self::Monthly => local.with_day(1).unwrap_or(local),
            Self::Yearly => NaiveDate::from_ymd_opt(local.year(), 1, 1).unwrap_or(local),
            _ => local,
        };
        berlin_midnight(day).unwrap_or(at)
    }

    /// The start of the period after the one starting at `start`.
    fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        if let Some(fixed) = self.fixed() {
            return start + fixed;
        }
        let day = start.with_timezone(&Berlin).date_naive();
        let next = match self {
            Self::Daily => day.checked_add_days(Days::new(1)),
            Self::Weekly => day.checked_add_days(Days::new(7)),
            Self::Monthly => day.checked_add_months(Months::new(1)),
            _ => day.checked_add_months(Months::new(12)),
        };
        next.and_then(berlin_midnight)
            .unwrap_or(start + Duration::days(1))
    }
}

/// Midnight in Berlin (which always exists there: the clocks change at 02:00 and 03:00).
fn berlin_midnight(day: NaiveDate) -> Option<DateTime<Utc>> {
    Berlin
        .from_local_datetime(&day.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
}

/// A query's date-time: with a zone, or without one (read as UTC), or a bare date.
fn read_instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(zoned) = DateTime::parse_from_rfc3339(text) {
        return Some(zoned.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
}

/// The stream of a contract's metrics, apart from its costs' and from `data.rs`'s streams.
fn stream(contract_number: &str) -> u64 {
    let hash = contract_number
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        });
    hash ^ 0x3E7A_1C50_0000_0000
}

/// What one request asks for.
struct Request {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: Interval,
}

fn read_request(query: Option<&str>) -> Result<Request, ApiError> {
    let fields = unique_fields(query.unwrap_or_default().as_bytes()).map_err(|reason| {
        ApiError::validation_failed(format!("The query is not valid: {reason}"))
    })?;
    let instant = |name: &str| {
        let text = fields
            .get(name)
            .ok_or_else(|| ApiError::validation_failed(format!("{name} is required.")))?;
        read_instant(text)
            .ok_or_else(|| ApiError::validation_failed(format!("{name} is not a valid date-time.")))
    };
    let (from, to) = (instant("Period.From")?, instant("Period.To")?);
    if to < from {
        return Err(ApiError::validation_failed(
            "Period.To must not be before Period.From.",
        ));
    }
    let interval = match fields.get("Interval") {
        None => Interval::Daily,
        Some(name) => Interval::parse(name).ok_or_else(|| {
            ApiError::validation_failed(format!(
                "Interval '{name}' is not one of QuarterHourly, Hourly, Daily, Weekly, Monthly, Yearly."
            ))
        })?,
    };
    // The sandbox simulates actual consumption only; the other types are documented but
    // not generated.
    for (name, simulated) in [("MetricType", "Consumption"), ("ValueType", "Actual")] {
        if let Some(value) = fields.get(name).filter(|value| *value != simulated) {
            return Err(ApiError::validation_failed(format!(
                "{name} '{value}' is not available for this contract."
            )));
        }
    }
    Ok(Request { from, to, interval })
}

/// What a metrics request finds: the contract, or why not.
enum Found {
    Contract(Value),
    UnknownCustomer,
    UnknownContract,
    NotPermitted,
}

impl Rabot {
    fn metrics_contract(&self, customer_number: &str, contract_number: &str, role: bool) -> Found {
        let customers = lock(&self.customers);
        match customers.get(customer_number) {
            None if role => Found::UnknownCustomer,
            None => Found::NotPermitted,
            Some(customer) if role || customer.is_linked() => customer
                .contract_position(contract_number)
                .and_then(|position| customer.contracts.get(position))
                .map_or(Found::UnknownContract, |contract| {
                    Found::Contract(contract.clone())
                }),
            Some(_) => Found::NotPermitted,
        }
    }
}

/// The contract's delivery as instants: its first day's Berlin midnight, its end day's next.
fn delivery(contract: &Value) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let day = |key: &str| {
        contract[key]
            .as_str()
            .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
    };
    let start = day("actualDateOfDelivery").and_then(berlin_midnight);
    let end = day("endDateOfDelivery")
        .and_then(|last| last.checked_add_days(Days::new(1)))
        .and_then(berlin_midnight);
    (start, end)
}

/// One generated period: start, end, kWh, and whether it is Final.
type Record = (DateTime<Utc>, DateTime<Utc>, f64, bool);

/// The records for `request`, oldest first, each with its value (kWh), or an error when
/// there would be too many.
fn records(
    seed: u64,
    contract: &Value,
    request: &Request,
    knobs: &MetricsKnobs,
    now: DateTime<Utc>,
) -> Result<Vec<Record>, ApiError> {
    let number = contract["contractNumber"].as_str().unwrap_or_default();
    let yearly = contract["expectedAnnualConsumptionInKwhPerYear"]
        .as_f64()
        .filter(|kwh| kwh.is_finite() && *kwh > 0.0)
        .unwrap_or(3_500.0);
    let (delivery_start, delivery_end) = delivery(contract);
    let lower = delivery_start.map_or(request.from, |start| start.max(request.from));
    let upper = [Some(request.to), Some(now), delivery_end]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
    let revision = knobs.revision.load(Ordering::Relaxed);
    let open = knobs.open_periods.load(Ordering::Relaxed).max(1);
    let mut records = Vec::new();
    let mut start = request.interval.start_of(lower);
    while start < upper {
        if records.len() == MAX_RECORDS {
            return Err(ApiError::validation_failed(format!(
                "The period holds more than {MAX_RECORDS} {} intervals.",
                request.interval.name()
            )));
        }
        let end = request.interval.next(start);
        let mut rng = Prng::new(
            seed ^ u64::from(revision).wrapping_mul(0x9E37_79B9),
            stream(number) ^ (start.timestamp() as u64) ^ request.interval as u64,
        );
        let hours = (end - start).num_minutes() as f64 / 60.0;
        let kwh = yearly * hours / 8_766.0 * f64::from(rng.between(700, 1_300)) / 1_000.0;
        let kwh = (kwh * 10_000.0).round() / 10_000.0;
        // Final once `open` periods have started after it and the last of them is running.
        let mut boundary = end;
        for _ in 1..open {
            boundary = request.interval.next(boundary);
        }
        records.push((start, end, kwh, boundary <= now));
        start = end;
    }
    Ok(records)
}

pub(super) async fn contract_metrics(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let scopes = authenticate(&shared, &headers)?;
    let Ok(Path((customer_number, contract_number))) = path else {
        return Err(ApiError::validation_failed(
            "The customer or contract number in the path is not valid.",
        ));
    };
    let rabot = &shared.rabot;
    let contract = match rabot.metrics_contract(
        &customer_number,
        &contract_number,
        has_scope(&scopes, APPLICATION_ROLE),
    ) {
        Found::Contract(contract) => contract,
        Found::UnknownCustomer => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("Customer {customer_number} was not found."),
            ));
        }
        Found::UnknownContract => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("Contract {contract_number} of customer {customer_number} was not found."),
            ));
        }
        Found::NotPermitted => {
            return Err(ApiError::insufficient_scope(
                "Contract metrics need the role:application scope or a linked customer.",
            ));
        }
    };
    let request = read_request(query.as_deref())?;
    let knobs = &rabot.metrics;
    let records = records(shared.options.seed, &contract, &request, knobs, Utc::now())?;
    let as_strings = knobs.values_as_strings.load(Ordering::Relaxed);
    let total: f64 = records.iter().map(|(_, _, kwh, _)| kwh).sum();
    let count = records.len();
    let considered = json!({
        "from": records.first().map(|(start, ..)| start.format(MOMENT).to_string()),
        "to": records.last().map(|(_, end, ..)| end.format(MOMENT).to_string()),
    });
    let mut served: Vec<Value> = records
        .into_iter()
        .map(|(start, _, kwh, is_final)| {
            json!({
                "moment": start.format(MOMENT).to_string(),
                "value": if as_strings { Value::from(kwh.to_string()) } else { Value::from(kwh) },
                "valueRelevanceType": "Actual",
                "valueState": if is_final { "Final" } else { "Preliminary" },
            })
        })
        .collect();
    if knobs.unreadable_record.load(Ordering::Relaxed) && !served.is_empty() {
        served.insert(
            0,
            json!({"moment": UNREADABLE_MOMENT, "value": 1.0,
                   "valueRelevanceType": "Actual", "valueState": "Final"}),
        );
    }
    let average = if count == 0 {
        0.0
    } else {
        (total / count as f64 * 10_000.0).round() / 10_000.0
    };
    Ok(Json(json!({
        "isSuccess": true,
        "message": null,
        "error": null,
        "refUri": null,
        "data": {
            "valueUnitInfo": "in kWh",
            "consideredDataPeriod": considered,
            "metricType": "Consumption",
            "valueType": "Actual",
            "interval": request.interval.name(),
            "intervalDuration": count,
            "averageValuePerInterval": average,
            "totalValue": (total * 10_000.0).round() / 10_000.0,
            "numberOfEntries": count,
            "records": served,
        },
    }))
    .into_response())
}

/// RABOT's contract metrics: the knobs that change them.
impl Sandbox {
    /// From now on every non-empty metrics answer starts with a record whose moment
    /// ([`UNREADABLE_MOMENT`]) is no date-time.
    pub fn set_rabot_metrics_unreadable_record(&self, on: bool) {
        let knobs = &self.shared.rabot.metrics;
        knobs.unreadable_record.store(on, Ordering::Relaxed);
    }

    /// From now on metric values are strings ("0.7001") instead of numbers.
    pub fn set_rabot_metrics_values_as_strings(&self, on: bool) {
        let knobs = &self.shared.rabot.metrics;
        knobs.values_as_strings.store(on, Ordering::Relaxed);
    }

    /// Every metric value is generated anew (RABOT correcting its data, Final periods too);
    /// 0 is the original data.
    pub fn set_rabot_metrics_revision(&self, revision: u32) {
        let knobs = &self.shared.rabot.metrics;
        knobs.revision.store(revision, Ordering::Relaxed);
    }

    /// How many periods at the end are not Final yet, the running one included (default 1).
    pub fn set_rabot_metrics_open_periods(&self, periods: u32) {
        let knobs = &self.shared.rabot.metrics;
        knobs.open_periods.store(periods, Ordering::Relaxed);
    }
}

/// The hour and minute a moment is written with, for tests of the alignment.
#[cfg(test)]
pub(super) fn clock_of(moment: &str) -> Option<(u32, u32)> {
    use chrono::Timelike;
    NaiveDateTime::parse_from_str(moment, MOMENT)
        .ok()
        .map(|at| (at.hour(), at.minute()))
}
