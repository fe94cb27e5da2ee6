//! Answers the sandbox never gives: a wiremock server plays a misbehaving RABOT, and every
//! case must end in a clear error (or a skipped item), never a panic or an endless loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use partner_sync::partners::rabot::{LinkRequest, RabotClient, RabotError};
use partner_sync::settings::Settings;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn rabot_double(token: serde_json::Value) -> (MockServer, RabotClient) {
    rabot_double_with(token, &[]).await
}

/// [`rabot_double`] with more settings (env-style keys) on top.
async fn rabot_double_with(
    token: serde_json::Value,
    overrides: &[(&str, &str)],
) -> (MockServer, RabotClient) {
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
    .map(|(k, v)| (k.to_owned(), v))
    .into_iter()
    .chain(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
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

#[tokio::test]
async fn any_expires_in_gives_a_token_with_a_bounded_lifetime() {
    let hour = Duration::from_secs(3600);
    let cases = [
        (json!(18446744073709551615u64), 24 * hour),
        (json!(1e300), 24 * hour),
        (json!(-5), Duration::from_secs(1)),
        (json!(0), Duration::from_secs(1)),
        // Unreadable: the default for an unstated lifetime.
        (json!("abc"), Duration::from_secs(300)),
        (json!("86400000"), 24 * hour),
        (json!(3599), Duration::from_secs(3599)),
    ];
    for (expires_in, expected) in cases {
        let (server, client) = rabot_double(
            json!({"access_token": "opaque-token", "token_type": "Bearer", "expires_in": expires_in}),
        )
        .await;
        customers_answer(
            &server,
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": true, "data": [], "hasMoreItems": false})),
        )
        .await;
        let token = client.api().tokens().token().await.expect("a token");
        assert_eq!(token.lifetime(), expected, "expires_in {expires_in}");
        // The cached token is used for calls, not renewed on each.
        client
            .customer_pages(None)
            .try_collect::<Vec<_>>()
            .await
            .expect("the call works with that token");
        assert_eq!(client.api().tokens().token_requests(), 1, "{expires_in}");
    }
}

#[tokio::test]
async fn a_retry_after_of_zero_or_in_the_past_still_waits_the_back_off() {
    // Back-off base 400 ms: the first retry waits at least 200 ms (the fixed half).
    let floor = Duration::from_millis(200);
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(60));
    for retry_after in ["0", past.as_str()] {
        let (server, client) = rabot_double_with(
            good_token(),
            &[
                ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "400ms"),
                ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "3"),
            ],
        )
        .await;
        client.api().tokens().token().await.unwrap();
        Mock::given(method("GET"))
            .and(path("/partner/v1/customers"))
            .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", retry_after))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        customers_answer(
            &server,
            ResponseTemplate::new(200)
                .set_body_json(json!({"isSuccess": true, "data": [], "hasMoreItems": false})),
        )
        .await;
        let started = Instant::now();
        client
            .customer_pages(None)
            .try_collect::<Vec<_>>()
            .await
            .expect("the retry succeeds");
        let waited = started.elapsed();
        let calls = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path().ends_with("/customers"))
            .count();
        assert_eq!(calls, 2, "one 503, one retry");
        assert!(
            waited >= floor,
            "Retry-After {retry_after:?}: retried after {waited:?}"
        );
    }
}

fn link_request() -> LinkRequest {
    LinkRequest {
        success_url: "https://sync.example/links/rabot/s/success".into(),
        failure_url: "https://sync.example/links/rabot/s/failure".into(),
        sign_up_url: None,
        auth_as: None,
        customer_number_query_parameter_name: "customerNumber".into(),
        external_customer_id: "EXT-1".into(),
    }
}

async fn link_posts(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::POST && r.url.path().ends_with("/link"))
        .count()
}

const LINK_ANSWER: &str = r#"{"isSuccess": true, "data": {"authorizationUrl": "https://rabot.example/authorize?state=x"}}"#;

#[tokio::test]
async fn a_link_request_answered_5xx_is_sent_once_and_reported_as_unknown() {
    for status in [503, 500, 502, 504] {
        let (server, client) =
            rabot_double_with(good_token(), &[("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "3")]).await;
        Mock::given(method("POST"))
            .and(path("/partner/v1/customers/link"))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/partner/v1/customers/link"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(LINK_ANSWER, "application/json"))
            .mount(&server)
            .await;
        let error = client.create_link(&link_request()).await.unwrap_err();
        assert!(
            matches!(error, RabotError::OutcomeUnknown { .. }),
            "{status}: {error}"
        );
        assert_eq!(link_posts(&server).await, 1, "{status}: sent exactly once");
        // Starting again is a new request, and works.
        let url = client
            .create_link(&link_request())
            .await
            .expect("a new link");
        assert_eq!(url.host_str(), Some("rabot.example"));
    }
}

#[tokio::test]
async fn a_link_request_refused_by_the_rate_limit_is_retried() {
    let (server, client) = rabot_double(good_token()).await;
    Mock::given(method("POST"))
        .and(path("/partner/v1/customers/link"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/partner/v1/customers/link"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(LINK_ANSWER, "application/json"))
        .mount(&server)
        .await;
    client
        .create_link(&link_request())
        .await
        .expect("a 429 processed nothing, so it is retried");
    assert_eq!(link_posts(&server).await, 2);
}

/// What a RABOT that loses its answer does with each request it reads in full.
#[derive(Clone, Copy)]
enum LostAnswer {
    /// Closes the connection without answering.
    Drop,
    /// Keeps the connection open and never answers.
    Hang,
}

/// A raw TCP "RABOT" for answers HTTP servers cannot be told to give: it reads each request
/// (headers and body) and then loses the answer. Returns its base URL and how many requests
/// it has read.
async fn answer_losing_server(behaviour: LostAnswer) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(read) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    received.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&received);
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if received.len() >= end + 4 + length {
                        break;
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    LostAnswer::Drop => {
                        let _ = stream.shutdown().await;
                    }
                    LostAnswer::Hang => {
                        // Held until the client gives up and closes it.
                        let _ = stream.read(&mut buffer).await;
                    }
                }
            });
        }
    });
    (format!("http://{address}"), requests)
}

#[tokio::test]
async fn a_link_request_whose_answer_is_lost_is_sent_once() {
    for behaviour in [LostAnswer::Drop, LostAnswer::Hang] {
        let (api, requests) = answer_losing_server(behaviour).await;
        let api_base = format!("{api}/partner/v1");
        let (_token_server, client) = rabot_double_with(
            good_token(),
            &[
                ("PARTNER_SYNC__RABOT__API_BASE_URL", api_base.as_str()),
                ("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "3"),
                ("PARTNER_SYNC__HTTP__REQUEST_TIMEOUT", "300ms"),
            ],
        )
        .await;
        let error = client.create_link(&link_request()).await.unwrap_err();
        assert!(
            matches!(error, RabotError::OutcomeUnknown { .. }),
            "{error}"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 1, "{error}");
    }
}
