//! The one-shot commands through the real binary: `demo`, `sync`, the job names every command
//! accepts, and the tables of `links`, `grants` and `status`.

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
    // Costs and consumption, one line each, nothing written the second time; with
    // role:finance-reporting only linked customers' consumption is read, the rest is forbidden.
    for title in ["RABOT costs: ", "RABOT consumption: "] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(title))
            .unwrap_or_else(|| panic!("{title}: {stdout}"));
        assert!(line.contains("succeeded: 0 inserted, 0 updated"), "{line}");
    }
    assert!(
        stdout.contains("122 contracts, ") && stdout.contains(" forbidden (not linked)"),
        "{stdout}"
    );
    // The sandbox sends names RABOT's documents do not list: said once, in words, not as the
    // daemon's JSON warnings.
    assert!(
        stdout.contains("Schema drift: ") && stdout.contains("rabot_mirror customer: createdAt ("),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr.contains("WARN"), "{stderr}");
    let pool = db.pool().await;
    let succeeded = "SELECT count(*) FROM sync.runs WHERE status = 'succeeded'";
    // Each demo: the link mirror, the RABOT mirror, costs, consumption and the EnergyZero mirror.
    assert_eq!(count(&pool, succeeded).await, 10);
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

    // The job name runs the same pass as the partner name.
    let by_job = run_binary(&["sync", "rabot_mirror"], env.clone()).await;
    assert_eq!(
        by_job.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&by_job.stderr)
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM sync.runs WHERE job = 'rabot_mirror' AND status = 'succeeded'"
        )
        .await,
        2
    );

    // Rabobank is off in these settings: the command says which setting turns it on.
    let rabobank = run_binary(&["sync", "rabobank"], env.clone()).await;
    let stderr = String::from_utf8_lossy(&rabobank.stderr);
    assert_eq!(rabobank.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rabobank.enabled"), "{stderr}");

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

/// `sync`, `resync` and `status` speak one vocabulary: each lists every partner and job name in
/// `--help`, and refuses an unknown name with exit 2 and one line that lists them all.
#[tokio::test]
async fn every_command_naming_jobs_lists_and_accepts_the_same_names() {
    const NAMES: [&str; 9] = [
        "rabot",
        "energyzero",
        "rabobank",
        "rabot_mirror",
        "rabot_link_mirror",
        "rabot_costs",
        "rabot_consumption",
        "rabobank_token_rotation",
        "energyzero_mirror",
    ];
    for command in ["sync", "resync", "status"] {
        let help = run_binary(&[command, "--help"], Vec::<(String, String)>::new()).await;
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{command}: {stdout}");
        for name in NAMES {
            assert!(
                stdout.contains(&format!("- {name}:")),
                "{command} --help lists {name}: {stdout}"
            );
        }
        assert!(
            stdout.contains("- rabot:")
                && stdout.contains("stands for rabot_mirror")
                && stdout.contains("stands for rabobank_token_rotation"),
            "{command} --help says what a partner name runs: {stdout}"
        );

        let unknown = run_binary(&[command, "rabot_mirrors"], Vec::<(String, String)>::new()).await;
        let stderr = String::from_utf8_lossy(&unknown.stderr);
        assert_eq!(unknown.status.code(), Some(2), "{command}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{command}: {stderr}");
        assert!(
            lines[0].contains("\"rabot_mirrors\""),
            "{command}: {stderr}"
        );
        for name in NAMES {
            assert!(lines[0].contains(name), "{command} names {name}: {stderr}");
        }
    }
}

/// Text from outside (a redirect's error_description, a bank's consent id and error, a run's
/// error quoting a partner) holding terminal escapes and line breaks: the tables show them
/// escaped, one line per row, and `--json` keeps them exactly.
#[tokio::test]
async fn tables_escape_control_characters_from_partners_and_json_keeps_them() {
    let db = TestDb::new().await;
    let hostile = "nope\u{1b}[2J\nFAKE\tline\r\u{7}";
    sqlx::query(
        "INSERT INTO sync.customer_links (id, success_hash, failure_hash, status, external_id,
                                          authorization_url, error_name, error_description,
                                          expires_at, completed_at)
         VALUES ($1, $2, $3, 'denied', 'EXT-1', 'https://rabot.example/a', 'access_denied', $4,
                 now() + interval '10 minutes', now())",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(vec![1u8; 32])
    .bind(vec![2u8; 32])
    .bind(hostile)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sync.oauth_grants (id, provider, label, key_id, access_token_sealed,
                                        refresh_token_sealed, access_expires_at,
                                        refresh_expires_at, consent_id, last_error)
         VALUES ($1, 'rabobank', 'main', 'k', $2, $2, now(), now(), $3, $3)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(vec![0u8; 16])
    .bind(hostile)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sync.runs (job, cause, status, finished_at, error)
         VALUES ('rabot_mirror', 'cli', 'failed', now(), $1)",
    )
    .bind(hostile)
    .execute(&db.pool)
    .await
    .unwrap();

    let env = vec![("DATABASE_URL".to_owned(), db.url.clone())];
    for command in ["links", "grants", "status"] {
        let out = run_binary(&[command], env.clone()).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.chars().any(|c| c.is_control() && c != '\n'),
            "{command} printed a control character: {stdout:?}"
        );
        assert!(
            !stdout.lines().any(|line| line.starts_with("FAKE")),
            "{command}: {stdout}"
        );
        assert!(
            stdout.contains(r"nope\u{1b}[2J\nFAKE\tline\r\u{7}"),
            "{command}: {stdout}"
        );
    }

    for (command, field) in [("links", "error_description"), ("grants", "last_error")] {
        let out = run_binary(&[command, "--json"], env.clone()).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --json");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let row: serde_json::Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
        assert_eq!(
            row[field], hostile,
            "{command} --json keeps the text exactly"
        );
    }
    let out = run_binary(&["status", "--json"], env).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["recent_failures"][0]["error"], hostile);
}
