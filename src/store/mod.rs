//! PostgreSQL: the pool, embedded migrations, and one file of queries per table group.
//! Every value is a bound parameter; identifiers are never built from input except the
//! database name in [`create_database_if_missing`], which is quoted.

pub mod audit;
pub mod drift;
pub mod rate_shares;
pub mod runs;
pub mod schedule_ticks;
pub mod trigger_requests;

use std::str::FromStr;

use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection as _};

use runs::UpsertCounts;

use crate::settings::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not repeated: it may hold a password.
    #[error("database.url is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Opening a connection failed: where (never the password), why, and what to do.
    #[error(
        "cannot connect to PostgreSQL at {server} (database {database}, user {user}): {reason}; {hint}"
    )]
    Connect {
        server: String,
        database: String,
        user: String,
        reason: String,
        hint: String,
    },
}

fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(settings.url.expose_secret())
        .map_err(|e| StoreError::BadUrl(without_secrets(&e.to_string())))?;
    // Statements are logged at debug, not info: a resync would otherwise log every batch.
    Ok(options
        .application_name("partner-sync")
        .log_statements(tracing::log::LevelFilter::Debug))
}

/// sqlx's URL errors can quote the URL; keep only the first clause.
fn without_secrets(message: &str) -> String {
    message.split(':').next().unwrap_or("invalid").to_owned()
}

/// The pool, once one connection has been opened within `database.connect_timeout`: a server
/// that is down, unknown or refusing us is reported at once and specifically, instead of as the
/// pool's "timed out" after `database.acquire_timeout`.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, StoreError> {
    let options = connect_options(settings)?;
    let probe = open_connection(&options, settings.connect_timeout).await?;
    // Only the probe's success matters; a failure to say goodbye changes nothing.
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options.clone())
        .await
        .map_err(|error| connect_error(&options, settings.connect_timeout, error))?;
    Ok(pool)
}

/// One connection within `limit`, its failure described by [`connect_error`].
async fn open_connection(
    options: &PgConnectOptions,
    limit: std::time::Duration,
) -> Result<PgConnection, StoreError> {
    match tokio::time::timeout(limit, PgConnection::connect_with(options)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(connect_error(options, limit, error)),
        Err(_) => Err(connect_error(options, limit, sqlx::Error::PoolTimedOut)),
    }
}

/// A failed connection attempt as a person can act on it: host, port, database and user from
/// the options (the password never), the cause, and what to do about it.
fn connect_error(
    options: &PgConnectOptions,
    limit: std::time::Duration,
    error: sqlx::Error,
) -> StoreError {
    let server = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let database = options.get_database().unwrap_or(options.get_username());
    let url = "DATABASE_URL (database.url)";
    let (reason, hint) = match &error {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            "connection refused".to_owned(),
            format!("is PostgreSQL running on {server}?"),
        ),
        sqlx::Error::Io(io) if io.to_string().contains("lookup") => (
            format!("unknown host ({io})"),
            format!("check the host in {url}"),
        ),
        // A handshake rustls refused (an unknown issuer, a name that does not match) comes
        // as an I/O error wrapping rustls's own.
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            (
                format!("TLS failed: {io}"),
                format!("check sslmode in {url} and the server's certificate"),
            )
        }
        sqlx::Error::Io(io) => (
            io.to_string(),
            format!("is PostgreSQL running on {server}, and reachable from here?"),
        ),
        sqlx::Error::Tls(tls) => (
            format!("TLS failed: {tls}"),
            format!("check sslmode in {url} and the server's certificate"),
        ),
        sqlx::Error::Database(db) => {
            let hint = match db.code().as_deref() {
                // invalid_password
                Some("28P01") => format!("check the password in {url}"),
                // invalid_authorization_specification: no pg_hba.conf entry, unknown role
                Some("28000") => {
                    format!("check the user in {url} and the server's pg_hba.conf")
                }
                // invalid_catalog_name
                Some("3D000") => {
                    "create it with `partner-sync migrate --create-database`".to_owned()
                }
                _ => format!("check {url}"),
            };
            (db.message().to_owned(), hint)
        }
        sqlx::Error::PoolTimedOut => (
            format!(
                "no answer within {} (database.connect_timeout)",
                humantime::format_duration(limit)
            ),
            format!("is PostgreSQL running on {server}, and reachable from here?"),
        ),
        sqlx::Error::Protocol(_) => (
            error.to_string(),
            format!("is {server} a PostgreSQL server? check the host and port in {url}"),
        ),
        other => (other.to_string(), format!("check {url}")),
    };
    StoreError::Connect {
        server,
        database: database.to_owned(),
        user: options.get_username().to_owned(),
        reason,
        hint,
    }
}

pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Versions of the embedded migrations that are not recorded as applied in the database.
pub async fn missing_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// Creates the database named in the URL when it does not exist (for the demo and tests),
/// connecting to the `postgres` maintenance database of the same server.
pub async fn create_database_if_missing(settings: &DatabaseSettings) -> Result<(), StoreError> {
    let options = connect_options(settings)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin_options = options.database("postgres");
    let mut admin = open_connection(&admin_options, settings.connect_timeout).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(&name));
        match sqlx::query(&statement).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SHA-256 of a payload's JSON text. serde_json's maps are ordered by key, so the same content
/// always hashes the same whatever order the partner sent the fields in.
pub fn content_hash(payload: &serde_json::Value) -> Vec<u8> {
    let bytes = serde_json::to_vec(payload).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

/// Inserted, updated and unchanged rows of a batch of `total`, from the `RETURNING (xmax = 0)`
/// flag of each row actually written.
pub(crate) fn counts(total: i64, inserted_flags: &[bool]) -> UpsertCounts {
    let inserted = inserted_flags.iter().filter(|i| **i).count() as i64;
    let written = inserted_flags.len() as i64;
    UpsertCounts {
        inserted,
        updated: written - inserted,
        unchanged: total - written,
    }
}

/// `ON CONFLICT DO UPDATE` cannot touch one row twice in a statement; a page that repeats a key
/// keeps its last occurrence.
pub(crate) fn dedup_last<T, K: Eq + std::hash::Hash>(
    rows: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut kept: Vec<T> = rows
        .into_iter()
        .rev()
        .filter(|r| seen.insert(key(r)))
        .collect();
    kept.reverse();
    kept
}

/// Rows a batch upsert wrote, and the rows the database refused, each with its key and why.
#[derive(Debug, Default)]
pub struct Stored {
    pub counts: UpsertCounts,
    pub refused: Vec<(String, String)>,
}

/// Upserts `rows` in one statement, inside a savepoint. If the database refuses the batch for
/// what is in it (a data or constraint error, not a lost connection), the rows are upserted one
/// at a time, each in its own savepoint, so one bad row is set aside instead of failing the
/// page, and every pass after it.
pub(crate) async fn upsert_setting_aside<T: Clone>(
    conn: &mut PgConnection,
    rows: Vec<T>,
    key: impl Fn(&T) -> String,
    upsert: impl for<'c> Fn(
        &'c mut PgConnection,
        Vec<T>,
    ) -> BoxFuture<'c, Result<UpsertCounts, sqlx::Error>>,
) -> Result<Stored, sqlx::Error> {
    let mut stored = Stored::default();
    if rows.is_empty() {
        return Ok(stored);
    }
    let mut batch = conn.begin().await?;
    match upsert(&mut batch, rows.clone()).await {
        Ok(counts) => {
            batch.commit().await?;
            stored.counts = counts;
            return Ok(stored);
        }
        Err(error) if is_refused_data(&error) => batch.rollback().await?,
        Err(error) => return Err(error),
    }
    for row in rows {
        let mut single = conn.begin().await?;
        match upsert(&mut single, vec![row.clone()]).await {
            Ok(counts) => {
                single.commit().await?;
                stored.counts.inserted += counts.inserted;
                stored.counts.updated += counts.updated;
                stored.counts.unchanged += counts.unchanged;
            }
            Err(error) if is_refused_data(&error) => {
                single.rollback().await?;
                stored.refused.push((key(&row), error.to_string()));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(stored)
}

/// A data exception (SQLSTATE class 22) or an integrity violation (23): the statement's
/// content was refused, so retrying row by row finds the culprit.
fn is_refused_data(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_field_order_but_not_content() {
        let a = serde_json::json!({"a": 1, "b": [1, 2]});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b":[1,2],"a":1}"#).expect("valid JSON");
        let c = serde_json::json!({"b": [2, 1], "a": 1});
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier(r#"we"ird"#), r#""we""ird""#);
    }
}
