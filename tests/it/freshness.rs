//! Freshness and grant gauges as the shipped daemon serves them on `/metrics`, read from the
//! database at every scrape: after a complete pass, after failed passes, once the last complete
//! pass is older than its threshold (rows backdated in `sync.runs`, no sleeping), for a job that
//! never completed one, and for grants connected through the daemon's own callback.

use std::time::Duration;

use partner_sync::metrics as m;
use partner_sync::partners::rabobank::grants::RabobankGrants;
use partner_sync::settings::Settings;
use partner_sync_sandbox::Fault;
use reqwest::StatusCode;

use crate::common::*;
use crate::ops_http::{Sample, readyz, scrape, value};

const DAY: f64 = 86_400.0;

/// The value of the gauge `name` for `job`.
fn job_gauge(samples: &[Sample], name: &str, job: &str) -> Option<f64> {
    value(samples, name, &[("job", job)])
}

/// `finished_at` of the latest run of `job` with `status`, as unix seconds.
async fn finished_at(db: &TestDb, job: &str, status: &str) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM finished_at)::float8 FROM sync.runs
          WHERE job = $1 AND status = $2 ORDER BY started_at DESC LIMIT 1",
    )
    .bind(job)
    .bind(status)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// A consent approved at the sandbox bank and stored by the daemon's callback.
async fn connect(grants: &RabobankGrants, db: &TestDb, label: &str) -> uuid::Uuid {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut url = grants.begin_consent(&db.pool, Some(label)).await.unwrap();
    url.query_pairs_mut()
        .append_pair("sandbox_decision", "approve");
    let answer = browser.get(url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND, "the bank redirects");
    let callback = answer.headers()["location"].to_str().unwrap().to_owned();
    let page = browser.get(&callback).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the daemon stores the grant");
    sqlx::query_scalar("SELECT id FROM sync.oauth_grants WHERE label = $1")
        .bind(label)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_daemon_reports_freshness_failures_staleness_and_grants() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let mut env = crate::rabobank::rabobank_env(&sandbox, &db.url, &public_url);
    env.extend(
        [
            ("PARTNER_SYNC__RABOT__ENABLED", "true"),
            ("PARTNER_SYNC__SERVER__LISTEN", &format!("127.0.0.1:{port}")),
            ("PARTNER_SYNC__DAEMON__RUN_ON_START", "true"),
            // Neither schedule fires while the test looks (yearly; daily at 03:17): runs come
            // from the start-up and from SIGUSR1 only.
            ("PARTNER_SYNC__RABOT__SCHEDULE", NEVER),
            ("PARTNER_SYNC__RABOT__STALE_AFTER", "1h"),
            ("PARTNER_SYNC__RABOBANK__SCHEDULE", "0 17 3 * * *"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let daemon = Daemon::run(env.clone());
    let logged = || daemon.log();
    let base = daemon.logged_address("operations server listening").await;
    let succeeded = |job: &str| {
        format!("SELECT count(*) FROM sync.runs WHERE job = '{job}' AND status = 'succeeded'")
    };
    for job in ["rabot_mirror", "rabobank_token_rotation"] {
        assert!(
            wait_for(&db, &succeeded(job), 1, Duration::from_secs(60)).await,
            "{job}: {}",
            logged()
        );
    }

    // After a complete pass: its end, a small age, fresh, the threshold in force, no failures.
    let samples = scrape(&base).await;
    let rabot = "rabot_mirror";
    let ended = finished_at(&db, rabot, "succeeded").await;
    let at = job_gauge(&samples, m::LAST_SUCCESS, rabot).expect("a last success");
    assert!((at - ended).abs() < 0.01, "{at} vs {ended}");
    let age = job_gauge(&samples, m::LAST_SUCCESS_AGE, rabot).unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(job_gauge(&samples, m::STALE, rabot), Some(0.0));
    assert_eq!(job_gauge(&samples, m::STALE_THRESHOLD, rabot), Some(3600.0));
    assert_eq!(
        job_gauge(&samples, m::CONSECUTIVE_FAILURES, rabot),
        Some(0.0)
    );
    // The daily rotation: 2 × a day, since no stale_after is set.
    let rotation = "rabobank_token_rotation";
    assert_eq!(
        job_gauge(&samples, m::STALE_THRESHOLD, rotation),
        Some(2.0 * DAY)
    );
    assert_eq!(job_gauge(&samples, m::STALE, rotation), Some(0.0));
    // The link mirror has no schedule: never stale, and it never ran.
    let link = "rabot_link_mirror";
    assert_eq!(
        job_gauge(&samples, m::CONSECUTIVE_FAILURES, link),
        Some(0.0)
    );
    for name in [
        m::STALE,
        m::STALE_THRESHOLD,
        m::LAST_SUCCESS,
        m::LAST_SUCCESS_AGE,
    ] {
        assert_eq!(job_gauge(&samples, name, link), None, "{name}");
    }
    // EnergyZero is off: no gauge names it.
    assert!(
        !samples
            .iter()
            .any(
                |s| s.labels.get("job").map(String::as_str) == Some("energyzero_mirror")
                    && s.name.starts_with("partner_sync_last_success")
            )
    );

    // Failed passes count up; the last success stays where it was.
    for failures in 1..=2 {
        // The customer list only: SIGUSR1 also runs rabot_costs, whose paths start the same.
        sandbox.inject_fault(Fault {
            path_contains: "/customers?".into(),
            status: 400,
            retry_after: None,
            times: 1,
        });
        daemon.signal(Signal::Usr1);
        let failed =
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'failed'";
        assert!(
            wait_for(&db, failed, failures, Duration::from_secs(30)).await,
            "{}",
            logged()
        );
        let samples = scrape(&base).await;
        assert_eq!(
            job_gauge(&samples, m::CONSECUTIVE_FAILURES, rabot),
            Some(failures as f64)
        );
        assert_eq!(job_gauge(&samples, m::LAST_SUCCESS, rabot), Some(at));
        assert_eq!(job_gauge(&samples, m::STALE, rabot), Some(0.0));
    }

    // The last complete pass two hours ago, with a threshold of one: stale, and still ready.
    sqlx::query(
        "UPDATE sync.runs SET started_at = now() - interval '2 hours',
                finished_at = now() - interval '2 hours' + interval '1 second'
          WHERE job = 'rabot_mirror' AND status = 'succeeded'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let samples = scrape(&base).await;
    assert_eq!(job_gauge(&samples, m::STALE, rabot), Some(1.0));
    let age = job_gauge(&samples, m::LAST_SUCCESS_AGE, rabot).unwrap();
    assert!((7_190.0..7_260.0).contains(&age), "{age}");
    let backdated = finished_at(&db, rabot, "succeeded").await;
    let at = job_gauge(&samples, m::LAST_SUCCESS, rabot).unwrap();
    assert!((at - backdated).abs() < 0.01, "{at} vs {backdated}");
    assert_eq!(
        job_gauge(&samples, m::CONSECUTIVE_FAILURES, rabot),
        Some(2.0)
    );
    let (status, body) = readyz(&base).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "staleness is no readiness fault: {body}"
    );

    // A success with failed items ends the failure streak but is no complete pass.
    sqlx::query(
        "INSERT INTO sync.runs (job, cause, status, finished_at, error)
         VALUES ('rabot_mirror', 'cli', 'succeeded', now(), '1 customer failed')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let samples = scrape(&base).await;
    assert_eq!(
        job_gauge(&samples, m::CONSECUTIVE_FAILURES, rabot),
        Some(0.0)
    );
    assert_eq!(job_gauge(&samples, m::LAST_SUCCESS, rabot), Some(at));
    assert_eq!(job_gauge(&samples, m::STALE, rabot), Some(1.0));

    // A scheduled job that never completed a pass is stale, with no time to show.
    sqlx::query("DELETE FROM sync.runs WHERE job = 'rabobank_token_rotation'")
        .execute(&db.pool)
        .await
        .unwrap();
    let samples = scrape(&base).await;
    assert_eq!(job_gauge(&samples, m::STALE, rotation), Some(1.0));
    assert_eq!(job_gauge(&samples, m::LAST_SUCCESS, rotation), None);
    assert_eq!(job_gauge(&samples, m::LAST_SUCCESS_AGE, rotation), None);

    // Grants, connected through the daemon's callback, in three states.
    let settings = Settings::load_from(None, env).unwrap();
    let grants = RabobankGrants::from_settings(&settings).unwrap().unwrap();
    let household = connect(&grants, &db, "Household 17").await;
    let lapsed = connect(&grants, &db, "Lapsed").await;
    let doubtful = connect(&grants, &db, "Doubtful").await;
    // 95 refreshes done, consented 170 days ago (PSD2: 10 days left).
    sqlx::query(
        "UPDATE sync.oauth_grants SET refresh_count = 95, consented_on = now() - interval '170 days'
          WHERE id = $1",
    )
    .bind(household)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE sync.oauth_grants SET status = 'needs_reconsent' WHERE id = $1")
        .bind(lapsed)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE sync.oauth_grants SET refresh_in_doubt_since = now() WHERE id = $1")
        .bind(doubtful)
        .execute(&db.pool)
        .await
        .unwrap();
    let samples = scrape(&base).await;
    let of = |name: &str, id: uuid::Uuid, label: &str| {
        value(
            &samples,
            name,
            &[
                ("provider", "rabobank"),
                ("grant_id", &id.to_string()),
                ("label", label),
            ],
        )
    };
    assert_eq!(
        of(m::GRANT_REFRESHES_REMAINING, household, "Household 17"),
        Some(4001.0)
    );
    let consent = of(m::GRANT_CONSENT_EXPIRES_IN, household, "Household 17").unwrap();
    assert!(
        (10.0 * DAY - 120.0..=10.0 * DAY).contains(&consent),
        "{consent}"
    );
    // The sandbox's consents say when they were given: 180 days from just now.
    let fresh_consent = of(m::GRANT_CONSENT_EXPIRES_IN, doubtful, "Doubtful").unwrap();
    assert!(
        (180.0 * DAY - 120.0..=180.0 * DAY).contains(&fresh_consent),
        "{fresh_consent}"
    );
    assert_eq!(
        of(m::GRANT_REFRESHES_REMAINING, doubtful, "Doubtful"),
        Some(4096.0)
    );
    // Per-grant gauges are for active grants only, as the refresh-expiry gauge is.
    assert_eq!(of(m::GRANT_REFRESHES_REMAINING, lapsed, "Lapsed"), None);
    let per_state = |state: &str| {
        value(
            &samples,
            m::GRANTS,
            &[("provider", "rabobank"), ("state", state)],
        )
    };
    assert_eq!(per_state("active"), Some(1.0));
    assert_eq!(per_state("in_doubt"), Some(1.0));
    assert_eq!(per_state("needs_reconsent"), Some(1.0));
    assert_eq!(
        per_state("revoked"),
        None,
        "states no grant is in are left out"
    );

    daemon.stop_cleanly().await;
}
