//! Redirects nobody should trust: forged customer numbers, a secret on the wrong path, RABOT
//! unreachable while a number is checked, and a link request whose answer was lost.

use super::*;

#[tokio::test]
async fn forged_customer_numbers_are_refused_recorded_and_the_real_redirect_still_links() {
    let d = LinkDaemon::start(&[]).await;
    // A listed customer whose external id the link uses: it carries that id, but it never
    // linked us (relations: Owner). Another listed customer carries another external id.
    let listed = d.sandbox.customer_numbers();
    let (owner, external_id) = listed
        .iter()
        .find_map(|n| Some((n.clone(), d.sandbox.external_id_of(n)?)))
        .expect("a listed customer with an external id");
    assert_eq!(
        d.sandbox.rabot_relations(&owner),
        Some(vec!["Owner".to_owned()])
    );
    let other = listed
        .iter()
        .find(|n| {
            **n != owner && d.sandbox.external_id_of(n).as_deref() != Some(external_id.as_str())
        })
        .expect("a customer with another external id")
        .clone();
    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let back = d
        .decide(
            &d.authorization_url(&external_id).await,
            &customer,
            "approve",
        )
        .await;
    assert!(back.contains("/success?"), "{back}");

    // Whoever holds the success URL offers other customer numbers before the browser arrives.
    let not_ours = "no RABOT customer with this number carries the link's external id";
    let forgeries = [
        (other.as_str(), not_ours, other.clone()),
        ("10000", not_ours, "10000".to_owned()),
        (
            owner.as_str(),
            "the RABOT customer with this number has not linked us (no Linked relation)",
            owner.clone(),
        ),
        (
            "12\n\u{202e}34",
            "the customer number is missing or malformed",
            "12\\n\\u{202e}34".to_owned(),
        ),
    ];
    for (number, _, _) in &forgeries {
        let (status, page) = d.offer(&back, number).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{number:?}: {page}");
        assert!(page.contains("RABOT did not confirm"), "{page}");
        assert_eq!(d.link_row().await, ("pending".to_owned(), None, None, None));
    }
    let expected: Vec<(String, String)> = forgeries
        .iter()
        .map(|(_, reason, offered)| (reason.to_string(), offered.clone()))
        .collect();
    assert_eq!(d.refusals().await, expected);

    // The success secret on the failure path is unknown there, and denies nothing.
    let secret = LinkDaemon::secret_of(&back);
    let denial = format!(
        "{}/links/rabot/{secret}/failure?error_name=access_denied",
        d.public_url
    );
    assert_eq!(
        d.browser.get(&denial).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(d.link_row().await.0, "pending");

    // The customer's own redirect still completes the link, once.
    let done = d.browser.get(&back).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("Account linked"));
    let (status, number, _, _) = d.link_row().await;
    assert_eq!(
        (status.as_str(), number.as_deref()),
        ("linked", Some(customer.customer_number.as_str()))
    );
    assert_eq!(d.offer(&back, &owner).await.0, StatusCode::GONE);
    assert_eq!(d.refusals().await.len(), forgeries.len());
    let log = d.daemon.log();
    assert!(
        log.contains("refused a customer number for a link") && !log.contains(secret),
        "{log}"
    );
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn a_failure_secret_on_the_success_path_is_unknown_and_links_nobody() {
    let d = LinkDaemon::start(&[]).await;
    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let back = d
        .decide(&d.authorization_url("OUR-3").await, &customer, "deny")
        .await;
    assert!(back.contains("/failure?"), "{back}");
    let secret = LinkDaemon::secret_of(&back);
    let success = format!("{}/links/rabot/{secret}/success", d.public_url);
    let (status, _) = d.offer(&success, &customer.customer_number).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(d.link_row().await.0, "pending");
    assert!(d.refusals().await.is_empty());

    // The refusal itself still ends the link.
    assert_eq!(
        d.browser.get(&back).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(d.link_row().await.0, "denied");
    assert_eq!(
        d.offer(&success, &customer.customer_number).await.0,
        StatusCode::NOT_FOUND
    );
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn rabot_unreachable_during_the_check_leaves_the_link_pending_for_a_retry() {
    let d = LinkDaemon::start(&[]).await;
    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let back = d
        .decide(&d.authorization_url("OUR-4").await, &customer, "approve")
        .await;
    // Every attempt of the check's customer listing fails (PARTNER_SYNC__HTTP__MAX_ATTEMPTS=3).
    d.sandbox.inject_fault(partner_sync_sandbox::Fault {
        path_contains: "/customers".into(),
        status: 503,
        retry_after: None,
        times: 3,
    });
    let answer = d.browser.get(&back).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    assert!(answer.text().await.unwrap().contains("try again"));
    assert_eq!(d.link_row().await, ("pending".to_owned(), None, None, None));
    assert!(d.refusals().await.is_empty());

    // Reloading the page once RABOT answers again completes the link.
    assert_eq!(
        d.browser.get(&back).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, number, _, _) = d.link_row().await;
    assert_eq!(
        (status.as_str(), number.as_deref()),
        ("linked", Some(customer.customer_number.as_str()))
    );
    d.daemon.stop_cleanly().await;
}

/// RABOT answers 503 to `POST /customers/link` (it may have stored the link before failing):
/// neither the admin endpoint nor `partner-sync link` sends it again; both say so, nothing is
/// recorded, and starting again works.
#[tokio::test]
async fn a_link_request_rabot_failed_is_sent_once_and_the_operator_told_to_start_again() {
    const START_AGAIN: &str = "RABOT may have recorded the link; start again";
    let d = LinkDaemon::start(&[]).await;
    let fail_once = || Fault {
        path_contains: "/customers/link".into(),
        status: 503,
        retry_after: None,
        times: 1,
    };

    d.sandbox.inject_fault(fail_once());
    let before = d.sandbox.stats();
    let answer = d.create_link(json!({"externalId": "OUR-1"})).await;
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(START_AGAIN),
        "{body}"
    );
    assert_eq!(
        d.sandbox.stats().api_requests - before.api_requests,
        1,
        "sent exactly once"
    );
    assert_eq!(
        count(&d.db.pool, "SELECT count(*) FROM sync.customer_links").await,
        0
    );
    // Starting again: a new request, a new link.
    d.authorization_url("OUR-1").await;

    d.sandbox.inject_fault(fail_once());
    let before = d.sandbox.stats();
    let out = d.cli(&["link", "rabot", "--external-id", "OUR-2"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(START_AGAIN), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(d.sandbox.stats().api_requests - before.api_requests, 1);
    assert_eq!(
        count(&d.db.pool, "SELECT count(*) FROM sync.customer_links").await,
        1
    );
    d.daemon.stop_cleanly().await;
}
