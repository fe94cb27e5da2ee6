//! The gate every request passes before its partner's handler, and what it counts: added
//! latency, the enforced rate limit, injected faults, random 503s, the request log. A partner
//! only tells the gate where its paths lie and how it words an error ([`PartnerPaths`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use rand::Rng as _;

use crate::{PARTNER_PATHS, REQUEST_LOG_LEN, Shared, bad_days, lock, rabot};

/// What the gate has counted since the sandbox started; see `Sandbox::stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxStats {
    /// Every POST to a token endpoint (any outcome).
    pub token_requests: u64,
    /// Successful token answers.
    pub tokens_issued: u64,
    /// Every request to a partner's data API (any outcome).
    pub api_requests: u64,
    /// 429 answers from the enforced rate limit.
    pub rate_limited: u64,
    /// Answers produced by `inject_fault`.
    pub injected_faults: u64,
    /// 503 answers from `error_rate`.
    pub random_errors: u64,
    /// 401 answers on API endpoints.
    pub unauthorized: u64,
}

/// A canned error answer for the next `times` requests whose path (with its query) contains
/// `path_contains`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Matched against the request path (e.g. "/contracts", "/connect/token", "" = any).
    pub path_contains: String,
    /// e.g. 429, 500, 503.
    pub status: u16,
    /// Sent verbatim as the Retry-After header when Some ("1" or an HTTP date).
    pub retry_after: Option<String>,
    /// How many matching requests get this answer.
    pub times: u32,
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    /// `Some(wait)` when the request is over the enforced limit; `wait` is what Retry-After
    /// announces: whole seconds until a request would be allowed, at least one.
    fn rate_limited(&self) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        let not_until = limiter.check().err()?;
        let wait = not_until.wait_time_from(limiter.clock().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Some(seconds.max(1))
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|fault| path.contains(fault.path_contains.as_str()))?;
        let fault = faults.get_mut(index)?;
        fault.times = fault.times.saturating_sub(1);
        let answer = fault.clone();
        if answer.times == 0 {
            faults.remove(index);
        }
        Some(answer)
    }

    /// A planned upstream deletion, if one is due before this request.
    fn delete_customers_if_due(&self) {
        let mut bad_days = lock(&self.bad_days);
        let Some((count, mut rng)) = bad_days.deletions_due() else {
            return;
        };
        for _ in 0..count {
            let numbers = self.rabot.customer_numbers();
            if numbers.is_empty() {
                return;
            }
            let victim = numbers[rng.below(numbers.len() as u32) as usize].clone();
            if self.rabot.remove_customer(&victim) {
                bad_days.deleted.push(victim);
            }
        }
    }

    fn random_error(&self) -> bool {
        let rate = self.options.error_rate;
        rate > 0.0 && rand::rng().random_bool(rate.min(1.0))
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    token_requests: AtomicU64,
    pub(crate) tokens_issued: AtomicU64,
    api_requests: AtomicU64,
    rate_limited: AtomicU64,
    injected_faults: AtomicU64,
    random_errors: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SandboxStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SandboxStats {
            token_requests: read(&self.token_requests),
            tokens_issued: read(&self.tokens_issued),
            api_requests: read(&self.api_requests),
            rate_limited: read(&self.rate_limited),
            injected_faults: read(&self.injected_faults),
            random_errors: read(&self.random_errors),
            unauthorized: read(&self.unauthorized),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Which part of a partner's surface a request hits: the gate counts by it and only
/// API requests draw random errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Token,
    Api,
    Other,
}

/// A request as one partner sees it. The gate answers on the partner's behalf (429, faults,
/// 503), so it needs the partner's own error body.
#[derive(Clone, Copy)]
struct Route {
    endpoint: Endpoint,
    reject: fn(Endpoint, StatusCode, &str) -> Response,
    count_request: Option<fn(&Shared, Endpoint)>,
}

/// Where one partner's surface lies: everything under `prefix`, its token endpoint (POST) and
/// its data API, and how it words an error.
pub(crate) struct PartnerPaths {
    pub(crate) prefix: &'static str,
    pub(crate) token: &'static str,
    pub(crate) api_base: &'static str,
    pub(crate) reject: fn(Endpoint, StatusCode, &str) -> Response,
    /// For a partner that keeps its own request counters: called for every request the gate
    /// sees, so that requests the gate itself answers (429, faults, 503) are counted too.
    pub(crate) count_request: Option<fn(&Shared, Endpoint)>,
}

impl PartnerPaths {
    fn classify(&self, method: &Method, path: &str) -> Option<Route> {
        let endpoint = if path == self.token && method == Method::POST {
            Endpoint::Token
        } else if is_under(path, self.api_base) {
            Endpoint::Api
        } else if is_under(path, self.prefix) {
            Endpoint::Other
        } else {
            return None;
        };
        Some(Route {
            endpoint,
            reject: self.reject,
            count_request: self.count_request,
        })
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn classify(method: &Method, path: &str) -> Option<Route> {
    PARTNER_PATHS
        .into_iter()
        .find_map(|partner| partner.classify(method, path))
}

fn reject(route: Option<Route>, status: StatusCode, message: &str) -> Response {
    match route {
        Some(route) => (route.reject)(route.endpoint, status, message),
        None => (status, axum::Json(serde_json::json!({ "error": message }))).into_response(),
    }
}

/// The checks every request passes before its handler, in the order a real gateway would
/// apply them: latency, rate limit, injected faults, random API errors.
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    // Faults match the path with its query, so `/customers?` picks out the customer list.
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |target| target.as_str().to_owned());
    {
        let mut log = lock(&shared.request_log);
        if log.len() == REQUEST_LOG_LEN {
            log.pop_front();
        }
        log.push_back(format!("{} {target}", request.method()));
    }
    let route = classify(request.method(), &path);
    let endpoint = route.map(|route| route.endpoint);
    match endpoint {
        Some(Endpoint::Token) => bump(&shared.counters.token_requests),
        Some(Endpoint::Api) => bump(&shared.counters.api_requests),
        Some(Endpoint::Other) | None => {}
    }
    if let Some(Route {
        endpoint,
        count_request: Some(count_request),
        ..
    }) = route
    {
        count_request(&shared, endpoint);
    }

    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    if let Some(wait_seconds) = shared.rate_limited() {
        bump(&shared.counters.rate_limited);
        tracing::debug!(%path, wait_seconds, "sandbox rate limit hit");
        let mut response = reject(
            route,
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded, retry later.",
        );
        if !shared.options.rate_limit_without_retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait_seconds));
        }
        return response;
    }

    if let Some(fault) = shared.take_fault(&target) {
        bump(&shared.counters.injected_faults);
        tracing::debug!(%path, status = fault.status, "sandbox injected fault");
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = reject(route, status, "Injected fault.");
        if let Some(value) = fault
            .retry_after
            .as_deref()
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }

    if path.starts_with(rabot::API_BASE_PATH) {
        shared.delete_customers_if_due();
    }

    if endpoint == Some(Endpoint::Api) && shared.random_error() {
        bump(&shared.counters.random_errors);
        return reject(
            route,
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable.",
        );
    }

    let tamper = lock(&shared.bad_days).take_tamper(&target);
    let response = next.run(request).await;
    match tamper {
        Some(tamper) if response.status().is_success() => {
            bump(&shared.counters.injected_faults);
            bad_days::apply(tamper, response).await
        }
        _ => response,
    }
}

pub(crate) async fn unknown_endpoint(method: Method, uri: Uri) -> Response {
    reject(
        classify(&method, uri.path()),
        StatusCode::NOT_FOUND,
        "No such endpoint.",
    )
}
