//! RABOT customer linking: create a link (RABOT's `POST /customers/link`) whose success and
//! failure URLs point at this daemon with an unguessable secret in the path, then record how the
//! customer's browser came back. The secret is stored hashed and works once, within 10 minutes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto;
use crate::partners::rabot::{LinkRequest, RabotClient, RabotError};
use crate::settings::{RABOT_LINKS_PATH, Settings};
use crate::store::links::{self as store, LinkRow, NewLink};

/// RABOT's authorization URLs are valid for 10 minutes; a link is void after that too.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The query parameter RABOT appends the customer number to the success URL under.
const CUSTOMER_NUMBER_PARAMETER: &str = "customerNumber";
const MAX_FIELD_CHARS: usize = 200;

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
    #[error("RABOT did not create the link: {0}")]
    Rabot(#[from] RabotError),
    /// The request reached RABOT but no answer came back: a link may exist there that nobody
    /// can use. Nothing was recorded here; a new link (a new secret) is safe to start.
    #[error("RABOT may have recorded the link; start again ({0})")]
    OutcomeUnknown(RabotError),
    #[error("database: {0}")]
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
    /// Unknown, expired or already completed: nothing changed.
    #[error("link {0}")]
    NotPending(&'static str),
    #[error("{0}")]
    BadAnswer(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
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

    /// Asks RABOT for an authorization URL, then records the pending link.
    pub async fn begin(&self, pool: &PgPool, spec: LinkSpec) -> Result<StartedLink, LinkError> {
        let spec = spec.validated()?;
        let secret = crypto::url_secret();
        let request = LinkRequest {
            success_url: format!("{}/{secret}/success", self.base_url),
            failure_url: format!("{}/{secret}/failure", self.base_url),
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
        let expires_at = store::insert(
            pool,
            &NewLink {
                id,
                token_hash: &crypto::url_secret_hash(&secret),
                external_id: &spec.external_id,
                auth_as: spec.auth_as.as_deref(),
                sign_up_url: spec.sign_up_url.as_deref(),
                authorization_url: authorization_url.as_str(),
                lifetime: LINK_LIFETIME,
            },
        )
        .await?;
        tracing::info!(link_id = %id, external_id = %spec.external_id, "customer link created");
        Ok(StartedLink {
            id,
            authorization_url,
            expires_at,
        })
    }

    /// Records the customer's answer on the pending link named by `secret`, once.
    pub async fn complete(
        &self,
        pool: &PgPool,
        secret: &str,
        answer: LinkAnswer,
    ) -> Result<LinkRow, CompleteError> {
        let hash = crypto::url_secret_hash(secret);
        let completed = match &answer {
            LinkAnswer::Approved { customer_number } => {
                let number = customer_number.trim();
                if number.is_empty()
                    || number.len() > MAX_FIELD_CHARS
                    || !number
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(CompleteError::BadAnswer(
                        "the customer number is missing or malformed".to_owned(),
                    ));
                }
                store::complete_linked(pool, &hash, number).await?
            }
            LinkAnswer::Refused {
                error_name,
                error_description,
            } => {
                let description = error_description
                    .as_deref()
                    .map(|d| d.chars().take(1000).collect::<String>());
                let name: String = error_name.chars().take(MAX_FIELD_CHARS).collect();
                store::complete_denied(pool, &hash, &name, description.as_deref()).await?
            }
        };
        match completed {
            Some(link) => {
                tracing::info!(link_id = %link.id, status = %link.status, customer_number = link.customer_number.as_deref().unwrap_or(""), "customer link completed");
                Ok(link)
            }
            None => Err(CompleteError::NotPending(
                store::refusal(pool, &hash).await?,
            )),
        }
    }

    /// RABOT's `DELETE /customers/{n}/link`, then the local links become `unlinked`. A customer
    /// RABOT no longer has linked (404) is still marked here.
    pub async fn unlink(&self, pool: &PgPool, customer_number: &str) -> Result<u64, LinkError> {
        match self.client.delete_link(customer_number).await {
            Ok(()) => {}
            Err(error) if error.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                tracing::warn!(customer_number, error = %error, "RABOT has no link for this customer; marking it unlinked here");
            }
            Err(error) => return Err(error.into()),
        }
        let marked = store::mark_unlinked(pool, customer_number).await?;
        tracing::info!(customer_number, links = marked, "customer unlinked");
        Ok(marked)
    }
}
