//! The client-credentials token cache against the sandbox's token endpoint.

use std::time::Duration;

use futures::TryStreamExt;
use partner_sync::http::authorized::ApiError;
use partner_sync::http::token_cache::AuthError;
use partner_sync::partners::rabot::RabotClient;
use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::{Fault, SandboxOptions};
use secrecy::ExposeSecret;

use crate::common::*;

async fn client_for(
    sandbox_options: SandboxOptions,
    overrides: &[(&str, &str)],
) -> (partner_sync_sandbox::Sandbox, RabotClient) {
    let sandbox = start_sandbox(sandbox_options).await;
    let client = rabot_client(&sandbox, overrides);
    (sandbox, client)
}

#[tokio::test]
async fn many_concurrent_callers_share_one_token_request() {
    let (sandbox, client) = client_for(small_sandbox(1), &[]).await;
    let tokens = client.api().tokens().clone();
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move {
                tokens
                    .token()
                    .await
                    .map(|t| t.secret().expose_secret().to_owned())
            })
        })
        .collect();
    let mut secrets = std::collections::HashSet::new();
    for handle in handles {
        secrets.insert(handle.await.unwrap().unwrap());
    }
    assert_eq!(secrets.len(), 1, "every caller got the same token");
    assert_eq!(sandbox.stats().token_requests, 1);
    assert_eq!(tokens.token_requests(), 1);
}

async fn current(tokens: &partner_sync::http::token_cache::TokenCache) -> String {
    let token = tokens.token().await.expect("a token");
    token.secret().expose_secret().to_owned()
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires_not_per_request() {
    // Lifetime 4 s: renewal is due when 20 % (0.8 s) remains, i.e. after 3.2 s.
    let (sandbox, client) = client_for(
        SandboxOptions {
            token_lifetime: Duration::from_secs(4),
            ..small_sandbox(1)
        },
        &[],
    )
    .await;
    let tokens = client.api().tokens();
    let first = current(tokens).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = current(tokens).await;
    assert_eq!(first, early);
    assert_eq!(sandbox.stats().token_requests, 1);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let renewed = current(tokens).await;
    assert_ne!(
        first, renewed,
        "renewed while the old token was still valid"
    );
    assert_eq!(sandbox.stats().token_requests, 2);
}

#[tokio::test]
async fn a_401_renews_the_token_and_retries_the_call_once() {
    let (sandbox, client) = client_for(small_sandbox(3), &[]).await;
    let page = first_customer_page(&client).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(sandbox.stats().token_requests, 1);

    sandbox.revoke_all_tokens();
    let before = sandbox.stats();
    let page = first_customer_page(&client).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let after = sandbox.stats();
    assert_eq!(after.token_requests, 2, "exactly one renewal");
    assert_eq!(after.unauthorized - before.unauthorized, 1);
    assert_eq!(
        after.api_requests - before.api_requests,
        2,
        "the call was retried once"
    );

    // A 401 that persists is not retried in a loop.
    sandbox.inject_fault(Fault {
        path_contains: "/customers".into(),
        status: 401,
        retry_after: None,
        times: 10,
    });
    let before = sandbox.stats();
    let error = first_customer_page(&client).await.unwrap_err();
    assert!(error.contains("401"), "{error}");
    assert_eq!(sandbox.stats().api_requests - before.api_requests, 2);
}

#[tokio::test]
async fn rejected_credentials_fail_at_once_with_a_clear_message() {
    let (sandbox, client) = client_for(
        small_sandbox(1),
        &[("PARTNER_SYNC__RABOT__CLIENT_SECRET", "not-the-secret")],
    )
    .await;
    let error = client.customer_pages(None).try_next().await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            &error,
            partner_sync::partners::rabot::RabotError::Api(ApiError::Auth(
                AuthError::CredentialsRejected { .. }
            ))
        ),
        "{message}"
    );
    assert!(message.contains("rabot.client_secret"), "{message}");
    assert!(!message.contains("not-the-secret"));
    assert_eq!(sandbox.stats().token_requests, 1, "no retry loop");
}

#[tokio::test]
async fn missing_scopes_fail_the_run_naming_the_scopes_requested() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(2)).await;
    // Without a role scope, contracts answer 403.
    let narrow = settings(
        &sandbox,
        &db,
        &[("PARTNER_SYNC__RABOT__SCOPES", "api:partner")],
    );
    let (status, _, error) = mirror_pass(&narrow, &db.pool).await;
    assert_eq!(status, RunStatus::Failed);
    let error = error.unwrap();
    assert!(
        error.contains("403") && error.contains("[api:partner]"),
        "{error}"
    );

    // A scope the client is not granted is refused by the token endpoint, also by name.
    let ungranted = settings(
        &sandbox,
        &db,
        &[(
            "PARTNER_SYNC__RABOT__SCOPES",
            "api:partner,role:application",
        )],
    );
    let (status, _, error) = mirror_pass(&ungranted, &db.pool).await;
    assert_eq!(status, RunStatus::Failed);
    let error = error.unwrap();
    assert!(
        error.contains("refused the requested scopes [api:partner role:application]"),
        "{error}"
    );
}
