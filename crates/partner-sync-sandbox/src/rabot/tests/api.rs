use std::collections::HashMap;

use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use super::{all_pages, get, scoped_form, token_answer};
use crate::SandboxOptions;
use crate::tests::{started, token};

#[tokio::test]
async fn token_pagination_and_external_id_filter() {
    let sandbox = started(SandboxOptions {
        customers: 23,
        heavy_customer_every: 5,
        heavy_contracts: 25,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();

    let (status, answer) =
        token_answer(&sandbox, &scoped_form("api:partner role:finance-reporting")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3599);
    assert_eq!(answer["scope"], "api:partner role:finance-reporting");
    let token = answer["access_token"].as_str().expect("token");
    assert!(token.len() >= 32);

    let customers_url = format!("{}/customers", sandbox.rabot_api_base_url());
    let (_, first_page) = get(&client, &customers_url, token, &[]).await;
    assert_eq!(
        (
            &first_page["isSuccess"],
            &first_page["message"],
            &first_page["error"],
            &first_page["refUri"]
        ),
        (&json!(true), &Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(
        (first_page["count"].as_u64(), &first_page["hasMoreItems"]),
        (Some(10), &json!(true))
    );

    let customers = all_pages(&client, &customers_url, token, 7).await;
    let listed: Vec<&str> = customers
        .iter()
        .filter_map(|c| c["customerNumber"].as_str())
        .collect();
    assert_eq!(listed, sandbox.customer_numbers());

    // Customer 5 is heavy: 25 contracts over three pages of ten.
    let heavy = &sandbox.customer_numbers()[4];
    let contracts_url = format!("{customers_url}/{heavy}/contracts");
    let contracts = all_pages(&client, &contracts_url, token, 10).await;
    let numbers: Vec<&str> = contracts
        .iter()
        .filter_map(|c| c["contractNumber"].as_str())
        .collect();
    assert_eq!(numbers.len(), 25);
    assert_eq!(numbers, sandbox.contract_numbers(heavy));

    let mut by_external_id: HashMap<String, Vec<String>> = HashMap::new();
    for number in sandbox.customer_numbers() {
        if let Some(external) = sandbox.external_id_of(&number) {
            by_external_id.entry(external).or_default().push(number);
        }
    }
    let (shared_id, owners) = by_external_id
        .iter()
        .find(|(_, owners)| owners.len() == 2)
        .expect("some customers share an external id");
    let (_, filtered) = get(
        &client,
        &customers_url,
        token,
        &[("filter.externalId", shared_id)],
    )
    .await;
    let matched: Vec<&str> = filtered["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|c| c["customerNumber"].as_str())
        .collect();
    assert_eq!(&matched, owners);
    let (_, narrowed) = get(
        &client,
        &customers_url,
        token,
        &[
            ("filter.externalId", shared_id),
            ("offset", "1"),
            ("limit", "1"),
        ],
    )
    .await;
    assert_eq!(
        (narrowed["count"].as_u64(), &narrowed["hasMoreItems"]),
        (Some(1), &json!(false))
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_serves_the_same_bytes() {
    async fn everything(options: SandboxOptions) -> Vec<u8> {
        let sandbox = started(options).await;
        let client = reqwest::Client::new();
        let token = token(&client, &sandbox).await;
        let base = sandbox.rabot_api_base_url();
        let mut urls = vec![format!("{base}/customers?limit=1000")];
        urls.extend(
            sandbox
                .customer_numbers()
                .iter()
                .map(|number| format!("{base}/customers/{number}/contracts?limit=1000")),
        );
        let mut bytes = Vec::new();
        for url in urls {
            let response = client
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("request");
            bytes.extend_from_slice(&response.bytes().await.expect("body"));
        }
        sandbox.shutdown().await;
        bytes
    }
    let options = SandboxOptions {
        customers: 12,
        ..SandboxOptions::default()
    };
    let first = everything(options.clone()).await;
    assert_eq!(first, everything(options.clone()).await);
    let reseeded = SandboxOptions { seed: 7, ..options };
    assert_ne!(first, everything(reseeded).await);
}

#[tokio::test]
async fn revoked_tokens_answer_401_and_new_ones_work() {
    let sandbox = started(SandboxOptions {
        customers: 3,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/customers", sandbox.rabot_api_base_url());
    let old = token(&client, &sandbox).await;
    assert_eq!(get(&client, &url, &old, &[]).await.0, StatusCode::OK);

    sandbox.revoke_all_tokens();
    let response = client
        .get(&url)
        .bearer_auth(&old)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );
    let body: Value = response.json().await.expect("envelope");
    assert_eq!(
        (&body["isSuccess"], &body["error"][0]["code"]),
        (&json!(false), &json!("unauthorized"))
    );

    let fresh = token(&client, &sandbox).await;
    assert_eq!(get(&client, &url, &fresh, &[]).await.0, StatusCode::OK);
    assert_eq!(sandbox.issued_tokens(), vec![old, fresh]);
    assert_eq!(sandbox.stats().unauthorized, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_token_requests_get_oauth_errors() {
    let sandbox = started(SandboxOptions {
        customers: 1,
        ..SandboxOptions::default()
    })
    .await;
    let wrong_secret = [
        ("client_id", "sandbox-client"),
        ("client_secret", "nope"),
        ("grant_type", "client_credentials"),
    ];
    let wrong_grant = [
        ("client_id", "sandbox-client"),
        ("client_secret", "sandbox-secret"),
        ("grant_type", "password"),
    ];
    let ungranted_scope = scoped_form("api:partner role:application");
    let cases = [
        (
            &wrong_secret[..],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &wrong_grant,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (&ungranted_scope, StatusCode::BAD_REQUEST, "invalid_scope"),
    ];
    for (form, status, error) in cases {
        let answer = token_answer(&sandbox, form).await;
        assert_eq!((answer.0, &answer.1["error"]), (status, &json!(error)));
    }
    let as_json = reqwest::Client::new()
        .post(sandbox.rabot_token_url())
        .json(&json!({ "client_id": "sandbox-client" }))
        .send()
        .await
        .expect("request");
    assert_eq!(as_json.status(), StatusCode::BAD_REQUEST);

    let stats = sandbox.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (4, 0));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn validation_scope_and_lookup_errors_use_the_envelope() {
    let sandbox = started(SandboxOptions {
        customers: 8,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let base = sandbox.rabot_api_base_url();
    let customers_url = format!("{base}/customers");
    let numbers = sandbox.customer_numbers();
    let full = token(&client, &sandbox).await;

    for query in [
        [("limit", "0")],
        [("limit", "1001")],
        [("limit", "ten")],
        [("offset", "-1")],
    ] {
        let (status, body) = get(&client, &customers_url, &full, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(body["error"][0]["code"], "validation-failed");
        assert_eq!(body["data"], Value::Null);
    }
    let (status, body) = get(
        &client,
        &format!("{customers_url}/00000000/contracts"),
        &full,
        &[],
    )
    .await;
    assert_eq!(
        (status, &body["isSuccess"]),
        (StatusCode::NOT_FOUND, &json!(false))
    );

    // Without a role only a linked customer's contracts are readable (customer 7 is linked).
    let (_, answer) = token_answer(&sandbox, &scoped_form("api:partner")).await;
    let partner_only = answer["access_token"].as_str().expect("token");
    let owned = format!("{customers_url}/{}/contracts", numbers[0]);
    let (status, body) = get(&client, &owned, partner_only, &[]).await;
    assert_eq!(
        (status, &body["error"][0]["code"]),
        (StatusCode::FORBIDDEN, &json!("insufficient-scope"))
    );
    let linked = format!("{customers_url}/{}/contracts", numbers[6]);
    assert_eq!(
        get(&client, &linked, partner_only, &[]).await.0,
        StatusCode::OK
    );

    let (_, answer) = token_answer(&sandbox, &scoped_form("role:finance-reporting")).await;
    let role_only = answer["access_token"].as_str().expect("token");
    assert_eq!(
        get(&client, &customers_url, role_only, &[]).await.0,
        StatusCode::FORBIDDEN
    );

    let (status, body) = get(&client, &format!("{base}/tariffs"), &full, &[]).await;
    assert_eq!(
        (status, &body["isSuccess"]),
        (StatusCode::NOT_FOUND, &json!(false))
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn mutations_show_in_the_next_answer() {
    let sandbox = started(SandboxOptions {
        customers: 3,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let token = token(&client, &sandbox).await;
    let numbers = sandbox.customer_numbers();
    let contracts = sandbox.contract_numbers(&numbers[0]);
    let url = format!(
        "{}/customers/{}/contracts",
        sandbox.rabot_api_base_url(),
        numbers[0]
    );

    assert!(
        sandbox.update_contract(&numbers[0], &contracts[0], |contract| {
            contract["tariffName"] = json!("Edited");
        })
    );
    assert!(sandbox.remove_contract(&numbers[0], &contracts[1]));
    assert!(!sandbox.remove_contract(&numbers[0], &contracts[1]));
    let (_, page) = get(&client, &url, &token, &[]).await;
    assert_eq!(page["count"], 1);
    assert_eq!(page["data"][0]["tariffName"], "Edited");

    assert!(sandbox.remove_customer(&numbers[0]));
    assert_eq!(sandbox.customer_numbers(), numbers[1..]);
    assert_eq!(
        get(&client, &url, &token, &[]).await.0,
        StatusCode::NOT_FOUND
    );
    sandbox.shutdown().await;
}
