//! RABOT's contract metrics (`GET /customers/{n}/contracts/{k}/metrics`), read leniently.
//! `data` is one object: the unit (`valueUnitInfo`), the period considered, and `records`, one
//! per interval, each `{moment, value, valueRelevanceType, valueState}`.
//!
//! The timestamps carry no zone ("2024-09-13 22:00:00"). The documents' example starts its days
//! at 22:00 in September, which is midnight in Europe/Berlin written in UTC, but nothing says
//! so: they are read in `rabot.metrics_timezone` (UTC by default). A local time the zone's clock
//! shows twice (autumn) is read as the earlier instant; one it skips (spring) names no instant,
//! so its record cannot be read. A record that cannot be read is skipped and counted; an answer
//! that is no metrics object at all is refused, so it is never taken for "no consumption".

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::partners::lenient::{decimal_field, json_kind, str_field, without_nul};
use crate::store::drift::Drift;

/// A record's documented members; any other is schema drift.
const RECORD_MEMBERS: [&str; 4] = ["moment", "value", "valueRelevanceType", "valueState"];

/// RABOT's `Interval` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    QuarterHourly,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Interval {
    pub fn parse(name: &str) -> Option<Self> {
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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuarterHourly => "QuarterHourly",
            Self::Hourly => "Hourly",
            Self::Daily => "Daily",
            Self::Weekly => "Weekly",
            Self::Monthly => "Monthly",
            Self::Yearly => "Yearly",
        }
    }

    /// The end of the period starting at `start`: a fixed duration below a day; days, months
    /// and years counted on the clock of `zone` (a day in spring is 23 hours long there).
    pub fn after(self, start: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        let fixed = match self {
            Self::QuarterHourly => Some(Duration::minutes(15)),
            Self::Hourly => Some(Duration::hours(1)),
            _ => None,
        };
        if let Some(fixed) = fixed {
            return start + fixed;
        }
        let local = start.with_timezone(&zone).naive_local();
        let next = match self {
            Self::Daily => local.checked_add_days(chrono::Days::new(1)),
            Self::Weekly => local.checked_add_days(chrono::Days::new(7)),
            Self::Monthly => local.checked_add_months(chrono::Months::new(1)),
            _ => local.checked_add_months(chrono::Months::new(12)),
        };
        next.and_then(|next| {
            // A skipped local time: the first instant after the gap (an hour later at most).
            resolve(zone, next).or_else(|| resolve(zone, next + Duration::hours(1)))
        })
        .unwrap_or(start + Duration::days(1))
    }
}

/// One period of a metric: when it starts and ends, its value, and the record as RABOT sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPeriod {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Kept as the decimal text RABOT sent, so no precision is lost on the way to `numeric`;
    /// `None` when RABOT sent null.
    pub value: Option<String>,
    pub value_state: Option<String>,
    pub relevance_type: Option<String>,
    pub raw: Value,
}

impl MetricPeriod {
    /// Members of the record the documents do not list.
    pub fn note_drift(&self, drift: &mut Drift) {
        drift.unknown_members("metric record", &self.raw, &RECORD_MEMBERS);
    }
}

/// A metrics answer's periods, the unit they are in, and how many records could not be read.
#[derive(Debug, Default)]
pub struct ContractMetrics {
    pub unit: Option<String>,
    pub periods: Vec<MetricPeriod>,
    pub skipped: usize,
}

impl ContractMetrics {
    /// Reads the envelope's `data`, asked for in `interval`. A period ends where the next
    /// record starts when that record could be read, else after one `interval`.
    pub fn from_data(data: Value, interval: Interval, zone: Tz) -> Result<Self, String> {
        let data = without_nul(data);
        if !data.is_object() {
            return Err(format!(
                "data is {} instead of a metrics object",
                json_kind(&data)
            ));
        }
        let answered = str_field(&data, "interval");
        if let Some(answered) = answered.filter(|answered| answered != interval.as_str()) {
            // Periods of another length stored under this interval would be wrong rows.
            return Err(format!(
                "asked for {} periods, RABOT answered {answered:?}",
                interval.as_str()
            ));
        }
        let records = match data.get("records") {
            Some(Value::Array(records)) => records.clone(),
            // No records is a period without consumption, as an empty array would say.
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(format!(
                    "records is {} instead of an array",
                    json_kind(other)
                ));
            }
        };
        let read: Vec<Result<(DateTime<Utc>, Value), String>> = records
            .into_iter()
            .map(|record| read_start(&record, zone).map(|start| (start, record)))
            .collect();
        let mut metrics = Self {
            unit: str_field(&data, "valueUnitInfo"),
            ..Self::default()
        };
        for (position, item) in read.iter().enumerate() {
            let (start, record) = match item {
                Ok(found) => found,
                Err(reason) => {
                    tracing::warn!(partner = "rabot", %reason, "skipping a metric record that cannot be mirrored");
                    metrics.skipped += 1;
                    continue;
                }
            };
            let end = match read.get(position + 1) {
                Some(Ok((next, _))) if next > start => *next,
                _ => interval.after(*start, zone),
            };
            metrics.periods.push(MetricPeriod {
                start: *start,
                end,
                value: decimal_field(record, "value"),
                value_state: str_field(record, "valueState"),
                relevance_type: str_field(record, "valueRelevanceType"),
                raw: record.clone(),
            });
        }
        Ok(metrics)
    }
}

/// A record's start, or why it cannot be read.
fn read_start(record: &Value, zone: Tz) -> Result<DateTime<Utc>, String> {
    if !record.is_object() {
        return Err(format!("a metric record that is {}", json_kind(record)));
    }
    // A value that is there but no number would be stored as "no value": refused instead.
    match record.get("value") {
        None | Some(Value::Null) => {}
        Some(_) if decimal_field(record, "value").is_some() => {}
        Some(other) => return Err(format!("a metric record whose value is {other}")),
    }
    let text =
        str_field(record, "moment").ok_or_else(|| "a metric record without moment".to_owned())?;
    read_moment(&text, zone)
}

/// "2024-09-13 22:00:00" (or with a `T`, or fractional seconds) on the clock of `zone`; a
/// moment that does state its zone is taken as stated.
pub fn read_moment(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(zoned) = DateTime::parse_from_rfc3339(text) {
        return Ok(zoned.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .ok_or_else(|| format!("moment {text:?} is not a date-time"))?;
    resolve(zone, naive).ok_or_else(|| format!("moment {text:?} does not exist in {}", zone.name()))
}

/// The instant `local` names in `zone`: the earlier of two (autumn), none in a gap (spring).
fn resolve(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a date-time")
            .with_timezone(&Utc)
    }

    fn documented() -> Value {
        json!({
            "valueUnitInfo": "in kWh",
            "consideredDataPeriod": {"from": "2024-09-13 22:00:00", "to": "2024-09-15 22:00:00"},
            "metricType": "Consumption", "valueType": "Actual", "interval": "Daily",
            "intervalDuration": 2, "averageValuePerInterval": 0.7, "totalValue": 1.4,
            "numberOfEntries": 2,
            "records": [
                {"moment": "2024-09-13 22:00:00", "value": 0.7001,
                 "valueRelevanceType": "Actual", "valueState": "Final"},
                {"moment": "2024-09-14 22:00:00", "value": "0.6999",
                 "valueRelevanceType": "Actual", "valueState": "Preliminary"},
            ]
        })
    }

    #[test]
    fn the_documented_shape_is_read_in_utc_or_in_berlin() {
        let utc = ContractMetrics::from_data(documented(), Interval::Daily, Tz::UTC).unwrap();
        assert_eq!((utc.skipped, utc.unit.as_deref()), (0, Some("in kWh")));
        let [first, second] = utc.periods.as_slice() else {
            panic!("two periods: {utc:?}");
        };
        assert_eq!(first.start, at("2024-09-13T22:00:00Z"));
        assert_eq!(first.end, second.start);
        assert_eq!(second.end, at("2024-09-15T22:00:00Z"));
        assert_eq!(first.value.as_deref(), Some("0.7001"));
        assert_eq!(second.value.as_deref(), Some("0.6999"));
        assert_eq!(first.value_state.as_deref(), Some("Final"));
        assert_eq!(first.relevance_type.as_deref(), Some("Actual"));
        assert_eq!(first.raw, documented()["records"][0]);

        // The same record read on Berlin's clock is two hours earlier (summer time).
        let berlin = ContractMetrics::from_data(documented(), Interval::Daily, Berlin).unwrap();
        assert_eq!(berlin.periods[0].start, at("2024-09-13T20:00:00Z"));
    }

    #[test]
    fn local_times_twice_or_never_on_the_clock_do_not_panic() {
        // 02:30 on 27 October 2024 happens twice in Berlin: the earlier (summer time) instant.
        assert_eq!(
            read_moment("2024-10-27 02:30:00", Berlin),
            Ok(at("2024-10-27T00:30:00Z"))
        );
        // 02:30 on 31 March 2024 never happens there.
        assert!(read_moment("2024-03-31 02:30:00", Berlin).is_err());
        assert_eq!(
            read_moment("2024-03-31T02:30:00+02:00", Berlin),
            Ok(at("2024-03-31T00:30:00Z"))
        );
        let data = json!({"records": [
            {"moment": "2024-03-31 02:30:00", "value": 1},
            {"moment": "2024-03-31 03:30:00", "value": 1},
        ]});
        let read = ContractMetrics::from_data(data, Interval::Hourly, Berlin).unwrap();
        assert_eq!((read.skipped, read.periods.len()), (1, 1));
    }

    #[test]
    fn calendar_intervals_follow_the_zone_and_the_last_period_ends_one_interval_later() {
        // October in Berlin is 31 days and one hour: its winter time starts on the 27th.
        let start = at("2024-09-30T22:00:00Z");
        assert_eq!(
            Interval::Monthly.after(start, Berlin),
            at("2024-10-31T23:00:00Z")
        );
        assert_eq!(
            Interval::Daily.after(at("2024-03-30T23:00:00Z"), Berlin),
            at("2024-03-31T22:00:00Z")
        );
        assert_eq!(
            Interval::QuarterHourly.after(start, Berlin),
            at("2024-09-30T22:15:00Z")
        );
        assert_eq!(
            Interval::Yearly.after(at("2024-01-01T00:00:00Z"), Tz::UTC),
            at("2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn unreadable_records_are_skipped_and_the_period_before_one_ends_on_its_own() {
        let data = json!({"interval": "Monthly", "records": [
            {"moment": "2024-01-01 00:00:00", "value": 10},
            {"moment": "2024-13-45 25:00:00", "value": 11},
            {"moment": "2024-03-01 00:00:00", "value": "lots"},
            {"moment": "2024-04-01 00:00:00", "value": null},
            {"value": 3},
            "a string",
            {"moment": "2024-05-01 00:00:00", "value": "12.5"},
        ]});
        let read = ContractMetrics::from_data(data, Interval::Monthly, Tz::UTC).unwrap();
        assert_eq!(read.skipped, 4);
        let periods: Vec<_> = read
            .periods
            .iter()
            .map(|p| (p.start, p.end, p.value.clone()))
            .collect();
        assert_eq!(
            periods,
            [
                (
                    at("2024-01-01T00:00:00Z"),
                    at("2024-02-01T00:00:00Z"),
                    Some("10".to_owned())
                ),
                (at("2024-04-01T00:00:00Z"), at("2024-05-01T00:00:00Z"), None),
                (
                    at("2024-05-01T00:00:00Z"),
                    at("2024-06-01T00:00:00Z"),
                    Some("12.5".to_owned())
                ),
            ]
        );
    }

    #[test]
    fn an_answer_that_is_no_metrics_object_is_refused() {
        for data in [json!(null), json!([]), json!("x"), json!({"records": {}})] {
            assert!(
                ContractMetrics::from_data(data.clone(), Interval::Monthly, Tz::UTC).is_err(),
                "{data}"
            );
        }
        let other = json!({"interval": "Daily", "records": []});
        assert!(ContractMetrics::from_data(other, Interval::Monthly, Tz::UTC).is_err());
        let empty = ContractMetrics::from_data(json!({}), Interval::Monthly, Tz::UTC).unwrap();
        assert!(empty.periods.is_empty());
    }
}
