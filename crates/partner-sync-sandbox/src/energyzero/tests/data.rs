use std::collections::HashSet;

use super::*;
use crate::energyzero::customer_api::{CONTRACT_FIELDS, CONTRACT_PHASES, USER_FIELDS};
use crate::energyzero::data::generate_users;

#[tokio::test]
async fn the_same_seed_serves_the_same_bytes() {
    async fn everything(options: SandboxOptions) -> Vec<u8> {
        let sandbox = started(options).await;
        let mut bytes = Vec::new();
        for user in sandbox.energyzero_user_ids() {
            let token = user_token(&sandbox, &user).await;
            let response = reqwest::Client::new()
                .post(sandbox.energyzero_customer_api_url())
                .bearer_auth(&token)
                .json(&json!({
                    "query": ME_QUERY.replace("id phase", "id acceptedAt consumerType company energyContractType phase startDate originalStartDate deliveryStoppedDate paymentMethod hasElectricity hasProduction billingAddress { zipCode }"),
                    "variables": { "first": 10 },
                }))
                .send()
                .await
                .expect("request");
            bytes.extend_from_slice(&response.bytes().await.expect("body"));
        }
        sandbox.shutdown().await;
        bytes
    }
    let options = with_energyzero(|_| {});
    let first = everything(options.clone()).await;
    assert!(first.len() > 1000);
    assert_eq!(first, everything(options.clone()).await);
    let reseeded = SandboxOptions { seed: 7, ..options };
    assert_ne!(first, everything(reseeded).await);
}

#[test]
fn generated_data_has_the_documented_shape() {
    let users = generate_users(42, 60, 23);
    let mut ids = HashSet::new();
    let mut phases = HashSet::new();
    let (mut middle_names, mut phones, mut open_ended, mut without_gas) = (0, 0, 0, 0);
    for (index, user) in users.iter().enumerate() {
        assert!(uuid::Uuid::parse_str(&user.id).is_ok(), "{}", user.id);
        assert!(ids.insert(user.id.clone()));
        for (field, _) in USER_FIELDS {
            assert!(
                user.record.get(field).is_some(),
                "user field {field} missing"
            );
        }
        middle_names += usize::from(user.record["middleName"].is_string());
        phones += usize::from(user.record["phoneNumber"].is_string());
        let expected = if (index + 1) % 3 == 0 { 23 } else { 2 };
        assert_eq!(user.contracts.len(), expected);
        for contract in &user.contracts {
            for (field, _) in CONTRACT_FIELDS {
                assert!(
                    contract.get(field).is_some(),
                    "contract field {field} missing"
                );
            }
            assert!(ids.insert(contract["id"].to_string()));
            assert!(contract["totalYearlyUsage"].is_f64());
            assert!(contract["hasGas"] == true || contract["hasElectricity"] == true);
            open_ended += usize::from(contract["endDate"].is_null());
            without_gas += usize::from(contract["hasGas"] == false);
            phases.insert(contract["phase"].as_str().expect("phase").to_owned());
        }
    }
    assert!(middle_names > 0 && middle_names < users.len() / 2);
    assert!(phones > users.len() / 2 && phones < users.len());
    assert!(open_ended > 0 && without_gas > 0);
    assert!(
        phases.len() > 5
            && phases
                .iter()
                .all(|phase| CONTRACT_PHASES.contains(&phase.as_str()))
    );
}
