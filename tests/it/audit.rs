//! The audit trail: `sync.audit` refuses every change but an INSERT, even from its owner.

use partner_sync::store::audit::{self, Actor, Entry};
use serde_json::json;

use crate::common::TestDb;

async fn one_entry(db: &TestDb) {
    let entry = Entry::new(&Actor::Scheduler, "test.entry")
        .partner("rabot")
        .subject("S-1")
        .detail(json!({"n": 1}));
    audit::record(&db.pool, &entry).await.unwrap();
}

#[tokio::test]
async fn the_trail_is_append_only_even_for_its_owner() {
    let db = TestDb::new().await;
    one_entry(&db).await;
    let owner: bool = sqlx::query_scalar(
        "SELECT tableowner = current_user FROM pg_tables
          WHERE schemaname = 'sync' AND tablename = 'audit'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(owner, "the test must run as the table's owner");

    for statement in [
        "UPDATE sync.audit SET actor = 'someone else'",
        "DELETE FROM sync.audit",
        "TRUNCATE sync.audit",
    ] {
        let error = sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect_err(statement);
        let message = error.to_string();
        assert!(
            message.contains("sync.audit is append-only"),
            "{statement}: {message}"
        );
    }
    let rows = audit::list(&db.pool, None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor, "scheduler");
    assert_eq!(rows[0].action, "test.entry");
    assert_eq!(rows[0].partner.as_deref(), Some("rabot"));
    assert_eq!(rows[0].subject.as_deref(), Some("S-1"));
    assert_eq!(rows[0].detail, json!({"n": 1}));

    // Every column carries a comment, the table too.
    let uncommented: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_attribute a
          WHERE a.attrelid = 'sync.audit'::regclass AND a.attnum > 0 AND NOT a.attisdropped
            AND col_description(a.attrelid, a.attnum) IS NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(uncommented.is_empty(), "{uncommented:?}");
}
