use super::*;

#[tokio::test]
async fn partner_token_comes_in_the_authorization_header_from_a_form() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let response = token_request(&sandbox, &credentials()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let token = header_token(&response);
    assert_eq!(response.bytes().await.expect("body").len(), 0);

    let claims = claims(&token);
    assert_eq!(claims["sub"], "sandbox-ez-client");
    assert_eq!(claims["typ"], "partner");
    let issued_at = claims["iat"].as_u64().expect("iat");
    assert_eq!(claims["exp"].as_u64(), Some(issued_at + 300));
    // The scope may come in any order.
    let reordered = credentials_with("scope", Some("offline openid"));
    assert_eq!(
        token_request(&sandbox, &reordered).await.status(),
        StatusCode::OK
    );
    assert_eq!(sandbox.energyzero_issued_tokens().first(), Some(&token));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn partner_token_from_multipart_and_with_the_optional_body() {
    let sandbox = started(with_energyzero(|options| options.token_body = true)).await;
    // What EnergyZero's example `curl --form` sends.
    let boundary = "------------------------sandboxboundary";
    let mut body = String::new();
    for (name, value) in credentials() {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let response = reqwest::Client::new()
        .post(token_url(&sandbox))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    let token = header_token(&response);
    let answer: Value = response.json().await.expect("JSON body");
    assert_eq!(answer["access_token"], token.as_str());
    assert_eq!(
        (
            &answer["expires_in"],
            &answer["token_type"],
            &answer["scope"]
        ),
        (&json!(299), &json!("bearer"), &json!("openid offline"))
    );

    let garbled = reqwest::Client::new()
        .post(token_url(&sandbox))
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
        .body("not multipart at all")
        .send()
        .await
        .expect("token request");
    assert_eq!(garbled.status(), StatusCode::BAD_REQUEST);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_token_requests_get_oauth_errors() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let cases = [
        (
            credentials_with("client_secret", Some("nope")),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            credentials_with("client_id", Some("someone-else")),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            credentials_with("grant_type", Some("password")),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            credentials_with("grant_type", None),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            credentials_with("client_secret", None),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            credentials_with("scope", Some("openid offline admin")),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            credentials_with("scope", Some("openid")),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in cases {
        let response = token_request(&sandbox, &form).await;
        assert_eq!(response.status(), status, "{form:?}");
        assert!(response.headers().get(header::AUTHORIZATION).is_none());
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], error, "{form:?}");
        assert!(body["error_description"].is_string());
    }
    let as_json = reqwest::Client::new()
        .post(token_url(&sandbox))
        .json(&json!({ "client_id": "sandbox-ez-client" }))
        .send()
        .await
        .expect("request");
    assert_eq!(as_json.status(), StatusCode::BAD_REQUEST);

    let stats = sandbox.energyzero_stats();
    assert_eq!(
        (stats.partner_token_requests, stats.partner_tokens_issued),
        (8, 0)
    );
    assert!(sandbox.energyzero_issued_tokens().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn impersonation_issues_user_tokens_and_refuses_what_it_must() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let users = sandbox.energyzero_user_ids();
    let partner = partner_token(&sandbox).await;
    let bearer = format!("Bearer {partner}");

    let response = impersonation(&sandbox, Some(&bearer), Some(&users[0])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let token = header_token(&response);
    let answer: Value = response.json().await.expect("JSON body");
    assert_eq!(
        answer,
        json!({
            "access_token": token,
            "expires_in": 3599,
            "scope": "openid offline",
            "token_type": "bearer",
        })
    );
    let claims = claims(&token);
    assert_eq!(
        (&claims["sub"], &claims["typ"]),
        (&json!(users[0]), &json!("user"))
    );
    // The docs' curl sends the partner token without the scheme.
    let bare = impersonation(&sandbox, Some(&partner), Some(&users[1])).await;
    assert_eq!(bare.status(), StatusCode::OK);

    sandbox.energyzero_forbid_impersonation(&users[1]);
    let user_bearer = format!("Bearer {token}");
    let refusals = [
        (
            Some(bearer.as_str()),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Some(bearer.as_str()),
            Some(""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            None,
            Some(users[0].as_str()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            Some("Bearer forged"),
            Some(users[0].as_str()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            Some(user_bearer.as_str()),
            Some(users[0].as_str()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            Some(bearer.as_str()),
            Some("00000000-0000-4000-8000-000000000000"),
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
        ),
        (
            Some(bearer.as_str()),
            Some(users[1].as_str()),
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
        ),
    ];
    for (authorization, user_id, status, error) in refusals {
        let response = impersonation(&sandbox, authorization, user_id).await;
        assert_eq!(response.status(), status, "{authorization:?} {user_id:?}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], error, "{authorization:?} {user_id:?}");
    }
    let missing = impersonation(&sandbox, Some(&bearer), None).await;
    let body: Value = missing.json().await.expect("JSON error");
    assert_eq!(body["error_description"], "user_id is required");

    let stats = sandbox.energyzero_stats();
    assert_eq!((stats.impersonations, stats.impersonations_refused), (2, 8));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_expired_partner_token_answers_401() {
    let sandbox = started(with_energyzero(|options| {
        options.partner_token_lifetime = Duration::from_secs(2);
    }))
    .await;
    let users = sandbox.energyzero_user_ids();
    let partner = partner_token(&sandbox).await;
    let claims = claims(&partner);
    assert_eq!(
        claims["exp"].as_u64(),
        claims["iat"].as_u64().map(|issued_at| issued_at + 2)
    );
    let bearer = format!("Bearer {partner}");
    assert_eq!(
        impersonation(&sandbox, Some(&bearer), Some(&users[0]))
            .await
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = impersonation(&sandbox, Some(&bearer), Some(&users[0])).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        expired.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );
    sandbox.shutdown().await;
}
