//! One partner client's request rate, adapted to what the partner accepts (AIMD).
//!
//! A token bucket whose rate starts at the configured one. A 429 says the partner's real limit
//! is below what we send, so the rate drops at once to half of what the partner accepted over
//! the last second (never more than half the current rate); every accepted answer raises it a
//! little, by `INCREASE_PER_SECOND / rate`, so that traffic at the current rate climbs back by
//! about one request per second each second (faster for a configured rate above 60/s: back
//! within a minute), never above the configured rate. Only the first
//! refusal of requests sent at the current rate lowers it: the others in flight at the same
//! moment answer for the same excess, and counting each would drive the rate to the floor.
//!
//! Replicas that use the same credential divide its rate: [`AdaptiveLimiter::set_share`] caps
//! the rate at the configured one divided by the replicas sending now (counted through
//! PostgreSQL, see `store::rate_shares`), and the decrease and the climb both stay under that cap.
//!
//! governor's quota is fixed when it is built, hence this small bucket of our own. Waiters
//! queue on a tokio mutex (fair, first come first served) and the bucket itself sits behind a
//! plain mutex that is never held across an await, so an answer can change the rate while a
//! request sleeps for its token.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// A refusal brings the rate down to this share of what the partner accepted.
const DECREASE: f64 = 0.5;
/// Requests per second the rate climbs each second while the partner accepts everything, at
/// least: a high configured rate climbs faster, back from the floor within [`RECOVERY`].
const INCREASE_PER_SECOND: f64 = 1.0;
/// The longest a climb from the floor to the configured rate takes, so one stray 429 does not
/// hold a fast client back for many minutes.
const RECOVERY: Duration = Duration::from_secs(60);
/// How far back accepted answers are counted to measure what the partner lets through.
const WINDOW: Duration = Duration::from_secs(1);
/// The slowest rate a refusal can leave: some traffic must go on to learn the limit again.
const FLOOR: f64 = 0.2;

/// What one request was sent under: a refusal counts only if the rate has not dropped since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
}

pub struct AdaptiveLimiter {
    partner: &'static str,
    configured: f64,
    burst: f64,
    /// Serves waiters in the order they came.
    queue: tokio::sync::Mutex<()>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    rate: f64,
    /// The configured rate divided by the replicas that send with the same credential.
    ceiling: f64,
    /// When a request last took a token (at first, when the limiter was made: a client is
    /// made to send): whether this replica is sending.
    last_acquired: Instant,
    tokens: f64,
    refilled: Instant,
    /// Raised by each decrease.
    epoch: u64,
    /// When answers were accepted within the last `WINDOW`.
    accepted: VecDeque<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant, burst: f64) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(burst);
        self.refilled = now;
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .accepted
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > WINDOW)
        {
            self.accepted.pop_front();
        }
    }
}

impl std::fmt::Debug for AdaptiveLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("partner", &self.partner)
            .field("configured", &self.configured)
            .field("effective", &self.effective_rate())
            .finish_non_exhaustive()
    }
}

impl AdaptiveLimiter {
    /// A limiter at `requests_per_second` (> 0) allowing `burst` (≥ 1) requests at once.
    pub fn new(partner: &'static str, requests_per_second: f64, burst: u32) -> Self {
        let configured = if requests_per_second.is_finite() && requests_per_second > 0.0 {
            requests_per_second
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        crate::metrics::rate_limit_effective(partner, configured);
        Self {
            partner,
            configured,
            burst,
            queue: tokio::sync::Mutex::new(()),
            bucket: Mutex::new(Bucket {
                rate: configured,
                ceiling: configured,
                last_acquired: Instant::now(),
                tokens: burst,
                refilled: Instant::now(),
                epoch: 0,
                accepted: VecDeque::new(),
            }),
        }
    }

    /// The rate requests go out at now, in requests per second.
    pub fn effective_rate(&self) -> f64 {
        self.lock().rate
    }

    /// The most this replica may send at now: the configured rate divided by the replicas
    /// that share it.
    pub fn ceiling(&self) -> f64 {
        self.lock().ceiling
    }

    /// The partner this limiter paces.
    pub fn partner(&self) -> &'static str {
        self.partner
    }

    /// Whether a request took a token within `window`, or one is waiting for its turn now.
    pub fn sent_within(&self, window: Duration) -> bool {
        let waiting = self.queue.try_lock().is_err();
        let last = self.lock().last_acquired;
        waiting || last.elapsed() <= window
    }

    /// This replica's share of the configured rate, when `replicas` (≥ 1) send with the same
    /// credential: the rate drops to the share at once and climbs back as after a 429 when
    /// the share grows.
    pub fn set_share(&self, replicas: u32) {
        let ceiling = self.configured / f64::from(replicas.max(1));
        let mut bucket = self.lock();
        if bucket.ceiling == ceiling {
            return;
        }
        tracing::info!(
            partner = self.partner,
            replicas,
            requests_per_second = ceiling,
            "replicas share the partner's rate limit"
        );
        bucket.ceiling = ceiling;
        if bucket.rate > ceiling {
            let burst = self.burst_at(bucket.rate);
            bucket.refill(Instant::now(), burst);
            bucket.rate = ceiling;
            bucket.tokens = bucket.tokens.min(self.burst_at(ceiling));
            self.report(ceiling);
        }
    }

    /// Waits for this request's turn and token.
    pub async fn acquire(&self) -> Ticket {
        let _turn = self.queue.lock().await;
        loop {
            let wait = {
                let mut bucket = self.lock();
                let burst = self.burst_at(bucket.rate);
                let now = Instant::now();
                bucket.refill(now, burst);
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    bucket.last_acquired = now;
                    return Ticket {
                        epoch: bucket.epoch,
                    };
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.rate)
            };
            // Woken early or late, the loop looks again: the rate may have changed meanwhile.
            tokio::time::sleep(wait).await;
        }
    }

    /// The partner answered a request sent under `ticket` with anything but a 429.
    pub fn accepted(&self, _ticket: Ticket) {
        let now = Instant::now();
        let mut bucket = self.lock();
        bucket.forget_before(now);
        bucket.accepted.push_back(now);
        if bucket.rate < bucket.ceiling {
            let burst = self.burst_at(bucket.rate);
            bucket.refill(now, burst);
            let increase = INCREASE_PER_SECOND.max(self.configured / RECOVERY.as_secs_f64());
            bucket.rate = (bucket.rate + increase / bucket.rate).min(bucket.ceiling);
            self.report(bucket.rate);
        }
    }

    /// The partner refused a request sent under `ticket` with 429.
    pub fn refused(&self, ticket: Ticket) {
        let now = Instant::now();
        let mut bucket = self.lock();
        if ticket.epoch != bucket.epoch {
            return;
        }
        bucket.forget_before(now);
        let burst = self.burst_at(bucket.rate);
        bucket.refill(now, burst);
        // Nothing accepted yet (a 429 on the first requests) says nothing of the partner's
        // limit: halve the current rate rather than fall to the floor.
        let let_through = match bucket.accepted.len() {
            0 => bucket.rate,
            accepted => accepted as f64 / WINDOW.as_secs_f64(),
        };
        let lowered = (DECREASE * bucket.rate.min(let_through))
            .max(FLOOR)
            .min(bucket.ceiling);
        tracing::info!(
            partner = self.partner,
            from = bucket.rate,
            to = lowered,
            "partner refused a request with 429: lowering the request rate"
        );
        bucket.rate = lowered;
        // Whatever was saved up would go out as a burst the partner just said it cannot take.
        bucket.tokens = bucket.tokens.min(0.0);
        bucket.epoch += 1;
        self.report(lowered);
    }

    /// The burst shrinks with the rate, so a lowered rate is not undone by a full bucket.
    fn burst_at(&self, rate: f64) -> f64 {
        (self.burst * rate / self.configured).max(1.0)
    }

    fn report(&self, rate: f64) {
        crate::metrics::rate_limit_effective(self.partner, rate);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // The bucket holds plain numbers, always consistent between statements: a panic
        // elsewhere while it was held leaves nothing half-written.
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[path = "adaptive_tests.rs"]
mod tests;
