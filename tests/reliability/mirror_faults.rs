//! The RABOT mirror under kill -9 and under a thousand injected faults: it never shows a live
//! customer as deleted, never duplicates a row, and a clean pass afterwards leaves exactly
//! what one clean pass leaves.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use partner_sync::store::runs::RunStatus;
use partner_sync_sandbox::{Deletions, Fault, Sandbox, Tamper, TamperFault};
use rand::Rng as _;
use rand::SeedableRng as _;
use sqlx::PgPool;

use crate::common::*;

/// Everything finance would read of the mirror, less the timestamps: which rows exist, their
/// content, whether they are tombstoned, and how many versions each has.
async fn mirror_image(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        SELECT 'customer ' || c.customer_number || ' ' || encode(c.content_hash, 'hex')
               || ' deleted=' || (c.deleted_at IS NOT NULL)
               || ' versions=' || (SELECT count(*) FROM mirror.rabot_customers_versions v
                                    WHERE v.customer_number = c.customer_number)
          FROM mirror.rabot_customers c
        UNION ALL
        SELECT 'contract ' || k.customer_number || '/' || k.contract_number || ' '
               || encode(k.content_hash, 'hex') || ' deleted=' || (k.deleted_at IS NOT NULL)
               || ' versions=' || (SELECT count(*) FROM mirror.rabot_contracts_versions v
                                    WHERE v.customer_number = k.customer_number
                                      AND v.contract_number = k.contract_number)
          FROM mirror.rabot_contracts k
        ORDER BY 1
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("mirror image")
}

/// Rows the sandbox still serves that the mirror shows as deleted.
async fn live_rows_tombstoned(sandbox: &Sandbox, pool: &PgPool) -> usize {
    let live: HashSet<String> = sandbox.customer_numbers().into_iter().collect();
    let customers = tombstoned_customers(pool).await.intersection(&live).count();
    let live_contracts: HashSet<(String, String)> =
        sandbox_contracts(sandbox).into_iter().collect();
    let tombstoned: Vec<(String, String)> = sqlx::query_as(
        "SELECT customer_number, contract_number FROM mirror.rabot_contracts
          WHERE deleted_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .expect("query");
    customers
        + tombstoned
            .into_iter()
            .filter(|row| live_contracts.contains(row))
            .count()
}

#[tokio::test]
async fn kill_9_at_20_random_points_then_a_clean_pass_equals_one_clean_pass() {
    let sandbox = start_sandbox(small_sandbox(150)).await;
    // A little latency stretches the pass so the kills land all over it.
    sandbox.set_latency(Duration::from_millis(1));

    let reference = TestDb::new().await;
    let started = Instant::now();
    let clean = run_binary(&["sync", "rabot"], sandbox_env(&sandbox, &reference.url)).await;
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let one_pass = started.elapsed();

    let killed = TestDb::new().await;
    let env = sandbox_env(&sandbox, &killed.url);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut kills = 0;
    for _ in 0..20 {
        let mut pass = Daemon::command(&["sync", "rabot"])
            .envs(env.clone())
            .start();
        let at = one_pass.mul_f64(rng.random_range(0.0..1.0));
        tokio::time::sleep(at).await;
        // SIGKILL: no handler, no grace, nothing flushed. A pass that finished first is no kill.
        if pass.kill().await.signal() == Some(libc::SIGKILL) {
            kills += 1;
        }
    }
    let last = run_binary(&["sync", "rabot"], env).await;
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );

    let image = mirror_image(&killed.pool).await;
    assert_eq!(image, mirror_image(&reference.pool).await);
    assert!(
        image
            .iter()
            .all(|row| row.contains("deleted=false") && row.ends_with("versions=1"))
    );
    let runs = count(&killed.pool, "SELECT count(*) FROM sync.runs").await;
    println!(
        "kill -9: {kills} kills over a {one_pass:?} pass, {runs} runs recorded, {} mirrored rows equal to one clean pass",
        image.len()
    );
}

/// One random bad day for the next pass; returns what was planned, for the failure message.
fn plan_faults(sandbox: &Sandbox, rng: &mut impl rand::Rng, customers: &[String]) -> Vec<String> {
    let mut planned = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        let path = if rng.random_bool(0.5) {
            "/customers?".to_owned()
        } else {
            "/contracts".to_owned()
        };
        match rng.random_range(0..6) {
            0 | 1 => {
                let tamper = Tamper::ALL[rng.random_range(0..Tamper::ALL.len())];
                // An empty contract list is a customer without contracts as far as anyone can
                // tell; the campaign empties only the customer list, which the guard watches.
                let path = if tamper == Tamper::EmptyList {
                    "/customers?".to_owned()
                } else {
                    path
                };
                planned.push(format!("{tamper:?} on {path}"));
                sandbox.tamper(TamperFault {
                    path_contains: path,
                    tamper,
                    times: rng.random_range(1..=3),
                });
            }
            2 => {
                let (status, retry_after) = [
                    (429, Some("0")),
                    (429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
                    (429, Some("soon")),
                    (429, None),
                    (503, Some("0")),
                    (502, None),
                    (500, None),
                ][rng.random_range(0..7)];
                planned.push(format!("{status} {retry_after:?} on {path}"));
                sandbox.inject_fault(Fault {
                    path_contains: path,
                    status,
                    retry_after: retry_after.map(str::to_owned),
                    times: rng.random_range(1..=3),
                });
            }
            3 if !customers.is_empty() => {
                let customer = &customers[rng.random_range(0..customers.len())];
                planned.push(format!("404 on {customer}'s contracts"));
                sandbox.inject_fault(Fault {
                    path_contains: format!("/customers/{customer}/contracts"),
                    status: 404,
                    retry_after: None,
                    times: 1,
                });
            }
            // At most 20 of the 300 customers go, so what the faults held back stays within
            // the mass-delete guard (10 % of the mirrored rows) when the clean passes settle it.
            4 if sandbox.deleted_while_listing().len() < 20 => {
                let burst = rng.random_range(1..=4);
                planned.push(format!("deletions of {burst} during the pass"));
                sandbox.delete_customers_while_listing(Deletions {
                    probability: 0.02,
                    burst,
                    total: sandbox.deleted_while_listing().len() + burst,
                    seed: rng.random(),
                });
            }
            _ => {
                planned.push("NUL characters everywhere".to_owned());
                sandbox.tamper(TamperFault {
                    path_contains: "/rabot/partner/v1/".to_owned(),
                    tamper: Tamper::NulInStrings,
                    times: 5,
                });
            }
        }
    }
    planned
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_thousand_injected_faults_never_tombstone_a_live_row_nor_panic() {
    const FAULTS: u64 = 1_000;
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(300)).await;
    let settings = settings(
        &sandbox,
        &db,
        &[
            ("PARTNER_SYNC__RABOT__PAGE_SIZE", "25"),
            ("PARTNER_SYNC__HTTP__BACKOFF_BASE", "2ms"),
            ("PARTNER_SYNC__HTTP__BACKOFF_MAX", "5ms"),
            ("PARTNER_SYNC__HTTP__MAX_RETRY_AFTER", "10ms"),
        ],
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(1_000);
    let (mut passes, mut succeeded, mut failed) = (0, 0, 0);
    let mut rss_after_warmup = 0;
    let started = Instant::now();
    loop {
        let fired = sandbox.stats().injected_faults + sandbox.deleted_while_listing().len() as u64;
        if fired >= FAULTS {
            break;
        }
        let planned = plan_faults(&sandbox, &mut rng, &sandbox.customer_numbers());
        let (status, _, error) = mirror_pass(&settings, &db.pool).await;
        passes += 1;
        match status {
            RunStatus::Succeeded => succeeded += 1,
            RunStatus::Failed => {
                let reason = error.unwrap_or_default();
                assert!(
                    !reason.trim().is_empty(),
                    "failed without a reason: {planned:?}"
                );
                assert!(!reason.contains("panic"), "{reason} after {planned:?}");
                failed += 1;
            }
            RunStatus::Cancelled => panic!("nothing cancelled the pass: {planned:?}"),
        }
        assert_eq!(
            live_rows_tombstoned(&sandbox, &db.pool).await,
            0,
            "after {planned:?}"
        );
        if passes == 20 {
            rss_after_warmup = resident_kib();
        }
    }
    let rss_at_end = resident_kib();

    // Faults spent: two clean passes settle everything the bad days held back.
    sandbox.end_bad_day();
    for _ in 0..2 {
        let (status, _, error) = mirror_pass(&settings, &db.pool).await;
        assert_eq!(status, RunStatus::Succeeded, "{error:?}");
    }
    // Every customer deleted upstream is tombstoned, unless it went before any pass read it.
    let deleted: HashSet<String> = sandbox.deleted_while_listing().into_iter().collect();
    let mirrored: HashSet<String> =
        sqlx::query_scalar("SELECT customer_number FROM mirror.rabot_customers")
            .fetch_all(&db.pool)
            .await
            .expect("query")
            .into_iter()
            .collect();
    assert_eq!(
        tombstoned_customers(&db.pool).await,
        deleted
            .intersection(&mirrored)
            .cloned()
            .collect::<HashSet<_>>()
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM mirror.rabot_customers WHERE deleted_at IS NULL"
        )
        .await as usize,
        sandbox.customer_numbers().len()
    );
    // Memory stays flat: what twenty passes needed is what hundreds need (slack for the
    // allocator and the test's own bookkeeping).
    assert!(
        rss_at_end < rss_after_warmup + 32 * 1024,
        "resident memory grew from {rss_after_warmup} KiB to {rss_at_end} KiB"
    );
    println!(
        "faults: {} ({} bad answers, {} upstream deletions) over {passes} passes ({succeeded} succeeded, {failed} failed with a reason) in {:.1}s; 0 live rows tombstoned, every mirrored deleted customer tombstoned by the clean passes; test process RSS {rss_after_warmup} KiB after 20 passes, {rss_at_end} KiB at the end",
        sandbox.stats().injected_faults + deleted.len() as u64,
        sandbox.stats().injected_faults,
        deleted.len(),
        started.elapsed().as_secs_f64(),
    );
}
