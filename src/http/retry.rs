//! When to try a request again, and how long to wait first.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::settings::HttpSettings;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn from_settings(settings: &HttpSettings) -> Self {
        Self {
            max_attempts: settings.max_attempts.max(1),
            backoff_base: settings.backoff_base,
            backoff_max: settings.backoff_max,
            max_retry_after: settings.max_retry_after,
        }
    }

    /// The wait before attempt `attempt + 1`, or why the request should give up.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Result<Duration, GiveUp> {
        if attempt >= self.max_attempts {
            return Err(GiveUp::AttemptsUsed);
        }
        if let Some(after) = retry_after.filter(|after| *after > self.max_retry_after) {
            return Err(GiveUp::RetryAfterTooLong(after));
        }
        // "Equal jitter": half the exponential delay is fixed so retries always back off,
        // the other half is random so many clients do not retry in lockstep.
        let half = self.backoff_floor(attempt);
        let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
        let backoff = half + Duration::from_micros(jitter);
        // `Retry-After` may only lengthen the wait: `0` or a date already past would otherwise
        // retry at once, hammering a partner that just said it is overloaded.
        Ok(retry_after.map_or(backoff, |after| after.max(backoff)))
    }

    /// The shortest wait before attempt `attempt + 1`, whatever `Retry-After` says: the fixed
    /// half of the exponential back-off.
    pub fn backoff_floor(&self, attempt: u32) -> Duration {
        let exponential = self
            .backoff_base
            .saturating_mul(
                1u32.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.backoff_max);
        exponential / 2
    }
}

/// Why a retryable failure is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    #[error("no attempts left")]
    AttemptsUsed,
    /// The partner asks us to come back later than we are willing to wait.
    #[error("Retry-After of {} s is longer than http.max_retry_after", .0.as_secs())]
    RetryAfterTooLong(Duration),
}

pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Connection failures and timeouts are retried: the request may not have reached the partner,
/// and every request we retry is a read or an idempotent token request.
pub fn is_retryable_error(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request()
}

/// `Retry-After` as delta-seconds or an HTTP date; unparseable values are ignored (back-off applies).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_stops_after_the_last_attempt() {
        let p = policy();
        let first = p.delay(1, None).expect("attempt 1 of 4 retries");
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = p.delay(3, None).expect("attempt 3 of 4 retries");
        assert!(third >= Duration::from_millis(150) && third <= Duration::from_millis(300));
        assert_eq!(p.delay(4, None), Err(GiveUp::AttemptsUsed));
    }

    #[test]
    fn retry_after_wins_unless_too_long() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Ok(Duration::from_secs(7))
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(61))),
            Err(GiveUp::RetryAfterTooLong(Duration::from_secs(61)))
        );
    }

    #[test]
    fn a_retry_after_of_zero_still_backs_off() {
        let p = policy();
        for attempt in 1..4 {
            let floor = p.backoff_floor(attempt);
            assert!(floor >= Duration::from_millis(50));
            let waited = p.delay(attempt, Some(Duration::ZERO)).expect("retries");
            assert!(waited >= floor, "attempt {attempt}: {waited:?} < {floor:?}");
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));

        let in_ten = SystemTime::now() + Duration::from_secs(10);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(in_ten))
                .expect("an HTTP date is a valid header"),
        );
        let parsed = retry_after(&headers).expect("an HTTP date parses");
        assert!(parsed > Duration::from_secs(7) && parsed <= Duration::from_secs(10));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
