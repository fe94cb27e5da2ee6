use super::*;
use crate::RabobankGrantView;
use crate::web::escape_html;

#[tokio::test]
async fn approval_redirects_with_code_and_state_keeping_the_redirect_query() {
    let sandbox = started(SandboxOptions::default()).await;
    let state = "a b&c=d/é";
    let response = authorize(&sandbox, &approve_params(state)).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let (target, params) = redirected(&response);
    assert_eq!(target, "https://app.example/rabobank/callback");
    assert_eq!(params["tenant"], "7");
    assert_eq!(params["state"], state);
    let code = &params["code"];
    assert!(code.len() >= 22 && code.bytes().all(|b| b.is_ascii_alphanumeric()));

    // No state given, none echoed.
    let mut params = approve_params("unused");
    params.retain(|(name, _)| *name != "state");
    let (_, answer) = redirected(&authorize(&sandbox, &params).await);
    assert!(answer.contains_key("code") && !answer.contains_key("state"));

    let consent_ids = sandbox.rabobank_consent_ids();
    assert_eq!(consent_ids.len(), 2);
    assert!(uuid::Uuid::parse_str(&consent_ids[0]).is_ok());
    assert_eq!(
        sandbox.rabobank_grant(&consent_ids[0]),
        Some(RabobankGrantView {
            consent_id: consent_ids[0].clone(),
            refresh_count: 0,
            revoked: false,
            scope: SCOPE.to_owned(),
        })
    );
    assert_eq!(sandbox.rabobank_stats().authorizations, 2);
    assert!(sandbox.rabobank_secrets().contains(code));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn denial_and_server_error_redirect_with_the_error() {
    let sandbox = started(SandboxOptions::default()).await;
    let mut params = approve_params("xyz");
    params[5].1 = "deny";
    let (_, denied) = redirected(&authorize(&sandbox, &params).await);
    assert_eq!(denied["error"], "access_denied");
    assert_eq!(denied["state"], "xyz");
    assert!(!denied.contains_key("code"));

    params[5].1 = "server_error";
    let (_, failed) = redirected(&authorize(&sandbox, &params).await);
    assert_eq!(failed["error"], "server_error");
    assert!(failed.contains_key("error_description"));
    assert_eq!(failed["state"], "xyz");

    let stats = sandbox.rabobank_stats();
    assert_eq!((stats.authorizations, stats.denials), (0, 1));
    assert!(sandbox.rabobank_consent_ids().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_scope_or_response_type_redirects_with_the_error() {
    let sandbox = started(SandboxOptions::default()).await;
    let cases = [
        (
            "scope",
            "ais.balances.read pis.payments.write",
            "invalid_scope",
        ),
        ("scope", "", "invalid_scope"),
        ("response_type", "token", "unsupported_response_type"),
    ];
    for (name, value, error) in cases {
        let mut params = approve_params("st");
        for param in &mut params {
            if param.0 == name {
                param.1 = value;
            }
        }
        let (target, answer) = redirected(&authorize(&sandbox, &params).await);
        assert_eq!(target, "https://app.example/rabobank/callback");
        assert_eq!(answer["error"], error, "{name}={value}");
        assert!(answer.contains_key("error_description"));
        assert_eq!(answer["state"], "st");
    }
    assert!(sandbox.rabobank_consent_ids().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn unknown_client_or_unusable_redirect_gets_a_page_never_a_redirect() {
    let sandbox = started(SandboxOptions::default()).await;
    let cases: [(&str, Option<&str>); 4] = [
        ("client_id", Some("someone-else")),
        ("redirect_uri", None),
        ("redirect_uri", Some("javascript:alert(1)")),
        ("redirect_uri", Some("/relative/callback")),
    ];
    for (name, value) in cases {
        let mut params = approve_params("s");
        params.retain(|param| param.0 != name);
        if let Some(value) = value {
            params.push((name, value));
        }
        let response = authorize(&sandbox, &params).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{name}={value:?}"
        );
        assert!(response.headers().get(header::LOCATION).is_none());
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with("text/html"), "{content_type}");
    }
    sandbox.shutdown().await;

    // With a registered redirect URI, another one is refused and none means that one.
    let registered = "http://127.0.0.1:9/registered";
    let sandbox = started(with_bank(|bank| {
        bank.redirect_uri = Some(registered.to_owned())
    }))
    .await;
    let response = authorize(&sandbox, &approve_params("s")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let mut params = approve_params("s");
    params.retain(|param| param.0 != "redirect_uri");
    let (target, answer) = redirected(&authorize(&sandbox, &params).await);
    assert_eq!(target, registered);
    let code = &answer["code"];
    // The code is bound to the registered URI.
    let (status, _, body) = token_request(
        &sandbox,
        CLIENT,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", registered),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sandbox.shutdown().await;

    let refused = start(
        with_bank(|bank| bank.redirect_uri = Some("ftp://example.com/cb".to_owned())),
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn consent_page_escapes_what_it_echoes_and_its_form_decides() {
    let sandbox = started(SandboxOptions::default()).await;
    let state = "\"><script>alert(1)</script>";
    let mut params = approve_params(state);
    params.retain(|param| param.0 != "sandbox_decision");
    let response = authorize(&sandbox, &params).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
    let page = response.text().await.expect("page");
    assert!(page.contains(r#"<form method="post" action="/rabobank/oauth2/authorize">"#));
    assert!(page.contains(r#"name="decision" value="approve""#));
    assert!(page.contains(r#"name="decision" value="deny""#));
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&quot;&gt;&lt;script&gt;"));
    assert!(
        page.contains(
            r#"name="redirect_uri" value="https://app.example/rabobank/callback?tenant=7""#
        )
    );
    assert!(!page.to_lowercase().contains("<script"));

    let mut form = params.clone();
    form.push(("decision", "approve"));
    let response = client()
        .post(authorize_url(&sandbox))
        .form(&form)
        .send()
        .await
        .expect("form post");
    let (_, approved) = redirected(&response);
    assert_eq!(approved["state"], state);
    let (status, _) = exchange(&sandbox, &approved["code"]).await;
    assert_eq!(status, StatusCode::OK);

    form.last_mut().expect("decision").1 = "deny";
    let response = client()
        .post(authorize_url(&sandbox))
        .form(&form)
        .send()
        .await
        .expect("form post");
    assert_eq!(redirected(&response).1["error"], "access_denied");

    let stats = sandbox.rabobank_stats();
    assert_eq!((stats.authorizations, stats.denials), (1, 1));
    sandbox.shutdown().await;
}

#[test]
fn html_is_escaped() {
    assert_eq!(
        escape_html(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}
