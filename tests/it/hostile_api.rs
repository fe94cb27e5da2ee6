//! Answers the sandbox never gives: a wiremock server plays a misbehaving RABOT, and every
//! case must end in a clear error (or a skipped item), never a panic or an endless loop.

use futures::TryStreamExt;
use partner_sync::partners::rabot::RabotClient;
use partner_sync::settings::Settings;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn rabot_double(token: serde_json::Value) -> (MockServer, RabotClient) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token))
        .mount(&server)
        .await;
    let env = [
        ("PARTNER_SYNC__RABOT__ENABLED", "true".to_owned()),
        ("PARTNER_SYNC__RABOT__CLIENT_ID", "id".to_owned()),
        ("PARTNER_SYNC__RABOT__CLIENT_SECRET", "secret".to_owned()),
        (
            "PARTNER_SYNC__RABOT__TOKEN_URL",
            format!("{}/connect/token", server.uri()),
        ),
        (
            "PARTNER_SYNC__RABOT__API_BASE_URL",
            format!("{}/partner/v1", server.uri()),
        ),
        (
            "PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND",
            "1000".to_owned(),
        ),
        ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "2".to_owned()),
        ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "10ms".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let settings = Settings::load_from(None, env).unwrap();
    let client = RabotClient::new(&settings.rabot, &settings.http).unwrap();
    (server, client)
}

fn good_token() -> serde_json::Value {
    json!({"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3599})
}

async fn customers_answer(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/partner/v1/customers"))
        .respond_with(answer)
        .mount(server)
        .await;
}

async fn first_error(client: &RabotClient) -> String {
    match client.customer_pages(None).try_collect::<Vec<_>>().await {
        Ok(pages) => panic!("expected an error, got {} pages", pages.len()),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_server_that_ignores_offset_ends_the_pass_instead_of_looping() {
    let (server, client) = rabot_double(good_token()).await;
    let page = json!({"isSuccess": true, "data": [{"customerNumber": "1"}, {"customerNumber": "2"}],
                      "count": 2, "hasMoreItems": true});
    customers_answer(&server, ResponseTemplate::new(200).set_body_json(page)).await;
    let error = first_error(&client).await;
    assert!(error.contains("offset is ignored"), "{error}");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path().ends_with("/customers"))
            .count(),
        2
    );
}

#[tokio::test]
async fn malformed_envelopes_are_clear_errors() {
    let cases = [
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": false, "message": "maintenance",
                "error": [{"severity": "Error", "code": "unavailable", "message": "try later"}]})),
            "unavailable: try later",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": true, "data": {"customerNumber": "1"}})),
            "data is an object instead of an array",
        ),
        (
            ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
            "unreadable answer",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": true, "data": null, "hasMoreItems": false})),
            "data is null instead of an array",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"isSuccess": true, "count": 0})),
            "the answer has no data field",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": true, "data": [], "hasMoreItems": true})),
            "hasMoreItems is true but the page at offset 0 is empty",
        ),
    ];
    for (answer, expected) in cases {
        let (server, client) = rabot_double(good_token()).await;
        customers_answer(&server, answer).await;
        let error = first_error(&client).await;
        assert!(error.contains(expected), "expected {expected:?} in {error}");
    }
}

#[tokio::test]
async fn a_row_without_its_key_fails_the_list_naming_the_field() {
    for bad_row in [
        json!({"firstName": "no number"}),
        json!({"customerNumber": null}),
        json!(null),
    ] {
        let (server, client) = rabot_double(good_token()).await;
        let page = json!({"isSuccess": true, "hasMoreItems": false,
                          "data": [{"customerNumber": "1"}, bad_row, {"customerNumber": 3}]});
        customers_answer(&server, ResponseTemplate::new(200).set_body_json(page)).await;
        let error = first_error(&client).await;
        assert!(
            error.contains("/customers") && error.contains("offset 1 has no customerNumber"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn odd_token_answers_are_handled() {
    // No expires_in, or one written as a string: the calls still work.
    for token in [
        json!({"access_token": "t"}),
        json!({"access_token": "t", "expires_in": "3600"}),
    ] {
        let (server, client) = rabot_double(token).await;
        customers_answer(
            &server,
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": true, "data": [], "hasMoreItems": false})),
        )
        .await;
        assert!(
            client
                .customer_pages(None)
                .try_collect::<Vec<_>>()
                .await
                .is_ok()
        );
    }

    // No access_token at all: a decode error that does not echo the body.
    let (server, client) =
        rabot_double(json!({"token_type": "Bearer", "refresh": "not-for-logs"})).await;
    customers_answer(&server, ResponseTemplate::new(200)).await;
    let error = first_error(&client).await;
    assert!(
        error.contains("unreadable answer") && error.contains("access_token"),
        "{error}"
    );
    assert!(!error.contains("not-for-logs"));
}
