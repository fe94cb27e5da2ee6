use axum::http::StatusCode;
use serde_json::{Value, json};

use super::get;
use crate::rabot::metrics::{UNREADABLE_MOMENT, clock_of};
use crate::tests::{started, token as issue_token};
use crate::{Sandbox, SandboxOptions};

fn metrics_url(sandbox: &Sandbox, customer: &str, contract: &str) -> String {
    format!(
        "{}/customers/{customer}/contracts/{contract}/metrics",
        sandbox.rabot_api_base_url()
    )
}

/// A sandbox whose client may ask for `role:application`: every customer's metrics.
async fn application_sandbox(customers: usize) -> Sandbox {
    started(SandboxOptions {
        customers,
        heavy_customer_every: 0,
        granted_scopes: vec!["api:partner".to_owned(), "role:application".to_owned()],
        ..SandboxOptions::default()
    })
    .await
}

fn query<'a>(from: &'a str, to: &'a str, interval: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("Period.From", from),
        ("Period.To", to),
        ("Interval", interval),
        ("MetricType", "Consumption"),
        ("ValueType", "Actual"),
    ]
}

/// "YYYY-MM-DD hh:mm:ss", no zone.
fn is_zoneless(text: &str) -> bool {
    text.len() == 19
        && text
            .chars()
            .zip("dddd-dd-dd dd:dd:dd".chars())
            .all(|(c, l)| match l {
                'd' => c.is_ascii_digit(),
                other => c == other,
            })
}

/// Every contract of the sandbox with its metrics answer over two years.
async fn every_answer(
    sandbox: &Sandbox,
    token: &str,
    interval: &str,
    from: &str,
) -> Vec<(String, String, Value)> {
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for customer in sandbox.customer_numbers() {
        for contract in sandbox.contract_numbers(&customer) {
            let (status, answer) = get(
                &client,
                &metrics_url(sandbox, &customer, &contract),
                token,
                &query(from, "2030-01-01T00:00:00Z", interval),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answers.push((customer.clone(), contract, answer));
        }
    }
    answers
}

#[tokio::test]
async fn the_documented_shape_with_berlin_midnights_in_utc_and_only_the_running_period_open() {
    let sandbox = application_sandbox(6).await;
    let client = reqwest::Client::new();
    let token = issue_token(&client, &sandbox).await;
    let answers = every_answer(&sandbox, &token, "Monthly", "2024-06-01T00:00:00Z").await;
    let mut with_records = 0;
    for (_, _, answer) in &answers {
        assert_eq!(answer["isSuccess"], json!(true));
        let data = answer["data"].as_object().expect("data is an object");
        for key in [
            "valueUnitInfo",
            "consideredDataPeriod",
            "metricType",
            "valueType",
            "interval",
            "intervalDuration",
            "averageValuePerInterval",
            "totalValue",
            "numberOfEntries",
            "records",
        ] {
            assert!(data.contains_key(key), "{key}: {answer}");
        }
        assert_eq!(
            (&data["metricType"], &data["valueType"], &data["interval"]),
            (&json!("Consumption"), &json!("Actual"), &json!("Monthly"))
        );
        let records = data["records"].as_array().expect("records");
        assert_eq!(data["numberOfEntries"], records.len());
        if records.is_empty() {
            continue;
        }
        with_records += 1;
        for record in records {
            let moment = record["moment"].as_str().expect("moment");
            assert!(is_zoneless(moment), "{moment}");
            // Midnight in Berlin: 22:00 UTC in summer time, 23:00 in winter time.
            assert!(matches!(clock_of(moment), Some((22 | 23, 0))), "{moment}");
            assert!(record["value"].as_f64().expect("a number") > 0.0);
            assert_eq!(record["valueRelevanceType"], "Actual");
        }
        let states: Vec<&str> = records
            .iter()
            .map(|r| r["valueState"].as_str().expect("state"))
            .collect();
        let (last, older) = states.split_last().expect("records");
        assert!(older.iter().all(|s| *s == "Final"), "{states:?}");
        // A contract that ended has no running period.
        assert!(matches!(*last, "Preliminary" | "Final"), "{states:?}");
        assert_eq!(
            data["consideredDataPeriod"]["from"], records[0]["moment"],
            "{answer}"
        );
    }
    assert!(
        with_records > 2,
        "{with_records} contracts with consumption"
    );
    assert!(answers.iter().any(|(_, _, answer)| {
        answer["data"]["records"]
            .as_array()
            .and_then(|r| r.last())
            .is_some_and(|r| r["valueState"] == "Preliminary")
    }));

    // Asked again: the same answer, value for value.
    let again = every_answer(&sandbox, &token, "Monthly", "2024-06-01T00:00:00Z").await;
    let records = |answers: &[(String, String, Value)]| -> Vec<Value> {
        answers
            .iter()
            .map(|(_, _, a)| a["data"]["records"].clone())
            .collect()
    };
    assert_eq!(records(&answers), records(&again));
}

#[tokio::test]
async fn from_to_and_interval_are_honoured_and_unknown_values_refused() {
    let sandbox = application_sandbox(6).await;
    let client = reqwest::Client::new();
    let token = issue_token(&client, &sandbox).await;
    // A contract delivered since before 2026 at least up to April 2026.
    let answers = every_answer(&sandbox, &token, "Monthly", "2025-12-01T00:00:00Z").await;
    let (customer, contract, _) = answers
        .iter()
        .find(|(_, _, a)| {
            let records = a["data"]["records"].as_array().expect("records");
            records.len() >= 4 && records[0]["moment"] == "2025-11-30 23:00:00"
        })
        .expect("a contract delivered all along")
        .clone();
    let url = metrics_url(&sandbox, &customer, &contract);

    // Three Berlin days in March, across the change to summer time.
    let (status, answer) = get(
        &client,
        &url,
        &token,
        &query("2026-03-28 12:00:00", "2026-03-30T12:00:00Z", "Daily"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let moments: Vec<&str> = answer["data"]["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["moment"].as_str().expect("moment"))
        .collect();
    assert_eq!(
        moments,
        [
            "2026-03-27 23:00:00",
            "2026-03-28 23:00:00",
            "2026-03-29 22:00:00"
        ]
    );
    assert_eq!(
        answer["data"]["consideredDataPeriod"]["to"],
        "2026-03-30 22:00:00"
    );

    for (name, value) in [
        ("Interval", "Fortnightly"),
        ("MetricType", "Saving"),
        ("ValueType", "Forecast"),
        ("Period.From", "yesterday"),
    ] {
        let mut asked = query("2026-01-01", "2026-02-01", "Daily").to_vec();
        asked.retain(|(key, _)| *key != name);
        asked.push((name, value));
        let (status, answer) = get(&client, &url, &token, &asked).await;
        assert_eq!(
            (status, &answer["error"][0]["code"]),
            (StatusCode::BAD_REQUEST, &json!("validation-failed")),
            "{name}={value}"
        );
    }
    let (status, _) = get(&client, &url, &token, &[("Period.To", "2026-02-01")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Two years of quarter hours is more than one answer holds.
    let (status, _) = get(
        &client,
        &url,
        &token,
        &query("2024-01-01", "2026-01-01", "QuarterHourly"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn finance_reporting_reads_linked_customers_only_and_unknown_ones_are_not_found() {
    let sandbox = started(SandboxOptions {
        customers: 8,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let finance = issue_token(&client, &sandbox).await;
    let asked = query("2025-01-01", "2026-01-01", "Monthly");
    let customers = sandbox.customer_numbers();
    // Customer 7 is linked; customer 1 is not.
    let linked = &customers[6];
    let linked_contract = &sandbox.contract_numbers(linked)[0];
    let (status, answer) = get(
        &client,
        &metrics_url(&sandbox, linked, linked_contract),
        &finance,
        &asked,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let contract = &sandbox.contract_numbers(&customers[0])[0];
    let (status, answer) = get(
        &client,
        &metrics_url(&sandbox, &customers[0], contract),
        &finance,
        &asked,
    )
    .await;
    assert_eq!(
        (status, &answer["error"][0]["code"]),
        (StatusCode::FORBIDDEN, &json!("insufficient-scope"))
    );
    // Without the application role nothing says which customers exist.
    let (status, _) = get(
        &client,
        &metrics_url(&sandbox, "99999999999", contract),
        &finance,
        &asked,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let sandbox = application_sandbox(2).await;
    let application = issue_token(&client, &sandbox).await;
    let customer = &sandbox.customer_numbers()[0];
    let contract = &sandbox.contract_numbers(customer)[0];
    for (customer, contract, expected) in [
        (customer.as_str(), contract.as_str(), StatusCode::OK),
        ("99999999999", contract.as_str(), StatusCode::NOT_FOUND),
        (customer.as_str(), "C-no-such", StatusCode::NOT_FOUND),
    ] {
        let (status, answer) = get(
            &client,
            &metrics_url(&sandbox, customer, contract),
            &application,
            &asked,
        )
        .await;
        assert_eq!(status, expected, "{customer}/{contract}: {answer}");
    }
}

#[tokio::test]
async fn the_knobs_bend_the_answer() {
    let sandbox = application_sandbox(4).await;
    let client = reqwest::Client::new();
    let token = issue_token(&client, &sandbox).await;
    let records = |answers: &[(String, String, Value)]| -> Vec<Value> {
        answers
            .iter()
            .flat_map(|(_, _, a)| a["data"]["records"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let from = "2025-06-01T00:00:00Z";
    let original = records(&every_answer(&sandbox, &token, "Monthly", from).await);
    assert!(original.len() > 10);

    sandbox.set_rabot_metrics_values_as_strings(true);
    let strings = records(&every_answer(&sandbox, &token, "Monthly", from).await);
    assert_eq!(strings.len(), original.len());
    for (text, number) in strings.iter().zip(&original) {
        let parsed: f64 = text["value"]
            .as_str()
            .expect("a string")
            .parse()
            .expect("a number");
        assert_eq!(Some(parsed), number["value"].as_f64());
    }
    sandbox.set_rabot_metrics_values_as_strings(false);

    sandbox.set_rabot_metrics_unreadable_record(true);
    let answers = every_answer(&sandbox, &token, "Monthly", from).await;
    for (_, _, answer) in &answers {
        let records = answer["data"]["records"].as_array().expect("records");
        if let Some(first) = records.first() {
            assert_eq!(first["moment"], UNREADABLE_MOMENT);
        }
    }
    sandbox.set_rabot_metrics_unreadable_record(false);

    sandbox.set_rabot_metrics_revision(1);
    let revised = records(&every_answer(&sandbox, &token, "Monthly", from).await);
    let changed = revised
        .iter()
        .zip(&original)
        .filter(|(a, b)| a["value"] != b["value"])
        .count();
    assert!(
        changed > original.len() / 2,
        "{changed} of {}",
        original.len()
    );
    assert!(
        revised
            .iter()
            .zip(&original)
            .all(|(a, b)| a["moment"] == b["moment"])
    );
    sandbox.set_rabot_metrics_revision(0);

    sandbox.set_rabot_metrics_open_periods(3);
    let mut three_open = 0;
    for (_, _, answer) in every_answer(&sandbox, &token, "Monthly", from).await {
        let records = answer["data"]["records"].as_array().expect("records");
        let states: Vec<&Value> = records.iter().map(|r| &r["valueState"]).collect();
        let open = states.iter().filter(|s| **s == "Preliminary").count();
        // The open ones are the newest (a contract that ended may have fewer or none).
        assert!(open <= 3, "{answer}");
        assert!(states[..states.len() - open].iter().all(|s| *s == "Final"));
        three_open += usize::from(open == 3);
    }
    assert!(three_open > 0);
}
