use super::*;
use crate::Fault;

#[tokio::test]
async fn code_exchange_answers_the_documented_fields_and_a_reused_code_revokes() {
    let sandbox = started(SandboxOptions::default()).await;
    let before = unix_now();
    let code = approved_code(&sandbox).await;
    let (status, headers, body) = token_request(
        &sandbox,
        CLIENT,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let consent_id = sandbox.rabobank_consent_ids()[0].clone();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["refresh_token_expires_in"], 2_592_000);
    assert_eq!(body["scope"], SCOPE);
    assert_eq!(body["metadata"], format!("a:consentId {consent_id}"));
    let consented_on = body["consented_on"].as_u64().expect("consented_on");
    assert!(consented_on >= before && consented_on <= unix_now());
    let access = text(&body, "access_token").to_owned();
    let refresh_token = text(&body, "refresh_token").to_owned();
    assert!(access.len() >= 64 && refresh_token.len() >= 64);
    let secrets = sandbox.rabobank_secrets();
    for secret in [&code, &access, &refresh_token] {
        assert!(secrets.contains(secret));
    }
    let url = consent_url(&sandbox, &consent_id);
    assert_eq!(consent(&url, &access).await.0, StatusCode::OK);

    let (status, again) = exchange(&sandbox, &code).await;
    assert_eq!(
        (status, &again["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert!(sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
    let (status, refused) = refresh(&sandbox, &refresh_token).await;
    assert_eq!(
        (status, &refused["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
    );
    assert_eq!(consent(&url, &access).await.0, StatusCode::UNAUTHORIZED);

    // Unknown codes and a redirect_uri other than the one used are refused without harm.
    let (status, unknown) = exchange(&sandbox, "no-such-code").await;
    assert_eq!(
        (status, &unknown["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    let code = approved_code(&sandbox).await;
    let (status, _, mismatch) = token_request(
        &sandbox,
        CLIENT,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example/other"),
        ],
    )
    .await;
    assert_eq!(
        (status, &mismatch["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert_eq!(exchange(&sandbox, &code).await.0, StatusCode::OK);

    let stats = sandbox.rabobank_stats();
    assert_eq!((stats.code_exchanges, stats.invalid_grant_answers), (2, 4));
    assert_eq!(sandbox.stats().tokens_issued, 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn client_authentication_and_grant_type_errors() {
    let sandbox = started(SandboxOptions::default()).await;
    let code = approved_code(&sandbox).await;
    let exchange_form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
    ];
    let body_credentials = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", "sandbox-bank-client"),
        ("client_secret", "sandbox-bank-secret"),
    ];
    let cases: [(Basic<'_>, &[(&str, &str)]); 3] = [
        (Some(("sandbox-bank-client", "wrong")), &exchange_form),
        (
            Some(("someone-else", "sandbox-bank-secret")),
            &exchange_form,
        ),
        (None, &body_credentials),
    ];
    for (credentials, form) in cases {
        let (status, headers, body) = token_request(&sandbox, credentials, form).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
        );
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Basic realm="rabobank-sandbox""#
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(body["error_description"].is_string());
    }
    let garbled = client()
        .post(token_url(&sandbox))
        .header(header::AUTHORIZATION, "Basic !!!")
        .form(&exchange_form)
        .send()
        .await
        .expect("request");
    assert_eq!(garbled.status(), StatusCode::UNAUTHORIZED);

    for form in [
        &[("code", code.as_str())][..],
        &[("grant_type", "password")],
    ] {
        let (status, headers, body) = token_request(&sandbox, CLIENT, form).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_request"))
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
    // None of that spent the code.
    assert_eq!(exchange(&sandbox, &code).await.0, StatusCode::OK);
    let stats = sandbox.rabobank_stats();
    assert_eq!(stats.invalid_client_answers, 4);
    assert_eq!(sandbox.stats().token_requests, 7);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_grant() {
    let sandbox = started(SandboxOptions::default()).await;
    let (first, consent_id) = granted(&sandbox).await;
    let first_refresh = text(&first, "refresh_token");

    let (status, second) = refresh(&sandbox, first_refresh).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second.get("metadata").is_none());
    assert_eq!(second["consented_on"], first["consented_on"]);
    assert_eq!(second["refresh_token_expires_in"], 2_592_000);
    assert_eq!(second["scope"], SCOPE);
    let second_refresh = text(&second, "refresh_token");
    assert_ne!(second_refresh, first_refresh);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(
        sandbox
            .rabobank_grant(&consent_id)
            .expect("grant")
            .refresh_count,
        1
    );
    let url = consent_url(&sandbox, &consent_id);
    assert_eq!(
        consent(&url, text(&second, "access_token")).await.0,
        StatusCode::OK
    );

    // The spent token comes back: the whole grant goes, the fresh pair with it.
    let (status, reused) = refresh(&sandbox, first_refresh).await;
    assert_eq!(
        (status, &reused["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
    );
    let grant = sandbox.rabobank_grant(&consent_id).expect("grant");
    assert!(grant.revoked);
    assert_eq!(grant.refresh_count, 1);
    let (status, after) = refresh(&sandbox, second_refresh).await;
    assert_eq!(
        (status, &after["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
    );
    assert_eq!(
        consent(&url, text(&second, "access_token")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = refresh(&sandbox, "never-issued").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let stats = sandbox.rabobank_stats();
    assert_eq!(stats.reuse_detections, 1);
    assert_eq!((stats.refreshes, stats.refresh_requests), (1, 4));
    assert_eq!(stats.invalid_grant_answers, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_consent_allows_only_the_refresh_limit() {
    let sandbox = started(with_bank(|bank| bank.refresh_limit = 2)).await;
    let (mut tokens, consent_id) = granted(&sandbox).await;
    for _ in 0..2 {
        let (status, next) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
        assert_eq!(status, StatusCode::OK);
        tokens = next;
    }
    let (status, refused) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
    assert_eq!(
        (status, &refused["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
    );
    let grant = sandbox.rabobank_grant(&consent_id).expect("grant");
    assert_eq!((grant.refresh_count, grant.revoked), (2, false));
    assert_eq!(sandbox.rabobank_stats().reuse_detections, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn expired_codes_and_refresh_tokens_are_invalid_grants() {
    // Only ever waiting past a lifetime, never racing one, keeps this steady on a busy box.
    let sandbox = started(with_bank(|bank| {
        bank.code_lifetime = Duration::from_millis(50);
    }))
    .await;
    let stale = approved_code(&sandbox).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = exchange(&sandbox, &stale).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    sandbox.shutdown().await;

    let sandbox = started(with_bank(|bank| {
        bank.refresh_lifetime = Duration::from_millis(50);
    }))
    .await;
    let (tokens, consent_id) = granted(&sandbox).await;
    // Whole seconds, rounded down: a client never believes a token lives longer than it does.
    assert_eq!(tokens["refresh_token_expires_in"], 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
    );
    // Expired is not reuse, and does not revoke.
    assert_eq!(sandbox.rabobank_stats().reuse_detections, 0);
    assert!(!sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn standard_mode_answers_plain_rfc_6749_and_still_rotates() {
    let sandbox = started(with_bank(|bank| bank.standard_oauth = true)).await;
    let (tokens, consent_id) = granted(&sandbox).await;
    let mut fields: Vec<&String> = tokens.as_object().expect("object").keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    let (status, rotated) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rotated.as_object().expect("object").len(), 5);
    let (status, _) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn injected_faults_on_the_token_path_answer_in_the_oauth_shape() {
    let sandbox = started(SandboxOptions::default()).await;
    let code = approved_code(&sandbox).await;
    for (status, retry_after) in [(503, Some("2")), (429, Some("1")), (500, None)] {
        sandbox.inject_fault(Fault {
            path_contains: "/rabobank/oauth2/token".to_owned(),
            status,
            retry_after: retry_after.map(str::to_owned),
            times: 1,
        });
    }
    for (status, error) in [
        (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        (StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable"),
        (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    ] {
        let (answer, headers, body) = token_request(
            &sandbox,
            CLIENT,
            &[("grant_type", "authorization_code"), ("code", &code)],
        )
        .await;
        assert_eq!((answer, &body["error"]), (status, &json!(error)));
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
    // The faults never reached the bank, so the code is still good.
    assert_eq!(exchange(&sandbox, &code).await.0, StatusCode::OK);

    sandbox.inject_fault(Fault {
        path_contains: "/rabobank/api".to_owned(),
        status: 503,
        retry_after: None,
        times: 1,
    });
    let (status, body) = consent(&consent_url(&sandbox, "x"), "t").await;
    assert_eq!(
        (status, &body["httpCode"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("503"))
    );

    let stats = sandbox.stats();
    assert_eq!((stats.token_requests, stats.injected_faults), (4, 4));
    assert_eq!(sandbox.rabobank_stats().code_exchanges, 1);
    sandbox.shutdown().await;
}
