//! The RABOT contract consumption job end to end: sandbox over HTTP → runner → PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use partner_sync::events::TriggerCause;
use partner_sync::events::dispatcher::{JobRunner, RunOutcome};
use partner_sync::jobs::JobName;
use partner_sync::partners::rabot::RabotClient;
use partner_sync::partners::rabot::consumption_job::RabotConsumption;
use partner_sync::settings::Settings;
use partner_sync::store::audit::Actor;
use partner_sync::store::runs::{RunCounts, RunStatus};
use partner_sync_sandbox::{RABOT_UNREADABLE_METRICS_MOMENT, Sandbox, SandboxOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const ROWS: &str = "SELECT count(*) FROM mirror.rabot_contract_consumption";

/// `customers` customers of a sandbox whose client may ask for `role:application`, which
/// reads every customer's metrics.
fn application_sandbox(customers: usize) -> SandboxOptions {
    SandboxOptions {
        granted_scopes: vec!["api:partner".to_owned(), "role:application".to_owned()],
        ..small_sandbox(customers)
    }
}

fn job(settings: &Settings) -> Arc<RabotConsumption> {
    let client = RabotClient::new(&settings.rabot, &settings.http).expect("client builds");
    Arc::new(RabotConsumption::new(settings, client))
}

async fn consumption_pass(
    job: &Arc<RabotConsumption>,
    pool: &PgPool,
) -> (RunStatus, RunCounts, Option<String>) {
    run_pass(JobName::RabotConsumption, job.clone(), pool).await
}

/// Mirrors the sandbox's customers and contracts, the job's input.
async fn mirrored(sandbox: &Sandbox, db: &TestDb, overrides: &[(&str, &str)]) -> Settings {
    let settings = settings(sandbox, db, overrides);
    let (status, _, error) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    settings
}

/// A stored period: contract, start, end, value, state, changed_at.
type Row = (
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<f64>,
    Option<String>,
    DateTime<Utc>,
);

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT contract_number, period_start, period_end, value::float8, value_state, changed_at
           FROM mirror.rabot_contract_consumption
          ORDER BY contract_number, period_start",
    )
    .fetch_all(pool)
    .await
    .expect("rows")
}

/// The `Period.From` of every metrics request the sandbox received since `since`, by contract.
fn asked_from(sandbox: &Sandbox, since: usize) -> BTreeMap<String, DateTime<Utc>> {
    sandbox
        .recent_requests()
        .into_iter()
        .skip(since)
        .filter_map(|line| {
            let target = line.strip_prefix("GET ")?;
            let url = url::Url::parse(&format!("http://sandbox{target}")).ok()?;
            let mut segments: Vec<String> = url.path_segments()?.map(str::to_owned).collect();
            if segments.last().map(String::as_str) != Some("metrics") {
                return None;
            }
            segments.pop();
            let contract = segments.pop()?;
            let from = url
                .query_pairs()
                .find(|(name, _)| name == "Period.From")?
                .1
                .into_owned();
            let from = DateTime::parse_from_rfc3339(&from)
                .ok()?
                .with_timezone(&Utc);
            Some((contract, from))
        })
        .collect()
}

#[tokio::test]
async fn a_first_run_back_fills_and_the_next_reads_only_open_and_look_back_periods() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(application_sandbox(4)).await;
    let settings = mirrored(&sandbox, &db, &[]).await;
    let job = job(&settings);
    // The four newest periods are not Final yet: they, not the look-back, set the next read.
    sandbox.set_rabot_metrics_open_periods(4);

    let since = sandbox.recent_requests().len();
    let (status, first, error) = consumption_pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let stored = rows(&db.pool).await;
    assert!(stored.len() > 20, "{} periods", stored.len());
    assert_eq!(
        (
            first.inserted,
            first.fetched,
            first.updated,
            first.skipped,
            first.failed
        ),
        (stored.len() as i64, stored.len() as i64, 0, 0, 0)
    );
    // Back-filled from the delivery start, but no further back than two years.
    let two_years_ago = Utc::now() - chrono::Duration::days(731);
    let first_reads = asked_from(&sandbox, since);
    assert!(!first_reads.is_empty());
    for (contract, from) in &first_reads {
        assert!(*from >= two_years_ago, "{contract} read from {from}");
    }
    // A contract delivered within those two years is read from its first day's midnight (UTC).
    for (contract, day) in delivery_starts(&db.pool).await {
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        if midnight > two_years_ago + chrono::Duration::days(1) && midnight < Utc::now() {
            assert_eq!(first_reads.get(&contract), Some(&midnight), "{contract}");
        }
    }
    for (contract, start, end, value, _, _) in &stored {
        // Read as UTC (the default), Berlin's midnights are 22:00 or 23:00.
        assert!(matches!(start.hour(), 22 | 23), "{contract} {start}");
        assert!(end > start && value.is_some(), "{contract} {start}");
        assert!(*end > two_years_ago - chrono::Duration::days(31));
    }

    // RABOT corrects every value, Final ones too.
    sandbox.set_rabot_metrics_revision(1);
    sandbox.set_rabot_metrics_open_periods(1);
    let mut by_contract: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in &stored {
        by_contract.entry(row.0.as_str()).or_default().push(row);
    }
    let mut open_beyond_look_back = 0;
    let expected: BTreeMap<String, DateTime<Utc>> = by_contract
        .iter()
        .map(|(contract, periods)| {
            let open = periods
                .iter()
                .find(|row| row.4.as_deref() != Some("Final"))
                .map(|row| row.1);
            let look_back = periods[periods.len().saturating_sub(3)].1;
            if open.is_some_and(|open| open < look_back) {
                open_beyond_look_back += 1;
            }
            let from = open.map_or(look_back, |open| open.min(look_back));
            ((*contract).to_owned(), from)
        })
        .collect();
    assert!(open_beyond_look_back > 0, "{stored:?}");

    let since = sandbox.recent_requests().len();
    let (status, second, error) = consumption_pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let asked = asked_from(&sandbox, since);
    for (contract, from) in &expected {
        assert_eq!(asked.get(contract), Some(from), "{contract}");
    }
    let after = rows(&db.pool).await;
    assert_eq!(after.len(), stored.len());
    let mut reread = 0;
    for (before, now) in stored.iter().zip(&after) {
        assert_eq!((&before.0, before.1), (&now.0, now.1));
        if before.1 < expected[&before.0] {
            // Final and older than the window: not fetched, not touched.
            assert_eq!(before, now);
        } else {
            reread += 1;
        }
    }
    assert_eq!(second.fetched, reread);
    assert_eq!(second.inserted, 0);
    assert!(second.updated > reread / 2, "{second:?}");
    assert_eq!(second.updated + second.unchanged, reread);
    // The corrected periods keep their earlier version.
    let versions = count(
        &db.pool,
        "SELECT count(*) FROM mirror.rabot_contract_consumption_versions",
    )
    .await;
    assert_eq!(versions, stored.len() as i64 + second.updated);

    // Nothing changed since: nothing is written.
    let (status, third, _) = consumption_pass(&job, &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!((third.inserted, third.updated), (0, 0));
    assert_eq!(rows(&db.pool).await, after);
}

async fn delivery_starts(pool: &PgPool) -> Vec<(String, chrono::NaiveDate)> {
    sqlx::query_as(
        "SELECT contract_number, delivery_start FROM mirror.rabot_contracts
          WHERE delivery_start IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_contract_with_nothing_stored_is_read_from_its_delivery_start_within_the_limit() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(application_sandbox(3)).await;
    let settings = mirrored(
        &sandbox,
        &db,
        &[(
            "PARTNER_SYNC__RABOT__CONSUMPTION_BACKFILL_LIMIT",
            "100years",
        )],
    )
    .await;
    let since = sandbox.recent_requests().len();
    let (status, _, error) = consumption_pass(&job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let reads = asked_from(&sandbox, since);
    let deliveries = delivery_starts(&db.pool).await;
    assert!(!deliveries.is_empty());
    for (contract, day) in deliveries {
        // Midnight on the clock of rabot.metrics_timezone (UTC here).
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        assert_eq!(reads.get(&contract), Some(&midnight), "{contract}");
    }
}

/// The counter's value in the process's recorder (0 before its first increment).
fn forbidden_total() -> f64 {
    let name = partner_sync::metrics::RABOT_CONSUMPTION_FORBIDDEN;
    partner_sync::metrics::install()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn contracts_of_customers_who_did_not_link_are_skipped_and_counted_not_failed() {
    let db = TestDb::new().await;
    // role:finance-reporting: customer 7 alone is linked.
    let sandbox = start_sandbox(small_sandbox(8)).await;
    let settings = mirrored(&sandbox, &db, &[]).await;
    let linked = sandbox.customer_numbers()[6].clone();
    let linked_contracts: BTreeSet<String> =
        sandbox.contract_numbers(&linked).into_iter().collect();
    let all = sandbox_contracts(&sandbox).len() as i64;
    let before = forbidden_total();

    let job = job(&settings);
    let (status, counts, error) = consumption_pass(&job, &db.pool).await;
    assert_eq!((status, error), (RunStatus::Succeeded, None));
    let forbidden = all - linked_contracts.len() as i64;
    assert_eq!((counts.skipped, counts.failed), (forbidden, 0));
    assert_eq!(job.last_run_forbidden(), forbidden as u64);
    assert!(forbidden_total() - before >= forbidden as f64);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM sync.run_failures").await,
        0
    );
    let stored: BTreeSet<String> = sqlx::query_scalar(
        "SELECT DISTINCT contract_number FROM mirror.rabot_contract_consumption",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        !stored.is_empty() && stored.is_subset(&linked_contracts),
        "{stored:?}"
    );
}

#[tokio::test]
async fn the_zone_setting_decides_which_instant_a_zoneless_moment_is() {
    let sandbox = start_sandbox(application_sandbox(3)).await;
    let mut starts = Vec::new();
    for zone in ["UTC", "Europe/Berlin"] {
        let db = TestDb::new().await;
        let settings = mirrored(
            &sandbox,
            &db,
            &[("PARTNER_SYNC__RABOT__METRICS_TIMEZONE", zone)],
        )
        .await;
        let (status, _, error) = consumption_pass(&job(&settings), &db.pool).await;
        assert_eq!(status, RunStatus::Succeeded, "{error:?}");
        let read: Vec<(String, DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
            "SELECT contract_number, period_start, payload FROM mirror.rabot_contract_consumption
              ORDER BY contract_number, period_start",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert!(!read.is_empty());
        starts.push(read);
    }
    let (utc, berlin) = (&starts[0], &starts[1]);
    // The Berlin reading begins earlier and may take in one more period at the back-fill edge.
    let berlin_by_moment: BTreeMap<(String, String), DateTime<Utc>> = berlin
        .iter()
        .map(|(contract, start, payload)| {
            let moment = payload["moment"].as_str().expect("moment").to_owned();
            ((contract.clone(), moment), *start)
        })
        .collect();
    let mut compared = 0;
    for (contract, start, payload) in utc {
        let moment = payload["moment"].as_str().expect("moment");
        // "2024-09-13 22:00:00" is 22:00 UTC read as UTC ...
        assert_eq!(start.format("%Y-%m-%d %H:%M:%S").to_string(), moment);
        let Some(in_berlin) = berlin_by_moment.get(&(contract.clone(), moment.to_owned())) else {
            continue;
        };
        // ... and 20:00 or 21:00 UTC read on Berlin's clock.
        let shift = *start - *in_berlin;
        assert!(
            shift == chrono::Duration::hours(1) || shift == chrono::Duration::hours(2),
            "{contract} {moment}: {shift}"
        );
        compared += 1;
    }
    assert!(compared + 3 >= utc.len(), "{compared} of {}", utc.len());
}

#[tokio::test]
async fn unreadable_records_are_skipped_and_counted_and_string_values_read() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(application_sandbox(3)).await;
    let settings = mirrored(&sandbox, &db, &[]).await;
    sandbox.set_rabot_metrics_unreadable_record(true);
    sandbox.set_rabot_metrics_values_as_strings(true);

    let (status, counts, error) = consumption_pass(&job(&settings), &db.pool).await;
    assert_eq!((status, error), (RunStatus::Succeeded, None));
    let with_rows = count(
        &db.pool,
        "SELECT count(DISTINCT contract_number) FROM mirror.rabot_contract_consumption",
    )
    .await;
    assert!(with_rows > 0);
    // One unreadable record in every answer that had records.
    assert_eq!((counts.skipped, counts.failed), (with_rows, 0));
    assert_eq!(counts.inserted, count(&db.pool, ROWS).await);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_contract_consumption
              WHERE value IS NULL OR payload ->> 'value' IS NULL"
        )
        .await,
        0
    );
    let unreadable: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mirror.rabot_contract_consumption WHERE payload ->> 'moment' = $1",
    )
    .bind(RABOT_UNREADABLE_METRICS_MOMENT)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unreadable, 0);
}

#[tokio::test]
async fn the_parameter_names_are_settings_and_every_parameter_is_sent() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(application_sandbox(1)).await;
    let settings = mirrored(
        &sandbox,
        &db,
        &[
            ("PARTNER_SYNC__RABOT__CONSUMPTION_INTERVAL", "Daily"),
            ("PARTNER_SYNC__RABOT__CONSUMPTION_BACKFILL_LIMIT", "10days"),
            ("PARTNER_SYNC__RABOT__METRIC_TYPE_PARAMETER", "Type.Metric"),
        ],
    )
    .await;
    let since = sandbox.recent_requests().len();
    let (status, _, error) = consumption_pass(&job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    let sent: Vec<String> = sandbox
        .recent_requests()
        .into_iter()
        .skip(since)
        .filter(|line| line.contains("/metrics?"))
        .collect();
    assert!(!sent.is_empty());
    for line in &sent {
        for part in [
            "Period.From=",
            "Period.To=",
            "Interval=Daily",
            "Type.Metric=Consumption",
            "ValueType=Actual",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }
    let intervals: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT period_interval FROM mirror.rabot_contract_consumption",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(intervals.iter().all(|i| i == "Daily"), "{intervals:?}");
    assert!(count(&db.pool, ROWS).await <= 2 * 11);
}

#[tokio::test]
async fn shutdown_stops_the_run_between_contracts_never_inside_one() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(application_sandbox(8)).await;
    let settings = mirrored(&sandbox, &db, &[("PARTNER_SYNC__RABOT__CONCURRENCY", "1")]).await;
    sandbox.set_latency(std::time::Duration::from_millis(100));

    let runner = JobRunner::new(
        JobName::RabotConsumption,
        job(&settings),
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
    let stored = "SELECT count(DISTINCT contract_number) FROM mirror.rabot_contract_consumption";
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
    let partial = rows(&db.pool).await;
    let done = count(&db.pool, stored).await;
    assert!(done < sandbox_contracts(&sandbox).len() as i64, "{done}");

    // A whole run afterwards adds only the contracts not stored: every stored one was whole.
    sandbox.set_latency(std::time::Duration::ZERO);
    let (status, counts, error) = consumption_pass(&job(&settings), &db.pool).await;
    assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    assert_eq!(counts.updated, 0);
    let complete = rows(&db.pool).await;
    let partial_contracts: BTreeSet<&String> = partial.iter().map(|row| &row.0).collect();
    let complete_of_those: Vec<&Row> = complete
        .iter()
        .filter(|row| partial_contracts.contains(&row.0))
        .collect();
    assert_eq!(complete_of_those, partial.iter().collect::<Vec<_>>());
}
