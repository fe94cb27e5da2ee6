//! The adaptive limiter on tokio's paused clock: time advances only when every task waits, so
//! these runs of tens of simulated seconds take milliseconds and never depend on the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

#[tokio::test(start_paused = true)]
async fn requests_go_out_at_the_configured_rate_after_the_burst() {
    let limiter = AdaptiveLimiter::new("test", 50.0, 5);
    let started = Instant::now();
    for _ in 0..105 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    // 5 from the burst at once, then 100 at 50/s.
    let elapsed = started.elapsed().as_secs_f64();
    assert!((1.99..=2.01).contains(&elapsed), "{elapsed}");
    assert_eq!(limiter.effective_rate(), 50.0);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_halves_what_got_through_once_per_rate() {
    let limiter = AdaptiveLimiter::new("test", 50.0, 5);
    let mut tickets = Vec::new();
    // A second at 50/s, all accepted: the partner let ~50 through in the last second.
    for _ in 0..55 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
        tickets.push(ticket);
    }
    let in_flight: Vec<Ticket> = (0..5).map(|_| tickets[0]).collect();
    limiter.refused(in_flight[0]);
    let lowered = limiter.effective_rate();
    assert!((24.0..=25.0).contains(&lowered), "{lowered}");
    // The other refusals were sent at the old rate: they say nothing new.
    for ticket in &in_flight[1..] {
        limiter.refused(*ticket);
    }
    assert_eq!(limiter.effective_rate(), lowered);
    // A refusal of a request sent at the lowered rate lowers it again.
    let ticket = limiter.acquire().await;
    limiter.refused(ticket);
    assert!(limiter.effective_rate() < lowered / 1.9);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_goes_by_what_the_partner_let_through_not_by_what_was_configured() {
    let limiter = AdaptiveLimiter::new("test", 50.0, 5);
    // Only 6 answers were accepted in the last second before the refusal.
    for _ in 0..6 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    let ticket = limiter.acquire().await;
    limiter.refused(ticket);
    assert_eq!(limiter.effective_rate(), 3.0);
    // Nothing accepted in the last second says nothing of the limit: half the current rate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticket = limiter.acquire().await;
    limiter.refused(ticket);
    assert_eq!(limiter.effective_rate(), 1.5);
    // Never below the floor, however often it is refused.
    for _ in 0..10 {
        let ticket = limiter.acquire().await;
        limiter.refused(ticket);
    }
    assert_eq!(limiter.effective_rate(), FLOOR);
}

#[tokio::test(start_paused = true)]
async fn a_stray_refusal_of_a_fast_client_costs_half_its_rate_for_under_a_minute() {
    let limiter = AdaptiveLimiter::new("test", 1000.0, 5);
    // The very first request is refused: nothing is known of the partner's limit yet.
    let ticket = limiter.acquire().await;
    limiter.refused(ticket);
    assert_eq!(limiter.effective_rate(), 500.0);
    let started = Instant::now();
    while limiter.effective_rate() < 1000.0 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
        assert!(
            started.elapsed() < RECOVERY,
            "{} after {:?}",
            limiter.effective_rate(),
            started.elapsed()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_climbs_back_about_one_per_second_and_never_past_the_configured_rate() {
    let limiter = AdaptiveLimiter::new("test", 20.0, 1);
    for _ in 0..20 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    let ticket = limiter.acquire().await;
    limiter.refused(ticket);
    let low = limiter.effective_rate();
    assert!((9.0..=10.0).contains(&low), "{low}");
    let started = Instant::now();
    while limiter.effective_rate() < 20.0 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never climbed back"
        );
    }
    // From ~10 to 20 at about +1 per second.
    let climbed = started.elapsed().as_secs_f64();
    assert!((8.0..=12.0).contains(&climbed), "{climbed}");
    for _ in 0..100 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    assert_eq!(limiter.effective_rate(), 20.0);
}

#[tokio::test(start_paused = true)]
async fn a_rate_lowered_while_requests_wait_slows_the_waiting_ones_too() {
    let limiter = Arc::new(AdaptiveLimiter::new("test", 10.0, 1));
    let first = limiter.acquire().await;
    // The next one waits 100 ms for its token; the rate drops meanwhile.
    let waiting = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let started = Instant::now();
            limiter.acquire().await;
            started.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    limiter.refused(first);
    // Nothing was accepted yet: half the rate.
    assert_eq!(limiter.effective_rate(), 5.0);
    let waited = waiting.await.unwrap();
    // At 5/s its token comes 200 ms after the last, not the 100 ms it was waiting for.
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
}

/// A partner enforcing `limit` requests per second with a bucket of `burst`, as the sandbox and
/// real gateways do, with `latency` per answer.
struct Partner {
    limit: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
    latency: Duration,
    answered: AtomicU64,
    refused: AtomicU64,
}

impl Partner {
    fn new(limit: f64, latency: Duration) -> Self {
        Self {
            limit,
            burst: limit,
            bucket: Mutex::new((limit, Instant::now())),
            latency,
            answered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// True when the request is let through.
    async fn answer(&self) -> bool {
        tokio::time::sleep(self.latency).await;
        self.answered.fetch_add(1, Ordering::Relaxed);
        let mut bucket = self.bucket.lock().unwrap();
        let now = Instant::now();
        let (tokens, at) = *bucket;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.limit).min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// `requests` requests through `limiter` to `partner`, `width` at a time, each refused one sent
/// again after `Retry-After: 1`. Returns the simulated seconds it took.
async fn pass(
    limiter: Arc<AdaptiveLimiter>,
    partner: Arc<Partner>,
    requests: u64,
    width: u64,
) -> f64 {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..width)
        .map(|_| {
            let (limiter, partner, next) = (limiter.clone(), partner.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    loop {
                        let ticket = limiter.acquire().await;
                        if partner.answer().await {
                            limiter.accepted(ticket);
                            break;
                        }
                        limiter.refused(ticket);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn a_partner_allowing_10_of_the_50_configured_refuses_under_2_percent() {
    // Each refusal costs what was sent before its answer came back, so the share depends on
    // the partner's latency: under 2 % for a partner that answers at once, and under 4 % when
    // every answer takes 200 ms, when the first 0.3 s at 50/s already sends some 7 requests
    // more than the partner takes.
    for (latency, width, most) in [
        (Duration::from_millis(1), 4, 0.02),
        (Duration::from_millis(200), 16, 0.04),
    ] {
        let limiter = Arc::new(AdaptiveLimiter::new("test", 50.0, 5));
        let partner = Arc::new(Partner::new(10.0, latency));
        let elapsed = pass(limiter.clone(), partner.clone(), 300, width).await;
        let answered = partner.answered.load(Ordering::Relaxed);
        let refused = partner.refused.load(Ordering::Relaxed);
        let share = refused as f64 / answered as f64;
        assert!(
            share < most,
            "{refused} of {answered} refused at {latency:?}"
        );
        // 300 requests at 10/s: 30 s, within 10 %.
        assert!(
            (27.0..=33.0).contains(&elapsed),
            "{elapsed} s at {latency:?}"
        );
        assert!(limiter.effective_rate() <= 50.0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_partner_allowing_the_configured_rate_refuses_nothing() {
    let limiter = Arc::new(AdaptiveLimiter::new("test", 20.0, 5));
    let partner = Arc::new(Partner::new(25.0, Duration::from_millis(200)));
    let elapsed = pass(limiter.clone(), partner.clone(), 200, 8).await;
    assert_eq!(partner.refused.load(Ordering::Relaxed), 0);
    // (200 - 5) / 20 plus one answer's latency.
    assert!((9.9..=10.3).contains(&elapsed), "{elapsed}");
    assert_eq!(limiter.effective_rate(), 20.0);
}

#[tokio::test(start_paused = true)]
async fn a_share_caps_the_rate_and_a_larger_share_is_climbed_back_to() {
    let limiter = AdaptiveLimiter::new("test", 20.0, 1);
    limiter.set_share(2);
    assert_eq!(limiter.effective_rate(), 10.0);
    // At the share, 100 requests take 10 s, not the 5 s the configured rate would allow.
    let started = Instant::now();
    for _ in 0..100 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!((9.8..=10.1).contains(&elapsed), "{elapsed}");
    // A refusal under a share lowers the rate below it, and the climb stops at the share.
    let ticket = limiter.acquire().await;
    limiter.refused(ticket);
    assert!(limiter.effective_rate() <= 5.0);
    for _ in 0..400 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    assert_eq!(limiter.effective_rate(), 10.0);
    // The other replica left: the rate climbs on to the configured one, not at once.
    limiter.set_share(1);
    let ticket = limiter.acquire().await;
    limiter.accepted(ticket);
    assert!(
        limiter.effective_rate() < 11.0,
        "{}",
        limiter.effective_rate()
    );
    for _ in 0..400 {
        let ticket = limiter.acquire().await;
        limiter.accepted(ticket);
    }
    assert_eq!(limiter.effective_rate(), 20.0);
}

#[tokio::test(start_paused = true)]
async fn a_limiter_knows_whether_it_sent_lately() {
    let limiter = AdaptiveLimiter::new("test", 20.0, 1);
    // A client is made to send: a new one counts as sending.
    assert!(limiter.sent_within(Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!limiter.sent_within(Duration::from_secs(6)));
    let ticket = limiter.acquire().await;
    limiter.accepted(ticket);
    assert!(limiter.sent_within(Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!limiter.sent_within(Duration::from_secs(6)));
}
