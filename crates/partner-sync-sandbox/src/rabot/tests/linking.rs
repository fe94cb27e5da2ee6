use std::collections::HashMap;

use axum::http::{StatusCode, header};
use serde_json::{Value, json};
use url::Url;

use crate::SandboxOptions;
use crate::rabot::CUSTOMER_PASSWORD;
use crate::rabot::linking::{AUTHORIZE_PATH, DENIED_DESCRIPTION};
use crate::tests::{started, token};

async fn create(
    client: &reqwest::Client,
    sandbox: &crate::Sandbox,
    body: Value,
) -> (StatusCode, Value) {
    let token = token(client, sandbox).await;
    let response = client
        .post(format!("{}/customers/link", sandbox.rabot_api_base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    (
        response.status(),
        response.json().await.expect("JSON answer"),
    )
}

fn form_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn approve_deny_and_failed_logins_follow_the_guide() {
    let sandbox = started(SandboxOptions {
        customers: 3,
        linkable_customers: 2,
        ..SandboxOptions::default()
    })
    .await;
    let client = form_client();
    let linkable = sandbox.rabot_linkable_customers();
    assert_eq!(linkable.len(), 2);
    let visible_before = sandbox.customer_numbers();
    assert!(!visible_before.contains(&linkable[0].customer_number));

    let (status, answer) = create(
        &client,
        &sandbox,
        json!({
            "successUrl": "https://app.example/ok/abc?x=1",
            "failureUrl": "https://app.example/no/abc",
            "externalCustomerId": "OUR-1",
            "customerNumberQueryParameterName": "customerNumber",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let authorization_url = answer["data"]["authorizationUrl"]
        .as_str()
        .expect("authorizationUrl")
        .to_owned();
    let page = client.get(&authorization_url).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let state = Url::parse(&authorization_url)
        .expect("URL")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");

    let submit = |username: String, password: &'static str, decision: &'static str| {
        let client = client.clone();
        let state = state.clone();
        let url = format!("{}{AUTHORIZE_PATH}", sandbox.base_url());
        async move {
            client
                .post(url)
                .form(&[
                    ("state", state.as_str()),
                    ("username", username.as_str()),
                    ("password", password),
                    ("decision", decision),
                ])
                .send()
                .await
                .expect("submit")
        }
    };
    // A wrong password shows the form again and redirects nowhere.
    let wrong = submit(linkable[0].email.clone(), "nope", "approve").await;
    assert_eq!(wrong.status(), StatusCode::OK);
    assert!(wrong.headers().get(header::LOCATION).is_none());
    assert!(wrong.text().await.expect("page").contains("Wrong e-mail"));

    let approved = submit(linkable[0].email.clone(), CUSTOMER_PASSWORD, "approve").await;
    assert_eq!(approved.status(), StatusCode::FOUND);
    let location = Url::parse(
        approved.headers()[header::LOCATION]
            .to_str()
            .expect("ASCII"),
    )
    .expect("absolute");
    let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(location.path(), "/ok/abc");
    assert_eq!(query["x"], "1");
    assert_eq!(query["customerNumber"], linkable[0].customer_number);
    // The customer is now visible, linked, with our external id; the state is spent.
    let number = &linkable[0].customer_number;
    assert_eq!(
        sandbox.rabot_relations(number),
        Some(vec!["Linked".to_owned()])
    );
    assert_eq!(sandbox.external_id_of(number).as_deref(), Some("OUR-1"));
    let replay = submit(linkable[0].email.clone(), CUSTOMER_PASSWORD, "approve").await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);

    // A refusal goes to the failure URL with the guide's parameters.
    let (_, answer) = create(
        &client,
        &sandbox,
        json!({"successUrl": "https://app.example/ok", "failureUrl": "https://app.example/no"}),
    )
    .await;
    let url = Url::parse(answer["data"]["authorizationUrl"].as_str().expect("url")).expect("url");
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let denied = client
        .post(format!("{}{AUTHORIZE_PATH}", sandbox.base_url()))
        .form(&[
            ("state", state.as_str()),
            ("username", linkable[1].email.as_str()),
            ("password", CUSTOMER_PASSWORD),
            ("decision", "deny"),
        ])
        .send()
        .await
        .expect("deny");
    let location =
        Url::parse(denied.headers()[header::LOCATION].to_str().expect("ASCII")).expect("absolute");
    let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(query["error_name"], "access_denied");
    assert_eq!(query["error_description"], DENIED_DESCRIPTION);
    assert_eq!(sandbox.rabot_linkable_customers().len(), 1);

    // Unlinking hides the customer again; a second unlink is 404.
    let token = token(&client, &sandbox).await;
    let unlink_url = format!("{}/customers/{number}/link", sandbox.rabot_api_base_url());
    let first = client
        .delete(&unlink_url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(sandbox.rabot_relations(number), None);
    let second = client
        .delete(&unlink_url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(second.status(), StatusCode::NOT_FOUND);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_link_requests_are_refused_in_the_envelope() {
    let sandbox = started(SandboxOptions {
        customers: 1,
        ..SandboxOptions::default()
    })
    .await;
    let client = form_client();
    for body in [
        json!({"failureUrl": "https://app.example/no"}),
        json!({"successUrl": "ftp://x", "failureUrl": "https://app.example/no"}),
        json!({"successUrl": "https://a.example", "failureUrl": "https://a.example", "authAs": "nobody"}),
        json!({"successUrl": 5, "failureUrl": "https://a.example"}),
    ] {
        let (status, answer) = create(&client, &sandbox, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["isSuccess"], false);
    }
    let unauthenticated = client
        .post(format!("{}/customers/link", sandbox.rabot_api_base_url()))
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    sandbox.shutdown().await;
}
