//! RABOT customer linking through the real binary: the admin endpoint and `partner-sync link`
//! start a link at the sandbox, a "browser" logs in on the sandbox's page and follows its
//! redirect back to the daemon, which records the answer once and mirrors the customer at once.

use std::collections::HashMap;
use std::time::Duration;

use partner_sync::partners::rabot::links::{LinkAnswer, LinkSpec, RabotLinks};
use partner_sync::store::audit::Actor;
use partner_sync_sandbox::{Fault, LinkableCustomer, RABOT_CUSTOMER_PASSWORD, Sandbox};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

mod redirects_under_attack;

pub(crate) const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A daemon with RABOT linking on, over the sandbox (the audit tests use it too).
pub(crate) struct LinkDaemon {
    pub(crate) sandbox: Sandbox,
    pub(crate) db: TestDb,
    env: Vec<(String, String)>,
    pub(crate) public_url: String,
    pub(crate) daemon: Daemon,
    /// Follows no redirect, like a test of where each one points.
    pub(crate) browser: reqwest::Client,
}

impl LinkDaemon {
    pub(crate) async fn start(overrides: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let sandbox = start_sandbox(small_sandbox(3)).await;
        let port = free_port();
        let public_url = format!("http://127.0.0.1:{port}");
        let mut env = sandbox_env(&sandbox, &db.url);
        env.extend(
            [
                ("PARTNER_SYNC__SERVER__LISTEN", format!("127.0.0.1:{port}")),
                ("PARTNER_SYNC__SERVER__PUBLIC_URL", public_url.clone()),
                ("PARTNER_SYNC__SERVER__ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
                ("PARTNER_SYNC__RABOT__SCHEDULE", NEVER.to_owned()),
            ]
            .into_iter()
            .chain(overrides.iter().map(|(k, v)| (*k, v.to_string())))
            .map(|(k, v)| (k.to_owned(), v)),
        );
        let daemon = Daemon::run_ready(env.clone()).await;
        Self {
            sandbox,
            db,
            env,
            public_url,
            daemon,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub(crate) async fn create_link(&self, body: Value) -> reqwest::Response {
        self.browser
            .post(format!("{}/links/rabot", self.public_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A link made through the admin endpoint: its authorization URL.
    pub(crate) async fn authorization_url(&self, external_id: &str) -> String {
        let answer = self.create_link(json!({ "externalId": external_id })).await;
        assert_eq!(answer.status(), StatusCode::CREATED);
        let body: Value = answer.json().await.unwrap();
        body["authorizationUrl"].as_str().unwrap().to_owned()
    }

    /// The customer opens the URL, logs in and decides; returns where the sandbox sent them.
    pub(crate) async fn decide(
        &self,
        authorization_url: &str,
        who: &LinkableCustomer,
        decision: &str,
    ) -> String {
        let page = self.browser.get(authorization_url).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let state = url::Url::parse(authorization_url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let answer = self
            .browser
            .post(format!(
                "{}/rabot/connect/authorize",
                self.sandbox.base_url()
            ))
            .form(&[
                ("state", state.as_str()),
                ("username", who.email.as_str()),
                ("password", RABOT_CUSTOMER_PASSWORD),
                ("decision", decision),
            ])
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_redirection(), "{}", answer.status());
        answer.headers()["location"].to_str().unwrap().to_owned()
    }

    pub(crate) async fn cli(&self, args: &[&str]) -> std::process::Output {
        run_binary(args, self.env.clone()).await
    }

    /// The secret in a redirect URL the sandbox sent the browser to.
    pub(crate) fn secret_of(back: &str) -> &str {
        back.split("/links/rabot/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
    }

    /// The status of a GET of `url` with `customerNumber` set to `number` (encoded), and its page.
    pub(crate) async fn offer(&self, url: &str, number: &str) -> (StatusCode, String) {
        let mut url = url::Url::parse(url).unwrap();
        url.query_pairs_mut()
            .clear()
            .append_pair("customerNumber", number);
        let answer = self.browser.get(url).send().await.unwrap();
        (answer.status(), answer.text().await.unwrap())
    }

    async fn refusals(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT reason, offered_customer_number FROM sync.link_refusals ORDER BY id")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn link_row(
        &self,
    ) -> (String, Option<String>, Option<String>, Option<String>) {
        sqlx::query_as(
            "SELECT status, customer_number, error_name, error_description
               FROM sync.customer_links ORDER BY created_at DESC LIMIT 1",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn an_approved_link_is_recorded_once_and_the_customer_mirrored_at_once() {
    // At TRACE, so the check below covers everything the daemon could log.
    let d = LinkDaemon::start(&[("RUST_LOG", "trace")]).await;
    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let authorization_url = d.authorization_url("OUR-7").await;
    let back = d.decide(&authorization_url, &customer, "approve").await;
    assert!(
        back.starts_with(&format!("{}/links/rabot/", d.public_url)),
        "{back}"
    );

    let done = d.browser.get(&back).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.headers()["cache-control"], "no-store");
    assert!(done.text().await.unwrap().contains("Account linked"));
    let (status, number, _, _) = d.link_row().await;
    assert_eq!(
        (status.as_str(), number.as_deref()),
        ("linked", Some(customer.customer_number.as_str()))
    );

    // The redirect triggered the link mirror: the customer and its contracts appear in seconds.
    let contracts = d.sandbox.contract_numbers(&customer.customer_number).len() as i64;
    assert!(contracts > 0);
    assert!(
        wait_for(
            &d.db,
            "SELECT count(*) FROM mirror.rabot_contracts k JOIN mirror.rabot_customers c
                 USING (customer_number) WHERE c.external_id = 'OUR-7'",
            contracts,
            Duration::from_secs(5)
        )
        .await
    );
    let (job, cause, run_status): (String, String, String) =
        sqlx::query_as("SELECT job, cause, status FROM sync.runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&d.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (job.as_str(), cause.as_str(), run_status.as_str()),
        ("rabot_link_mirror", "link", "succeeded")
    );
    assert!(
        wait_for(
            &d.db,
            "SELECT count(*) FROM sync.customer_links WHERE mirrored_at IS NOT NULL",
            1,
            Duration::from_secs(5)
        )
        .await
    );

    // A replayed redirect changes nothing; the success secret on the failure path is unknown.
    let completed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT completed_at FROM sync.customer_links")
            .fetch_one(&d.db.pool)
            .await
            .unwrap();
    assert_eq!(
        d.browser.get(&back).send().await.unwrap().status(),
        StatusCode::GONE
    );
    let failure = back.replace("/success?", "/failure?");
    assert_eq!(
        d.browser.get(&failure).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let after: (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT status, completed_at FROM sync.customer_links")
            .fetch_one(&d.db.pool)
            .await
            .unwrap();
    assert_eq!(after, ("linked".to_owned(), completed_at));
    assert_eq!(
        count(
            &d.db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_link_mirror'"
        )
        .await,
        1
    );

    // Neither the link's secret nor the admin token ever reaches the log.
    let secret = back
        .split("/links/rabot/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    assert!(secret.len() >= 43, "{back}");
    let log = d.daemon.log();
    assert!(log.contains("customer link completed"), "{log}");
    assert!(!log.contains(secret) && !log.contains(ADMIN_TOKEN));
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn a_refusal_is_recorded_with_its_reason_and_redirects_to_the_platform() {
    let d = LinkDaemon::start(&[(
        "PARTNER_SYNC__SERVER__LINK_DONE_URL",
        "https://platform.example/linked?from=ps",
    )])
    .await;
    let customer = d.sandbox.rabot_linkable_customers()[1].clone();
    // Started from the command line this time.
    let out = d
        .cli(&[
            "link",
            "rabot",
            "--external-id",
            "OUR-9",
            "--auth-as",
            "rabot-charge",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let authorization_url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let back = d.decide(&authorization_url, &customer, "deny").await;
    assert!(back.contains("/failure?"), "{back}");

    let done = d.browser.get(&back).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let location = url::Url::parse(done.headers()["location"].to_str().unwrap()).unwrap();
    let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(location.host_str(), Some("platform.example"));
    assert_eq!(
        (
            query["from"].as_str(),
            query["status"].as_str(),
            query["external_id"].as_str()
        ),
        ("ps", "denied", "OUR-9")
    );
    let (status, number, error_name, description) = d.link_row().await;
    assert_eq!(status, "denied");
    assert_eq!(number, None);
    assert_eq!(error_name.as_deref(), Some("access_denied"));
    assert_eq!(
        description.as_deref(),
        Some("The authorization was denied by the end user.")
    );
    // Nothing to mirror after a refusal; the customer stays unseen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&d.db.pool, "SELECT count(*) FROM sync.runs").await, 0);
    assert_eq!(d.sandbox.rabot_relations(&customer.customer_number), None);

    let links = d.cli(&["links", "--json"]).await;
    let listed: Value = serde_json::from_slice(&links.stdout).unwrap();
    assert_eq!(
        (listed["status"].as_str(), listed["external_id"].as_str()),
        (Some("denied"), Some("OUR-9"))
    );
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn unknown_expired_malformed_and_unauthorised_requests_change_nothing() {
    let d = LinkDaemon::start(&[]).await;
    let authorization_url = d.authorization_url("OUR-1").await;
    assert!(authorization_url.starts_with(&d.sandbox.base_url()));

    // An id nobody issued.
    let unknown = format!(
        "{}/links/rabot/{}/success?customerNumber=123",
        d.public_url,
        "x".repeat(43)
    );
    assert_eq!(
        d.browser.get(&unknown).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // The real id, but after RABOT's 10 minutes (moved into the past here).
    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let back = d.decide(&authorization_url, &customer, "approve").await;
    let malformed = back.split('?').next().unwrap().to_owned();
    assert_eq!(
        d.browser.get(&malformed).send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    sqlx::query("UPDATE sync.customer_links SET expires_at = now() - interval '1 second'")
        .execute(&d.db.pool)
        .await
        .unwrap();
    assert_eq!(
        d.browser.get(&back).send().await.unwrap().status(),
        StatusCode::GONE
    );
    let (status, number, _, _) = d.link_row().await;
    assert_eq!((status.as_str(), number), ("pending", None));
    let listed = d.cli(&["links"]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("expired"));

    // The admin endpoint: no token, a wrong one, a bad body.
    let url = format!("{}/links/rabot", d.public_url);
    let no_token = d
        .browser
        .post(&url)
        .json(&json!({"externalId": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let wrong = d
        .browser
        .post(&url)
        .bearer_auth("test-admin-token-0123456780")
        .json(&json!({"externalId": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for body in [
        json!({}),
        json!({"externalId": "  "}),
        json!({"externalId": "A", "authAs": "no spaces"}),
        json!({"externalId": "A", "extra": 1}),
    ] {
        assert_eq!(
            d.create_link(body.clone()).await.status(),
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    // RABOT's own refusal (an unknown partner account) is a 502 that says so.
    let refused = d
        .create_link(json!({"externalId": "A", "authAs": "nobody"}))
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    assert!(refused.text().await.unwrap().contains("authAs"));
    assert_eq!(
        count(&d.db.pool, "SELECT count(*) FROM sync.customer_links").await,
        1
    );
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn linked_customers_are_a_scope_and_unlinking_stops_their_refresh() {
    let d = LinkDaemon::start(&[("PARTNER_SYNC__RABOT__EXTERNAL_IDS", "@linked")]).await;
    let settings = load_settings(
        &d.sandbox,
        &d.db.url,
        &[("PARTNER_SYNC__RABOT__EXTERNAL_IDS", "@linked")],
    );
    // Nobody is linked yet: the scheduled mirror has nothing to do (not "everyone").
    let (status, counts, _) = mirror_pass(&settings, &d.db.pool).await;
    assert_eq!(
        (status, counts.fetched),
        (partner_sync::store::runs::RunStatus::Succeeded, 0)
    );

    let customer = d.sandbox.rabot_linkable_customers()[0].clone();
    let back = d
        .decide(&d.authorization_url("OUR-5").await, &customer, "approve")
        .await;
    assert_eq!(
        d.browser.get(&back).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(
        wait_for(
            &d.db,
            "SELECT count(*) FROM sync.customer_links WHERE mirrored_at IS NOT NULL",
            1,
            Duration::from_secs(5)
        )
        .await
    );

    // Now the scheduled mirror covers exactly the linked customer, and finds it unchanged.
    let contracts = d.sandbox.contract_numbers(&customer.customer_number).len() as i64;
    let (_, counts, _) = mirror_pass(&settings, &d.db.pool).await;
    assert_eq!(
        (counts.fetched, counts.unchanged),
        (1 + contracts, 1 + contracts)
    );

    let out = d.cli(&["unlink", "rabot", &customer.customer_number]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.link_row().await.0, "unlinked");
    assert_eq!(d.sandbox.rabot_relations(&customer.customer_number), None);
    // No longer refreshed, but its rows stay as they were.
    let (_, counts, _) = mirror_pass(&settings, &d.db.pool).await;
    assert_eq!((counts.fetched, counts.deleted), (0, 0));
    assert_eq!(
        count(
            &d.db.pool,
            "SELECT count(*) FROM mirror.rabot_contracts WHERE deleted_at IS NULL"
        )
        .await,
        contracts
    );
    // RABOT no longer knows the link (404): the command says so and still succeeds.
    let again = d.cli(&["unlink", "rabot", &customer.customer_number]).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    d.daemon.stop_cleanly().await;
}

#[tokio::test]
async fn the_scheduled_mirror_catches_up_a_link_whose_trigger_was_lost() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let listed = sandbox
        .external_id_of(&sandbox.customer_numbers()[0])
        .unwrap();
    // The scheduled mirror covers one listed customer only, not the one that links.
    let settings = load_settings(
        &sandbox,
        &db.url,
        &[("PARTNER_SYNC__RABOT__EXTERNAL_IDS", listed.as_str())],
    );
    let links = RabotLinks::from_settings(&settings).unwrap().unwrap();
    let link = links
        .begin(
            &db.pool,
            LinkSpec {
                external_id: "OUR-LATE".into(),
                auth_as: None,
                sign_up_url: None,
            },
            &Actor::cli_user(),
        )
        .await
        .unwrap();
    // The customer approves; the redirect is recorded, but no daemon hears of it.
    let customer = sandbox.rabot_linkable_customers()[0].clone();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let state = link
        .authorization_url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let answer = browser
        .post(format!("{}/rabot/connect/authorize", sandbox.base_url()))
        .form(&[
            ("state", state.as_str()),
            ("username", customer.email.as_str()),
            ("password", RABOT_CUSTOMER_PASSWORD),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    let back = answer.headers()["location"].to_str().unwrap().to_owned();
    let secret = back
        .split("/links/rabot/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let answer = LinkAnswer::Approved {
        customer_number: customer.customer_number.clone(),
    };
    links
        .complete(&db.pool, secret, answer, &Actor::Browser)
        .await
        .unwrap();

    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(
        status,
        partner_sync::store::runs::RunStatus::Succeeded,
        "{error:?}"
    );
    let contracts = sandbox.contract_numbers(&customer.customer_number).len() as i64;
    let mirrored = "SELECT count(*) FROM mirror.rabot_contracts k JOIN mirror.rabot_customers c
                        USING (customer_number) WHERE c.external_id = 'OUR-LATE'";
    assert_eq!(count(&db.pool, mirrored).await, contracts);
    let caught_up = "SELECT count(*) FROM sync.customer_links WHERE mirrored_at IS NOT NULL";
    assert_eq!(count(&db.pool, caught_up).await, 1);
    // And the configured scope as usual.
    let listed_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mirror.rabot_customers WHERE external_id = $1")
            .bind(&listed)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(listed_rows >= 1);
}
