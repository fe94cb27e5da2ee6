//! No Rabobank grant is lost, whatever the timing: two real daemons rotate twenty grants every
//! second against the sandbox bank (single-use refresh tokens, reuse detection), while they are
//! stopped with SIGTERM or killed with SIGKILL at random moments, and on purpose inside the
//! window between the bank's rotation and our save (the bank holds its answer back meanwhile).
//!
//! Its own test binary: it runs for tens of seconds and restarts daemons many times.

mod common;

use std::time::{Duration, Instant};

use rand::Rng as _;

use common::bank::{Bank, bank_processed, rabobank_env, refresh_marks};
use common::{Daemon, count, small_sandbox};

const GRANTS: usize = 20;
const ROTATIONS: i64 = 200;
/// Every answer comes this late: each refresh has a window between rotation and save.
const ANSWER_DELAY: Duration = Duration::from_millis(15);
/// The answer delay while the test aims a signal into the window.
const WINDOW: Duration = Duration::from_millis(700);
/// The whole test; it usually needs well under a minute.
const LIMIT: Duration = Duration::from_secs(180);

/// The replica whose process runs the rotation now (`sync.runs.host` ends with its pid).
async fn rotating_replica(bank: &Bank, replicas: &[Daemon; 2]) -> Option<usize> {
    let host: Option<String> = sqlx::query_scalar(
        "SELECT host FROM sync.runs WHERE job = 'rabobank_token_rotation' AND status = 'running'
          ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&bank.db.pool)
    .await
    .unwrap();
    let pid: u32 = host?.rsplit(':').next()?.parse().ok()?;
    replicas.iter().position(|r| r.pid() == Some(pid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stopped_and_killed_at_random_lose_no_grant_and_reuse_no_token() {
    let started = Instant::now();
    let bank = Bank::start(small_sandbox(1)).await;
    let mut ids = Vec::new();
    for i in 0..GRANTS {
        ids.push(bank.connect(&format!("chaos-{i}")).await);
    }
    bank.sandbox.set_rabobank_token_answer_delay(ANSWER_DELAY);
    let mut env = rabobank_env(
        &bank.sandbox,
        &bank.db.url,
        &bank.settings.server.public_url,
    );
    env.extend(
        [
            // Every second, every grant due.
            ("PARTNER_SYNC__RABOBANK__SCHEDULE", "* * * * * *"),
            ("PARTNER_SYNC__RABOBANK__ROTATE_BEFORE", "400days"),
            ("PARTNER_SYNC__RABOBANK__CONSENT_API_BASE_URL", ""),
            // Far shorter than WINDOW: a SIGTERM there abandons the run mid-refresh.
            ("PARTNER_SYNC__DAEMON__SHUTDOWN_GRACE", "100ms"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut replicas = [
        Daemon::run_ready(env.clone()).await,
        Daemon::run_ready(env.clone()).await,
    ];
    let rotations = "SELECT coalesce(sum(refresh_count), 0)::bigint FROM sync.oauth_grants";

    let mut rng = rand::rng();
    let (mut sigterms, mut sigkills, mut aimed) = (0, 0, 0);
    let mut round = 0;
    while count(&bank.db.pool, rotations).await < ROTATIONS || round < 4 {
        assert!(started.elapsed() < LIMIT, "too slow: {round} rounds");
        // The first rounds aim a SIGTERM and a SIGKILL into the window, then chance decides.
        // Kills stop at half the grants: each kill inside the window leaves a grant in doubt
        // (by design, never refreshed again automatically), and on a slow machine unbounded
        // kills would leave none to rotate.
        let hard = match round {
            0 | 2 => false,
            1 | 3 => true,
            _ => sigkills < GRANTS / 2 && rng.random_bool(0.3),
        };
        let aim = round < 4 || rng.random_bool(0.5);
        round += 1;
        let mut victim = rng.random_range(0..2);
        if aim {
            bank.sandbox.set_rabobank_token_answer_delay(WINDOW);
            let processed = bank.sandbox.rabobank_stats().refreshes;
            if bank_processed(&bank.sandbox, processed + 1, Duration::from_secs(10)).await {
                if let Some(rotating) = rotating_replica(&bank, &replicas).await {
                    victim = rotating;
                    aimed += 1;
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..900))).await;
        }
        let replica = &mut replicas[victim];
        if hard {
            replica.kill().await;
            sigkills += 1;
        } else {
            // A stop that takes longer is ended with SIGKILL, which is not a success.
            let exited = replica.stop(Duration::from_secs(30)).await;
            let logged = replica.log();
            assert!(
                exited.status.success(),
                "a SIGTERM stop is bounded: {logged}"
            );
            assert!(!logged.contains("did not finish in time"), "{logged}");
            sigterms += 1;
        }
        bank.sandbox.set_rabobank_token_answer_delay(ANSWER_DELAY);
        *replica = Daemon::run_ready(env.clone()).await;
    }
    for replica in replicas {
        replica.stop_cleanly().await;
    }
    // What a start-up or a rotation would notice: marks whose process is gone.
    partner_sync::partners::rabobank::grants::record_interrupted_refreshes(
        &bank.db.pool,
        &partner_sync::store::audit::Actor::Scheduler,
    )
    .await
    .unwrap();

    let stats = bank.sandbox.rabobank_stats();
    assert_eq!(
        (stats.reuse_detections, stats.invalid_grant_answers),
        (0, 0),
        "{stats:?}"
    );
    assert!(aimed >= 4, "signals aimed into the window: {aimed}");
    let total = count(&bank.db.pool, rotations).await;
    assert!(total >= ROTATIONS, "{total}");
    assert_eq!(
        count(
            &bank.db.pool,
            "SELECT count(*) FROM sync.oauth_grants
              WHERE status <> 'active' OR refresh_started_at IS NOT NULL"
        )
        .await,
        0,
        "no grant needs a new consent, none is left marked in flight"
    );
    let mut in_doubt = 0;
    let mut lost = 0;
    for id in &ids {
        let consent: String =
            sqlx::query_scalar("SELECT consent_id FROM sync.oauth_grants WHERE id = $1")
                .bind(id)
                .fetch_one(&bank.db.pool)
                .await
                .unwrap();
        let at_bank = bank.sandbox.rabobank_grant(&consent).unwrap();
        assert!(!at_bank.revoked);
        let marks = refresh_marks(&bank.db.pool, *id).await;
        let saved = i64::from(marks.refresh_count);
        let rotated = i64::from(at_bank.refresh_count);
        if marks.refresh_in_doubt_since.is_some() {
            // Only a process killed between sending and saving leaves a grant in doubt.
            assert!(marks.refresh_interrupted, "{id}: {marks:?}");
            assert!((saved..=saved + 1).contains(&rotated), "{id}: {marks:?}");
            in_doubt += 1;
            lost += rotated - saved;
        } else {
            assert_eq!(
                rotated, saved,
                "{id}: every rotation the bank made was saved"
            );
        }
    }
    assert!(
        in_doubt <= sigkills,
        "{in_doubt} in doubt after {sigkills} kills"
    );
    assert_eq!(
        u64::try_from(total + lost).unwrap(),
        stats.refreshes,
        "every rotation is saved or belongs to a grant in doubt"
    );
    eprintln!(
        "{total} rotations saved, {round} rounds ({sigterms} SIGTERM, {sigkills} SIGKILL, \
         {aimed} aimed), {in_doubt} grant(s) in doubt ({lost} rotation(s) lost with a kill), \
         {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
