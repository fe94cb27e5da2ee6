//! Lenient reading of partner JSON shared by the wire modules: a field that is missing, null or
//! of an unexpected type reads as `None` instead of failing the whole item (the raw JSON is kept
//! elsewhere, so nothing is lost).

use chrono::NaiveDate;
use serde_json::Value;

/// What kind of JSON value `value` is, for an error message ("a string", "null", …).
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

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

/// What U+0000 becomes in everything we store: PostgreSQL refuses the NUL character in `text`
/// and `jsonb`, so one such character would otherwise fail the whole pass, every pass. U+FFFD
/// (the replacement character) keeps the rest of the string and shows where something was.
pub(crate) const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `value` with every U+0000 in its strings and object keys replaced by [`NUL_REPLACEMENT`].
/// Applied to each partner item before it is read, so typed columns, payload and content hash
/// all agree.
pub(crate) fn without_nul(value: Value) -> Value {
    fn clean(text: String) -> String {
        if text.contains('\0') {
            text.replace('\0', &NUL_REPLACEMENT.to_string())
        } else {
            text
        }
    }
    match value {
        Value::String(text) => Value::String(clean(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (clean(key), without_nul(value)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_replaced_in_strings_and_keys_at_any_depth() {
        let raw = json!({"a\u{0}b": ["x\u{0}", {"deep": "\u{0}\u{0}"}], "n": 1, "ok": "fine"});
        let clean = without_nul(raw);
        assert_eq!(
            clean,
            json!({"a\u{FFFD}b": ["x\u{FFFD}", {"deep": "\u{FFFD}\u{FFFD}"}], "n": 1, "ok": "fine"})
        );
        assert!(!clean.to_string().contains("\\u0000"));
    }
}
