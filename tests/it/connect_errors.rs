//! A database that cannot be reached is reported at once and specifically: where (host, port,
//! database, never the password), why, and what to do; `migrate --create-database` makes a
//! missing one.

use std::time::{Duration, Instant};

use crate::common::*;

const PASSWORD: &str = "hunter2-not-for-logs";

async fn status(url: &str, extra: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let mut env = vec![("DATABASE_URL".to_owned(), url.to_owned())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let started = Instant::now();
    let out = run_binary(&["status"], env).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, started.elapsed())
}

#[tokio::test]
async fn a_refused_connection_names_the_server_at_once_and_never_the_password() {
    let port = free_port();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/partner_sync");
    let (code, stderr, took) = status(&url, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    assert!(
        stderr.contains(&format!("is PostgreSQL running on 127.0.0.1:{port}?"))
            && stderr.contains("database partner_sync"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_connect_timeout() {
    // Accepts the TCP connection, then says nothing: only the connect timeout can end it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/partner_sync");
    let timeout = [("PARTNER_SYNC__DATABASE__CONNECT_TIMEOUT", "1s")];
    let (code, stderr, took) = status(&url, &timeout).await;
    held.abort();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(4), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("no answer within 1s (database.connect_timeout)")
            && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_database_says_how_to_create_it_and_migrate_creates_it() {
    let db = ReservedDb::new();
    let (code, stderr, _) = status(&db.url, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("does not exist")
            && stderr.contains("partner-sync migrate --create-database"),
        "{stderr}"
    );

    let env = vec![("DATABASE_URL".to_owned(), db.url.clone())];
    let migrate = run_binary(&["migrate", "--create-database"], env.clone()).await;
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert_eq!(migrate.status.code(), Some(0), "{stderr}");
    let (code, stderr, _) = status(&db.url, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let pool = db.pool().await;
    assert!(count(&pool, "SELECT count(*) FROM _sqlx_migrations").await > 0);
    pool.close().await;
}

#[tokio::test]
async fn an_unknown_role_says_which_user_to_check() {
    let mut url = url::Url::parse(&url_with_database("postgres")).unwrap();
    url.set_username("no_such_role_ps").unwrap();
    let url = url.to_string();
    let (code, stderr, took) = status(&url, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("user no_such_role_ps")
            && stderr.contains("check the user in DATABASE_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unknown_host_says_to_check_the_host_at_once() {
    // `.invalid` never resolves (RFC 6761).
    let url = format!("postgres://postgres:{PASSWORD}@db.partner-sync.invalid:5432/partner_sync");
    let (code, stderr, took) = status(&url, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("db.partner-sync.invalid:5432")
            && stderr.contains("unknown host")
            && stderr.contains("check the host in DATABASE_URL"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[tokio::test]
async fn a_certificate_the_client_cannot_verify_is_a_tls_failure_not_a_server_down() {
    // verify-full with no root certificate configured: the test server's certificate, if it
    // has one, is from an issuer the client does not know; if it has none, it refuses TLS.
    let mut url = url::Url::parse(&url_with_database("postgres")).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "verify-full");
    let url = url.to_string();
    let (code, stderr, took) = status(&url, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("TLS failed") && stderr.contains("check sslmode in DATABASE_URL"),
        "{stderr}"
    );
}
