use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{get, scoped_form, token_answer};
use crate::rabot::costs::{component_names, documented_components};
use crate::tests::{started, token as issue_token};
use crate::{Sandbox, SandboxOptions};

fn costs_url(sandbox: &Sandbox, customer: &str, contract: &str) -> String {
    format!(
        "{}/customers/{customer}/contracts/{contract}/costs",
        sandbox.rabot_api_base_url()
    )
}

/// "YYYY-MM-DDThh:mm:ss" followed by "Z" or a "+hh:mm" offset.
fn is_zoned_date_time(text: &str) -> bool {
    let (stamp, zone) = text.split_at(text.len().min(19));
    let digits_where = |s: &str, layout: &str| {
        s.len() == layout.len()
            && s.chars().zip(layout.chars()).all(|(c, l)| match l {
                'd' => c.is_ascii_digit(),
                other => c == other,
            })
    };
    digits_where(stamp, "dddd-dd-ddTdd:dd:dd")
        && (zone == "Z" || digits_where(zone, "+dd:dd") || digits_where(zone, "-dd:dd"))
}

#[tokio::test]
async fn every_contract_has_one_to_three_documented_periods_from_the_seed() {
    let options = SandboxOptions {
        customers: 12,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    };
    let sandbox = started(options.clone()).await;
    let twin = started(options).await;
    let client = reqwest::Client::new();
    let token = issue_token(&client, &sandbox).await;
    let twin_token = issue_token(&client, &twin).await;

    let mut period_counts = std::collections::BTreeSet::new();
    for customer in sandbox.customer_numbers() {
        for contract in sandbox.contract_numbers(&customer) {
            let (status, answer) = get(
                &client,
                &costs_url(&sandbox, &customer, &contract),
                &token,
                &[],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(
                (&answer["isSuccess"], &answer["error"]),
                (&json!(true), &Value::Null)
            );
            let periods = answer["data"].as_array().expect("data is an array");
            period_counts.insert(periods.len());
            assert!((1..=3).contains(&periods.len()), "{answer}");
            let mut previous: Option<&str> = None;
            for period in periods {
                let valid_from = period["validFrom"].as_str().expect("validFrom");
                assert!(is_zoned_date_time(valid_from), "{valid_from}");
                // Oldest first: the dates (which all start a month) ascend.
                assert!(
                    previous.is_none_or(|p| p[..7] <= valid_from[..7]),
                    "{answer}"
                );
                previous = Some(valid_from);
                assert_eq!(
                    component_names(period),
                    {
                        let mut names: Vec<&str> = documented_components().collect();
                        names.sort_unstable();
                        names
                    },
                    "every documented component, nothing else"
                );
                for name in documented_components() {
                    let component = &period[name];
                    assert!(component["value"].is_number(), "{name}: {component}");
                    assert!(component["unit"]["main"].is_string(), "{name}: {component}");
                    assert!(component["unit"]["per"].is_string(), "{name}: {component}");
                    assert!(component["unitText"].is_string(), "{name}: {component}");
                }
            }
            // The same seed serves the same periods, and the knob reads them back.
            let (_, again) = get(
                &client,
                &costs_url(&twin, &customer, &contract),
                &twin_token,
                &[],
            )
            .await;
            assert_eq!(again["data"], answer["data"]);
            assert_eq!(
                sandbox.rabot_costs(&customer, &contract),
                Some(periods.clone())
            );
        }
    }
    assert_eq!(
        period_counts.into_iter().collect::<Vec<_>>(),
        [1, 2, 3],
        "every period count occurs"
    );
}

#[tokio::test]
async fn unknown_customers_and_contracts_are_not_found_and_scopes_are_checked() {
    let sandbox = started(SandboxOptions {
        customers: 8,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let token = issue_token(&client, &sandbox).await;
    let customer = sandbox.customer_numbers()[0].clone();
    let contract = sandbox.contract_numbers(&customer)[0].clone();

    let (status, answer) = get(
        &client,
        &costs_url(&sandbox, "99999999999", &contract),
        &token,
        &[],
    )
    .await;
    assert_eq!(
        (status, &answer["error"][0]["code"]),
        (StatusCode::NOT_FOUND, &json!("not-found"))
    );
    let (status, _) = get(
        &client,
        &costs_url(&sandbox, &customer, "C-no-such"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another customer's contract is not this customer's.
    let other = sandbox.customer_numbers()[1].clone();
    let (status, _) = get(
        &client,
        &costs_url(&sandbox, &other, &contract),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = get(
        &client,
        &costs_url(&sandbox, &customer, &contract),
        "not-a-token",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Without a role, only a linked customer's costs may be read (customer 7 is linked).
    let (_, answer) = token_answer(&sandbox, &scoped_form("api:partner")).await;
    let partner_only = answer["access_token"].as_str().expect("token");
    let (status, _) = get(
        &client,
        &costs_url(&sandbox, &customer, &contract),
        partner_only,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let linked = sandbox.customer_numbers()[6].clone();
    assert_eq!(
        sandbox.rabot_relations(&linked),
        Some(vec!["Linked".to_owned()])
    );
    let linked_contract = sandbox.contract_numbers(&linked)[0].clone();
    let (status, answer) = get(
        &client,
        &costs_url(&sandbox, &linked, &linked_contract),
        partner_only,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn the_knobs_bend_the_answer() {
    let sandbox = started(SandboxOptions {
        customers: 4,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let token = issue_token(&client, &sandbox).await;
    let customer = sandbox.customer_numbers()[0].clone();
    let contract = sandbox.contract_numbers(&customer)[0].clone();
    let url = costs_url(&sandbox, &customer, &contract);
    let original = sandbox.rabot_costs(&customer, &contract).expect("costs");

    // One period more, so that dropping one leaves some.
    assert!(sandbox.update_rabot_costs(&customer, &contract, |periods| {
        let mut newer = periods.last().cloned().expect("a period");
        newer["validFrom"] = json!("2030-01-01T00:00:00+01:00");
        newer["baseServiceFee"]["value"] = json!(99.5);
        periods.push(newer);
    }));
    let (_, answer) = get(&client, &url, &token, &[]).await;
    let periods = answer["data"].as_array().expect("array");
    assert_eq!(periods.len(), original.len() + 1);
    assert_eq!(periods[original.len()]["baseServiceFee"]["value"], 99.5);

    assert!(sandbox.add_rabot_cost_component(&customer, &contract, "heatPumpBonus", -2.5));
    let (_, answer) = get(&client, &url, &token, &[]).await;
    assert!(
        answer["data"]
            .as_array()
            .expect("array")
            .iter()
            .all(|period| period["heatPumpBonus"]["value"] == -2.5),
        "{answer}"
    );

    assert!(sandbox.drop_rabot_cost_period(&customer, &contract));
    let (_, answer) = get(&client, &url, &token, &[]).await;
    let periods = answer["data"].as_array().expect("array");
    assert_eq!(periods.len(), original.len());
    assert_eq!(
        periods[0]["validFrom"],
        original
            .get(1)
            .map_or(json!("2030-01-01T00:00:00+01:00"), |p| p["validFrom"]
                .clone())
    );

    sandbox.set_rabot_costs_as_object(true);
    let (_, answer) = get(&client, &url, &token, &[]).await;
    assert!(answer["data"].is_object(), "{answer}");
    assert_eq!(answer["data"]["validFrom"], "2030-01-01T00:00:00+01:00");
    sandbox.set_rabot_costs_as_object(false);
    let (_, answer) = get(&client, &url, &token, &[]).await;
    assert!(answer["data"].is_array(), "{answer}");

    // Unknown contracts have nothing to edit; a removed contract's costs are gone with it.
    assert!(!sandbox.update_rabot_costs(&customer, "C-no-such", |_| {}));
    assert!(sandbox.remove_contract(&customer, &contract));
    assert_eq!(sandbox.rabot_costs(&customer, &contract), None);
    let (status, _) = get(&client, &url, &token, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
