//! The RABOT contract costs job end to end: sandbox over HTTP → runner → PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use partner_sync::events::TriggerCause;
use partner_sync::events::dispatcher::{JobRunner, RunOutcome};
use partner_sync::jobs::JobName;
use partner_sync::partners::rabot::RabotClient;
use partner_sync::partners::rabot::costs_job::RabotCosts;
use partner_sync::settings::Settings;
use partner_sync::store::audit::Actor;
use partner_sync::store::runs::{RunCounts, RunStatus};
use partner_sync_sandbox::{Sandbox, rabot_documented_cost_components};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Mirrors the sandbox's customers and contracts, the costs job's input.
async fn mirrored(sandbox: &Sandbox, db: &TestDb) -> Settings {
    let settings = settings(sandbox, db, &[]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    settings
}

fn valid_from(period: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(period["validFrom"].as_str().expect("validFrom"))
        .expect("a zoned date-time")
        .with_timezone(&Utc)
}

/// A component as the tests compare it: contract, period start, name, value, unit main, unit
/// per, unit text.
type ComponentRow = (
    String,
    DateTime<Utc>,
    String,
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Every component the sandbox serves for `contracts`.
fn served_components(sandbox: &Sandbox, contracts: &[(String, String)]) -> BTreeSet<String> {
    let mut rows = BTreeSet::new();
    for (customer, contract) in contracts {
        for period in sandbox.rabot_costs(customer, contract).expect("costs") {
            for (name, component) in period.as_object().expect("object") {
                if name == "validFrom" {
                    continue;
                }
                rows.insert(format!(
                    "{contract} {} {name} {} {} {} {}",
                    valid_from(&period).to_rfc3339(),
                    component["value"].as_f64().expect("a number"),
                    component["unit"]["main"].as_str().expect("main"),
                    component["unit"]["per"].as_str().expect("per"),
                    component["unitText"].as_str().expect("unitText"),
                ));
            }
        }
    }
    rows
}

async fn stored_components(pool: &PgPool) -> BTreeSet<String> {
    let rows: Vec<ComponentRow> = sqlx::query_as(
        "SELECT contract_number, valid_from, component, value::float8, unit_main, unit_per, unit_text
           FROM mirror.rabot_contract_cost_components",
    )
    .fetch_all(pool)
    .await
    .expect("components");
    rows.into_iter()
        .map(|(contract, from, name, value, main, per, text)| {
            format!(
                "{contract} {} {name} {} {} {} {}",
                from.to_rfc3339(),
                value.expect("a value"),
                main.unwrap_or_default(),
                per.unwrap_or_default(),
                text.unwrap_or_default(),
            )
        })
        .collect()
}

fn period_count(sandbox: &Sandbox, contracts: &[(String, String)]) -> i64 {
    contracts
        .iter()
        .map(|(customer, contract)| {
            sandbox
                .rabot_costs(customer, contract)
                .expect("costs")
                .len() as i64
        })
        .sum()
}

const COMPONENT_VERSIONS: &str =
    "SELECT count(*) FROM mirror.rabot_contract_cost_components_versions";
const PERIODS: &str = "SELECT count(*) FROM mirror.rabot_contract_costs_periods";

#[tokio::test]
async fn a_first_pass_stores_every_component_of_every_period_and_a_second_changes_nothing() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(6)).await;
    let settings = mirrored(&sandbox, &db).await;
    let contracts = sandbox_contracts(&sandbox);

    let (status, first, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(error, None);
    let expected = served_components(&sandbox, &contracts);
    let periods = period_count(&sandbox, &contracts);
    assert_eq!(stored_components(&db.pool).await, expected);
    assert_eq!(count(&db.pool, PERIODS).await, periods);
    assert_eq!(first.inserted, periods + expected.len() as i64);
    assert_eq!(first.fetched, first.inserted);
    assert_eq!(
        (first.updated, first.unchanged, first.failed, first.pages),
        (0, 0, 0, contracts.len() as i32)
    );
    assert!(first.requests >= contracts.len() as i64, "{first:?}");

    // The payload is the period exactly as RABOT sent it.
    let (customer, contract) = &contracts[0];
    let served = sandbox.rabot_costs(customer, contract).expect("costs");
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM mirror.rabot_contract_costs_periods
          WHERE contract_number = $1 AND valid_from = $2",
    )
    .bind(contract)
    .bind(valid_from(&served[0]))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(payload, served[0]);

    // xmin changes whenever a row is rewritten, so equal xmins prove nothing was written.
    let row_versions =
        "SELECT string_agg(xmin::text, ',' ORDER BY contract_number, valid_from, component)
                          FROM mirror.rabot_contract_cost_components";
    let before: String = sqlx::query_scalar(row_versions)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let versions = count(&db.pool, COMPONENT_VERSIONS).await;
    assert_eq!(versions, expected.len() as i64);

    let (status, second, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((second.inserted, second.updated), (0, 0));
    assert_eq!(second.unchanged, first.inserted);
    let after: String = sqlx::query_scalar(row_versions)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(count(&db.pool, COMPONENT_VERSIONS).await, versions);
}

#[tokio::test]
async fn a_changed_value_updates_that_row_alone_and_writes_a_version() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let settings = mirrored(&sandbox, &db).await;
    let (status, first, _) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);

    let (customer, contract) = sandbox_contracts(&sandbox)[1].clone();
    let mut changed_from = None;
    assert!(sandbox.update_rabot_costs(&customer, &contract, |periods| {
        periods[0]["variableGridFee"]["value"] = Value::from(42.125);
        changed_from = Some(valid_from(&periods[0]));
    }));
    let changed_from = changed_from.expect("a period changed");

    let (status, second, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    // The period (its payload changed) and the one component.
    assert_eq!((second.inserted, second.updated), (0, 2));
    assert_eq!(second.unchanged, first.inserted - 2);
    let value: f64 = sqlx::query_scalar(
        "SELECT value::float8 FROM mirror.rabot_contract_cost_components
          WHERE contract_number = $1 AND valid_from = $2 AND component = 'variableGridFee'",
    )
    .bind(&contract)
    .bind(changed_from)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(value, 42.125);

    // Two versions of that component, the old one closed; every other component has one.
    let history: Vec<(String, Option<f64>, bool)> = sqlx::query_as(
        "SELECT component, value::float8, recorded_to IS NULL
           FROM mirror.rabot_contract_cost_components_versions
          WHERE contract_number = $1 AND valid_from = $2 AND component = 'variableGridFee'
          ORDER BY recorded_from",
    )
    .bind(&contract)
    .bind(changed_from)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        (history[0].2, history[1].1, history[1].2),
        (false, Some(42.125), true)
    );
    let with_history = count(
        &db.pool,
        "SELECT count(*) FROM (SELECT 1 FROM mirror.rabot_contract_cost_components_versions
                                GROUP BY contract_number, valid_from, component
                               HAVING count(*) > 1) AS changed",
    )
    .await;
    assert_eq!(with_history, 1);
    let period_versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contract_costs_periods_versions
          WHERE contract_number = $1 AND valid_from = $2",
    )
    .bind(&contract)
    .bind(changed_from)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(period_versions, 2);
}

#[tokio::test]
async fn data_as_one_object_and_an_unknown_component_are_stored() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let settings = mirrored(&sandbox, &db).await;
    let contracts = sandbox_contracts(&sandbox);
    let (customer, contract) = contracts[0].clone();
    assert!(sandbox.add_rabot_cost_component(&customer, &contract, "heatPumpBonus", -2.5));
    sandbox.set_rabot_costs_as_object(true);

    let (status, counts, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.failed, 0);
    // One object per contract: its latest period alone.
    assert_eq!(count(&db.pool, PERIODS).await, contracts.len() as i64);
    let latest: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT contract_number, valid_from FROM mirror.rabot_contract_costs_periods ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (number, from) in &latest {
        let (customer, _) = contracts
            .iter()
            .find(|(_, k)| k == number)
            .expect("a contract");
        let served = sandbox.rabot_costs(customer, number).expect("costs");
        assert_eq!(
            *from,
            valid_from(served.last().expect("a period")),
            "{number}"
        );
    }

    let bonus: Vec<(String, Option<f64>, Option<String>)> = sqlx::query_as(
        "SELECT contract_number, value::float8, unit_text FROM mirror.rabot_contract_cost_components
          WHERE component = 'heatPumpBonus'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        bonus,
        [(contract.clone(), Some(-2.5), Some("€/Monat".to_owned()))]
    );
    let components = count(
        &db.pool,
        "SELECT count(DISTINCT component) FROM mirror.rabot_contract_cost_components",
    )
    .await;
    assert_eq!(
        components,
        rabot_documented_cost_components().count() as i64 + 1
    );
}

#[tokio::test]
async fn a_period_the_partner_stops_returning_is_kept() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(8)).await;
    let settings = mirrored(&sandbox, &db).await;
    let contracts = sandbox_contracts(&sandbox);
    let (status, _, _) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);
    let before = stored_components(&db.pool).await;
    let periods = count(&db.pool, PERIODS).await;

    let (customer, contract) = contracts
        .iter()
        .find(|(customer, contract)| {
            sandbox
                .rabot_costs(customer, contract)
                .expect("costs")
                .len()
                > 1
        })
        .expect("some contract has two periods or more")
        .clone();
    let oldest = valid_from(&sandbox.rabot_costs(&customer, &contract).expect("costs")[0]);
    assert!(sandbox.drop_rabot_cost_period(&customer, &contract));

    let (status, counts, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!((counts.inserted, counts.updated, counts.deleted), (0, 0, 0));
    assert_eq!(count(&db.pool, PERIODS).await, periods);
    assert_eq!(stored_components(&db.pool).await, before);
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contract_cost_components
          WHERE contract_number = $1 AND valid_from = $2",
    )
    .bind(&contract)
    .bind(oldest)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(kept, rabot_documented_cost_components().count() as i64);
}

/// `baseServiceFee` → `base_service_fee`.
fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

#[tokio::test]
async fn the_view_shows_the_documented_fees_as_columns() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(4)).await;
    let settings = mirrored(&sandbox, &db).await;
    let contracts = sandbox_contracts(&sandbox);
    let (status, _, _) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);

    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_contract_costs").await,
        period_count(&sandbox, &contracts)
    );
    // Finance reads it through the reader role.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET ROLE partner_sync_reader")
        .execute(&mut *conn)
        .await
        .unwrap();
    let (customer, contract) = &contracts[2];
    for period in sandbox.rabot_costs(customer, contract).expect("costs") {
        let row: Value = sqlx::query_scalar(
            "SELECT to_jsonb(v) FROM mirror.rabot_contract_costs v
              WHERE contract_number = $1 AND valid_from = $2",
        )
        .bind(contract)
        .bind(valid_from(&period))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        for fee in rabot_documented_cost_components() {
            let column = snake_case(fee);
            let served = &period[fee];
            assert_eq!(
                row[format!("{column}_value")].as_f64(),
                served["value"].as_f64(),
                "{fee}"
            );
            assert_eq!(
                row[format!("{column}_unit_main")],
                served["unit"]["main"],
                "{fee}"
            );
            assert_eq!(
                row[format!("{column}_unit_per")],
                served["unit"]["per"],
                "{fee}"
            );
            assert_eq!(
                row[format!("{column}_unit_text")],
                served["unitText"],
                "{fee}"
            );
        }
    }
    assert_eq!(snake_case("p19Fee"), "p19_fee");
}

#[tokio::test]
async fn a_contract_gone_at_rabot_fails_only_that_item() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(4)).await;
    let settings = mirrored(&sandbox, &db).await;
    let (customer, gone) = sandbox_contracts(&sandbox)[3].clone();
    // Still live in the mirror, gone at RABOT: its costs answer 404.
    assert!(sandbox.remove_contract(&customer, &gone));
    let remaining = sandbox_contracts(&sandbox);

    let (status, counts, error) = costs_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.failed, 1);
    let error = error.expect("the run names the failed contract");
    assert!(
        error.contains(&gone) && error.starts_with("1 of 8 contracts failed"),
        "{error}"
    );
    let failures: Vec<(String, String)> =
        sqlx::query_as("SELECT item, error FROM sync.run_failures")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, format!("contract {customer}/{gone}"));
    assert!(failures[0].1.contains("404"), "{failures:?}");
    // Every other contract's costs are stored.
    assert_eq!(
        stored_components(&db.pool).await,
        served_components(&sandbox, &remaining)
    );
    assert_eq!(
        count(&db.pool, PERIODS).await,
        period_count(&sandbox, &remaining)
    );
}

#[tokio::test]
async fn shutdown_stops_the_run_between_contracts_never_inside_one() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(8)).await;
    let settings = settings(&sandbox, &db, &[("PARTNER_SYNC__RABOT__CONCURRENCY", "1")]);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let contracts = sandbox_contracts(&sandbox);
    // Each costs answer now takes 100 ms: the run lasts well over a second.
    sandbox.set_latency(std::time::Duration::from_millis(100));

    let client = RabotClient::new(&settings.rabot, &settings.http).expect("client builds");
    let runner = JobRunner::new(
        JobName::RabotCosts,
        Arc::new(RabotCosts::new(&settings, client)),
        db.pool.clone(),
        std::time::Duration::from_secs(5),
    );
    let cancel = CancellationToken::new();
    let run = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let (counts, _) = watch::channel(RunCounts::default());
            runner
                .run_once(TriggerCause::Cli, Actor::Scheduler, &cancel, counts)
                .await
        })
    };
    let stored = "SELECT count(DISTINCT contract_number) FROM mirror.rabot_contract_costs_periods";
    assert!(wait_for(&db, stored, 1, std::time::Duration::from_secs(20)).await);
    cancel.cancel();
    let outcome = run
        .await
        .expect("the run ends")
        .expect("the run is recorded");
    let RunOutcome::Finished { status, .. } = outcome else {
        panic!("nothing else holds the lock");
    };
    assert_eq!(status, RunStatus::Cancelled);

    let done = count(&db.pool, stored).await;
    assert!(
        (1..contracts.len() as i64).contains(&done),
        "{done} of {} contracts",
        contracts.len()
    );
    // Every contract stored is whole: all its periods, all their components.
    let stored_contracts: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT contract_number FROM mirror.rabot_contract_costs_periods",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let whole: Vec<(String, String)> = contracts
        .into_iter()
        .filter(|(_, contract)| stored_contracts.contains(contract))
        .collect();
    assert_eq!(whole.len(), stored_contracts.len());
    assert_eq!(
        stored_components(&db.pool).await,
        served_components(&sandbox, &whole)
    );
    assert_eq!(
        count(&db.pool, PERIODS).await,
        period_count(&sandbox, &whole)
    );
}
