//! Schema drift: the names a run saw in a partner's answers that the typed columns do not know
//! (a new field, a new enum value, a new fee name), kept in `sync.runs.drift` so someone can map
//! them before finance miss them. Nothing is lost meanwhile: every payload is kept whole in
//! `raw`.
//!
//! A hostile or broken partner could send a million random field names; a run keeps at most
//! [`MAX_NAMES_PER_PLACE`] names per place, each cut to [`MAX_NAME_CHARS`], and counts the rest
//! under [`MORE_NAMES`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

pub const MAX_NAMES_PER_PLACE: usize = 50;
pub const MAX_NAME_CHARS: usize = 80;
/// The entry that counts the items whose names were not kept.
pub const MORE_NAMES: &str = "(more names)";

/// What one run saw: for each place (`contract` for a contract's fields,
/// `contract.contractState` for that field's values, …), each unknown name and how many items
/// carried it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift(BTreeMap<&'static str, BTreeMap<String, u64>>);

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One item carried `name`, unknown at `place`.
    pub fn note(&mut self, place: &'static str, name: &str) {
        self.add(place, name.chars().take(MAX_NAME_CHARS).collect(), 1);
    }

    fn add(&mut self, place: &'static str, name: String, items: u64) {
        let names = self.0.entry(place).or_default();
        // The overflow entry is not one of the names the cap counts.
        let kept = names.len() - usize::from(names.contains_key(MORE_NAMES));
        let key = if name == MORE_NAMES || names.contains_key(&name) || kept < MAX_NAMES_PER_PLACE {
            name
        } else {
            MORE_NAMES.to_owned()
        };
        *names.entry(key).or_default() += items;
    }

    /// Each member of `object` that `known` does not list.
    pub fn unknown_members(&mut self, place: &'static str, object: &Value, known: &[&str]) {
        if let Value::Object(members) = object {
            for name in members.keys() {
                if !known.contains(&name.as_str()) {
                    self.note(place, name);
                }
            }
        }
    }

    /// `value`, when it is there and `known` does not list it.
    pub fn unknown_value(&mut self, place: &'static str, value: Option<&str>, known: &[&str]) {
        if let Some(value) = value.filter(|value| !known.contains(value)) {
            self.note(place, value);
        }
    }

    pub fn merge(&mut self, other: Drift) {
        for (place, names) in other.0 {
            for (name, items) in names {
                self.add(place, name, items);
            }
        }
    }

    /// Each place with its names and item counts.
    pub fn places(&self) -> impl Iterator<Item = (&'static str, &BTreeMap<String, u64>)> {
        self.0.iter().map(|(place, names)| (*place, names))
    }

    /// `sync.runs.drift`: `null` when the run saw nothing new.
    pub fn to_json(&self) -> Option<Value> {
        (!self.is_empty()).then(|| {
            Value::Object(
                self.0
                    .iter()
                    .map(|(place, names)| {
                        let names = names
                            .iter()
                            .map(|(name, items)| (name.clone(), Value::from(*items)))
                            .collect();
                        ((*place).to_owned(), Value::Object(names))
                    })
                    .collect(),
            )
        })
    }
}

/// One unknown name seen by a job's runs since some moment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SeenDrift {
    pub job: String,
    pub place: String,
    pub name: String,
    /// Items that carried it, summed over the runs.
    pub items: i64,
    pub runs: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// Every unknown name runs that finished after `since` recorded, most recent first.
pub async fn seen_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<SeenDrift>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.job, p.key AS place, n.key AS name,
                sum(CASE WHEN jsonb_typeof(n.value) = 'number' THEN n.value::text::numeric ELSE 0 END)::bigint AS items,
                count(*) AS runs, min(r.finished_at) AS first_seen, max(r.finished_at) AS last_seen
           FROM sync.runs r
           CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(r.drift) = 'object' THEN r.drift ELSE '{}' END) p
           CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(p.value) = 'object' THEN p.value ELSE '{}' END) n
          WHERE r.drift IS NOT NULL AND r.finished_at > $1
          GROUP BY r.job, p.key, n.key
          ORDER BY max(r.finished_at) DESC, r.job, p.key, n.key",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_unknown_members_and_values_only() {
        let mut drift = Drift::default();
        let known = ["a", "b"];
        drift.unknown_members(
            "contract",
            &json!({"a": 1, "new": 2, "other": null}),
            &known,
        );
        drift.unknown_members("contract", &json!({"new": 3}), &known);
        drift.unknown_members("contract", &json!("not an object"), &known);
        drift.unknown_value("contract.state", Some("Open"), &known);
        drift.unknown_value("contract.state", Some("a"), &known);
        drift.unknown_value("contract.state", None, &known);
        assert_eq!(
            drift.to_json(),
            Some(json!({"contract": {"new": 2, "other": 1}, "contract.state": {"Open": 1}}))
        );
        assert_eq!(Drift::default().to_json(), None);
    }

    #[test]
    fn a_flood_of_names_is_bounded() {
        let mut drift = Drift::default();
        for i in 0..10_000 {
            drift.note("customer", &format!("{i}{}", "x".repeat(500)));
        }
        let (_, names) = drift.places().next().expect("one place");
        assert_eq!(names.len(), MAX_NAMES_PER_PLACE + 1);
        assert_eq!(names[MORE_NAMES], 10_000 - MAX_NAMES_PER_PLACE as u64);
        assert!(
            names
                .keys()
                .all(|name| name.chars().count() <= MAX_NAME_CHARS)
        );

        let mut merged = Drift::default();
        merged.merge(drift.clone());
        merged.merge(drift);
        let (_, names) = merged.places().next().expect("one place");
        assert_eq!(names.len(), MAX_NAMES_PER_PLACE + 1);
        assert_eq!(names[MORE_NAMES], 2 * (10_000 - MAX_NAMES_PER_PLACE as u64));
    }
}
