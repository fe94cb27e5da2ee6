//! A sandbox bank, a database and our callback server, shared by the Rabobank tests and the
//! grant chaos test.

use std::sync::Arc;
use std::time::Duration;

use partner_sync::events::TriggerCause;
use partner_sync::events::dispatcher::{JobRunner, RunOutcome};
use partner_sync::jobs::JobName;
use partner_sync::partners::rabobank::grants::RabobankGrants;
use partner_sync::partners::rabobank::rotation_job::RabobankRotation;
use partner_sync::server::{self, Partners, ScrapeSettings, ServerLimits, ServerState};
use partner_sync::settings::Settings;
use partner_sync::store::runs::{RunCounts, RunStatus};
use partner_sync_sandbox::{Sandbox, SandboxOptions};
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;

pub const TOKEN_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Environment that enables Rabobank against `sandbox` (and RABOT off), with a fast rate limit.
/// `sandbox_env` already connects the bank to the sandbox.
pub fn rabobank_env(
    sandbox: &Sandbox,
    database_url: &str,
    public_url: &str,
) -> Vec<(String, String)> {
    let mut env = sandbox_env(sandbox, database_url);
    env.extend(
        [
            ("PARTNER_SYNC__RABOT__ENABLED", "false"),
            ("PARTNER_SYNC__RABOBANK__ENABLED", "true"),
            ("PARTNER_SYNC__RABOBANK__REQUESTS_PER_SECOND", "1000"),
            ("PARTNER_SYNC__RABOBANK__BURST", "50"),
            ("PARTNER_SYNC__SECURITY__TOKEN_KEY", TOKEN_KEY),
            ("PARTNER_SYNC__SERVER__PUBLIC_URL", public_url),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

/// A sandbox bank, a database, and our callback server on a free port.
pub struct Bank {
    pub sandbox: Sandbox,
    pub db: TestDb,
    pub settings: Settings,
    pub grants: Arc<RabobankGrants>,
    pub browser: reqwest::Client,
    /// The operations listener: `/metrics` and `/readyz`.
    pub ops_url: String,
    stop: CancellationToken,
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Bank {
    pub async fn start(options: SandboxOptions) -> Self {
        Self::start_with(options, &[]).await
    }

    pub async fn start_with(options: SandboxOptions, overrides: &[(&str, &str)]) -> Self {
        let sandbox = start_sandbox(options).await;
        let db = TestDb::new().await;
        let (listener, address) = server::bind("127.0.0.1:0".parse().unwrap(), "server.listen")
            .await
            .unwrap();
        let (ops_listener, ops_address) =
            server::bind("127.0.0.1:0".parse().unwrap(), "server.ops_listen")
                .await
                .unwrap();
        let mut env = rabobank_env(&sandbox, &db.url, &format!("http://{address}"));
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let settings = Settings::load_from(None, env).expect("valid settings");
        let grants = RabobankGrants::from_settings(&settings)
            .unwrap()
            .expect("Rabobank is enabled");
        let stop = CancellationToken::new();
        let state = ServerState {
            pool: db.pool.clone(),
            partners: tokio::sync::watch::channel(Partners {
                rabobank: Some(grants.clone()),
                rabot: None,
            })
            .1,
            control: tokio::sync::mpsc::channel(1).0,
            admin_token: Default::default(),
            link_done_url: String::new(),
            metrics: partner_sync::metrics::install(),
            stuck_after: settings.daemon.stuck_after,
            scrape: tokio::sync::watch::channel(ScrapeSettings::from_settings(&settings)).1,
        };
        let limits = ServerLimits::from_settings(&settings);
        tokio::spawn(server::serve(
            listener,
            server::public_router(state.clone()),
            limits,
            stop.clone(),
        ));
        tokio::spawn(server::serve(
            ops_listener,
            server::ops_router(state),
            limits,
            stop.clone(),
        ));
        Self {
            ops_url: format!("http://{ops_address}"),
            sandbox,
            db,
            settings,
            grants,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            stop,
        }
    }

    /// Starts a consent and lets the sandbox bank decide (`approve`, `deny`, `server_error`);
    /// returns the callback URL the bank redirected to.
    pub async fn bank_redirect(&self, label: Option<&str>, decision: &str) -> String {
        let mut url = self
            .grants
            .begin_consent(&self.db.pool, label)
            .await
            .unwrap();
        url.query_pairs_mut()
            .append_pair("sandbox_decision", decision);
        let answer = self.browser.get(url).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::FOUND, "the bank redirects");
        answer.headers()["location"].to_str().unwrap().to_owned()
    }

    /// The browser arriving at our callback.
    pub async fn arrive(&self, callback: &str) -> (StatusCode, String) {
        let answer = self.browser.get(callback).send().await.unwrap();
        (answer.status(), answer.text().await.unwrap())
    }

    /// A whole approved consent; returns the stored grant's id.
    pub async fn connect(&self, label: &str) -> Uuid {
        let callback = self.bank_redirect(Some(label), "approve").await;
        let (status, page) = self.arrive(&callback).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("connected"), "{page}");
        sqlx::query_scalar("SELECT id FROM sync.oauth_grants WHERE label = $1")
            .bind(label)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Another "replica": its own pool and its own client (own rate limiter and connections).
    pub async fn replica(&self, overrides: &[(&str, &str)]) -> (PgPool, Arc<RabobankGrants>) {
        let pool = PgPool::connect(&self.db.url).await.unwrap();
        let mut env = rabobank_env(
            &self.sandbox,
            &self.db.url,
            &self.settings.server.public_url,
        );
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let settings = Settings::load_from(None, env).unwrap();
        (
            pool,
            RabobankGrants::from_settings(&settings).unwrap().unwrap(),
        )
    }

    /// One rotation run through the real runner, as the daemon's schedule does it.
    pub async fn rotation_pass(&self) -> (RunStatus, RunCounts, Option<String>) {
        let job = Arc::new(RabobankRotation::new(&self.settings, self.grants.clone()));
        let runner = JobRunner::new(
            JobName::RabobankTokenRotation,
            job,
            self.db.pool.clone(),
            Duration::from_secs(5),
        );
        let (counts, _) = watch::channel(RunCounts::default());
        match runner
            .run_once(
                TriggerCause::Cli,
                partner_sync::store::audit::Actor::cli_user(),
                &CancellationToken::new(),
                counts,
            )
            .await
            .unwrap()
        {
            RunOutcome::Finished {
                status,
                counts,
                error,
                ..
            } => (status, counts, error),
            RunOutcome::LockedElsewhere => panic!("nothing else holds the lock"),
        }
    }

    /// Moves a grant's refresh expiry to `from_now`, as if time had passed.
    pub async fn age(&self, id: Uuid, from_now: Duration) {
        sqlx::query(
            "UPDATE sync.oauth_grants SET refresh_expires_at = now() + make_interval(secs => $2)
              WHERE id = $1",
        )
        .bind(id)
        .bind(from_now.as_secs_f64())
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub async fn grant_status(&self, id: Uuid) -> (String, i32, Option<String>) {
        sqlx::query_as(
            "SELECT status, refresh_count, last_error FROM sync.oauth_grants WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    pub async fn grant_count(&self) -> i64 {
        count(&self.db.pool, "SELECT count(*) FROM sync.oauth_grants").await
    }
}

/// Waits until the sandbox bank has processed `refreshes` refreshes in all (their answers may
/// still be held back by the answer delay). False after `limit`.
pub async fn bank_processed(sandbox: &Sandbox, refreshes: u64, limit: Duration) -> bool {
    let started = std::time::Instant::now();
    while sandbox.rabobank_stats().refreshes < refreshes {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// What the refresh path has recorded on a grant row.
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshMarks {
    pub refresh_count: i32,
    pub refresh_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub refresh_in_doubt_since: Option<chrono::DateTime<chrono::Utc>>,
    pub refresh_interrupted: bool,
}

pub async fn refresh_marks(pool: &PgPool, id: Uuid) -> RefreshMarks {
    sqlx::query_as(
        "SELECT refresh_count, refresh_started_at, refresh_in_doubt_since, refresh_interrupted
           FROM sync.oauth_grants WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}
