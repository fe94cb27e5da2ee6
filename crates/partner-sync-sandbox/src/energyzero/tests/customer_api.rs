use super::*;
use crate::energyzero::customer_api::{contract_id, type_ref};

#[tokio::test]
async fn me_pages_contracts_to_the_end_within_the_cap() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let users = sandbox.energyzero_user_ids();
    assert_eq!(users.len(), 6);
    // User 3 is heavy: 23 contracts, asked 50 at a time, served 10 at a time.
    let heavy = &users[2];
    let token = user_token(&sandbox, heavy).await;
    let (contracts, pages) = all_contracts(&sandbox, &token).await;
    assert_eq!(pages, 3);
    let ids: Vec<&str> = contracts.iter().filter_map(contract_id).collect();
    assert_eq!(ids, sandbox.energyzero_contract_ids(heavy));
    assert_eq!(ids.len(), 23);

    let (_, answer) = graphql(&sandbox, &token, json!({ "query": ME_QUERY })).await;
    let me = &answer["data"]["me"];
    assert_eq!(me["id"], heavy.as_str());
    assert_eq!(me["contracts"]["edges"].as_array().map(Vec::len), Some(10));
    let (_, answer) = graphql(
        &sandbox,
        &token,
        json!({ "query": "{ me { contracts(first: 4) { edges { node { id } } pageInfo { hasNextPage } } } }" }),
    )
    .await;
    let connection = &answer["data"]["me"]["contracts"];
    assert_eq!(connection["edges"].as_array().map(Vec::len), Some(4));
    assert_eq!(connection["pageInfo"]["hasNextPage"], true);

    let ordinary = user_token(&sandbox, &users[0]).await;
    let (contracts, pages) = all_contracts(&sandbox, &ordinary).await;
    assert_eq!((contracts.len(), pages), (2, 1));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn edits_and_removals_show_in_the_next_answer() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let user = sandbox.energyzero_user_ids()[0].clone();
    let contracts = sandbox.energyzero_contract_ids(&user);
    let token = user_token(&sandbox, &user).await;
    assert!(
        sandbox.energyzero_update_contract(&user, &contracts[0], |contract| {
            contract["phase"] = json!("DELIVERY_STOPPED");
        })
    );
    assert!(sandbox.energyzero_remove_contract(&user, &contracts[1]));
    assert!(!sandbox.energyzero_remove_contract(&user, &contracts[1]));
    let (listed, _) = all_contracts(&sandbox, &token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["phase"], "DELIVERY_STOPPED");

    // A phase outside the enum is the server's fault, reported as a GraphQL error.
    assert!(
        sandbox.energyzero_update_contract(&user, &contracts[0], |contract| {
            contract["phase"] = json!("TELEPORTED");
        })
    );
    let (status, answer) = graphql(
        &sandbox,
        &token,
        json!({ "query": "{ me { contracts { edges { node { phase } } } } }" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["errors"][0]["message"].is_string(), "{answer}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_queries_and_cursors_answer_graphql_errors() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let user = sandbox.energyzero_user_ids()[0].clone();
    let token = user_token(&sandbox, &user).await;
    for query in ["{ me { id ", "{ me { salary } }", "{ you { id } }"] {
        let (status, answer) = graphql(&sandbox, &token, json!({ "query": query })).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(answer["data"], Value::Null, "{query}");
        assert!(answer["errors"][0]["message"].is_string(), "{query}");
    }
    let (_, answer) = graphql(
        &sandbox,
        &token,
        json!({ "query": ME_QUERY, "variables": { "after": "bm9uc2Vuc2U" } }),
    )
    .await;
    assert_eq!(error_code(&answer), "BAD_USER_INPUT");
    let (_, answer) = graphql(
        &sandbox,
        &token,
        json!({ "query": ME_QUERY, "variables": { "first": -1 } }),
    )
    .await;
    assert_eq!(error_code(&answer), "BAD_USER_INPUT");

    let not_json = reqwest::Client::new()
        .post(sandbox.energyzero_customer_api_url())
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{ me { id } }")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);

    let stats = sandbox.energyzero_stats();
    assert_eq!((stats.graphql_requests, stats.graphql_errors), (6, 6));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn removed_and_failing_users_answer_errors_under_me() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let users = sandbox.energyzero_user_ids();
    let removed = user_token(&sandbox, &users[0]).await;
    let failing = user_token(&sandbox, &users[1]).await;
    assert!(sandbox.energyzero_remove_user(&users[0]));
    assert!(!sandbox.energyzero_remove_user(&users[0]));
    assert_eq!(sandbox.energyzero_user_ids(), users[1..]);
    sandbox.energyzero_fail_user(&users[1]);

    for (token, code) in [(&removed, "NOT_FOUND"), (&failing, "INTERNAL")] {
        let (status, answer) = graphql(&sandbox, token, json!({ "query": ME_QUERY })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["data"], json!({ "me": null }), "{answer}");
        assert_eq!(error_code(&answer), code);
        assert_eq!(answer["errors"][0]["path"], json!(["me"]));
    }
    // The removed user can no longer be impersonated.
    let partner = partner_token(&sandbox).await;
    let response = impersonation(&sandbox, Some(&partner), Some(&users[0])).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_customer_api_wants_a_user_token() {
    let sandbox = started(with_energyzero(|_| {})).await;
    let partner = partner_token(&sandbox).await;
    for token in [partner.as_str(), "forged"] {
        let (status, answer) = graphql(&sandbox, token, json!({ "query": "{ me { id } }" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer,
            json!({ "errors": [{ "message": "unauthenticated", "extensions": { "code": "UNAUTHENTICATED" } }] })
        );
    }
    let anonymous = reqwest::Client::new()
        .post(sandbox.energyzero_customer_api_url())
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    sandbox.shutdown().await;
}

#[test]
fn sdl_types_parse_into_type_refs() {
    assert_eq!(type_ref("[ContractEdge!]!").to_string(), "[ContractEdge!]!");
    assert_eq!(type_ref("Int").to_string(), "Int");
}
