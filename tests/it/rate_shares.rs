//! Replicas dividing one credential's rate through PostgreSQL: each limiter's ceiling follows
//! the number of processes sending with the same credential, on a real database.

use std::sync::Arc;
use std::time::Duration;

use partner_sync::http::{AdaptiveLimiter, RateBudget};
use partner_sync::store::rate_shares::{keep_share, renew};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::common::TestDb;

const EVERY: Duration = Duration::from_millis(200);
const FRESH_FOR: Duration = Duration::from_secs(1);

struct Replica {
    limiter: Arc<AdaptiveLimiter>,
    sending: CancellationToken,
    keeping: CancellationToken,
    tasks: TaskTracker,
}

impl Replica {
    /// A limiter at 20/s under budget `key`, its share kept up to date, sending while
    /// `sending` is not cancelled.
    fn start(db: &TestDb, key: &str) -> Self {
        let limiter = Arc::new(AdaptiveLimiter::new("rabot", 20.0, 1));
        let replica = Self {
            limiter: limiter.clone(),
            sending: CancellationToken::new(),
            keeping: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let budget = RateBudget {
            key: key.to_owned(),
            limiter: limiter.clone(),
        };
        replica.tasks.spawn(keep_share(
            db.pool.clone(),
            budget,
            EVERY,
            FRESH_FOR,
            replica.keeping.clone(),
        ));
        let sending = replica.sending.clone();
        replica.tasks.spawn(async move {
            while !sending.is_cancelled() {
                let ticket = limiter.acquire().await;
                limiter.accepted(ticket);
            }
        });
        replica
    }

    async fn stop(self) {
        self.sending.cancel();
        self.keeping.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Waits until `check` holds, or fails with `what` after a few seconds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

async fn members(db: &TestDb, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sync.rate_budget_members WHERE budget = $1")
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .expect("members counted")
}

#[tokio::test]
async fn replicas_sending_with_one_credential_each_take_their_share() {
    let db = TestDb::new().await;
    let first = Replica::start(&db, "rabot:aaaa");
    let second = Replica::start(&db, "rabot:aaaa");
    // Another credential is a budget of its own.
    let other = Replica::start(&db, "rabot:bbbb");
    eventually("both replicas of one credential take half", || {
        first.limiter.ceiling() == 10.0 && second.limiter.ceiling() == 10.0
    })
    .await;
    assert_eq!(other.limiter.ceiling(), 20.0);
    assert!(first.limiter.effective_rate() <= 10.0);
    assert_eq!(members(&db, "rabot:aaaa").await, 2);

    // The second stops and leaves: the first may send the whole rate again.
    second.stop().await;
    assert_eq!(
        members(&db, "rabot:aaaa").await,
        1,
        "a stopped replica leaves"
    );
    eventually("the remaining replica takes the whole rate", || {
        first.limiter.ceiling() == 20.0
    })
    .await;
    first.stop().await;
    other.stop().await;
    assert_eq!(members(&db, "rabot:aaaa").await, 0);
}

#[tokio::test]
async fn an_idle_replica_takes_no_share_but_keeps_to_its_own() {
    let db = TestDb::new().await;
    let busy = Replica::start(&db, "rabot:cccc");
    let idle = Replica::start(&db, "rabot:cccc");
    eventually("both take half while both send", || {
        busy.limiter.ceiling() == 10.0 && idle.limiter.ceiling() == 10.0
    })
    .await;
    idle.sending.cancel();
    // Once the idle one has sent nothing for FRESH_FOR, it leaves: the busy one takes all,
    // and the idle one already counts itself among those sending, for its next request.
    eventually("an idle replica leaves the budget", || {
        busy.limiter.ceiling() == 20.0 && idle.limiter.ceiling() == 10.0
    })
    .await;
    assert_eq!(members(&db, "rabot:cccc").await, 1);
    busy.stop().await;
    idle.stop().await;
}

#[tokio::test]
async fn a_replica_that_died_without_leaving_stops_counting() {
    let db = TestDb::new().await;
    // A row of a process that was killed: renewed once, never again.
    let dead = Uuid::new_v4();
    assert_eq!(
        renew(&db.pool, "rabot:dddd", dead, true, FRESH_FOR)
            .await
            .unwrap(),
        1
    );
    let alive = Replica::start(&db, "rabot:dddd");
    eventually("the live replica shares with the dead one at first", || {
        alive.limiter.ceiling() == 10.0
    })
    .await;
    eventually("the dead replica's row goes stale", || {
        alive.limiter.ceiling() == 20.0
    })
    .await;
    assert_eq!(
        members(&db, "rabot:dddd").await,
        1,
        "the stale row is removed"
    );
    alive.stop().await;
}
