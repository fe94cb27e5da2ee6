use std::collections::HashSet;

use crate::SandboxOptions;
use crate::rabot::data::{generate_customers, german_iban};

#[test]
fn generated_data_has_the_documented_shape() {
    let (customers, _) = generate_customers(&SandboxOptions {
        customers: 300,
        heavy_customer_every: 0,
        ..SandboxOptions::default()
    });
    let contract_fields = [
        "contractNumber",
        "tariffName",
        "contractState",
        "name",
        "deliveryAddress",
        "billingAddress",
        "bankDetail",
        "meterNumber",
        "meLoIdentifier",
        "maLoIdentifier",
        "actualDateOfDelivery",
        "endDateOfDelivery",
        "cancellationPeriod",
        "cancellationPeriodUnit",
        "durationPeriod",
        "durationPeriodUnit",
        "renewalPeriod",
        "renewalPeriodUnit",
        "expectedAnnualConsumptionInKwhPerYear",
        "accountingMethod",
        "distributionSystemOperatorCode",
        "distributionSystemOperatorName",
        "previousSupplierCode",
        "previousSupplierName",
        "paragraph14AInfo",
    ];
    let mut customer_numbers = HashSet::new();
    let mut contract_numbers = HashSet::new();
    let mut states = HashSet::new();
    let mut null_emails = 0;
    for customer in &customers {
        assert!(customer.number.len() == 8 && customer.number.bytes().all(|b| b.is_ascii_digit()));
        assert!(customer_numbers.insert(customer.number.clone()));
        null_emails += usize::from(customer.record["emailAddress"].is_null());
        assert_eq!(customer.contracts.len(), 2);
        for contract in &customer.contracts {
            for field in contract_fields {
                assert!(contract.get(field).is_some(), "{field} missing");
            }
            assert!(contract_numbers.insert(contract["contractNumber"].to_string()));
            let malo = contract["maLoIdentifier"].as_str().expect("MaLo");
            assert!(malo.len() == 11 && malo.bytes().all(|b| b.is_ascii_digit()));
            let iban = contract["bankDetail"]["iban"].as_str().unwrap_or("DE");
            assert!(iban.starts_with("DE"));
            states.insert(
                contract["contractState"]
                    .as_str()
                    .expect("state")
                    .to_owned(),
            );
        }
    }
    assert!(null_emails > 0 && null_emails < customers.len() / 4);
    for state in ["Delivery", "PendingDelivery", "Cancelled", "Open"] {
        assert!(states.contains(state), "{state} never generated");
    }
}

#[test]
fn generated_ibans_pass_the_mod_97_check() {
    // The worked example of ISO 13616 for Germany.
    assert_eq!(german_iban("370400440532013000"), "DE89370400440532013000");
}
