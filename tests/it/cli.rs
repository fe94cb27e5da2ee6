//! The one-shot commands through the real binary: `demo` and `sync`.

use crate::common::*;

#[tokio::test]
async fn the_demo_creates_its_database_and_a_second_run_changes_nothing() {
    let db = ReservedDb::new();
    let env = vec![("DATABASE_URL".to_owned(), db.url.clone())];

    let first = run_binary(&["demo", "--customers", "60"], env.clone()).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // 60 listed customers plus the one that linked first, 2 contracts each.
    assert!(
        stdout.contains("61 customers") && stdout.contains("122 contracts"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 customer and 2 contracts by run 1 of\n  rabot_link_mirror, succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("180 inserted, 0 updated, 3 unchanged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("6 users (mirror.energyzero_users)"),
        "{stdout}"
    );

    let second = run_binary(&["demo", "--customers", "60"], env).await;
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout}");
    assert!(
        stdout.contains("0 inserted, 0 updated, 183 unchanged, 0 deleted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing changed since the last demo"),
        "{stdout}"
    );
    let pool = db.pool().await;
    let succeeded = "SELECT count(*) FROM sync.runs WHERE status = 'succeeded'";
    // Each demo: the link mirror, the RABOT mirror and the EnergyZero mirror.
    assert_eq!(count(&pool, succeeded).await, 6);
    let linked = "SELECT count(*) FROM sync.customer_links WHERE status = 'linked'";
    assert_eq!(count(&pool, linked).await, 2);
    pool.close().await;
}

#[tokio::test]
async fn sync_exits_0_on_success_and_1_on_failure() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(5)).await;
    let env = sandbox_env(&sandbox, &db.url);

    let ok = run_binary(&["sync", "rabot"], env.clone()).await;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM mirror.rabot_customers").await,
        5
    );

    let mut wrong = env;
    wrong.push(("PARTNER_SYNC__RABOT__CLIENT_SECRET".into(), "wrong".into()));
    let failed = run_binary(&["sync", "rabot"], wrong).await;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rejected the client credentials"),
        "{stderr}"
    );
    let (status, cause): (String, String) =
        sqlx::query_as("SELECT status, cause FROM sync.runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), cause.as_str()), ("failed", "cli"));
}
