//! `docs/finance.md` cannot lie: its reference section is the database's own comments on every
//! table, view and function in `mirror` (a column without a comment fails the test), and every
//! query it shows runs, as `partner_sync_reader`, against the demo's data.
//!
//! After a migration adds or changes a comment, rewrite the reference with
//! `UPDATE_FINANCE_GUIDE=1 cargo test --test it finance_guide`.

use std::fmt::Write;
use std::path::PathBuf;

use sqlx::{PgPool, Row};

use crate::common::*;

const BEGIN: &str = "<!-- reference: generated from the database's comments -->";
const END: &str = "<!-- end of reference -->";

fn guide_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/finance.md")
}

fn guide() -> String {
    std::fs::read_to_string(guide_path()).expect("docs/finance.md exists")
}

/// A comment on one line of a Markdown table.
fn cell(text: &str) -> String {
    text.replace('|', r"\|").replace('\n', " ")
}

/// Every table, view and function in `mirror` with its comment and columns, as Markdown, and
/// what has no comment.
async fn reference(pool: &PgPool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut uncommented = Vec::new();
    let relations = sqlx::query(
        "SELECT c.oid::int8 AS oid, c.relname::text AS name,
                CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'table' END AS kind,
                obj_description(c.oid, 'pg_class') AS comment
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'mirror' AND c.relkind IN ('r', 'p', 'v', 'm')
          ORDER BY c.relname",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for relation in relations {
        let (oid, name, kind): (i64, String, String) = (
            relation.get("oid"),
            relation.get("name"),
            relation.get("kind"),
        );
        let comment: Option<String> = relation.get("comment");
        if comment.is_none() {
            uncommented.push(format!("{kind} mirror.{name}"));
        }
        writeln!(out, "### `mirror.{name}` ({kind})\n").unwrap();
        writeln!(out, "{}\n", comment.as_deref().unwrap_or("")).unwrap();
        writeln!(out, "| column | type | meaning |\n|---|---|---|").unwrap();
        let columns = sqlx::query(
            "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type,
                    col_description(a.attrelid, a.attnum) AS comment
               FROM pg_attribute a
              WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
        )
        .bind(oid)
        .fetch_all(pool)
        .await
        .unwrap();
        for column in columns {
            let (column_name, column_type): (String, String) =
                (column.get("name"), column.get("type"));
            let comment: Option<String> = column.get("comment");
            if comment.is_none() {
                uncommented.push(format!("column mirror.{name}.{column_name}"));
            }
            writeln!(
                out,
                "| `{column_name}` | {column_type} | {} |",
                cell(comment.as_deref().unwrap_or(""))
            )
            .unwrap();
        }
        out.push('\n');
    }
    let functions = sqlx::query(
        "SELECT p.proname::text AS name, pg_get_function_arguments(p.oid) AS arguments,
                pg_get_function_result(p.oid) AS result, obj_description(p.oid, 'pg_proc') AS comment
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'mirror' AND p.prorettype <> 'trigger'::regtype
          ORDER BY p.proname, pg_get_function_arguments(p.oid)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for function in functions {
        let (name, arguments, result): (String, String, String) = (
            function.get("name"),
            function.get("arguments"),
            function.get("result"),
        );
        let comment: Option<String> = function.get("comment");
        if comment.is_none() {
            uncommented.push(format!("function mirror.{name}"));
        }
        writeln!(out, "### `mirror.{name}({arguments})` (function)\n").unwrap();
        writeln!(out, "Returns `{result}`.\n").unwrap();
        writeln!(out, "{}\n", comment.as_deref().unwrap_or("")).unwrap();
    }
    (out.trim_end().to_owned(), uncommented)
}

#[tokio::test]
async fn the_reference_is_the_databases_comments_on_every_mirror_object() {
    let db = TestDb::new().await;
    let (reference, uncommented) = reference(&db.pool).await;
    assert!(
        uncommented.is_empty(),
        "objects in mirror without a comment (COMMENT ON … IS '…' in a migration):\n{}",
        uncommented.join("\n")
    );
    let guide = guide();
    let (before, rest) = guide
        .split_once(BEGIN)
        .expect("the guide has the reference marker");
    let (current, after) = rest.split_once(END).expect("the guide has the end marker");
    if std::env::var_os("UPDATE_FINANCE_GUIDE").is_some() {
        std::fs::write(
            guide_path(),
            format!("{before}{BEGIN}\n\n{reference}\n\n{END}{after}"),
        )
        .unwrap();
        return;
    }
    assert!(
        current.trim() == reference,
        "docs/finance.md's reference is not the database's comments; rewrite it with \
         UPDATE_FINANCE_GUIDE=1 cargo test --test it finance_guide"
    );
}

/// The SQL statements of the guide's ```sql blocks.
fn queries(guide: &str) -> Vec<String> {
    let mut queries = Vec::new();
    let mut rest = guide;
    while let Some(start) = rest.find("```sql\n") {
        let block = &rest[start + "```sql\n".len()..];
        let end = block.find("```").expect("a closed sql block");
        queries.extend(
            block[..end]
                .split(";\n")
                .map(str::trim)
                .filter(|q| {
                    q.lines()
                        .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
                })
                .map(|q| q.trim_end_matches(';').to_owned()),
        );
        rest = &block[end..];
    }
    queries
}

#[test]
fn queries_are_split_per_statement_and_comments_alone_are_not_queries() {
    let found = queries(
        "x\n```sql\n-- one\nSELECT 1;\n-- two\nSELECT 2\n  FROM t;\n-- only a comment\n```\n```sh\nls\n```\n```sql\nSELECT 3;\n```\n",
    );
    assert_eq!(
        found,
        ["-- one\nSELECT 1", "-- two\nSELECT 2\n  FROM t", "SELECT 3"]
    );
}

#[tokio::test]
async fn every_query_in_the_guide_runs_as_the_reader_on_the_demo_data() {
    let db = TestDb::new().await;
    let output = run_binary(
        &["demo", "--customers", "40"],
        [("DATABASE_URL", db.url.as_str())],
    )
    .await;
    assert!(
        output.status.success(),
        "the demo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let queries = queries(&guide());
    assert!(
        queries.len() >= 4,
        "the guide's worked queries: {queries:?}"
    );
    for query in &queries {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("SET LOCAL ROLE partner_sync_reader")
            .execute(&mut *tx)
            .await
            .unwrap();
        let rows = sqlx::query(query)
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{query}"));
        // A query whose comment says it may be empty on a fresh mirror is only run.
        if !query.contains("empty on a fresh mirror") {
            assert!(!rows.is_empty(), "no rows on the demo data:\n{query}");
        }
    }
}
