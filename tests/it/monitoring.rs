//! The shipped dashboard (`deploy/grafana/partner-sync.json`) and alert rules
//! (`deploy/prometheus/alerts.yml`) against the real daemon: every metric they use is in its
//! exposition once each job has run, the dashboard is importable JSON whose panels all query a
//! data source, and the README explains every alert. (The rules' own logic is tested by
//! `promtool test rules deploy/prometheus/alerts_test.yml`, which CI runs.)

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::ops_http::{Sample, scrape};
use crate::rabobank::{Bank, rabobank_env};

const DASHBOARD: &str = "deploy/grafana/partner-sync.json";
const ALERTS: &str = "deploy/prometheus/alerts.yml";
/// The jobs whose runs the test waits for: one of each partner.
const JOBS: [&str; 3] = [
    "rabot_mirror",
    "energyzero_mirror",
    "rabobank_token_rotation",
];

fn shipped(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The metric families `text` names: every `partner_sync_*` word, with a histogram's
/// `_bucket`/`_sum`/`_count` suffix taken off.
fn metric_families(text: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bpartner_sync_[a-z0-9_]*[a-z0-9]").unwrap();
    name.find_iter(text)
        .map(|m| family(m.as_str()).to_owned())
        .collect()
}

fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[test]
fn metric_families_strip_histogram_suffixes_only() {
    let found = metric_families(
        r#"rate(partner_sync_run_duration_seconds_bucket{job=~"$job"}[1h]) / partner_sync_run_duration_seconds_count
           partner_sync_grants{state="in_doubt"} partner_sync_runs_total, `partner-sync grants`"#,
    );
    let expected: BTreeSet<String> = [
        "partner_sync_grants",
        "partner_sync_run_duration_seconds",
        "partner_sync_runs_total",
    ]
    .map(String::from)
    .into();
    assert_eq!(found, expected);
}

/// One daemon runs RABOT, EnergyZero and a Rabobank rotation; its `/metrics` must then hold
/// every family the dashboard and the alert rules use.
#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exposed_once_each_job_ran() {
    let mut referenced = metric_families(&shipped(DASHBOARD));
    referenced.extend(metric_families(&shipped(ALERTS)));
    // The regex found what it should: a name from each group the dashboard shows.
    for name in [
        "partner_sync_runs_total",
        "partner_sync_run_duration_seconds",
        "partner_sync_http_requests_total",
        "partner_sync_grant_refresh_in_doubt_since_timestamp_seconds",
    ] {
        assert!(
            referenced.contains(name),
            "{name} not found in {referenced:?}"
        );
    }

    let mut options = small_sandbox(3);
    options.energyzero.users = 2;
    let bank = Bank::start(options).await;
    let rotated = bank.connect("rotated").await;
    let doubted = bank.connect("doubted").await;
    let mut env = rabobank_env(
        &bank.sandbox,
        &bank.db.url,
        &bank.settings.server.public_url,
    );
    env.extend(
        crate::energyzero::ez_env(
            &bank.sandbox,
            &bank.db.url,
            &bank.sandbox.energyzero_user_ids(),
        )
        .into_iter()
        .filter(|(key, _)| key.starts_with("PARTNER_SYNC__ENERGYZERO__")),
    );
    env.extend(
        [
            ("PARTNER_SYNC__RABOT__ENABLED", "true"),
            ("PARTNER_SYNC__DAEMON__RUN_ON_START", "true"),
            ("PARTNER_SYNC__RABOT__SCHEDULE", NEVER),
            ("PARTNER_SYNC__ENERGYZERO__SCHEDULE", NEVER),
            ("PARTNER_SYNC__RABOBANK__SCHEDULE", NEVER),
            // Every grant is due, so the start-up rotation refreshes both.
            ("PARTNER_SYNC__RABOBANK__ROTATE_BEFORE", "400days"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let daemon = Daemon::run(env);
    let base = daemon.logged_address("operations server listening").await;

    let succeeded = |samples: &[Sample], job: &str| {
        samples.iter().any(|s| {
            s.name == partner_sync::metrics::RUNS
                && s.labels.get("job").map(String::as_str) == Some(job)
                && s.labels.get("status").map(String::as_str) == Some("succeeded")
        })
    };
    let started = Instant::now();
    loop {
        let samples = scrape(&base).await;
        if JOBS.iter().all(|job| succeeded(&samples, job)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not every job succeeded: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        bank.grant_status(rotated).await.1,
        1,
        "the grant was rotated"
    );
    // A grant in doubt, so the gauges only such a grant has are shown too.
    sqlx::query("UPDATE sync.oauth_grants SET refresh_in_doubt_since = now() WHERE id = $1")
        .bind(doubted)
        .execute(&bank.db.pool)
        .await
        .unwrap();

    let samples = scrape(&base).await;
    let exposed: BTreeSet<&str> = samples
        .iter()
        .flat_map(|s| [s.name.as_str(), family(&s.name)])
        .collect();
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|name| !exposed.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by {DASHBOARD} or {ALERTS} but not in /metrics: {missing:?}"
    );
}

/// Every panel, rows' nested ones included (rows themselves hold no query).
fn data_panels(panels: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut found = Vec::new();
    for panel in panels.as_array().expect("panels is an array") {
        if panel["type"] == "row" {
            found.extend(data_panels(&panel["panels"]));
        } else {
            found.push(panel);
        }
    }
    found
}

#[test]
fn the_dashboard_is_json_whose_panels_all_query_the_chosen_data_source() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&shipped(DASHBOARD)).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(variable("DS_PROMETHEUS")["query"], "prometheus");
    assert_eq!(variable("job")["type"], "query");
    assert_eq!(variable("job")["datasource"]["uid"], "${DS_PROMETHEUS}");

    let panels = data_panels(&dashboard["panels"]);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect(title);
        assert!(!targets.is_empty(), "{title} has no target");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("partner_sync_"), "{title}: {expr:?}");
        }
    }
}

#[test]
fn the_readme_explains_every_alert() {
    let readme = shipped("README.md");
    let alert = regex::Regex::new(r"(?m)^\s*- alert: (\w+)$").unwrap();
    let alerts: Vec<String> = alert
        .captures_iter(&shipped(ALERTS))
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    for name in alerts {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README does not name {name}"
        );
    }
}
