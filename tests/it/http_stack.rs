//! The shared outbound stack: retries, Retry-After, giving up, and the rate limit.

use std::time::{Duration, Instant};

use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::{Fault, SandboxOptions};

use crate::common::*;

#[tokio::test]
async fn a_429_waits_for_retry_after_then_succeeds() {
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let client = rabot_client(&sandbox, &[]);
    // Fetch the token first so the timing covers only the API call.
    client.api().tokens().token().await.unwrap();
    sandbox.inject_fault(Fault {
        path_contains: "/customers".into(),
        status: 429,
        retry_after: Some("1".into()),
        times: 1,
    });
    let started = Instant::now();
    let page = first_customer_page(&client).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(page.items.len(), 3);
    assert!(
        waited >= Duration::from_secs(1),
        "waited only {waited:?}; backoff alone is 10-50 ms"
    );
    let stats = sandbox.stats();
    assert_eq!((stats.injected_faults, stats.api_requests), (1, 2));

    // An HTTP-date Retry-After is honoured too.
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    sandbox.inject_fault(Fault {
        path_contains: "/customers".into(),
        status: 503,
        retry_after: Some(httpdate::fmt_http_date(at)),
        times: 1,
    });
    let started = Instant::now();
    first_customer_page(&client).await.unwrap();
    // HTTP dates have whole-second precision, so at least ~1 s of the 2 remain.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn transient_5xx_are_retried_and_then_given_up_cleanly() {
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let client = rabot_client(&sandbox, &[]);
    client.api().tokens().token().await.unwrap();

    for status in [502, 503, 504] {
        sandbox.inject_fault(Fault {
            path_contains: "/customers".into(),
            status,
            retry_after: None,
            times: 1,
        });
    }
    // Three faults, max_attempts 3: the first call uses all three attempts and fails…
    let before = sandbox.stats().api_requests;
    let error = first_customer_page(&client).await.unwrap_err();
    assert!(
        error.contains("after 3 attempts") && error.contains("504"),
        "{error}"
    );
    assert_eq!(sandbox.stats().api_requests - before, 3);

    // …and a 502 followed by success is invisible to the caller.
    sandbox.inject_fault(Fault {
        path_contains: "/customers".into(),
        status: 502,
        retry_after: None,
        times: 1,
    });
    let page = first_customer_page(&client).await.unwrap();
    assert_eq!(page.items.len(), 3);

    // Other 4xx are not retried and quote the partner's error envelope. (A 404 for a
    // customer's contracts is the customer gone mid-pass, not an error: see mirror_trust.)
    sandbox.inject_fault(Fault {
        path_contains: "/customers/no-such-customer/contracts".into(),
        status: 422,
        retry_after: None,
        times: 1,
    });
    let before = sandbox.stats().api_requests;
    let error = client
        .contracts("no-such-customer".to_owned())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("422") && error.contains("isSuccess"),
        "{error}"
    );
    assert_eq!(sandbox.stats().api_requests - before, 1);
}

#[tokio::test]
async fn unreachable_partners_are_retried_then_reported() {
    // A port nothing listens on: connection refused on every attempt.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let dead = format!("http://127.0.0.1:{port}/connect/token");
    let client = rabot_client(&sandbox, &[("PARTNER_SYNC__RABOT__TOKEN_URL", &dead)]);
    let error = first_customer_page(&client).await.unwrap_err();
    assert!(
        error.contains("after 3 attempts") && error.contains("could not connect"),
        "{error}"
    );
}

#[tokio::test]
async fn a_pass_at_the_partners_rate_limit_sees_no_429() {
    const RATE: &str = "25";
    let db = TestDb::new().await;
    let sandbox = start_sandbox(SandboxOptions {
        rate_limit: Some(RATE.parse().unwrap()),
        rate_limit_burst: Some(5.try_into().unwrap()),
        ..small_sandbox(40)
    })
    .await;
    let settings = settings(
        &sandbox,
        &db,
        &[
            ("PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND", RATE),
            ("PARTNER_SYNC__RABOT__BURST", "4"),
            ("PARTNER_SYNC__RABOT__CONCURRENCY", "8"),
        ],
    );
    let (status, counts, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert!(counts.requests > 40);
    assert_eq!(sandbox.stats().rate_limited, 0);
}
