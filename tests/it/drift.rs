//! Schema drift: names a partner sends that its documents (and our typed columns) do not list
//! are recorded with the run that saw them (`sync.runs.drift`), counted in a metric, warned
//! about once a day, and shown by `status` for a week.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use partner_sync::jobs::JobName;
use partner_sync::partners::energyzero::mirror_job::EnergyzeroMirror;
use partner_sync::partners::rabot::cost_wire::FEES;
use partner_sync::partners::rabot::wire::{CONTRACT_FIELDS, CONTRACT_STATES, CUSTOMER_FIELDS};
use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::{Sandbox, SandboxOptions, rabot_documented_cost_components};
use serde_json::Value;
use sqlx::PgPool;

use crate::common::*;
use crate::ops_http::scrape;

/// The drift the job's last run recorded, as `{place: {name: items}}`.
async fn last_drift(pool: &PgPool, job: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let drift: Option<Value> =
        sqlx::query_scalar("SELECT drift FROM sync.runs WHERE job = $1 ORDER BY id DESC LIMIT 1")
            .bind(job)
            .fetch_one(pool)
            .await
            .expect("the job ran");
    drift.map_or_else(BTreeMap::new, |drift| {
        serde_json::from_value(drift).expect("drift is {place: {name: count}}")
    })
}

/// How many of the sandbox's contracts carry each `contractState` the documents do not list.
fn undocumented_states(sandbox: &Sandbox) -> BTreeMap<String, u64> {
    let mut states = BTreeMap::new();
    for customer in sandbox.customer_numbers() {
        for contract in sandbox.contract_numbers(&customer) {
            sandbox.update_contract(&customer, &contract, |raw| {
                if let Some(state) = raw["contractState"].as_str() {
                    if !CONTRACT_STATES.contains(&state) {
                        *states.entry(state.to_owned()).or_default() += 1;
                    }
                }
            });
        }
    }
    states
}

fn contracts(sandbox: &Sandbox) -> u64 {
    sandbox
        .customer_numbers()
        .iter()
        .map(|c| sandbox.contract_numbers(c).len() as u64)
        .sum()
}

#[tokio::test]
async fn rabot_runs_record_the_fields_states_and_fees_the_documents_do_not_list() {
    let sandbox = start_sandbox(small_sandbox(6)).await;
    let db = TestDb::new().await;
    let customers = sandbox.customer_numbers();
    let (first, second) = (&customers[0], &customers[1]);
    let contract = sandbox.contract_numbers(first)[0].clone();
    assert!(sandbox.update_customer(first, |raw| raw["loyaltyTier"] = "gold".into()));
    assert!(sandbox.update_contract(first, &contract, |raw| {
        raw["contractState"] = "Paused".into();
        raw["greenCertificate"] = true.into();
    }));
    let expected_states = undocumented_states(&sandbox);
    assert_eq!(expected_states.get("Paused"), Some(&1));

    let settings = settings(&sandbox, &db, &[]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let drift = last_drift(&db.pool, "rabot_mirror").await;
    assert_eq!(drift["contract.contractState"], expected_states);
    assert_eq!(drift["customer"]["loyaltyTier"], 1);
    assert_eq!(drift["contract"]["greenCertificate"], 1);
    // The sandbox sends `createdAt`, which the documents do not list, on every row.
    assert_eq!(
        drift["customer"]["createdAt"],
        sandbox.customer_numbers().len() as u64
    );
    assert_eq!(drift["contract"]["createdAt"], contracts(&sandbox));
    for (place, known) in [("customer", CUSTOMER_FIELDS), ("contract", CONTRACT_FIELDS)] {
        for name in drift[place].keys() {
            assert!(
                !known.contains(&name.as_str()),
                "{place}.{name} is documented"
            );
        }
    }
    // The unknown state is stored as sent: drift is a report, not a filter.
    let state: String =
        sqlx::query_scalar("SELECT state FROM mirror.rabot_contracts WHERE contract_number = $1")
            .bind(&contract)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, "Paused");

    // A fee RABOT added: stored like the others, and reported.
    let second_contract = sandbox.contract_numbers(second)[0].clone();
    assert!(sandbox.add_rabot_cost_component(second, &second_contract, "solarBonus", -2.5));
    let periods = sandbox
        .rabot_costs(second, &second_contract)
        .expect("the contract has costs")
        .len() as u64;
    let (status, _, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let drift = last_drift(&db.pool, "rabot_costs").await;
    assert_eq!(
        drift,
        BTreeMap::from([(
            "cost component".to_owned(),
            BTreeMap::from([("solarBonus".to_owned(), periods)])
        )]),
        "only the new fee is drift"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contract_cost_components WHERE component = 'solarBonus'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored as u64, periods);

    // `status` shows what the last 7 days saw, and forgets what is older.
    let env = sandbox_env(&sandbox, &db.url);
    let output = run_binary(&["status", "--json"], env.clone()).await;
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let seen = report["drift"].as_array().expect("a drift list");
    let find = |job: &str, place: &str, name: &str| {
        seen.iter()
            .find(|s| s["job"] == job && s["place"] == place && s["name"] == name)
            .cloned()
    };
    let paused = find("rabot_mirror", "contract.contractState", "Paused").expect("Paused");
    assert_eq!(
        (paused["items"].as_i64(), paused["runs"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(find("rabot_costs", "cost component", "solarBonus").is_some());
    let output = run_binary(&["status"], env.clone()).await;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("rabot_mirror contract.contractState: Paused (1 items in 1 runs"),
        "{table}"
    );

    sqlx::query("UPDATE sync.runs SET started_at = started_at - interval '8 days', finished_at = finished_at - interval '8 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    let output = run_binary(&["status", "--json"], env).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["drift"], serde_json::json!([]), "older than 7 days");
}

#[tokio::test]
async fn an_energyzero_phase_added_after_the_documents_is_drift_and_stored_as_sent() {
    let mut options = SandboxOptions {
        customers: 0,
        ..SandboxOptions::default()
    };
    options.energyzero.users = 2;
    options.energyzero.new_phases = vec!["PAUSED".to_owned()];
    let sandbox = start_sandbox(options).await;
    let db = TestDb::new().await;
    let users = sandbox.energyzero_user_ids();
    let contract = sandbox.energyzero_contract_ids(&users[0])[0].clone();
    assert!(
        sandbox
            .energyzero_update_contract(&users[0], &contract, |raw| raw["phase"] = "PAUSED".into())
    );

    let mut env = crate::energyzero::ez_env(&sandbox, &db.url, &users);
    env.push(("PARTNER_SYNC__RABOT__ENABLED".into(), "false".into()));
    let settings = partner_sync::settings::Settings::load_from(None, env).unwrap();
    let (status, _, error) = run_pass(
        JobName::EnergyzeroMirror,
        Arc::new(EnergyzeroMirror::new(&settings).unwrap()),
        &db.pool,
    )
    .await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let drift = last_drift(&db.pool, "energyzero_mirror").await;
    assert_eq!(
        drift,
        BTreeMap::from([(
            "contract.phase".to_owned(),
            BTreeMap::from([("PAUSED".to_owned(), 1)])
        )])
    );
    let phase: String =
        sqlx::query_scalar("SELECT phase FROM mirror.energyzero_contracts WHERE contract_id = $1")
            .bind(&contract)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(phase, "PAUSED");
}

/// The fees the code treats as known are the documented ones (as the sandbox, written from the
/// documents, serves them) and exactly the fee groups of the view finance read.
#[tokio::test]
async fn the_known_fees_are_the_documented_ones_and_the_views_columns() {
    let documented: Vec<&str> = rabot_documented_cost_components().collect();
    assert_eq!(FEES, documented.as_slice());

    let db = TestDb::new().await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'mirror' AND table_name = 'rabot_contract_costs'
            AND column_name LIKE '%\\_value'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let snake = |fee: &str| {
        fee.chars().fold(String::new(), |mut out, c| {
            if c.is_ascii_uppercase() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            out
        })
    };
    let mut expected: Vec<String> = FEES
        .iter()
        .map(|fee| format!("{}_value", snake(fee)))
        .collect();
    expected.sort();
    let mut columns = columns;
    columns.sort();
    assert_eq!(columns, expected);
}

/// The daemon counts drift in a metric on every run, but warns about a name once a day.
#[tokio::test]
async fn the_daemon_counts_every_run_but_warns_once_per_name_per_day() {
    let sandbox = start_sandbox(small_sandbox(4)).await;
    let db = TestDb::new().await;
    let customer = sandbox.customer_numbers()[0].clone();
    let contract = sandbox.contract_numbers(&customer)[0].clone();
    sandbox.update_contract(&customer, &contract, |raw| {
        raw["contractState"] = "Paused".into()
    });

    let mut env = sandbox_env(&sandbox, &db.url);
    env.extend(
        [
            ("PARTNER_SYNC__DAEMON__RUN_ON_START", "true"),
            ("PARTNER_SYNC__RABOT__SCHEDULE", NEVER),
            ("PARTNER_SYNC__RABOT__COSTS_SCHEDULE", NEVER),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let daemon = Daemon::run(env);
    let base = daemon.logged_address("operations server listening").await;
    let mirror_runs =
        "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'succeeded'";
    assert!(
        wait_for(&db, mirror_runs, 1, Duration::from_secs(60)).await,
        "{}",
        daemon.log()
    );
    daemon.signal(Signal::Usr1);
    assert!(
        wait_for(&db, mirror_runs, 2, Duration::from_secs(60)).await,
        "{}",
        daemon.log()
    );

    let drift_total = || async {
        scrape(&base)
            .await
            .into_iter()
            .find(|s| {
                s.name == partner_sync::metrics::SCHEMA_DRIFT
                    && s.labels.get("partner").map(String::as_str) == Some("rabot")
                    && s.labels.get("place").map(String::as_str) == Some("contract.contractState")
            })
            .map(|s| s.value)
    };
    let per_run = undocumented_states(&sandbox).values().sum::<u64>() as f64;
    let started = Instant::now();
    while drift_total().await != Some(2.0 * per_run) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?} != {}",
            drift_total().await,
            2.0 * per_run
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = daemon.log();
    let warnings = |name: &str| {
        log.lines()
            .filter(|line| line.contains("typed columns do not know"))
            .filter(|line| line.contains(&format!(r#""name":"{name}""#)))
            .count()
    };
    assert_eq!(warnings("Paused"), 1, "{log}");
    assert_eq!(
        warnings("createdAt"),
        2,
        "one per place (customer, contract): {log}"
    );
}
