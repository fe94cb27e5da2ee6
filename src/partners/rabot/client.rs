//! RABOT Partner API client: client-credentials auth, and the customer and contract lists as
//! streams of pages, so a caller's memory never grows with the number of customers.

use super::wire;

use std::collections::HashSet;
use std::sync::Arc;

use futures::Stream;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde_json::Value;

use super::cost_wire::ContractCosts;
use super::metrics_wire::{ContractMetrics, Interval};
use crate::http::authorized::{ApiError, AuthorizedHttp};
use crate::http::client_credentials::ClientCredentials;
use crate::http::token_cache::{AuthError, TokenCache};
use crate::http::{HttpError, PartnerHttp, RateBudget, RateLimit, Replay};
use crate::partners::lenient::{json_kind, str_field, without_nul};
use crate::settings::{HttpSettings, RabotSettings};
use wire::{Contract, Customer, LinkRequest};

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
    #[error("rabot may have acted on {path}, but gave no usable answer")]
    OutcomeUnknown {
        path: String,
        #[source]
        source: HttpError,
    },
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

    /// The client's credentials or scopes were refused at the token endpoint: every request
    /// would fail the same way, and only a person fixing the settings helps.
    pub fn is_partner_rejected(&self) -> bool {
        matches!(
            self,
            RabotError::Api(ApiError::Auth(
                AuthError::CredentialsRejected { .. } | AuthError::ScopeRejected { .. }
            ))
        )
    }
}

/// Items from one or more pages, with the items that could not be read set aside (logged, counted).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub skipped: usize,
    /// Pages these items came from.
    pub pages: usize,
    /// The list changed while it was read (rows deleted before a page boundary, or the
    /// customer gone), so a row missing from this pass may still exist.
    pub moved: bool,
    /// The list's size, when RABOT's `count` can only mean that (see [`list_size`]).
    pub list_size: Option<u64>,
}

impl<T> Page<T> {
    fn empty() -> Self {
        Self {
            items: Vec::new(),
            skipped: 0,
            pages: 0,
            moved: false,
            list_size: None,
        }
    }
}

/// What a metrics request asks for, and how its zone-less timestamps are read.
#[derive(Debug, Clone, Copy)]
pub struct MetricsQuery<'a> {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub interval: Interval,
    pub zone: chrono_tz::Tz,
    /// The names the two type parameters are sent under (`rabot.metric_type_parameter`,
    /// `rabot.value_type_parameter`): the documents do not give them.
    pub metric_type_parameter: &'a str,
    pub value_type_parameter: &'a str,
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
        )?
        .for_credential(&settings.client_id);
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

    /// Requests sent so far, token requests and retries included, and 429s.
    pub fn tally(&self) -> crate::http::RequestTally {
        self.api.http().tally()
    }

    /// The rate requests go out at now, for an estimate of the time a run has left.
    pub fn effective_rate(&self) -> f64 {
        self.api.http().effective_rate()
    }

    /// The rate limit this client divides with replicas using the same credential.
    pub fn rate_budget(&self) -> RateBudget {
        self.api.http().rate_budget()
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
        self.pages(
            url,
            external_id.map(|id| ("filter.externalId", id)),
            "customerNumber",
        )
        .map_ok(|page| read_items(page, Customer::from_wire))
        .boxed()
    }

    /// `GET /customers/{customerNumber}/contracts`, page by page.
    pub fn contract_pages<'a>(
        &'a self,
        customer_number: &'a str,
    ) -> BoxStream<'a, Result<Page<Contract>, RabotError>> {
        let url = self.url(&["customers", customer_number, "contracts"]);
        self.pages(url, None, "contractNumber")
            .map_ok(move |page| read_items(page, |raw| Contract::from_wire(customer_number, raw)))
            .boxed()
    }

    /// Every contract of one customer. A customer deleted upstream since the customer list
    /// named it answers 404: that is the list moving under the pass, not a failure, so it
    /// gives no contracts and says `moved` (its contracts go when the customer does).
    pub async fn contracts(&self, customer_number: String) -> Result<Page<Contract>, RabotError> {
        let all = self
            .contract_pages(&customer_number)
            .try_fold(Page::empty(), |mut all, page| async move {
                all.items.extend(page.items);
                all.skipped += page.skipped;
                all.pages += page.pages;
                all.moved |= page.moved;
                Ok(all)
            })
            .await;
        match all {
            Err(error) if error.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                tracing::info!(partner = PARTNER, %customer_number, "customer gone while its contracts were asked for");
                Ok(Page {
                    pages: 1,
                    moved: true,
                    ..Page::empty()
                })
            }
            other => other,
        }
    }

    /// `GET /customers/{customerNumber}/contracts/{contractNumber}/costs`: the contract's price
    /// periods. Not a paged list: one answer holds every period RABOT returns.
    pub async fn contract_costs(
        &self,
        customer_number: &str,
        contract_number: &str,
    ) -> Result<ContractCosts, RabotError> {
        let (data, path) = self
            .contract_data(customer_number, contract_number, "costs", &[])
            .await?;
        ContractCosts::from_data(data).map_err(|detail| RabotError::Protocol { path, detail })
    }

    /// `GET /customers/{customerNumber}/contracts/{contractNumber}/metrics`: the contract's
    /// consumption (metric type Consumption, value type Actual) in `query.interval` periods
    /// from `query.from` to `query.to`. Every parameter is sent, none left to RABOT's defaults.
    pub async fn contract_consumption(
        &self,
        customer_number: &str,
        contract_number: &str,
        query: &MetricsQuery<'_>,
    ) -> Result<ContractMetrics, RabotError> {
        let instant = |at: chrono::DateTime<chrono::Utc>| {
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let parameters = [
            ("Period.From", instant(query.from)),
            ("Period.To", instant(query.to)),
            ("Interval", query.interval.as_str().to_owned()),
            (query.metric_type_parameter, "Consumption".to_owned()),
            (query.value_type_parameter, "Actual".to_owned()),
        ];
        let (data, path) = self
            .contract_data(customer_number, contract_number, "metrics", &parameters)
            .await?;
        ContractMetrics::from_data(data, query.interval, query.zone)
            .map_err(|detail| RabotError::Protocol { path, detail })
    }

    /// `GET /customers/{customerNumber}/contracts/{contractNumber}/{resource}` with
    /// `parameters`: the envelope's `data` (an answer without one, or one that says it did not
    /// succeed, is an error) and the path asked for, for the caller's own errors.
    async fn contract_data(
        &self,
        customer_number: &str,
        contract_number: &str,
        resource: &str,
        parameters: &[(&str, String)],
    ) -> Result<(Value, String), RabotError> {
        let mut url = self.url(&[
            "customers",
            customer_number,
            "contracts",
            contract_number,
            resource,
        ]);
        let path = url.path().to_owned();
        let protocol = |detail: String| RabotError::Protocol {
            path: path.clone(),
            detail,
        };
        for number in [customer_number, contract_number] {
            wire::addressable(number).map_err(protocol)?;
        }
        if !parameters.is_empty() {
            url.query_pairs_mut().extend_pairs(parameters);
        }
        let envelope: wire::Envelope = self.api.get_json(&url).await?;
        if envelope.is_success == Some(false) {
            return Err(RabotError::Unsuccessful {
                detail: envelope.error_text(),
                path,
            });
        }
        let data = envelope
            .data
            .ok_or_else(|| protocol("the answer has no data field".to_owned()))?;
        Ok((data, path))
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
                        source: error,
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
        wire::addressable(customer_number).map_err(|detail| RabotError::Protocol {
            path: "/customers/{customerNumber}/link".to_owned(),
            detail,
        })?;
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

    /// Offset pagination over a list that may change while it is read. Continue while
    /// `hasMoreItems` (or, if it is missing, while pages are full), advancing by the items
    /// received in case the server caps `limit`. Each page after the first is asked for
    /// a few items early ([`page_overlap`]), so it must repeat items the previous page ended with:
    /// when it does, no item can have been passed over whatever was deleted or inserted before
    /// that point; when it does not, more rows were deleted before the boundary than the overlap
    /// absorbs, some live row may have slid past unread, and the page says `moved`. Items the
    /// previous page already gave are not given again.
    ///
    /// Every row must carry `key`: a row without it, or a `data` that is not an array, fails
    /// the list (a mirror must not take a malformed answer for "these rows are gone"). A server
    /// that ignores `offset` would make this loop forever, so a page that brings nothing new
    /// while promising more ends the list with an error.
    fn pages(
        &self,
        url: url::Url,
        filter: Option<(&'static str, String)>,
        key: &'static str,
    ) -> impl Stream<Item = Result<ListPage, RabotError>> + Send + '_ {
        stream::try_unfold(Some(Cursor::default()), move |cursor: Option<Cursor>| {
            let mut url = url.clone();
            let filter = filter.clone();
            async move {
                let Some(cursor) = cursor else {
                    return Ok(None);
                };
                {
                    let mut query = url.query_pairs_mut();
                    query
                        .append_pair("offset", &cursor.offset.to_string())
                        .append_pair("limit", &self.page_size.to_string());
                    if let Some((name, value)) = &filter {
                        query.append_pair(name, value);
                    }
                }
                let envelope: wire::Envelope = self.api.get_json(&url).await?;
                let path = url.path().to_owned();
                let protocol = |detail: String| RabotError::Protocol {
                    path: path.clone(),
                    detail,
                };
                if envelope.is_success == Some(false) {
                    return Err(RabotError::Unsuccessful {
                        detail: envelope.error_text(),
                        path,
                    });
                }
                let items = match envelope.data {
                    Some(Value::Array(items)) => items,
                    None => return Err(protocol("the answer has no data field".to_owned())),
                    Some(other) => {
                        return Err(protocol(format!(
                            "data is {} instead of an array",
                            json_kind(&other)
                        )));
                    }
                };
                let mut keys = Vec::with_capacity(items.len());
                for (position, item) in items.iter().enumerate() {
                    match str_field(item, key) {
                        Some(value) => keys.push(value),
                        None => {
                            return Err(protocol(format!(
                                "the row at offset {} has no {key} (missing or null)",
                                cursor.offset + position
                            )));
                        }
                    }
                }
                let more = envelope
                    .has_more_items
                    .unwrap_or(items.len() >= self.page_size as usize);
                if more && items.is_empty() {
                    return Err(protocol(format!(
                        "hasMoreItems is true but the page at offset {} is empty",
                        cursor.offset
                    )));
                }
                let step = cursor.step(&keys);
                if more && step.fresh.iter().all(|fresh| !fresh) {
                    return Err(protocol(format!(
                        "the page at offset {} brings nothing new: offset is ignored",
                        cursor.offset
                    )));
                }
                let items = items
                    .into_iter()
                    .zip(step.fresh)
                    .filter_map(|(item, fresh)| fresh.then(|| without_nul(item)))
                    .collect();
                let list_size =
                    list_size(envelope.count.as_ref(), more, cursor.offset + keys.len());
                let next = more.then(|| cursor.next(keys));
                Ok(Some((
                    ListPage {
                        items,
                        moved: step.moved,
                        list_size,
                    },
                    next,
                )))
            }
        })
    }
}

/// How many items a page after the first is asked for before the end of the previous page: a
/// tenth of the page, at least 2 and at most 5. Up to one less than this many rows may be
/// deleted upstream between two page requests and the pass still knows it read every live
/// row; the price is re-reading these few rows per page.
fn page_overlap(page_len: usize) -> usize {
    (page_len / 10).clamp(2, 5).min(page_len.saturating_sub(1))
}

/// One page of a list as it came, less the rows the previous page already gave.
struct ListPage {
    items: Vec<Value>,
    /// The list moved under the pass at this page: a live row may have been passed over.
    moved: bool,
    list_size: Option<u64>,
}

/// RABOT's `count` as the list's size, when it can be nothing else: a number larger than the
/// items up to this page's end (`through`) while more pages follow. A page's own item count,
/// the other reading of the documents, never is. Only a progress estimate uses it.
fn list_size(count: Option<&Value>, more: bool, through: usize) -> Option<u64> {
    count
        .and_then(Value::as_u64)
        .filter(|&count| more && count > through as u64)
}

/// Where the next page starts, and the keys of the page before it (to check the overlap).
#[derive(Default)]
struct Cursor {
    offset: usize,
    /// Keys of the previous page; empty for the first page.
    previous: Vec<String>,
    /// How many of `previous`'s last items this page was asked to repeat.
    overlap: usize,
}

/// What a page means against the one before it.
struct Step {
    /// Per item: not already given by the previous page.
    fresh: Vec<bool>,
    moved: bool,
}

impl Cursor {
    fn step(&self, keys: &[String]) -> Step {
        let previous: HashSet<&str> = self.previous.iter().map(String::as_str).collect();
        let fresh: Vec<bool> = keys
            .iter()
            .map(|k| !previous.contains(k.as_str()))
            .collect();
        // The page is anchored when it repeats at least one item of the previous page: in a
        // list whose order holds, everything after that item up to this page's end is read.
        // A first page is anchored at the list's start; a page asked for without overlap
        // cannot be checked, so it counts as moved.
        let anchored =
            self.previous.is_empty() || (self.overlap > 0 && fresh.iter().any(|fresh| !fresh));
        Step {
            fresh,
            moved: !anchored,
        }
    }

    fn next(&self, keys: Vec<String>) -> Cursor {
        // At least one item of progress, so a server that caps pages at one item still ends.
        let overlap = page_overlap(keys.len());
        Cursor {
            offset: self.offset + keys.len() - overlap,
            previous: keys,
            overlap,
        }
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

fn read_items<T>(raw: ListPage, read: impl Fn(Value) -> Result<T, String>) -> Page<T> {
    let mut page = Page {
        items: Vec::with_capacity(raw.items.len()),
        pages: 1,
        moved: raw.moved,
        list_size: raw.list_size,
        ..Page::empty()
    };
    for value in raw.items {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("c{i}")).collect()
    }

    /// The list `0..n` without `deleted`, read from `offset` for `limit` items.
    fn page(n: usize, deleted: &[usize], offset: usize, limit: usize) -> Vec<String> {
        keys(0..n)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !deleted.contains(i))
            .map(|(_, k)| k)
            .skip(offset)
            .take(limit)
            .collect()
    }

    #[test]
    fn pages_overlap_and_a_small_shift_is_absorbed() {
        let first = Cursor::default();
        let one = page(100, &[], 0, 10);
        let step = first.step(&one);
        assert!(!step.moved && step.fresh.iter().all(|f| *f));
        let second = first.next(one);
        assert_eq!((second.offset, second.overlap), (8, 2));

        // Undisturbed: the two repeated items are not given again.
        let step = second.step(&page(100, &[], 8, 10));
        assert!(!step.moved);
        assert_eq!(step.fresh.iter().filter(|f| !**f).count(), 2);

        // One row deleted before the boundary: c9 is still repeated, nothing was passed over.
        let shifted = page(100, &[3], 8, 10);
        let step = second.step(&shifted);
        assert!(!step.moved);
        assert_eq!(shifted[0], "c9");
        assert!(!step.fresh[0] && step.fresh[1]);

        // Three deleted: c10 slid to offset 7, before the page; the page says so.
        let step = second.step(&page(100, &[1, 2, 3], 8, 10));
        assert!(step.moved);

        // Inserted rows only repeat items; the page stays anchored.
        let mut with_new = keys(0..100);
        with_new.insert(2, "new".to_owned());
        let step = second.step(&with_new[8..18]);
        assert!(!step.moved);
    }

    #[test]
    fn a_page_asked_for_without_overlap_cannot_be_checked() {
        let one = vec!["a".to_owned()];
        let next = Cursor::default().next(one);
        assert_eq!((next.offset, next.overlap), (1, 0));
        assert!(next.step(&["b".to_owned()]).moved);
    }

    #[test]
    fn count_is_a_list_size_only_when_it_can_mean_nothing_else() {
        let count = serde_json::json!(30_000);
        assert_eq!(list_size(Some(&count), true, 100), Some(30_000));
        // The page's own item count, the documents' other reading.
        let page = serde_json::json!(100);
        assert_eq!(list_size(Some(&page), true, 100), None);
        // The last page: nothing left to estimate.
        assert_eq!(list_size(Some(&count), false, 30_000), None);
        // Missing, negative or not a number.
        assert_eq!(list_size(None, true, 100), None);
        assert_eq!(list_size(Some(&serde_json::json!(-5)), true, 100), None);
        assert_eq!(
            list_size(Some(&serde_json::json!("30000")), true, 100),
            None
        );
    }
}
