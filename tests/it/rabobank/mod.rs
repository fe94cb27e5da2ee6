//! Rabobank grants end to end over real HTTP and PostgreSQL: the consent flow through the
//! sandbox's authorization server and our callback, the sealed store, the one refresh path
//! under contention from tasks and "replicas", and the rotation job's verdicts.

use std::time::Duration;

use partner_sync::partners::rabobank::grants::{RefreshError, RefreshNeed};
use partner_sync::store::audit::Actor;
use partner_sync::store::runs::RunStatus;
use partner_sync::telemetry::with_causes;
use partner_sync_sandbox::{Fault, SandboxOptions};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::common::*;

mod daemons;

const OTHER_TOKEN_KEY: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";
const DAY: Duration = Duration::from_secs(86_400);

pub use crate::common::bank::{Bank, rabobank_env};
use crate::common::bank::{bank_processed, refresh_marks};

/// The grants `sync.audit` names under `action`, in the order they were recorded.
pub async fn audited(pool: &sqlx::PgPool, action: &str) -> Vec<Uuid> {
    sqlx::query_scalar::<_, String>(
        "SELECT subject FROM sync.audit WHERE action = $1 AND partner = 'rabobank' ORDER BY id",
    )
    .bind(action)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|subject| subject.parse().expect("a grant id"))
    .collect()
}

fn bank_options() -> SandboxOptions {
    small_sandbox(1)
}

#[derive(sqlx::FromRow)]
struct StoredGrant {
    status: String,
    consent_id: Option<String>,
    refresh_count: i32,
    key_id: String,
    access: Vec<u8>,
    refresh: Vec<u8>,
    access_s: f64,
    refresh_s: f64,
}

#[tokio::test]
async fn an_approved_consent_is_stored_sealed_and_its_tokens_work() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("household-1").await;

    let consent_ids = bank.sandbox.rabobank_consent_ids();
    assert_eq!(consent_ids.len(), 1);
    let row: StoredGrant = sqlx::query_as(
        "SELECT status, consent_id, refresh_count, key_id, access_token_sealed AS access,
                refresh_token_sealed AS refresh,
                extract(epoch FROM access_expires_at - now())::float8 AS access_s,
                extract(epoch FROM refresh_expires_at - now())::float8 AS refresh_s
           FROM sync.oauth_grants WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    let StoredGrant {
        status,
        consent_id,
        refresh_count,
        key_id,
        access,
        refresh,
        access_s,
        refresh_s,
    } = row;
    assert_eq!(status, "active");
    assert_eq!(consent_id.as_deref(), Some(consent_ids[0].as_str()));
    assert_eq!(refresh_count, 0);
    assert_eq!(key_id.len(), 16);
    // Expiries come from the response: 1 h and 30 days in the sandbox's defaults.
    assert!((3500.0..=3600.0).contains(&access_s), "{access_s}");
    assert!(
        (29.9 * 86_400.0..=30.0 * 86_400.0).contains(&refresh_s),
        "{refresh_s}"
    );

    // No plaintext token byte anywhere in the grant or state tables.
    let dump: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(g::text, '|') FROM sync.oauth_grants g) || '|' ||
                (SELECT string_agg(s::text, '|') FROM sync.oauth_states s)",
    )
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    let secrets = bank.sandbox.rabobank_secrets();
    assert!(secrets.len() >= 3, "a code, an access and a refresh token");
    for secret in &secrets {
        assert!(!dump.contains(secret), "a token is stored in plaintext");
        let hex = hex::encode(secret.as_bytes());
        assert!(!dump.contains(&hex), "a token is stored as plain bytes");
        assert!(!access.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(
            !refresh
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
        );
    }

    // The sealed access token opens and the bank accepts it.
    let token = bank
        .grants
        .access_token(&bank.db.pool, id, &Actor::Scheduler)
        .await
        .unwrap();
    assert!(secrets.contains(&token.expose_secret().to_owned()));
    let consent = bank
        .grants
        .check_consent(&bank.db.pool, id, consent_id.as_deref(), &Actor::Scheduler)
        .await
        .unwrap();
    assert_eq!(consent.as_deref(), Some("valid"));
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!((stats.code_exchanges, stats.refreshes), (1, 0));
}

#[tokio::test]
async fn the_bank_form_approves_like_the_knob() {
    let bank = Bank::start(bank_options()).await;
    let url = bank
        .grants
        .begin_consent(&bank.db.pool, Some("form"))
        .await
        .unwrap();
    let page = bank.browser.get(url.clone()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form"), "{html}");
    // Submit the form as a browser would: the authorize parameters plus the decision.
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.push(("decision".into(), "approve".into()));
    let mut action = url.clone();
    action.set_query(None);
    let answer = bank.browser.post(action).form(&form).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    let callback = answer.headers()["location"].to_str().unwrap().to_owned();
    let (status, body) = bank.arrive(&callback).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(bank.grant_count().await, 1);
}

#[tokio::test]
async fn refusals_are_recorded_and_shown_without_a_token_request() {
    let bank = Bank::start(bank_options()).await;
    for (decision, error) in [("deny", "access_denied"), ("server_error", "server_error")] {
        let callback = bank.bank_redirect(Some(decision), decision).await;
        let (status, page) = bank.arrive(&callback).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("not given") && page.contains(error), "{page}");
        let recorded: (Option<String>, Option<String>) =
            sqlx::query_as("SELECT outcome, error FROM sync.oauth_states WHERE label = $1")
                .bind(decision)
                .fetch_one(&bank.db.pool)
                .await
                .unwrap();
        assert_eq!(recorded.0.as_deref(), Some("denied"));
        assert!(recorded.1.unwrap().starts_with(error));
    }
    assert_eq!(bank.sandbox.stats().token_requests, 0);
    assert_eq!(bank.grant_count().await, 0);
}

#[tokio::test]
async fn forged_replayed_expired_and_missing_states_answer_400_and_store_nothing() {
    let bank = Bank::start(bank_options()).await;
    let base = format!(
        "{}/oauth/rabobank/callback",
        bank.settings.server.public_url
    );

    // A real code with a forged state: the code must not be exchanged.
    let genuine = bank.bank_redirect(Some("genuine"), "approve").await;
    let code = url::Url::parse(&genuine)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let forged = format!("{base}?code={code}&state=forged-state-value");
    let missing = format!("{base}?code={code}");
    for callback in [&forged, &missing] {
        let (status, page) = bank.arrive(callback).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    }
    assert_eq!(
        bank.sandbox.stats().token_requests,
        0,
        "no exchange for a bad state"
    );

    // Expired: the state is known and unused but older than 10 minutes.
    let late = bank.bank_redirect(Some("late"), "approve").await;
    sqlx::query("UPDATE sync.oauth_states SET expires_at = now() - interval '1 second' WHERE label = 'late'")
        .execute(&bank.db.pool)
        .await
        .unwrap();
    assert_eq!(bank.arrive(&late).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(bank.sandbox.stats().token_requests, 0);
    assert_eq!(bank.grant_count().await, 0);

    // Replayed: the first arrival works, the second is refused before any token request.
    assert_eq!(bank.arrive(&genuine).await.0, StatusCode::OK);
    let exchanges = bank.sandbox.stats().token_requests;
    assert_eq!(bank.arrive(&genuine).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(bank.sandbox.stats().token_requests, exchanges);
    assert_eq!(bank.grant_count().await, 1);
}

#[tokio::test]
async fn rotation_refreshes_only_grants_due_and_keeps_them_working() {
    let bank = Bank::start(bank_options()).await;
    let fresh = bank.connect("fresh").await;
    let due = bank.connect("due").await;
    bank.age(due, 6 * DAY).await;

    let (status, counts, error) = bank.rotation_pass().await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(
        (
            counts.fetched,
            counts.updated,
            counts.unchanged,
            counts.failed
        ),
        (2, 1, 1, 0)
    );
    assert_eq!(bank.grant_status(due).await.1, 1);
    assert_eq!(bank.grant_status(fresh).await.1, 0);
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!((stats.refreshes, stats.reuse_detections), (1, 0));

    // The rotated grant still refreshes: its new refresh token was saved.
    bank.age(due, DAY).await;
    let (status, counts, _) = bank.rotation_pass().await;
    assert_eq!((status, counts.updated), (RunStatus::Succeeded, 1));
    assert_eq!(bank.grant_status(due).await, ("active".to_owned(), 2, None));
    let run: (String, i64, i64) = sqlx::query_as(
        "SELECT status, updated, fetched FROM sync.runs WHERE job = 'rabobank_token_rotation'
          ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    assert_eq!(run, ("succeeded".to_owned(), 1, 2));
}

#[tokio::test]
async fn concurrent_refreshes_from_tasks_and_replicas_reach_the_bank_once() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("contended").await;
    let (replica_pool, replica) = bank.replica(&[]).await;
    bank.age(id, DAY).await;
    // Slow answers keep the first refresh in flight while the others queue on the row lock.
    bank.sandbox.set_latency(Duration::from_millis(200));

    let need = RefreshNeed::RefreshTokenExpiresWithin(7 * DAY);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (pool, grants) = if i % 2 == 0 {
            (bank.db.pool.clone(), bank.grants.clone())
        } else {
            (replica_pool.clone(), replica.clone())
        };
        tasks.push(tokio::spawn(async move {
            grants
                .refresh(&pool, id, need, &Actor::Scheduler)
                .await
                .map(|g| g.refreshed)
        }));
    }
    let mut refreshed = 0;
    for task in tasks {
        if task
            .await
            .unwrap()
            .expect("every caller gets a valid grant")
        {
            refreshed += 1;
        }
    }
    bank.sandbox.set_latency(Duration::ZERO);
    assert_eq!(
        refreshed, 1,
        "one caller refreshed, the others found it done"
    );
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!((stats.refresh_requests, stats.reuse_detections), (1, 0));

    // The grant still works afterwards, from either replica.
    bank.age(id, DAY).await;
    let again = replica
        .refresh(&replica_pool, id, need, &Actor::Scheduler)
        .await
        .unwrap();
    assert!(again.refreshed);
    assert_eq!(bank.grant_status(id).await, ("active".to_owned(), 2, None));
}

#[tokio::test]
async fn a_hundred_rotations_of_ten_grants_from_two_replicas_never_reuse_a_token() {
    let bank = Bank::start(bank_options()).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(bank.connect(&format!("grant-{i}")).await);
    }
    let (replica_pool, replica) = bank.replica(&[]).await;
    // A margin longer than any refresh token's life: every call rotates.
    let always = RefreshNeed::RefreshTokenExpiresWithin(365 * DAY);
    let rounds = 50;
    let workers = [
        (bank.db.pool.clone(), bank.grants.clone()),
        (replica_pool, replica),
    ]
    .map(|(pool, grants)| {
        let ids = ids.clone();
        tokio::spawn(async move {
            for _ in 0..rounds {
                for id in &ids {
                    grants
                        .refresh(&pool, *id, always, &Actor::Scheduler)
                        .await
                        .expect("refresh works");
                }
            }
        })
    });
    for worker in workers {
        worker.await.unwrap();
    }
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!(stats.refreshes, 1000, "{stats:?}");
    assert_eq!(stats.reuse_detections, 0);
    assert_eq!(stats.invalid_grant_answers, 0);
    let active = count(
        &bank.db.pool,
        "SELECT count(*) FROM sync.oauth_grants WHERE status = 'active' AND refresh_count = 100",
    )
    .await;
    assert_eq!(active, 10);
    for consent in bank.sandbox.rabobank_consent_ids() {
        let grant = bank.sandbox.rabobank_grant(&consent).unwrap();
        assert!(!grant.revoked);
        assert_eq!(grant.refresh_count, 100);
    }
}

#[tokio::test]
async fn invalid_grant_marks_needs_reconsent_once_and_is_never_retried() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("revoked-by-user").await;
    let healthy = bank.connect("healthy").await;
    let consent = bank.sandbox.rabobank_consent_ids()[0].clone();
    assert!(bank.sandbox.rabobank_revoke_consent(&consent));
    bank.age(id, DAY).await;
    bank.age(healthy, DAY).await;

    let (status, counts, error) = bank.rotation_pass().await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!((counts.updated, counts.failed), (1, 1));
    let error = error.unwrap();
    assert!(
        error.contains("needs a new consent") && error.contains("invalid_grant"),
        "{error}"
    );
    let (grant_status, _, last_error) = bank.grant_status(id).await;
    assert_eq!(grant_status, "needs_reconsent");
    assert!(last_error.unwrap().contains("invalid_grant"));
    assert_eq!(bank.grant_status(healthy).await.0, "active");
    assert_eq!(audited(&bank.db.pool, "grant.needs_reconsent").await, [id]);

    // The next run leaves it alone: no second refresh with a refused token.
    let requests = bank.sandbox.rabobank_stats().refresh_requests;
    let (status, counts, _) = bank.rotation_pass().await;
    assert_eq!((status, counts.fetched), (RunStatus::Succeeded, 1));
    assert_eq!(bank.sandbox.rabobank_stats().refresh_requests, requests);
    assert_eq!(
        audited(&bank.db.pool, "grant.needs_reconsent").await,
        [id],
        "audited once"
    );
    let err = bank
        .grants
        .refresh(
            &bank.db.pool,
            id,
            RefreshNeed::RefreshTokenExpiresWithin(DAY),
            &Actor::Scheduler,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RefreshError::NotActive { .. }), "{err}");
}

#[tokio::test]
async fn an_unanswered_refresh_is_not_replayed_and_a_refused_one_is_retried_within_bounds() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("flaky").await;
    bank.age(id, DAY).await;
    let need = RefreshNeed::RefreshTokenExpiresWithin(7 * DAY);
    let token_path = "/rabobank/oauth2/token";

    // 504: the bank may have processed it. Sent once, not again, and the grant says so.
    bank.sandbox.inject_fault(Fault {
        path_contains: token_path.into(),
        status: 504,
        retry_after: None,
        times: 1,
    });
    let before = bank.sandbox.stats().token_requests;
    let err = bank
        .grants
        .refresh(&bank.db.pool, id, need, &Actor::Scheduler)
        .await
        .unwrap_err();
    assert!(matches!(err, RefreshError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(bank.sandbox.stats().token_requests, before + 1);
    let doubt: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT refresh_in_doubt_since FROM sync.oauth_grants WHERE id = $1")
            .bind(id)
            .fetch_one(&bank.db.pool)
            .await
            .unwrap();
    assert!(doubt.is_some());
    assert_eq!(bank.grant_status(id).await.0, "active");
    // Needing an access token does not replay it either; only rotation settles the doubt.
    sqlx::query("UPDATE sync.oauth_grants SET access_expires_at = now() WHERE id = $1")
        .bind(id)
        .execute(&bank.db.pool)
        .await
        .unwrap();
    let err = bank
        .grants
        .access_token(&bank.db.pool, id, &Actor::Scheduler)
        .await
        .unwrap_err();
    assert!(matches!(err, RefreshError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(bank.sandbox.stats().token_requests, before + 1);
    bank.age(id, 20 * DAY).await;

    // 503 twice: not processed, so retried (max 3 attempts in tests) and then it works.
    bank.sandbox.inject_fault(Fault {
        path_contains: token_path.into(),
        status: 503,
        retry_after: None,
        times: 2,
    });
    let current = bank
        .grants
        .refresh(&bank.db.pool, id, need, &Actor::Scheduler)
        .await
        .unwrap();
    assert!(current.refreshed);
    assert_eq!(bank.grant_status(id).await, ("active".to_owned(), 1, None));

    // 503 beyond the attempts: transient, grant unchanged and active.
    bank.age(id, DAY).await;
    bank.sandbox.inject_fault(Fault {
        path_contains: token_path.into(),
        status: 503,
        retry_after: None,
        times: 3,
    });
    let err = bank
        .grants
        .refresh(&bank.db.pool, id, need, &Actor::Scheduler)
        .await
        .unwrap_err();
    assert!(matches!(err, RefreshError::Transient { .. }), "{err}");
    let (status, count, last_error) = bank.grant_status(id).await;
    assert_eq!((status.as_str(), count), ("active", 1));
    assert!(last_error.unwrap().contains("503"));
    assert!(
        bank.grants
            .refresh(&bank.db.pool, id, need, &Actor::Scheduler)
            .await
            .unwrap()
            .refreshed
    );
}

#[tokio::test]
async fn a_tampered_ciphertext_or_a_wrong_key_is_a_clear_error_without_a_request() {
    let bank = Bank::start(bank_options()).await;
    let id = bank.connect("sealed").await;
    let before = bank.sandbox.stats().token_requests;
    let need = RefreshNeed::RefreshTokenExpiresWithin(365 * DAY);

    let (other_pool, other_key) = bank
        .replica(&[("PARTNER_SYNC__SECURITY__TOKEN_KEY", OTHER_TOKEN_KEY)])
        .await;
    let err = other_key
        .refresh(&other_pool, id, need, &Actor::Scheduler)
        .await
        .unwrap_err();
    // The cause (which key sealed it) is the error's source, written once after it.
    let message = with_causes(&err);
    assert!(matches!(err, RefreshError::Crypto { .. }), "{message}");
    assert!(!err.to_string().contains("sealed with key"), "{err}");
    assert!(
        message.contains("sealed with key") && message.contains("security.token_key"),
        "{message}"
    );

    sqlx::query(
        "UPDATE sync.oauth_grants
            SET refresh_token_sealed = overlay(refresh_token_sealed placing '\\xff'::bytea from 20 for 1)
          WHERE id = $1",
    )
    .bind(id)
    .execute(&bank.db.pool)
    .await
    .unwrap();
    let err = bank
        .grants
        .refresh(&bank.db.pool, id, need, &Actor::Scheduler)
        .await
        .unwrap_err();
    let message = with_causes(&err);
    assert!(message.contains("altered"), "{message}");
    assert_eq!(
        bank.sandbox.stats().token_requests,
        before,
        "nothing was sent"
    );
    assert_eq!(
        bank.grant_status(id).await.0,
        "active",
        "the row is left for a person to look at"
    );
}

#[tokio::test]
async fn ended_consents_are_marked_revoked() {
    let bank = Bank::start(bank_options()).await;
    let expired = bank.connect("expired").await;
    let withdrawn = bank.connect("withdrawn").await;
    let valid = bank.connect("valid").await;
    let consents = bank.sandbox.rabobank_consent_ids();
    assert!(
        bank.sandbox
            .rabobank_set_account_status(&consents[0], "expired")
    );
    assert!(bank.sandbox.rabobank_revoke_consent(&consents[1]));

    let (_, counts, error) = bank.rotation_pass().await;
    assert_eq!(counts.failed, 0, "{error:?}");
    let consent_status = |id: Uuid| {
        let pool = bank.db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT status, consent_status FROM sync.oauth_grants WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        consent_status(expired).await,
        ("revoked".into(), Some("expired".into()))
    );
    assert_eq!(
        consent_status(withdrawn).await,
        ("revoked".into(), Some("CONSENT_INVALID".into()))
    );
    assert_eq!(
        consent_status(valid).await,
        ("active".into(), Some("valid".into()))
    );
    let mut revoked = audited(&bank.db.pool, "grant.revoked").await;
    revoked.sort();
    let mut expected = vec![expired, withdrawn];
    expected.sort();
    assert_eq!(revoked, expected);
}

#[tokio::test]
async fn a_standard_oauth_server_without_rabobank_fields_works_too() {
    let mut options = bank_options();
    options.rabobank.standard_oauth = true;
    let bank = Bank::start(options).await;
    let id = bank.connect("standard").await;
    let (consent_id, refresh_s): (Option<String>, f64) = sqlx::query_as(
        "SELECT consent_id, extract(epoch FROM refresh_expires_at - now())::float8
           FROM sync.oauth_grants WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&bank.db.pool)
    .await
    .unwrap();
    assert_eq!(consent_id, None);
    assert!(
        refresh_s > 29.0 * 86_400.0,
        "the documented 30-day default applies"
    );

    bank.age(id, DAY).await;
    let (status, counts, error) = bank.rotation_pass().await;
    assert_eq!(
        (status, counts.updated),
        (RunStatus::Succeeded, 1),
        "{error:?}"
    );
    bank.age(id, DAY).await;
    let (status, counts, _) = bank.rotation_pass().await;
    assert_eq!((status, counts.updated), (RunStatus::Succeeded, 1));
    let stats = bank.sandbox.rabobank_stats();
    assert_eq!((stats.refreshes, stats.reuse_detections), (2, 0));
}
