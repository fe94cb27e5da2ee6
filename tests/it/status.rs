//! `partner-sync status` over the real binary: a table per partner (plain text when stdout is
//! not a terminal) and `--json`, after real passes against the sandbox.

use crate::common::*;

#[tokio::test]
async fn status_shows_jobs_grants_and_failures_as_a_table_and_as_json() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(3)).await;
    let settings = settings(&sandbox, &db, &[]);
    mirror_pass(&settings, &db.pool).await;
    sandbox.inject_fault(partner_sync_sandbox::Fault {
        path_contains: "/customers".into(),
        status: 400,
        retry_after: None,
        times: 1,
    });
    let (status, _, _) = mirror_pass(&settings, &db.pool).await;
    assert_eq!(status, partner_sync::store::runs::RunStatus::Failed);

    let env = sandbox_env(&sandbox, &db.url);
    let run = |json: bool| {
        let args: &[&str] = if json {
            &["status", "--json"]
        } else {
            &["status"]
        };
        run_binary(args, env.clone())
    };
    let table = run(false).await;
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let table = String::from_utf8(table.stdout).unwrap();
    // Not a terminal: plain text.
    assert!(!table.contains('\u{1b}'), "{table:?}");
    let line = |first: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(first))
            .unwrap_or_else(|| panic!("no line for {first}: {table}"))
            .to_owned()
    };
    let rabot = table.find("\nRABOT\n").expect("a RABOT table");
    let energyzero = table
        .find("\nENERGYZERO (off: energyzero.enabled = false)\n")
        .expect("an EnergyZero table, off");
    let rabobank = table
        .find("\nRABOBANK (off: rabobank.enabled = false)\n")
        .expect("a Rabobank table, off");
    assert!(rabot < energyzero && energyzero < rabobank, "{table}");
    // The failed pass is the last run; the first one, complete, keeps the data fresh (the
    // threshold is 2 × 15 minutes).
    let (first_ended,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT finished_at FROM sync.runs WHERE status = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let mirror = line("rabot_mirror ");
    let fresh = format!(
        "fresh as of {}",
        first_ended.format("%Y-%m-%d %H:%M:%S UTC")
    );
    assert!(
        mirror.contains("  failed  ") && mirror.ends_with(&fresh),
        "{mirror}"
    );
    assert!(
        mirror.matches(" UTC").count() == 3,
        "last run, next run, freshness: {mirror}"
    );
    let link = line("rabot_link_mirror");
    assert!(
        link.contains("on a link") && link.ends_with("never"),
        "{link}"
    );
    assert!(table.contains("no grants: connect one"), "{table}");
    assert!(
        table.contains("RECENT FAILURES") && table.contains("400"),
        "{table}"
    );

    let json = run(true).await;
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let jobs = report["jobs"].as_array().unwrap();
    let rabot = jobs.iter().find(|j| j["job"] == "rabot_mirror").unwrap();
    assert_eq!(rabot["enabled"], true);
    assert_eq!(rabot["last_run"]["status"], "failed");
    assert!(rabot["next_run_at"].is_string(), "{rabot}");
    let freshness = &rabot["freshness"];
    assert_eq!(freshness["consecutive_failures"], 1, "{rabot}");
    assert_eq!(freshness["stale"], false, "{rabot}");
    assert_eq!(freshness["stale_after_s"], 1800, "{rabot}");
    assert!(freshness["last_success_at"].is_string(), "{rabot}");
    assert!(freshness["last_success_age_s"].as_f64().unwrap() >= 0.0);
    assert!(freshness["stale_since"].is_null(), "{rabot}");
    let rotation = jobs
        .iter()
        .find(|j| j["job"] == "rabobank_token_rotation")
        .unwrap();
    assert_eq!(rotation["enabled"], false);
    assert!(
        rotation["freshness"]["stale"].is_null(),
        "off: never judged"
    );
    assert_eq!(report["recent_failures"].as_array().unwrap().len(), 1);
    assert_eq!(report["grants"].as_array().unwrap().len(), 0);

    // A filter, by partner or job name, keeps those jobs' rows and failures only.
    let filtered = async |names: &[&str]| {
        let args: Vec<&str> = ["status"]
            .into_iter()
            .chain(names.iter().copied())
            .chain(["--json"])
            .collect();
        let out = run_binary(&args, env.clone()).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let jobs: Vec<String> = report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap().to_owned())
            .collect();
        (jobs, report["recent_failures"].as_array().unwrap().len())
    };
    assert_eq!(
        filtered(&["rabot"]).await,
        (vec!["rabot_mirror".to_owned()], 1)
    );
    assert_eq!(
        filtered(&["energyzero", "rabobank_token_rotation"]).await,
        (
            // The job table's order, the order of the partners' tables too.
            vec![
                "energyzero_mirror".to_owned(),
                "rabobank_token_rotation".to_owned()
            ],
            0
        )
    );
    let table = run_binary(&["status", "energyzero_mirror"], env.clone()).await;
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("energyzero_mirror") && !table.contains("rabot_mirror"),
        "{table}"
    );

    // A later pass succeeds and finds nothing changed: the row shows it, column by column.
    mirror_pass(&settings, &db.pool).await;
    let after = run(false).await;
    let after = String::from_utf8(after.stdout).unwrap();
    let mirror = after
        .lines()
        .find(|l| l.trim_start().starts_with("rabot_mirror "))
        .unwrap();
    let cells: Vec<&str> = mirror.split_whitespace().collect();
    // JOB, LAST RUN (3 words), RESULT, DURATION, INSERTED, UPDATED, TOMBSTONED, …
    assert_eq!(cells[4], "succeeded", "{mirror}");
    assert_eq!(&cells[6..9], ["0", "0", "0"], "nothing changed: {mirror}");
    let header = after
        .lines()
        .find(|l| l.trim_start().starts_with("JOB"))
        .unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "JOB",
            "LAST",
            "RUN",
            "RESULT",
            "DURATION",
            "INSERTED",
            "UPDATED",
            "TOMBSTONED",
            "NEXT",
            "RUN",
            "FRESHNESS"
        ]
    );
}
