//! Cron occurrences claimed across replicas on real PostgreSQL: each replica's sleeper claims
//! the occurrence it slept for, so replicas whose clocks disagree by up to 30 s claim each
//! occurrence exactly once, and the occurrence is the one `daemon.timezone` names.

use chrono::{DateTime, Datelike as _, Duration, TimeZone as _, Utc};
use chrono_tz::{Europe::Amsterdam, Tz};
use partner_sync::cron::{next_occurrence, parse_cron};
use partner_sync::events::schedule::claim_tick;
use partner_sync::jobs::JobName;

use crate::common::*;

const JOB: JobName = JobName::RabotMirror;

/// A replica whose clock is `offset` ahead of the true time.
struct Replica {
    host: &'static str,
    offset: Duration,
}

async fn claimed(db: &TestDb, job: JobName) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT tick_at, claimed_by FROM sync.schedule_ticks WHERE job = $1 ORDER BY tick_at",
    )
    .bind(job.as_str())
    .fetch_all(&db.pool)
    .await
    .unwrap()
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
    // Claims older than a day are cleared as they go, so the occurrences are near now.
    let first = next_occurrence(&cron, Tz::UTC, Utc::now()).unwrap();
    let mut ticks = Vec::new();
    for minute in 0..5 {
        let occurrence = first + Duration::minutes(minute);
        for replica in &replicas {
            // A replica wakes when its own clock reads the occurrence: in real time, a replica
            // ahead wakes first.
            ticks.push((occurrence - replica.offset, replica.host, occurrence));
        }
    }
    ticks.sort_by_key(|tick| tick.0);
    let mut winners = Vec::new();
    for (_, host, occurrence) in ticks {
        if claim_tick(&db.pool, JOB, occurrence, host).await.unwrap() {
            winners.push((occurrence, host.to_owned()));
        }
    }
    let expected: Vec<_> = (0..5)
        .map(|minute| (first + Duration::minutes(minute), "ahead".to_owned()))
        .collect();
    assert_eq!(winners, expected);
    assert_eq!(claimed(&db, JOB).await, expected);
    // Another job's occurrence at the same time is its own.
    assert!(
        claim_tick(&db.pool, JobName::RabotLinkMirror, first, "behind")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn replicas_claim_the_local_occurrence_of_the_configured_zone() {
    let db = TestDb::new().await;
    let cron = parse_cron("0 0 3 * * *").unwrap();
    let now = Utc::now();
    // 03:00 in Amsterdam is 01:00 or 02:00 UTC: never the 03:00 UTC a UTC schedule names.
    let local = next_occurrence(&cron, Amsterdam, now).unwrap();
    let utc = next_occurrence(&cron, Tz::UTC, now).unwrap();
    assert_ne!(local, utc);
    let at_local = local.with_timezone(&Amsterdam);
    assert_eq!(at_local.format("%H:%M:%S").to_string(), "03:00:00");
    assert_eq!(
        Amsterdam
            .with_ymd_and_hms(at_local.year(), at_local.month(), at_local.day(), 3, 0, 0)
            .single()
            .map(|t| t.to_utc()),
        Some(local)
    );
    assert!(claim_tick(&db.pool, JOB, local, "a").await.unwrap());
    assert!(!claim_tick(&db.pool, JOB, local, "b").await.unwrap());
    assert_eq!(claimed(&db, JOB).await, vec![(local, "a".to_owned())]);
}
