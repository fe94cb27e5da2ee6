//! The request rate end to end, timed: a RABOT pass against the sandbox over real HTTP and a
//! real database, where the partner allows less than configured (the client must find its real
//! limit) or answers slowly (the client must keep enough requests in flight). A binary of its
//! own, so its tens of seconds of wall-clock time are measured once and not beside the whole
//! integration suite.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::SandboxOptions;

use common::*;

/// What the client is configured to: five times what the limited sandbox allows.
const CONFIGURED: &str = "50";

/// A pass over `customers` customers (one contract request each, pages of 100), with the
/// client at 50/s; returns the wall time and the requests the sandbox saw (token included).
async fn timed_pass(options: SandboxOptions, overrides: &[(&str, &str)]) -> (f64, u64, u64) {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(options).await;
    let mut env = vec![
        ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", CONFIGURED),
        ("PARTNER_SYNC__RABOT__BURST", "5"),
        ("PARTNER_SYNC__RABOT__PAGE_SIZE", "100"),
        ("PARTNER_SYNC__RABOT__CONCURRENCY", "16"),
        // The shipped back-off: a refused request waits Retry-After, or 0.5 s and more.
        ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "500ms"),
        ("PARTNER_SYNC__HTTP__BACKOFF_MAX", "30s"),
        ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "5"),
    ];
    env.extend_from_slice(overrides);
    let settings = settings(&sandbox, &db, &env);
    let started = Instant::now();
    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let stats = sandbox.stats();
    let seen = stats.api_requests + stats.token_requests;
    assert_eq!(
        seen, counts.requests as u64,
        "every request sent reached the sandbox"
    );
    (elapsed, seen, stats.rate_limited)
}

fn limited_to_10(without_retry_after: bool, customers: usize) -> SandboxOptions {
    SandboxOptions {
        rate_limit: Some(10.try_into().unwrap()),
        rate_limit_without_retry_after: without_retry_after,
        ..small_sandbox(customers)
    }
}

/// Asserts the AIMD outcome for a sandbox limited to 10/s and prints it for the README.
fn assert_found_the_limit(label: &str, (elapsed, seen, refused): (f64, u64, u64)) {
    let accepted = seen - refused;
    let share = refused as f64 / seen as f64;
    let ideal = accepted as f64 / 10.0;
    println!(
        "{label}: {seen} requests, {refused} refused ({:.1} %), {elapsed:.1} s for {accepted} accepted (ideal {ideal:.1} s, ratio {:.2})",
        share * 100.0,
        elapsed / ideal
    );
    assert!(share < 0.02, "{refused} of {seen} requests refused");
    // Within 10 % of the partner's real limit; never faster than it allows (its burst of 10
    // aside).
    assert!(
        elapsed <= ideal * 1.10,
        "{elapsed:.1} s, ideal {ideal:.1} s"
    );
    assert!(
        elapsed >= (accepted - 10) as f64 / 10.0 * 0.95,
        "{elapsed:.1} s"
    );
}

#[tokio::test]
async fn a_partner_allowing_10_of_50_per_second_refuses_under_2_percent() {
    // 290 contract requests + 3 customer pages + the token: ~294 requests, ~30 s at 10/s.
    let pass = timed_pass(limited_to_10(false, 290), &[]).await;
    assert_found_the_limit("429 with Retry-After", pass);
}

#[tokio::test]
async fn a_partner_refusing_without_retry_after_is_found_as_well() {
    // Half the size: the back-off alone decides when a refused request goes again.
    let pass = timed_pass(limited_to_10(true, 140), &[]).await;
    assert_found_the_limit("429 without Retry-After", pass);
}

#[tokio::test]
async fn a_slow_partner_is_read_at_the_configured_rate() {
    const LATENCY: Duration = Duration::from_millis(200);
    // 190 contract requests + 2 customer pages + the token: ~193 requests, ~3.9 s at 50/s.
    let (elapsed, seen, refused) = timed_pass(
        SandboxOptions {
            latency: LATENCY,
            ..small_sandbox(190)
        },
        &[],
    )
    .await;
    assert_eq!(refused, 0);
    let ideal = seen as f64 / 50.0;
    println!(
        "200 ms latency: {seen} requests in {elapsed:.2} s ({:.1} req/s; ideal {ideal:.2} s at 50/s)",
        seen as f64 / elapsed
    );
    // The rate bounds the pass: within 10 % of requests / 50, plus the three answers nothing
    // can overlap (the token, the first page of customers, the last contract).
    let bound = ideal * 1.10 + 3.0 * LATENCY.as_secs_f64();
    assert!(elapsed <= bound, "{elapsed:.2} s, bound {bound:.2} s");
    // …and is never exceeded (the burst of 5 aside).
    assert!(elapsed >= (seen - 5) as f64 / 50.0, "{elapsed:.2} s");
}

#[tokio::test]
async fn two_replicas_with_one_credential_divide_the_partners_limit() {
    // 40 customers, 80 contracts: the costs and the consumption pass send 80 requests each,
    // at the same time from two processes, each configured to the partner's whole limit.
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        rate_limit: Some(10.try_into().unwrap()),
        ..small_sandbox(40)
    })
    .await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.extend(
        [
            ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", "10"),
            ("PARTNER_SYNC__RABOT__BURST", "1"),
            ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "500ms"),
            ("PARTNER_SYNC__HTTP__BACKOFF_MAX", "30s"),
            ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "5"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mirrored = run_binary(&["sync", "rabot_mirror"], env.clone()).await;
    assert!(mirrored.status.success(), "{mirrored:?}");
    let before = sandbox.stats();

    let started = Instant::now();
    let costs = run_binary(&["sync", "rabot_costs"], env.clone());
    let consumption = run_binary(&["sync", "rabot_consumption"], env.clone());
    // While both run, the database shows two processes sending with the one credential.
    let watch = async {
        let mut most = 0;
        for _ in 0..100 {
            let members: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sync.rate_budget_members WHERE budget LIKE 'rabot:%'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            most = most.max(members);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        most
    };
    let (costs, consumption, most) = tokio::join!(costs, consumption, watch);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(costs.status.success(), "{costs:?}");
    assert!(consumption.status.success(), "{consumption:?}");
    assert_eq!(most, 2, "both processes counted themselves");

    let after = sandbox.stats();
    let seen =
        after.api_requests + after.token_requests - before.api_requests - before.token_requests;
    let refused = after.rate_limited - before.rate_limited;
    let ideal = (seen - refused) as f64 / 10.0;
    println!(
        "two replicas at 10/s each, partner limit 10/s: {seen} requests, {refused} refused, {elapsed:.1} s (ideal {ideal:.1} s)"
    );
    // Each took half: together within the partner's limit, a refusal or two while they
    // learn of each other aside.
    assert!(
        (refused as f64) < 0.03 * seen as f64,
        "{refused} of {seen} requests refused"
    );
    assert!(
        elapsed <= ideal * 1.25,
        "{elapsed:.1} s, ideal {ideal:.1} s"
    );
}
