//! RABOT customer linking: create a link (RABOT's `POST /customers/link`) whose success and
//! failure URLs point at this daemon, each with its own unguessable secret in the path, then
//! record how the customer's browser came back. The secrets are stored hashed; either ends the
//! link, once, within 10 minutes. The browser carries the redirect, so the customer number in a
//! success redirect is only believed once RABOT confirms it: that customer carries the link's
//! external id and has the Linked relation.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto;
use crate::partners::rabot::link_store::{
    self as store, LinkRow, NewLink, PARTNER_RABOT, Redirect,
};
use crate::partners::rabot::{LinkRequest, RabotClient, RabotError};
use crate::settings::{RABOT_LINKS_PATH, Settings};
use crate::store::audit::{self, Actor, Entry};

/// RABOT's authorization URLs are valid for 10 minutes; a link is void after that too.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The query parameter RABOT appends the customer number to the success URL under.
const CUSTOMER_NUMBER_PARAMETER: &str = "customerNumber";
const MAX_FIELD_CHARS: usize = 200;
/// How much of a refused customer number is kept: enough to recognise it, not a storage sink.
const MAX_OFFERED_CHARS: usize = 64;
/// The relation RABOT gives a customer who linked a partner.
const LINKED_RELATION: &str = "Linked";

/// What starts a link: the CLI's flags and the admin endpoint's JSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkSpec {
    /// Our id for the customer; RABOT stores it as the customer's external identifier.
    pub external_id: String,
    /// The partner account whose login page to show (e.g. `rabot-charge`).
    #[serde(default)]
    pub auth_as: Option<String>,
    /// Where RABOT's login page offers to sign up.
    #[serde(default)]
    pub sign_up_url: Option<String>,
}

impl LinkSpec {
    /// Trims the fields and refuses what RABOT could not take; the message names the field.
    pub fn validated(self) -> Result<Self, LinkError> {
        let external_id = self.external_id.trim().to_owned();
        check_text("externalId", &external_id)?;
        let auth_as = self
            .auth_as
            .map(|slug| slug.trim().to_owned())
            .filter(|slug| !slug.is_empty());
        if let Some(slug) = &auth_as {
            if slug.len() > MAX_FIELD_CHARS
                || !slug
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(LinkError::Invalid(
                    "authAs must be a partner slug: letters, digits, '-' or '_'".to_owned(),
                ));
            }
        }
        let sign_up_url = self
            .sign_up_url
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty());
        if let Some(url) = &sign_up_url {
            let parsed = url::Url::parse(url)
                .map_err(|_| LinkError::Invalid("signUpUrl is not a URL".to_owned()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(LinkError::Invalid(
                    "signUpUrl must be an http(s) URL".to_owned(),
                ));
            }
        }
        Ok(Self {
            external_id,
            auth_as,
            sign_up_url,
        })
    }
}

fn check_text(field: &str, value: &str) -> Result<(), LinkError> {
    if value.is_empty()
        || value.chars().count() > MAX_FIELD_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(LinkError::Invalid(format!(
            "{field} must be 1 to {MAX_FIELD_CHARS} printable characters"
        )));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid link request: {0}")]
    Invalid(String),
    #[error("RABOT did not create the link")]
    Rabot(#[from] RabotError),
    /// The request reached RABOT but no answer came back: a link may exist there that nobody
    /// can use. Nothing was recorded here; a new link (a new secret) is safe to start.
    #[error("RABOT may have recorded the link; start again")]
    OutcomeUnknown(#[source] RabotError),
    #[error("database")]
    Database(#[from] sqlx::Error),
}

/// A link waiting for the customer.
#[derive(Debug, Clone)]
pub struct StartedLink {
    pub id: Uuid,
    pub authorization_url: url::Url,
    pub expires_at: DateTime<Utc>,
}

/// How the customer's browser came back, as RABOT words it.
#[derive(Debug, Clone)]
pub enum LinkAnswer {
    Approved {
        customer_number: String,
    },
    Refused {
        error_name: String,
        error_description: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// Unknown (or the other redirect's secret), expired or already completed: nothing changed.
    #[error("link {0}")]
    NotPending(&'static str),
    /// RABOT does not confirm the offered customer number; the refusal is recorded and the link
    /// stays pending, so the customer's real redirect can still complete it.
    #[error("customer number refused: {0}")]
    Refused(&'static str),
    /// RABOT could not be asked; the link stays pending and the same redirect may be retried.
    #[error("could not confirm the customer with RABOT")]
    Unconfirmed(#[source] RabotError),
    #[error("database")]
    Database(#[from] sqlx::Error),
}

/// What RABOT's customer list says about a customer number offered for a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    Refused(&'static str),
}

/// Checks `customer_number` against RABOT's customers filtered by the link's external id:
/// it must be there, carry that external id, and have the Linked relation. RABOT documents no
/// endpoint for one customer, so the filtered list is the one way to ask.
pub async fn confirm_customer(
    client: &RabotClient,
    external_id: &str,
    customer_number: &str,
) -> Result<Confirmation, RabotError> {
    let mut pages = client.customer_pages(Some(external_id.to_owned()));
    while let Some(page) = pages.try_next().await? {
        let Some(customer) = page
            .items
            .into_iter()
            .find(|customer| customer.customer_number == customer_number)
        else {
            continue;
        };
        // The filter is RABOT's; the external id is checked here as well, in case it was not
        // applied.
        if customer.external_id.as_deref() != Some(external_id) {
            return Ok(Confirmation::Refused(
                "the RABOT customer with this number carries another external id",
            ));
        }
        if !customer
            .relations
            .iter()
            .any(|relation| relation.eq_ignore_ascii_case(LINKED_RELATION))
        {
            return Ok(Confirmation::Refused(
                "the RABOT customer with this number has not linked us (no Linked relation)",
            ));
        }
        return Ok(Confirmation::Confirmed);
    }
    Ok(Confirmation::Refused(
        "no RABOT customer with this number carries the link's external id",
    ))
}

/// A customer number as RABOT writes them: digits and letters, perhaps dashes.
fn well_formed_customer_number(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= MAX_FIELD_CHARS
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The offered number as it may be stored and logged: cut short, every character outside
/// printable ASCII escaped (it came from a browser).
fn escaped_offer(number: &str) -> String {
    number
        .chars()
        .take(MAX_OFFERED_CHARS)
        .flat_map(char::escape_default)
        .collect()
}

pub struct RabotLinks {
    client: RabotClient,
    /// `{server.public_url}/links/rabot`: the success and failure URLs hang below it.
    base_url: String,
}

impl RabotLinks {
    /// Present when RABOT is enabled: linking and the mirror jobs share its client.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Arc<Self>>> {
        if !settings.rabot.enabled {
            return Ok(None);
        }
        let client = RabotClient::new(&settings.rabot, &settings.http)?;
        Ok(Some(Arc::new(Self::new(client, settings))))
    }

    pub fn new(client: RabotClient, settings: &Settings) -> Self {
        Self {
            client,
            base_url: format!(
                "{}{RABOT_LINKS_PATH}",
                settings.server.public_url.trim_end_matches('/')
            ),
        }
    }

    pub fn client(&self) -> &RabotClient {
        &self.client
    }

    /// Asks RABOT for an authorization URL, then records the pending link and, in the same
    /// transaction, its audit entry (`actor` started it).
    pub async fn begin(
        &self,
        pool: &PgPool,
        spec: LinkSpec,
        actor: &Actor,
    ) -> Result<StartedLink, LinkError> {
        let spec = spec.validated()?;
        // Two secrets: whoever sees one redirect URL (a log, a shoulder) cannot end the link the
        // other way.
        let success_secret = crypto::url_secret();
        let failure_secret = crypto::url_secret();
        let request = LinkRequest {
            success_url: format!("{}/{success_secret}/success", self.base_url),
            failure_url: format!("{}/{failure_secret}/failure", self.base_url),
            sign_up_url: spec.sign_up_url.clone(),
            auth_as: spec.auth_as.clone(),
            customer_number_query_parameter_name: CUSTOMER_NUMBER_PARAMETER.to_owned(),
            external_customer_id: spec.external_id.clone(),
        };
        let authorization_url =
            self.client
                .create_link(&request)
                .await
                .map_err(|error| match error {
                    error @ RabotError::OutcomeUnknown { .. } => LinkError::OutcomeUnknown(error),
                    other => LinkError::Rabot(other),
                })?;
        let id = Uuid::new_v4();
        let mut tx = pool.begin().await?;
        let expires_at = store::insert(
            &mut *tx,
            &NewLink {
                id,
                success_hash: &crypto::url_secret_hash(&success_secret),
                failure_hash: &crypto::url_secret_hash(&failure_secret),
                external_id: &spec.external_id,
                auth_as: spec.auth_as.as_deref(),
                sign_up_url: spec.sign_up_url.as_deref(),
                authorization_url: authorization_url.as_str(),
                lifetime: LINK_LIFETIME,
            },
        )
        .await?;
        let entry = link_entry(actor, "link.created", &spec.external_id).detail(json!({
            "link_id": id,
            "auth_as": spec.auth_as,
        }));
        audit::record(&mut *tx, &entry).await?;
        tx.commit().await?;
        tracing::info!(link_id = %id, external_id = %spec.external_id, "customer link created");
        Ok(StartedLink {
            id,
            authorization_url,
            expires_at,
        })
    }

    /// Records the customer's answer on the pending link named by `secret`, once: an approval
    /// arrives with the success secret and a customer number RABOT confirms, a refusal with the
    /// failure secret. A secret used on the other redirect is unknown there. `actor` carried
    /// the redirect (a browser); each ending is audited in the transaction that records it.
    pub async fn complete(
        &self,
        pool: &PgPool,
        secret: &str,
        answer: LinkAnswer,
        actor: &Actor,
    ) -> Result<LinkRow, CompleteError> {
        let hash = crypto::url_secret_hash(secret);
        let (redirect, completed) = match &answer {
            LinkAnswer::Approved { customer_number } => (
                Redirect::Success,
                self.approve(pool, &hash, customer_number.trim(), actor)
                    .await?,
            ),
            LinkAnswer::Refused {
                error_name,
                error_description,
            } => {
                let description = error_description
                    .as_deref()
                    .map(|d| d.chars().take(1000).collect::<String>());
                let name: String = error_name.chars().take(MAX_FIELD_CHARS).collect();
                let mut tx = pool.begin().await?;
                let denied =
                    store::complete_denied(&mut *tx, &hash, &name, description.as_deref()).await?;
                if let Some(link) = &denied {
                    let entry = link_entry(actor, "link.denied", &link.external_id).detail(json!({
                        "link_id": link.id,
                        "error_name": name,
                    }));
                    audit::record(&mut *tx, &entry).await?;
                }
                tx.commit().await?;
                (Redirect::Failure, denied)
            }
        };
        match completed {
            Some(link) => {
                tracing::info!(link_id = %link.id, status = %link.status, customer_number = link.customer_number.as_deref().unwrap_or(""), "customer link completed");
                Ok(link)
            }
            None => Err(CompleteError::NotPending(
                store::refusal(pool, redirect, &hash).await?,
            )),
        }
    }

    /// The success redirect: the link must be pending, and RABOT must confirm the number before
    /// it is recorded. `None` when the link is not (or no longer) pending.
    async fn approve(
        &self,
        pool: &PgPool,
        success_hash: &[u8],
        customer_number: &str,
        actor: &Actor,
    ) -> Result<Option<LinkRow>, CompleteError> {
        let Some(link) = store::pending_by_success(pool, success_hash).await? else {
            return Ok(None);
        };
        let confirmation = if well_formed_customer_number(customer_number) {
            confirm_customer(&self.client, &link.external_id, customer_number)
                .await
                .map_err(|error| {
                    tracing::warn!(link_id = %link.id, error = %error, "cannot confirm a linked customer with RABOT; the link stays pending");
                    CompleteError::Unconfirmed(error)
                })?
        } else {
            Confirmation::Refused("the customer number is missing or malformed")
        };
        if let Confirmation::Refused(reason) = confirmation {
            let offered = escaped_offer(customer_number);
            let mut tx = pool.begin().await?;
            let recorded = store::record_refusal(&mut *tx, link.id, reason, &offered).await?;
            // As bounded as the refusals: a replayed URL cannot flood the trail either.
            if recorded {
                let entry = link_entry(actor, "link.refused", &link.external_id).detail(json!({
                    "link_id": link.id,
                    "reason": reason,
                    "offered_customer_number": offered,
                }));
                audit::record(&mut *tx, &entry).await?;
            }
            tx.commit().await?;
            tracing::warn!(link_id = %link.id, reason, offered_customer_number = %offered, recorded, "refused a customer number for a link; the link stays pending");
            return Err(CompleteError::Refused(reason));
        }
        // Conditional again: another redirect may have ended the link while RABOT was asked.
        let mut tx = pool.begin().await?;
        let linked = store::complete_linked(&mut *tx, success_hash, customer_number).await?;
        if let Some(row) = &linked {
            let entry = link_entry(actor, "link.linked", customer_number).detail(json!({
                "link_id": row.id,
                "external_id": row.external_id,
            }));
            audit::record(&mut *tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(linked)
    }

    /// RABOT's `DELETE /customers/{n}/link`, then the local links become `unlinked`. A customer
    /// RABOT no longer has linked (404) is still marked here, and audited with `actor`.
    pub async fn unlink(
        &self,
        pool: &PgPool,
        customer_number: &str,
        actor: &Actor,
    ) -> Result<u64, LinkError> {
        let mut linked_at_rabot = true;
        match self.client.delete_link(customer_number).await {
            Ok(()) => {}
            Err(error) if error.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                tracing::warn!(customer_number, error = %error, "RABOT has no link for this customer; marking it unlinked here");
                linked_at_rabot = false;
            }
            Err(error) => return Err(error.into()),
        }
        let mut tx = pool.begin().await?;
        let marked = store::mark_unlinked(&mut *tx, customer_number).await?;
        let entry = link_entry(actor, "link.unlinked", customer_number).detail(json!({
            "links": marked,
            "linked_at_rabot": linked_at_rabot,
        }));
        audit::record(&mut *tx, &entry).await?;
        tx.commit().await?;
        tracing::info!(customer_number, links = marked, "customer unlinked");
        Ok(marked)
    }
}

/// An audit entry about a RABOT link; `subject` is the external id or the customer number.
fn link_entry(actor: &Actor, action: &'static str, subject: &str) -> Entry {
    Entry::new(actor, action)
        .partner(PARTNER_RABOT)
        .subject(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_numbers_from_the_browser_are_checked_and_escaped() {
        assert!(well_formed_customer_number("46491184"));
        assert!(well_formed_customer_number("AB-12"));
        for bad in [
            "",
            "12 34",
            "12;DROP",
            "١٢٣",
            &"9".repeat(MAX_FIELD_CHARS + 1)[..],
        ] {
            assert!(!well_formed_customer_number(bad), "{bad:?}");
        }
        assert_eq!(escaped_offer("123"), "123");
        assert_eq!(escaped_offer("a\nb\u{202e}"), "a\\nb\\u{202e}");
        assert_eq!(escaped_offer(&"x".repeat(500)).len(), MAX_OFFERED_CHARS);
    }
}
