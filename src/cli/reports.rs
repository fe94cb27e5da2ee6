//! The read-only commands: `status`, `links`, `grants` and `audit`, each a table for people or
//! JSON for scripts.

use std::io::IsTerminal as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::jobs::JobName;
use crate::partners::rabobank::grant_store;
use crate::partners::rabot::link_store;
use crate::settings::Settings;
use crate::store::audit;
use crate::{app, status};

/// `rows` as one JSON document per line, or as `table` renders them; `none` when there are none.
fn print_rows<T: Serialize>(
    rows: &[T],
    json: bool,
    none: &str,
    table: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else if rows.is_empty() {
        println!("{none}");
    } else {
        print!("{}", table(rows));
    }
    Ok(())
}

pub(super) async fn list_links(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let pool = app::open_database(settings).await?;
    let links = link_store::list(&pool).await?;
    print_rows(
        &links,
        json,
        "no links: start one with `partner-sync link rabot --external-id ID`",
        status::render_links,
    )
}

pub(super) async fn list_grants(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let pool = app::open_database(settings).await?;
    let grants = grant_store::list(&pool).await?;
    print_rows(
        &grants,
        json,
        "no grants: connect one with `partner-sync rabobank authorize`",
        status::render_grants,
    )
}

pub(super) async fn list_audit(
    settings: &Settings,
    since: Option<std::time::Duration>,
    subject: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    // A span too long to subtract means "since the beginning".
    let since = since.map(|span| {
        chrono::Duration::from_std(span)
            .ok()
            .and_then(|span| Utc::now().checked_sub_signed(span))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    let pool = app::open_database(settings).await?;
    let entries = audit::list(&pool, since, subject).await?;
    print_rows(&entries, json, "no audit entries", status::render_audit)
}

pub(super) async fn show_status(
    settings: &Settings,
    jobs: &[JobName],
    json: bool,
) -> anyhow::Result<()> {
    let pool = app::open_database(settings).await?;
    let report = status::report(&pool, settings, jobs).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let colour = status::colour_wanted(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        print!("{}", report.render_table(colour));
    }
    Ok(())
}
