//! A partner's bad days on demand: list answers that come back wrong (empty, `data: null`, rows
//! without their key, NUL characters, cut short, the connection dropped mid-answer) and RABOT
//! customers deleted upstream while a pass is listing them. The shapes are RABOT's documented
//! envelope (`data`, `hasMoreItems`, `count`, as RABOT documents it), bent the way a real
//! partner's answers go wrong.

use std::collections::VecDeque;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::Value;

use crate::prng::Prng;

/// How the next matching answer goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// `data: []`, `hasMoreItems: false`, `count: 0`: the list looks empty.
    EmptyList,
    /// `data: null`.
    NullData,
    /// The first row's `customerNumber` / `contractNumber` is null.
    NullKey,
    /// The first row has no `customerNumber` / `contractNumber` at all.
    MissingKey,
    /// Every string in the answer but the row keys carries a U+0000 in its middle.
    NulInStrings,
    /// The body stops halfway (a proxy cut the answer short).
    Truncated,
    /// The status line and headers arrive, then the connection drops.
    Reset,
}

impl Tamper {
    pub const ALL: [Tamper; 7] = [
        Tamper::EmptyList,
        Tamper::NullData,
        Tamper::NullKey,
        Tamper::MissingKey,
        Tamper::NulInStrings,
        Tamper::Truncated,
        Tamper::Reset,
    ];
}

/// A tampered answer for the next `times` successful answers whose path (with its query)
/// contains `path_contains`.
#[derive(Debug, Clone)]
pub struct TamperFault {
    pub path_contains: String,
    pub tamper: Tamper,
    pub times: u32,
}

/// Customers deleted upstream while they are being listed: before each RABOT API request,
/// with `probability`, `burst` random customers disappear, until `total` are gone.
#[derive(Debug, Clone, Copy)]
pub struct Deletions {
    pub probability: f64,
    pub burst: usize,
    pub total: usize,
    pub seed: u64,
}

/// The queued tampers and the deletions in progress.
#[derive(Default)]
pub(super) struct BadDays {
    tampers: VecDeque<TamperFault>,
    deletions: Option<(Deletions, Prng)>,
    /// Customers deleted by [`Deletions`], in order.
    pub(super) deleted: Vec<String>,
}

impl BadDays {
    pub(super) fn push_tamper(&mut self, fault: TamperFault) {
        if fault.times > 0 {
            self.tampers.push_back(fault);
        }
    }

    pub(super) fn take_tamper(&mut self, path: &str) -> Option<Tamper> {
        let index = self
            .tampers
            .iter()
            .position(|fault| path.contains(fault.path_contains.as_str()))?;
        let fault = self.tampers.get_mut(index)?;
        fault.times -= 1;
        let tamper = fault.tamper;
        if fault.times == 0 {
            self.tampers.remove(index);
        }
        Some(tamper)
    }

    /// Forgets queued tampers and planned deletions; keeps the record of what was deleted.
    pub(super) fn end(&mut self) {
        self.tampers.clear();
        self.deletions = None;
    }

    pub(super) fn start_deletions(&mut self, deletions: Deletions) {
        self.deletions = Some((deletions, Prng::new(deletions.seed, 0xDE1E7E)));
    }

    /// How many customers to delete now, and the random draws to pick them with.
    pub(super) fn deletions_due(&mut self) -> Option<(usize, Prng)> {
        let (plan, rng) = self.deletions.as_mut()?;
        let left = plan.total.saturating_sub(self.deleted.len());
        if left == 0 {
            return None;
        }
        let draw = rng.next_u64() as f64 / u64::MAX as f64;
        if draw >= plan.probability {
            return None;
        }
        Some((plan.burst.min(left), Prng::new(rng.next_u64(), 1)))
    }
}

/// `response` as the tamper bends it. Only JSON answers are bent; anything else passes as is.
pub(super) async fn apply(tamper: Tamper, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let body = match tamper {
        Tamper::Truncated => {
            let half = bytes.slice(..bytes.len() / 2);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
            Body::from(half)
        }
        Tamper::Reset => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from_stream(futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::other("connection reset"))
            }))
        }
        _ => match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut answer) => {
                bend(tamper, &mut answer);
                let text = serde_json::to_vec(&answer).unwrap_or_default();
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
                Body::from(text)
            }
            Err(_) => Body::from(bytes),
        },
    };
    Response::from_parts(parts, body)
}

fn bend(tamper: Tamper, answer: &mut Value) {
    match tamper {
        Tamper::EmptyList => {
            answer["data"] = Value::Array(Vec::new());
            answer["hasMoreItems"] = Value::Bool(false);
            answer["count"] = Value::from(0);
        }
        Tamper::NullData => answer["data"] = Value::Null,
        Tamper::NullKey | Tamper::MissingKey => {
            let Some(first) = answer["data"].get_mut(0).and_then(Value::as_object_mut) else {
                return;
            };
            for key in ["customerNumber", "contractNumber"] {
                if first.contains_key(key) {
                    if tamper == Tamper::NullKey {
                        first.insert(key.to_owned(), Value::Null);
                    } else {
                        first.remove(key);
                    }
                }
            }
        }
        Tamper::NulInStrings => with_nul(answer),
        Tamper::Truncated | Tamper::Reset => {}
    }
}

fn with_nul(value: &mut Value) {
    match value {
        Value::String(text) => {
            let middle = text.len() / 2;
            let cut = (0..=middle)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.insert(cut, '\0');
        }
        Value::Array(items) => items.iter_mut().for_each(with_nul),
        Value::Object(fields) => fields
            .iter_mut()
            .filter(|(key, _)| !matches!(key.as_str(), "customerNumber" | "contractNumber"))
            .for_each(|(_, value)| with_nul(value)),
        _ => {}
    }
}
