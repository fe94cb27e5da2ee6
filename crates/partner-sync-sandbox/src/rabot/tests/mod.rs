//! RABOT's tests over HTTP: the API (`api.rs`), contract costs (`costs.rs`), metrics (`metrics.rs`), the generated data
//! (`data.rs`) and customer links (`linking.rs`), with the requests they share here.

use axum::http::StatusCode;
use serde_json::Value;

use crate::Sandbox;

mod api;
mod costs;
mod data;
mod linking;
mod metrics;

async fn get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &[(&str, &str)],
) -> (StatusCode, Value) {
    let response = client
        .get(url)
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn token_answer(sandbox: &Sandbox, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(sandbox.rabot_token_url())
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

fn scoped_form(scope: &str) -> [(&'static str, &str); 4] {
    [
        ("client_id", "sandbox-client"),
        ("client_secret", "sandbox-secret"),
        ("grant_type", "client_credentials"),
        ("scope", scope),
    ]
}

/// Every page of a list endpoint, following `hasMoreItems`.
async fn all_pages(client: &reqwest::Client, url: &str, token: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    loop {
        let offset = items.len().to_string();
        let limit = limit.to_string();
        let (status, page) = get(
            client,
            url,
            token,
            &[("offset", &offset), ("limit", &limit)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let data = page["data"].as_array().expect("data array");
        assert_eq!(page["count"], data.len());
        items.extend(data.iter().cloned());
        if page["hasMoreItems"] == false {
            return items;
        }
    }
}
