//! Lenient reading of partner JSON shared by the wire modules: a field that is missing, null or
//! of an unexpected type reads as `None` instead of failing the whole item (the raw JSON is kept
//! elsewhere, so nothing is lost).

use chrono::NaiveDate;
use serde_json::Value;

pub(crate) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn str_field(object: &Value, key: &str) -> Option<String> {
    object.get(key).and_then(scalar_string)
}

/// Accepts "2025-03-01" and date-times starting with a date; anything else stays only in `raw`.
pub(crate) fn date_field(object: &Value, key: &str) -> Option<NaiveDate> {
    let text = object.get(key)?.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

/// A number, or a string holding one ("3500.5"); validated so the cast to numeric cannot fail.
pub(crate) fn decimal_field(object: &Value, key: &str) -> Option<String> {
    let text = match object.get(key)? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|_| text)
}
