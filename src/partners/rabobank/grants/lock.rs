//! The per-grant advisory lock: one refresh of a grant at a time, across tasks and replicas.

use super::*;

/// The advisory lock that makes one refresh of a grant at a time, held on a pooled connection
/// of its own (session level, so it survives the short transactions in between and goes with
/// the session if the process dies).
pub(super) struct GrantLock {
    conn: Option<PoolConnection<Postgres>>,
    id: Uuid,
}

/// The lock's key: the grant's id in a namespace of its own (job locks hash job names).
fn grant_lock_key(id: Uuid) -> String {
    format!("oauth_grant:{id}")
}

impl GrantLock {
    /// Waits (at most `GRANT_LOCK_TIMEOUT`) while another task or replica refreshes the grant.
    pub(super) async fn acquire(pool: &PgPool, id: Uuid) -> Result<Self, sqlx::Error> {
        // The guard exists before the query: a caller cancelled mid-wait drops it, and the
        // connection is closed rather than pooled with a lock it may yet be granted.
        let mut lock = Self {
            conn: Some(pool.acquire().await?),
            id,
        };
        let mut tx = sqlx::Connection::begin(lock.conn()?).await?;
        // LOCAL: the timeout ends with this transaction; the session-level lock does not.
        sqlx::query(&format!("SET LOCAL lock_timeout = '{GRANT_LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(grant_lock_key(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lock)
    }

    /// The lock if nobody holds it, without waiting.
    pub(super) async fn try_acquire(pool: &PgPool, id: Uuid) -> Result<Option<Self>, sqlx::Error> {
        let mut lock = Self {
            conn: Some(pool.acquire().await?),
            id,
        };
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(grant_lock_key(id))
                .fetch_one(lock.conn()?)
                .await?;
        if locked {
            Ok(Some(lock))
        } else {
            // Not locked by this session: the connection may go back to the pool.
            drop(lock.conn.take());
            Ok(None)
        }
    }

    pub(super) fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }

    pub(super) async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked =
            sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(grant_lock_key(self.id))
                .fetch_one(&mut *conn)
                .await;
        if !matches!(unlocked, Ok(true)) {
            tracing::warn!(grant_id = %self.id, "could not release the grant lock; closing its connection");
            drop(conn.detach());
        }
    }
}

impl Drop for GrantLock {
    /// A lock dropped without `release` (an acquiring caller was cancelled) must not go back
    /// to the pool possibly held: closing the session is the one sure way to release it.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
