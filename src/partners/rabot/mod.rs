//! RABOT Partner API client: client-credentials auth, and the customer and contract lists as
//! streams of pages, so a caller's memory never grows with the number of customers.

pub mod wire;

use std::sync::Arc;

use futures::Stream;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::http::authorized::{ApiError, AuthorizedHttp};
use crate::http::client_credentials::ClientCredentials;
use crate::http::token_cache::TokenCache;
use crate::http::{HttpError, PartnerHttp, RateLimit, Replay};
use crate::settings::{HttpSettings, RabotSettings};
pub use wire::{Contract, Customer, LinkRequest};

pub const PARTNER: &str = "rabot";

#[derive(Debug, thiserror::Error)]
pub enum RabotError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("rabot answered {path} with isSuccess=false: {detail}")]
    Unsuccessful { path: String, detail: String },
    #[error("rabot answered {path} with an unexpected shape: {detail}")]
    Protocol { path: String, detail: String },
    /// A request that must not run twice reached RABOT (or may have), and no usable answer
    /// came back: RABOT may have acted on it. It is not sent again.
    #[error("rabot may have acted on {path}, but gave no usable answer: {detail}")]
    OutcomeUnknown { path: String, detail: String },
}

impl RabotError {
    /// The HTTP status RABOT answered with, when that is what failed.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            RabotError::Api(ApiError::Http(error)) => error.status(),
            RabotError::Api(ApiError::Forbidden { .. }) => Some(reqwest::StatusCode::FORBIDDEN),
            _ => None,
        }
    }
}

/// Items from one or more pages, with the items that could not be read set aside (logged, counted).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub skipped: usize,
    /// Pages these items came from.
    pub pages: usize,
}

#[derive(Clone)]
pub struct RabotClient {
    api: AuthorizedHttp,
    base: url::Url,
    page_size: u32,
}

impl RabotClient {
    pub fn new(settings: &RabotSettings, http_settings: &HttpSettings) -> anyhow::Result<Self> {
        let http = PartnerHttp::new(
            PARTNER,
            http_settings,
            RateLimit {
                requests_per_second: settings.requests_per_second,
                burst: settings.burst,
            },
        )?;
        let tokens = TokenCache::new(
            PARTNER,
            ClientCredentials {
                http: http.clone(),
                token_url: url::Url::parse(&settings.token_url)?,
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                scopes: settings.scopes.clone(),
                settings_prefix: "rabot",
            },
        );
        Ok(Self {
            api: AuthorizedHttp::new(http, Arc::new(tokens), &settings.scopes),
            base: url::Url::parse(&settings.api_base_url)?,
            page_size: settings.page_size,
        })
    }

    /// Requests sent so far, token requests and retries included.
    pub fn requests_sent(&self) -> u64 {
        self.api.http().requests_sent()
    }

    pub fn api(&self) -> &AuthorizedHttp {
        &self.api
    }

    /// `GET /customers`, optionally filtered by `filter.externalId`, page by page.
    pub fn customer_pages(
        &self,
        external_id: Option<String>,
    ) -> BoxStream<'_, Result<Page<Customer>, RabotError>> {
        let url = self.url(&["customers"]);
        self.pages(url, external_id.map(|id| ("filter.externalId", id)))
            .map_ok(|page| read_items(page, Customer::from_wire))
            .boxed()
    }

    /// `GET /customers/{customerNumber}/contracts`, page by page.
    pub fn contract_pages<'a>(
        &'a self,
        customer_number: &'a str,
    ) -> BoxStream<'a, Result<Page<Contract>, RabotError>> {
        let url = self.url(&["customers", customer_number, "contracts"]);
        self.pages(url, None)
            .map_ok(move |page| read_items(page, |raw| Contract::from_wire(customer_number, raw)))
            .boxed()
    }

    /// Every contract of one customer.
    pub async fn contracts(&self, customer_number: String) -> Result<Page<Contract>, RabotError> {
        self.contract_pages(&customer_number)
            .try_fold(
                Page {
                    items: Vec::new(),
                    skipped: 0,
                    pages: 0,
                },
                |mut all, page| async move {
                    all.items.extend(page.items);
                    all.skipped += page.skipped;
                    all.pages += page.pages;
                    Ok(all)
                },
            )
            .await
    }

    /// `POST /customers/link`: the URL to send the customer to (valid about 10 minutes).
    pub async fn create_link(&self, request: &LinkRequest) -> Result<url::Url, RabotError> {
        let url = self.url(&["customers", "link"]);
        let path = url.path().to_owned();
        // Creating a link is not idempotent: once the request may have reached RABOT it is
        // never sent again (a second link for the same customer), only reported.
        let answer: wire::LinkAnswer = self
            .api
            .post_json_with(Replay::OnlyUnsent, &url, request)
            .await
            .map_err(|error| match error {
                ApiError::Http(error) if may_have_been_processed(&error) => {
                    RabotError::OutcomeUnknown {
                        path: path.clone(),
                        detail: error.to_string(),
                    }
                }
                other => other.into(),
            })?;
        if answer.envelope.is_success == Some(false) {
            return Err(RabotError::Unsuccessful {
                detail: answer.envelope.error_text(),
                path,
            });
        }
        let Some(raw) = answer.authorization_url() else {
            return Err(RabotError::Protocol {
                path,
                detail: "no authorizationUrl in the answer".to_owned(),
            });
        };
        // The customer's browser is sent there: it must be a web URL, nothing else.
        match url::Url::parse(raw) {
            Ok(parsed) if matches!(parsed.scheme(), "https" | "http") => Ok(parsed),
            _ => Err(RabotError::Protocol {
                path,
                detail: "authorizationUrl is not an http(s) URL".to_owned(),
            }),
        }
    }

    /// `DELETE /customers/{customerNumber}/link`.
    pub async fn delete_link(&self, customer_number: &str) -> Result<(), RabotError> {
        let url = self.url(&["customers", customer_number, "link"]);
        Ok(self.api.delete(&url).await?)
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        // `path_segments_mut` percent-encodes each segment, so a customer number can never
        // change the path. The base was validated as an http(s) URL, which always has segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Offset pagination: continue while `hasMoreItems` (or, if it is missing, while pages are
    /// full), advancing by the items actually received in case the server caps `limit`.
    /// A server that ignores `offset` would make this loop forever, so a page that starts with
    /// the same item as the previous one ends the pass with an error.
    fn pages(
        &self,
        url: url::Url,
        filter: Option<(&'static str, String)>,
    ) -> impl Stream<Item = Result<Vec<Value>, RabotError>> + Send + '_ {
        stream::try_unfold(
            Some((0usize, None)),
            move |state: Option<(usize, Option<Value>)>| {
                let mut url = url.clone();
                let filter = filter.clone();
                async move {
                    let Some((offset, previous_first)) = state else {
                        return Ok(None);
                    };
                    {
                        let mut query = url.query_pairs_mut();
                        query
                            .append_pair("offset", &offset.to_string())
                            .append_pair("limit", &self.page_size.to_string());
                        if let Some((key, value)) = &filter {
                            query.append_pair(key, value);
                        }
                    }
                    let envelope: wire::Envelope = self.api.get_json(&url).await?;
                    let path = url.path().to_owned();
                    if envelope.is_success == Some(false) {
                        return Err(RabotError::Unsuccessful {
                            detail: envelope.error_text(),
                            path,
                        });
                    }
                    let items = match envelope.data {
                        Some(Value::Array(items)) => items,
                        None | Some(Value::Null) => Vec::new(),
                        Some(other) => {
                            return Err(RabotError::Protocol {
                                path,
                                detail: format!(
                                    "data is {} instead of an array",
                                    json_kind(&other)
                                ),
                            });
                        }
                    };
                    let more = envelope
                        .has_more_items
                        .unwrap_or(items.len() >= self.page_size as usize);
                    if more && items.is_empty() {
                        return Err(RabotError::Protocol {
                            path,
                            detail: format!(
                                "hasMoreItems is true but the page at offset {offset} is empty"
                            ),
                        });
                    }
                    if offset > 0
                        && previous_first.is_some()
                        && items.first() == previous_first.as_ref()
                    {
                        return Err(RabotError::Protocol {
                            path,
                            detail: format!(
                                "the page at offset {offset} repeats the previous page: offset is ignored"
                            ),
                        });
                    }
                    let next = more.then(|| (offset + items.len(), items.first().cloned()));
                    Ok(Some((items, next)))
                }
            },
        )
    }
}

/// Whether a failed request may still have taken effect at the partner: a 5xx answer, a
/// connection that failed after the request went out (dropped, timed out), or a success
/// answer that could not be read. 4xx answers, 429s and connections that never opened
/// (`Exhausted` after them) mean it did not.
fn may_have_been_processed(error: &HttpError) -> bool {
    match error {
        HttpError::Status { status, .. } => status.is_server_error(),
        HttpError::Transport {
            maybe_processed, ..
        } => *maybe_processed,
        HttpError::Decode { .. } => true,
        HttpError::Exhausted { .. } => false,
    }
}

fn read_items<T>(raw: Vec<Value>, read: impl Fn(Value) -> Result<T, String>) -> Page<T> {
    let mut page = Page {
        items: Vec::with_capacity(raw.len()),
        skipped: 0,
        pages: 1,
    };
    for value in raw {
        match read(value) {
            Ok(item) => page.items.push(item),
            Err(reason) => {
                tracing::warn!(partner = PARTNER, %reason, "skipping an item that cannot be mirrored");
                page.skipped += 1;
            }
        }
    }
    page
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
