//! Rabobank's token response extras and the Consent Details Service answer, as the bank's
//! developer documentation describes them.
//!
//! Everything here is read leniently: a successful refresh response whose extra field fails to
//! parse would otherwise throw away the only copy of a new single-use refresh token.

use std::collections::BTreeMap;

use oauth2::ExtraTokenFields;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fields Rabobank adds to an RFC 6749 token response. Kept as raw JSON and interpreted on
/// use, so an odd value loses that value only, never the response.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RabobankTokenFields {
    /// Unix seconds when the user consented.
    #[serde(default)]
    pub consented_on: Option<Value>,
    /// `a:consentId <id>`; sent with the authorization-code exchange only.
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub refresh_token_expires_in: Option<Value>,
}

impl ExtraTokenFields for RabobankTokenFields {}

impl RabobankTokenFields {
    pub fn consented_on(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let seconds = as_u64(self.consented_on.as_ref()?)?;
        chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, 0)
    }

    pub fn consent_id(&self) -> Option<String> {
        let metadata = self.metadata.as_ref()?.as_str()?;
        let id = metadata.split_once("a:consentId")?.1;
        let id = id.split_whitespace().next()?;
        (!id.is_empty()).then(|| id.to_owned())
    }

    pub fn refresh_token_expires_in(&self) -> Option<u64> {
        as_u64(self.refresh_token_expires_in.as_ref()?)
    }
}

/// A number, or a string holding one.
fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `GET …/consents/{consentId}`: the accounts per scope and each one's status.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsentDetails {
    #[serde(rename = "consentId", default)]
    pub consent_id: Option<String>,
    #[serde(default)]
    pub access: BTreeMap<String, Vec<ConsentAccount>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsentAccount {
    #[serde(default)]
    pub status: Option<String>,
}

impl ConsentDetails {
    /// One word for the whole consent: `valid` while any account is valid, otherwise the first
    /// account status found (`expired`, `revokedByPsu`, …), or `unknown` with no accounts.
    pub fn summary_status(&self) -> String {
        let statuses: Vec<&str> = self
            .access
            .values()
            .flatten()
            .filter_map(|a| a.status.as_deref())
            .collect();
        if statuses.contains(&"valid") {
            "valid".to_owned()
        } else {
            statuses.first().copied().unwrap_or("unknown").to_owned()
        }
    }

    /// True when no account can be read any more: the grant is as good as revoked.
    /// `received` (not yet authorised) is not an ending.
    pub fn is_ended(&self) -> bool {
        const ENDED: [&str; 4] = ["expired", "revokedByPsu", "terminatedByTpp", "rejected"];
        let mut statuses = self
            .access
            .values()
            .flatten()
            .filter_map(|a| a.status.as_deref())
            .peekable();
        statuses.peek().is_some() && statuses.all(|s| ENDED.contains(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extras_are_read_leniently() {
        let fields: RabobankTokenFields = serde_json::from_value(json!({
            "consented_on": "1507267950",
            "metadata": "a:consentId 123a1a2a-888c-4015-8099-f88b080d0bbb",
            "refresh_token_expires_in": 2592000
        }))
        .expect("parses");
        assert_eq!(
            fields.consented_on().map(|t| t.timestamp()),
            Some(1507267950)
        );
        assert_eq!(
            fields.consent_id().as_deref(),
            Some("123a1a2a-888c-4015-8099-f88b080d0bbb")
        );
        assert_eq!(fields.refresh_token_expires_in(), Some(2592000));

        let odd: RabobankTokenFields = serde_json::from_value(json!({
            "consented_on": {"x": 1}, "metadata": 5, "refresh_token_expires_in": "soon"
        }))
        .expect("odd values never fail the response");
        assert_eq!(odd.consented_on(), None);
        assert_eq!(odd.consent_id(), None);
        assert_eq!(odd.refresh_token_expires_in(), None);
    }

    #[test]
    fn consent_status_summary() {
        let consent: ConsentDetails = serde_json::from_value(json!({
            "consentId": "c1",
            "access": {
                "ais.balances.read": [{"iban": "NL1", "status": "revokedByPsu"}],
                "ais.transactions.read-90days": [{"iban": "NL1", "status": "expired"}]
            }
        }))
        .expect("parses");
        assert!(consent.is_ended());
        assert_eq!(consent.summary_status(), "revokedByPsu");

        let mixed: ConsentDetails = serde_json::from_value(json!({
            "access": {"a": [{"status": "expired"}, {"status": "valid"}]}
        }))
        .expect("parses");
        assert!(!mixed.is_ended());
        assert_eq!(mixed.summary_status(), "valid");

        let empty: ConsentDetails = serde_json::from_value(json!({})).expect("parses");
        assert!(!empty.is_ended());
    }
}
