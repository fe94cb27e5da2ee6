use super::*;
use crate::rabobank::authorize::{dutch_iban, iban};

#[tokio::test]
async fn consent_details_follow_the_consent() {
    let sandbox = started(SandboxOptions::default()).await;
    let (tokens, consent_id) = granted(&sandbox).await;
    let access = text(&tokens, "access_token");
    let base = sandbox.rabobank_consent_api_base_url();
    let psd2 = consent_url(&sandbox, &consent_id);
    let premium = format!("{base}/oauth2-premium/v1/consents/{consent_id}");

    let (status, details) = consent(&psd2, access).await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["consentId"], consent_id.as_str());
    let access_map = details["access"].as_object().expect("access");
    assert_eq!(access_map.len(), 2);
    for scope in SCOPE.split(' ') {
        let accounts = access_map[scope].as_array().expect("accounts");
        assert!((1..=2).contains(&accounts.len()));
        for account in accounts {
            let iban = text(account, "iban");
            assert!(iban.starts_with("NL") && &iban[4..8] == "RABO" && iban.len() == 18);
            assert_eq!(iban, crate::rabobank::authorize::iban("NL", &iban[4..]));
            assert_eq!(
                (
                    &account["currency"],
                    &account["status"],
                    &account["validUntil"]
                ),
                (&json!("EUR"), &json!("valid"), &json!("9999-12-31"))
            );
        }
    }
    assert_eq!(consent(&premium, access).await, (status, details));

    // A token of another consent may not read this one.
    let (other, _) = granted(&sandbox).await;
    let (status, body) = consent(&psd2, text(&other, "access_token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_ne!(body["moreInformation"], "CONSENT_INVALID");

    assert!(sandbox.rabobank_set_account_status(&consent_id, "expired"));
    let (status, body) = consent(&psd2, access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["access"][SCOPE.split(' ').next().unwrap()][0]["status"],
        "expired"
    );

    assert!(sandbox.rabobank_revoke_consent(&consent_id));
    assert!(!sandbox.rabobank_revoke_consent("no-such-consent"));
    let (status, body) = consent(&premium, access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({ "httpCode": "403", "httpMessage": "Forbidden", "moreInformation": "CONSENT_INVALID" })
    );
    let (status, body) = refresh(&sandbox, text(&tokens, "refresh_token")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_grant"))
    );
    assert!(sandbox.rabobank_grant(&consent_id).expect("grant").revoked);
    // The other consent is untouched.
    let other_url = consent_url(&sandbox, &sandbox.rabobank_consent_ids()[1]);
    assert_eq!(
        consent(&other_url, text(&other, "access_token")).await.0,
        StatusCode::OK
    );

    let response = client().get(&psd2).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        (&body["httpCode"], &body["httpMessage"]),
        (&json!("401"), &json!("Unauthorized"))
    );
    assert_eq!(consent(&psd2, "bogus").await.0, StatusCode::UNAUTHORIZED);

    assert_eq!(sandbox.rabobank_stats().consent_requests, 8);
    let stats = sandbox.stats();
    assert_eq!((stats.api_requests, stats.unauthorized), (8, 2));
    sandbox.shutdown().await;
}

#[test]
fn generated_ibans_pass_the_mod_97_check() {
    // A textbook example of ISO 13616 for the Netherlands.
    assert_eq!(iban("NL", "ABNA0417164300"), "NL91ABNA0417164300");
    let mut rng = rand::rng();
    for _ in 0..100 {
        let generated = dutch_iban(&mut rng);
        assert_eq!(generated, iban("NL", &generated[4..]));
    }
}
