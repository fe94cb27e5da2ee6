//! `sync.audit`: the append-only audit trail. [`record`] inserts one entry (bound parameters
//! only), on whatever executor the change it records runs on, so an entry can share that
//! change's transaction; [`list`] reads them back. The table refuses UPDATE, DELETE and
//! TRUNCATE (see its migration), so nothing here could rewrite an entry.
//!
//! Who acted is an [`Actor`], passed down from where it is known (the command, the HTTP
//! handler, the runner of a job) to where the change is recorded. An entry's detail never holds
//! a secret: no token, link secret or OAuth state.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};

/// The actor of a command run when neither `USER` nor `LOGNAME` names the OS user.
const UNKNOWN_CLI_USER: &str = "cli";
/// An OS user's name is kept to this many characters (it comes from the environment).
const MAX_USER_CHARS: usize = 64;

/// Who caused an audited change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A command run by this OS user.
    Cli(String),
    /// The HTTP admin endpoint, called with the admin token whose SHA-256 starts with these
    /// 8 hex digits (enough to tell tokens apart after a rotation; never the token).
    AdminToken(String),
    /// A scheduled run, or one the daemon starts itself (at start-up, for a link, a request).
    Scheduler,
    /// SIGUSR1 or SIGUSR2 sent to the daemon.
    Signal,
    /// A partner's redirect or callback, carried by someone's browser.
    Browser,
}

impl Actor {
    /// The OS user running this command, from `USER`, else `LOGNAME`, else `cli`.
    pub fn cli_user() -> Self {
        Self::cli_user_from(std::env::var("USER").ok(), std::env::var("LOGNAME").ok())
    }

    /// [`Self::cli_user`] from the two variables' values.
    pub fn cli_user_from(user: Option<String>, logname: Option<String>) -> Self {
        let name = [user, logname]
            .into_iter()
            .flatten()
            .map(|name| name.trim().to_owned())
            .find(|name| !name.is_empty())
            .unwrap_or_else(|| UNKNOWN_CLI_USER.to_owned());
        // Printable and short: it is shown in tables and stays in the trail for ever.
        let name: String = name
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_CHARS)
            .collect();
        Self::Cli(name)
    }

    /// The admin endpoint's caller, named by a prefix of the admin token's SHA-256.
    pub fn admin_token(token: &str) -> Self {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        Self::AdminToken(digest[..8].to_owned())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Cli(user) => f.write_str(user),
            Actor::AdminToken(prefix) => write!(f, "admin-token:{prefix}"),
            Actor::Scheduler => f.write_str("scheduler"),
            Actor::Signal => f.write_str("signal"),
            Actor::Browser => f.write_str("browser"),
        }
    }
}

/// One audited change. `detail` is a JSON object; it must hold no secret.
#[derive(Debug, Clone)]
pub struct Entry {
    pub actor: Actor,
    pub action: &'static str,
    pub partner: Option<&'static str>,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
}

impl Entry {
    pub fn new(actor: &Actor, action: &'static str) -> Self {
        Self {
            actor: actor.clone(),
            action,
            partner: None,
            subject: None,
            detail: serde_json::json!({}),
        }
    }

    pub fn partner(mut self, partner: &'static str) -> Self {
        self.partner = Some(partner);
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Inserts `entry`. Pass the transaction of the change it records where there is one.
pub async fn record<'e>(executor: impl PgExecutor<'e>, entry: &Entry) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync.audit (actor, action, partner, subject, detail)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry.actor.to_string())
    .bind(entry.action)
    .bind(entry.partner)
    .bind(entry.subject.as_deref())
    .bind(&entry.detail)
    .execute(executor)
    .await?;
    Ok(())
}

/// An entry as `partner-sync audit` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub partner: Option<String>,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
}

/// Entries recorded at or after `since`, about `subject` when one is given, oldest first.
pub async fn list(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    subject: Option<&str>,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, action, partner, subject, detail FROM sync.audit
          WHERE ($1::timestamptz IS NULL OR at >= $1)
            AND ($2::text IS NULL OR subject = $2)
          ORDER BY at, id",
    )
    .bind(since)
    .bind(subject)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_named_without_their_secrets() {
        let token = "s3cret-admin-token";
        let actor = Actor::admin_token(token).to_string();
        assert!(actor.starts_with("admin-token:"), "{actor}");
        assert_eq!(actor.len(), "admin-token:".len() + 8);
        assert!(!actor.contains(token));
        assert_ne!(actor, Actor::admin_token("another").to_string());
        assert_eq!(Actor::Scheduler.to_string(), "scheduler");
        assert_eq!(Actor::Signal.to_string(), "signal");
        assert_eq!(Actor::Browser.to_string(), "browser");
    }

    #[test]
    fn the_cli_user_comes_from_user_then_logname() {
        let from = |user: Option<&str>, logname: Option<&str>| {
            Actor::cli_user_from(user.map(str::to_owned), logname.map(str::to_owned)).to_string()
        };
        assert_eq!(from(Some("alice"), Some("bob")), "alice");
        assert_eq!(from(None, Some("bob")), "bob");
        assert_eq!(from(Some(" "), Some("bob")), "bob");
        assert_eq!(from(None, None), "cli");
        assert_eq!(from(Some("ev\u{1b}il"), None), "evil");
    }
}
