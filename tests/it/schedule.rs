//! Cron occurrences claimed across replicas on real PostgreSQL: the claim is keyed by the
//! occurrence the schedule names, so replicas whose clocks disagree by up to 30 s, and ticks
//! that fire a few milliseconds before their second turns, claim each occurrence exactly once.

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use partner_sync::events::schedule::{claim_tick, parse_cron};
use partner_sync::jobs::JobName;

use crate::common::*;

const JOB: JobName = JobName::RabotMirror;

/// The schedule's next occurrence from now: claims older than a day are cleared as they go.
fn next_occurrence(cron: &croner::Cron) -> DateTime<Utc> {
    cron.find_next_occurrence(&Utc::now().trunc_subsecs(0), false)
        .unwrap()
}

/// A replica whose clock is `offset` ahead of the true time.
struct Replica {
    host: &'static str,
    offset: Duration,
}

#[tokio::test]
async fn replicas_with_skewed_clocks_claim_each_occurrence_once() {
    let db = TestDb::new().await;
    let cron = parse_cron("0 * * * * *").unwrap();
    let replicas = [
        Replica {
            host: "on-time",
            offset: Duration::zero(),
        },
        Replica {
            host: "ahead",
            offset: Duration::seconds(30),
        },
        Replica {
            host: "behind",
            offset: Duration::milliseconds(-29_750),
        },
    ];
    // How far from the occurrence each replica's scheduler wakes, by its own clock: a few
    // milliseconds early, on the dot, or late (the scheduler looks every 500 ms).
    let wake_ms: [[i64; 3]; 5] = [
        [-5, 10, 480],
        [0, -1, 20],
        [730, -3, 0],
        [12, 490, -8],
        [-2, -2, -2],
    ];
    let first = next_occurrence(&cron);
    let mut ticks = Vec::new();
    for (minute, wakes) in wake_ms.iter().enumerate() {
        let occurrence = first + Duration::minutes(minute as i64);
        for (replica, wake) in replicas.iter().zip(wakes) {
            let local = occurrence + Duration::milliseconds(*wake);
            // The true moment it fires: a replica ahead fires first, in real time.
            ticks.push((local - replica.offset, local, replica.host, occurrence));
        }
    }
    ticks.sort_by_key(|tick| tick.0);
    let mut winners = Vec::new();
    for (_, local, host, occurrence) in ticks {
        if claim_tick(&db.pool, JOB, &cron, local, host).await.unwrap() {
            winners.push((occurrence, host));
        }
    }
    // One claim per occurrence, by the replica whose clock reached it first in real time.
    let expected: Vec<_> = (0..wake_ms.len())
        .map(|minute| (first + Duration::minutes(minute as i64), "ahead"))
        .collect();
    assert_eq!(winners, expected);
    let claimed: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT tick_at, claimed_by FROM sync.schedule_ticks WHERE job = $1 ORDER BY tick_at",
    )
    .bind(JOB.as_str())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(at, host)| (at, host.to_owned()))
        .collect();
    assert_eq!(claimed, expected);
}

#[tokio::test]
async fn a_tick_just_before_the_second_is_the_occurrence_after_it() {
    let db = TestDb::new().await;
    let cron = parse_cron("0 * * * * *").unwrap();
    // hh:mm:59.995 on one replica and hh:mm+1:00.010 on another: one occurrence, hh:mm+1:00.
    let occurrence = next_occurrence(&cron);
    let early = occurrence - Duration::milliseconds(5);
    let late = occurrence + Duration::milliseconds(10);
    assert!(claim_tick(&db.pool, JOB, &cron, early, "a").await.unwrap());
    assert!(!claim_tick(&db.pool, JOB, &cron, late, "b").await.unwrap());
    // Another job's occurrence at the same time is its own.
    assert!(
        claim_tick(&db.pool, JobName::RabotLinkMirror, &cron, late, "b")
            .await
            .unwrap()
    );
    let claimed: Vec<(DateTime<Utc>, String)> =
        sqlx::query_as("SELECT tick_at, claimed_by FROM sync.schedule_ticks WHERE job = $1")
            .bind(JOB.as_str())
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(claimed, vec![(occurrence, "a".to_owned())]);
}
