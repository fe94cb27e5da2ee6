//! The sandbox's own serving rate: the requests of a first mirror pass (a token, the customer
//! pages, every customer's contracts) sent with the same page size, concurrency and bearer
//! token, the bodies read and thrown away except for the customer numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::{TryStreamExt, stream};
use serde_json::Value;

pub struct Served {
    pub requests: u64,
    pub seconds: f64,
}

impl Served {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

pub struct Target<'a> {
    pub base: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub page_size: usize,
    pub concurrency: usize,
}

pub async fn run(target: &Target<'_>) -> anyhow::Result<Served> {
    let http = reqwest::Client::new();
    let sent = AtomicU64::new(1);
    let started = Instant::now();
    let token = token(&http, target).await?;
    let api = format!("{}/rabot/partner/v1/customers", target.base);
    let pages = stream::try_unfold(Some(0usize), |offset| {
        let (http, api, token, sent) = (&http, &api, &token, &sent);
        async move {
            let Some(offset) = offset else {
                return anyhow::Ok(None);
            };
            let query = [("offset", offset), ("limit", target.page_size)];
            let page = get(http.get(api).query(&query), token, sent).await?;
            let page: Value = serde_json::from_slice(&page)?;
            let numbers = customer_numbers(&page);
            let more = page["hasMoreItems"].as_bool().unwrap_or(false) && !numbers.is_empty();
            let next = more.then_some(offset + numbers.len());
            Ok(Some((numbers, next)))
        }
    });
    let pages_and_contracts = pages
        .map_ok(|numbers| stream::iter(numbers.into_iter().map(anyhow::Ok)))
        .try_flatten()
        .map_ok(|number| {
            let url = format!("{api}/{number}/contracts");
            let request = http
                .get(url)
                .query(&[("offset", 0), ("limit", target.page_size)]);
            let (token, sent) = (&token, &sent);
            async move { get(request, token, sent).await.map(drop) }
        })
        .try_buffer_unordered(target.concurrency);
    pages_and_contracts.try_collect::<()>().await?;
    Ok(Served {
        requests: sent.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn token(http: &reqwest::Client, target: &Target<'_>) -> anyhow::Result<String> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", target.client_id),
        ("client_secret", target.client_secret),
    ];
    let url = format!("{}/rabot/connect/token", target.base);
    let answer: Value = http
        .post(url)
        .form(&form)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the token answer has no access_token"))
}

/// The body, read whole; `sent` counts the request.
async fn get(
    request: reqwest::RequestBuilder,
    token: &str,
    sent: &AtomicU64,
) -> anyhow::Result<impl std::ops::Deref<Target = [u8]>> {
    sent.fetch_add(1, Ordering::Relaxed);
    let answer = request
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    Ok(answer.bytes().await?)
}

fn customer_numbers(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|customer| customer["customerNumber"].as_str().map(str::to_owned))
        .collect()
}
