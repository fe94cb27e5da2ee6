//! The operations endpoints over real HTTP and PostgreSQL, on the operations listener:
//! `/healthz`, `/readyz` (database, migrations, stuck runs) and `/metrics` (parsed as Prometheus
//! text, not grepped); the public listener answers only `/healthz` of them.
//!
//! The metrics recorder is process-wide and other tests run passes at the same time, so counters
//! in this process are compared before and after (they may grow more than ours, never less);
//! the real-daemon test has a process of its own and checks exact values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use partner_sync::metrics as m;
use partner_sync::server::{self, Partners, ServerLimits, ServerState};
use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::Fault;
use reqwest::StatusCode;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::rabobank::Bank;

const DAY: f64 = 86_400.0;

/// Our operations server on a free port over `pool`; stopped on drop.
struct Server {
    base: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(pool: PgPool, stuck_after: Duration) -> Server {
    let (listener, address) = server::bind("127.0.0.1:0".parse().unwrap(), "server.ops_listen")
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let state = ServerState {
        pool,
        partners: tokio::sync::watch::channel(Partners::default()).1,
        control: tokio::sync::mpsc::channel(1).0,
        admin_token: Default::default(),
        link_done_url: String::new(),
        metrics: m::install(),
        stuck_after,
        scrape: tokio::sync::watch::channel(Default::default()).1,
    };
    let defaults = partner_sync::settings::Settings::load_from(None, Vec::new()).unwrap();
    tokio::spawn(server::serve(
        listener,
        server::ops_router(state),
        ServerLimits::from_settings(&defaults),
        stop.clone(),
    ));
    Server {
        base: format!("http://{address}"),
        stop,
    }
}

async fn get(url: &str) -> (StatusCode, String) {
    let answer = reqwest::get(url).await.unwrap();
    (answer.status(), answer.text().await.unwrap())
}

/// `/readyz`: its status and JSON body.
pub async fn readyz(base: &str) -> (StatusCode, serde_json::Value) {
    let (status, body) = get(&format!("{base}/readyz")).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// One sample line of the exposition format.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text, panicking on any line that is not a comment, blank or a sample, and
/// on a metric family declared twice (as two concatenated renders could do).
fn parse(text: &str) -> Vec<Sample> {
    let mut types = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split_whitespace().next().unwrap().to_owned();
            assert!(types.insert(family.clone()), "{family} declared twice");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect(line);
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            loop {
                let (at, c) = chars.next().expect(line);
                match c {
                    '}' => {
                        rest = &inner[at + 1..];
                        break;
                    }
                    ',' | ' ' => continue,
                    first => {
                        let mut key = String::from(first);
                        loop {
                            match chars.next().expect(line).1 {
                                '=' => break,
                                c => key.push(c),
                            }
                        }
                        assert_eq!(chars.next().expect(line).1, '"', "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect(line).1 {
                                '\\' => match chars.next().expect(line).1 {
                                    'n' => value.push('\n'),
                                    escaped => value.push(escaped),
                                },
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        assert!(labels.insert(key, value).is_none(), "{line}");
                    }
                }
            }
        }
        let value = rest.split_whitespace().next().expect(line);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample named `name` with exactly `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// `/metrics` of the server at `base`, parsed.
pub async fn scrape(base: &str) -> Vec<Sample> {
    let answer = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse(&answer.text().await.unwrap())
}

/// A pool whose server is not there: a port that was just free.
async fn unreachable_pool() -> PgPool {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/nowhere"))
        .unwrap()
}

#[test]
fn the_parser_reads_labels_and_values_and_rejects_nonsense() {
    let samples = parse(
        "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\",q=\"say \\\"hi\\\", ok\"} 3\nb 1.5\n",
    );
    assert_eq!(
        value(&samples, "a_total", &[("k", "v"), ("q", "say \"hi\", ok")]),
        Some(3.0)
    );
    assert_eq!(value(&samples, "a_total", &[("k", "v")]), None);
    assert_eq!(value(&samples, "b", &[]), Some(1.5));
    assert!(std::panic::catch_unwind(|| parse("a_total{k=\"v\"} many\n")).is_err());
    assert!(std::panic::catch_unwind(|| parse("# TYPE a gauge\n# TYPE a gauge\n")).is_err());
}

#[tokio::test]
async fn healthz_needs_no_database_and_readyz_reports_an_unreachable_one() {
    let server = serve(unreachable_pool().await, Duration::from_secs(3600)).await;
    assert_eq!(
        get(&format!("{}/healthz", server.base)).await,
        (StatusCode::OK, "ok\n".to_owned())
    );

    let (status, body) = readyz(&server.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    let database = body["database"].as_str().unwrap();
    assert_ne!(database, "ok");
    assert!(!database.contains("postgres://"), "{database}");
    assert_eq!(body["migrations"], "not checked");
    assert_eq!(body["stuck_runs"], "not checked");
}

#[tokio::test]
async fn readyz_is_ready_on_a_migrated_database_until_a_run_is_stuck() {
    let db = TestDb::new().await;
    let server = serve(db.pool.clone(), Duration::from_secs(2 * 3600)).await;
    let (status, body) = readyz(&server.base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "database": "ok", "migrations": "ok", "stuck_runs": "ok"})
    );

    // Running for 10 minutes is not stuck; running for 3 hours is.
    let start_run = |ago: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO sync.runs (job, cause, status, started_at)
                 VALUES ('rabot_mirror', 'schedule', 'running', now() - $1::interval) RETURNING id",
            )
            .bind(ago)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    start_run("10 minutes").await;
    assert_eq!(readyz(&server.base).await.0, StatusCode::OK);
    // An old row whose job lock nobody holds was left by a dead process: not stuck.
    let stuck = start_run("3 hours").await;
    assert_eq!(readyz(&server.base).await.0, StatusCode::OK);
    // The same row while a process holds the job's lock is a stuck run.
    let mut holder = db.pool.acquire().await.unwrap();
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('rabot_mirror', 0))")
            .fetch_one(&mut *holder)
            .await
            .unwrap();
    assert!(locked);
    let (status, body) = readyz(&server.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "ok");
    assert_eq!(body["migrations"], "ok");
    let detail = body["stuck_runs"].as_str().unwrap();
    assert!(
        detail.contains(&format!("rabot_mirror run {stuck} ")) && detail.contains("2h"),
        "{detail}"
    );

    // Once it ends, the replica is ready again.
    sqlx::query("UPDATE sync.runs SET status = 'failed', finished_at = now() WHERE id = $1")
        .bind(stuck)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(readyz(&server.base).await.0, StatusCode::OK);
}

#[tokio::test]
async fn readyz_names_a_migration_that_is_not_applied() {
    let db = TestDb::new().await;
    let server = serve(db.pool.clone(), Duration::from_secs(3600)).await;
    assert_eq!(readyz(&server.base).await.0, StatusCode::OK);

    let latest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        partner_sync::store::MIGRATOR
            .iter()
            .any(|m| m.version == latest)
    );
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(latest)
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, body) = readyz(&server.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["stuck_runs"], "ok");
    assert_eq!(body["migrations"], format!("not applied: {latest}"));

    // A failed attempt recorded for it does not count as applied either.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'failed attempt', false, '\\x00'::bytea, 0)",
    )
    .bind(latest)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        readyz(&server.base).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn metrics_show_runs_requests_tokens_and_grant_expiry() {
    let bank = Bank::start(small_sandbox(3)).await;
    let base = bank.ops_url.clone();
    let grant = bank.connect("metrics-grant").await;
    let lapsed = bank.connect("lapsed-grant").await;
    sqlx::query("UPDATE sync.oauth_grants SET status = 'needs_reconsent' WHERE id = $1")
        .bind(lapsed)
        .execute(&bank.db.pool)
        .await
        .unwrap();

    let before = scrape(&base).await;
    let count_of = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| {
        value(samples, name, labels).unwrap_or(0.0)
    };
    let delta = |after: &[Sample], name: &str, labels: &[(&str, &str)]| {
        count_of(after, name, labels) - count_of(&before, name, labels)
    };

    // One RABOT pass on the same sandbox, with one 503 to retry.
    bank.sandbox.inject_fault(Fault {
        path_contains: "/customers".into(),
        status: 503,
        retry_after: None,
        times: 1,
    });
    // The sandbox counts the bank's token requests (the consents above) too.
    let tokens_before = bank.sandbox.stats().token_requests;
    let settings = load_settings(&bank.sandbox, &bank.db.url, &[]);
    let (status, counts, error) = mirror_pass(&settings, &bank.db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.inserted, 3 + 6);
    assert!(
        counts.requests > 3,
        "a token, customer pages, contracts: {counts:?}"
    );
    let rabot_tokens = bank.sandbox.stats().token_requests - tokens_before;
    assert!(rabot_tokens >= 1);

    let after = scrape(&base).await;
    let job = ("job", "rabot_mirror");
    assert!(delta(&after, m::RUNS, &[job, ("status", "succeeded")]) >= 1.0);
    assert!(delta(&after, m::RUN_ROWS, &[job, ("kind", "inserted")]) >= 9.0);
    let runs_timed = format!("{}_count", m::RUN_DURATION);
    assert!(delta(&after, &runs_timed, &[job]) >= 1.0);
    let bucket = format!("{}_bucket", m::RUN_DURATION);
    let hour_bucket = value(&after, &bucket, &[job, ("le", "3600")]).expect("a 3600 s bucket");
    assert!(hour_bucket >= 1.0);
    assert!(value(&after, &bucket, &[job, ("le", "0.1")]).is_some());

    let rabot = ("partner", "rabot");
    // Every request of the pass answered 200 except the injected 503.
    assert!(
        delta(&after, m::HTTP_REQUESTS, &[rabot, ("status", "200")])
            >= (counts.requests - 1) as f64,
        "{} requests",
        counts.requests
    );
    assert!(delta(&after, m::HTTP_REQUESTS, &[rabot, ("status", "503")]) >= 1.0);
    let waits = format!("{}_count", m::RATE_LIMIT_WAIT);
    assert!(delta(&after, &waits, &[rabot]) >= counts.requests as f64);
    assert!(delta(&after, m::TOKEN_REQUESTS, &[rabot]) >= rabot_tokens as f64);

    // A Rabobank rotation is a token request too.
    let refreshes_before = bank.sandbox.rabobank_stats().refreshes;
    let rotated = bank
        .grants
        .refresh(
            &bank.db.pool,
            grant,
            partner_sync::partners::rabobank::grants::RefreshNeed::RefreshTokenExpiresWithin(
                Duration::from_secs(365 * 86_400),
            ),
            &partner_sync::store::audit::Actor::Scheduler,
        )
        .await
        .unwrap();
    assert!(rotated.refreshed);
    assert_eq!(
        bank.sandbox.rabobank_stats().refreshes,
        refreshes_before + 1
    );
    let rotated_scrape = scrape(&base).await;
    assert!(
        delta(
            &rotated_scrape,
            m::TOKEN_REQUESTS,
            &[("partner", "rabobank")]
        ) >= 1.0
    );

    // The active grant's refresh token: 30 days from now; the lapsed grant is not shown.
    let gauge = |samples: &[Sample], id: uuid::Uuid, label: &str| {
        value(
            samples,
            m::GRANT_REFRESH_EXPIRES_IN,
            &[
                ("provider", "rabobank"),
                ("grant_id", &id.to_string()),
                ("label", label),
            ],
        )
    };
    let expires_in = gauge(&after, grant, "metrics-grant").expect("a gauge for the active grant");
    assert!(
        (29.9 * DAY..=30.0 * DAY).contains(&expires_in),
        "{expires_in}"
    );
    assert_eq!(gauge(&after, lapsed, "lapsed-grant"), None);
    assert!(
        !after
            .iter()
            .any(|s| s.labels.get("grant_id") == Some(&lapsed.to_string())),
        "no sample for a grant that is not active"
    );

    // Read at every scrape: a day later (as far as the row says) it says a day.
    bank.age(grant, Duration::from_secs(86_400)).await;
    let aged = gauge(&scrape(&base).await, grant, "metrics-grant").unwrap();
    assert!((DAY - 60.0..=DAY).contains(&aged), "{aged}");
}

/// A Premium consent lasts until revoked: it has a refresh budget but no consent end.
#[tokio::test]
async fn premium_grants_have_no_consent_end_gauge() {
    let bank = Bank::start_with(
        small_sandbox(1),
        &[("PARTNER_SYNC__RABOBANK__VARIANT", "premium")],
    )
    .await;
    let grant = bank.connect("premium-grant").await;
    let samples = scrape(&bank.ops_url).await;
    let labels = [
        ("provider", "rabobank"),
        ("grant_id", &grant.to_string()),
        ("label", "premium-grant"),
    ];
    assert_eq!(
        value(&samples, m::GRANT_REFRESHES_REMAINING, &labels),
        Some(4096.0)
    );
    assert_eq!(value(&samples, m::GRANT_CONSENT_EXPIRES_IN, &labels), None);
    assert!(value(&samples, m::GRANT_REFRESH_EXPIRES_IN, &labels).is_some());
    assert_eq!(
        value(
            &samples,
            m::GRANTS,
            &[("provider", "rabobank"), ("state", "active")]
        ),
        Some(1.0)
    );
}

/// The daemon as shipped: `run` wires the recorder, and its server answers the probes and
/// metrics with exactly what this process did.
#[tokio::test]
async fn the_daemon_serves_probes_and_exact_metrics() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(4)).await;
    let mut env = sandbox_env(&sandbox, &db.url);
    env.push(("PARTNER_SYNC__DAEMON__RUN_ON_START".into(), "true".into()));
    // The schedule must not add a run while the test looks: once a year.
    env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
    let daemon = Daemon::run(env);
    let logged = || daemon.log();

    // The addresses it bound (port 0 picks them) are in the log.
    let started = Instant::now();
    let base = daemon.logged_address("operations server listening").await;
    let public = daemon.logged_address("HTTP server listening").await;
    assert_ne!(base, public);

    let runs = |samples: &[Sample]| {
        value(
            samples,
            m::RUNS,
            &[("job", "rabot_mirror"), ("status", "succeeded")],
        )
    };
    let samples = loop {
        let samples = scrape(&base).await;
        if runs(&samples).is_some() {
            break samples;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}", logged());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, body) = readyz(&base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, StatusCode::OK);
    // The public listener answers the liveness probe, and nothing that reveals internals.
    assert_eq!(get(&format!("{public}/healthz")).await.0, StatusCode::OK);
    for internal in ["/metrics", "/readyz"] {
        assert_eq!(
            get(&format!("{public}{internal}")).await.0,
            StatusCode::NOT_FOUND,
            "{internal} on the public listener"
        );
    }

    daemon.stop_cleanly().await;

    // One start-up run, nothing else.
    assert_eq!(runs(&samples), Some(1.0));
    let (requests, inserted): (i64, i64) = sqlx::query_as(
        "SELECT requests, inserted FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let rabot = ("partner", "rabot");
    assert_eq!(
        value(&samples, m::HTTP_REQUESTS, &[rabot, ("status", "200")]),
        Some(requests as f64)
    );
    assert_eq!(
        value(
            &samples,
            m::RUN_ROWS,
            &[("job", "rabot_mirror"), ("kind", "inserted")]
        ),
        Some(inserted as f64)
    );
    assert_eq!(inserted, 4 + 8);
    assert_eq!(
        value(&samples, m::TOKEN_REQUESTS, &[rabot]),
        Some(sandbox.stats().token_requests as f64)
    );
    assert_eq!(
        value(&samples, &format!("{}_count", m::RATE_LIMIT_WAIT), &[rabot]),
        Some(requests as f64)
    );
    // No grant, no gauge.
    assert!(
        !samples
            .iter()
            .any(|s| s.name == m::GRANT_REFRESH_EXPIRES_IN)
    );
}
