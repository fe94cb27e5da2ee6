//! Settings through the real binary: layering, validation (exit 2, one line naming the key),
//! and `check-config` masking every secret.

use std::process::Output;

use partner_sync::settings::Settings;
use secrecy::ExposeSecret;

use crate::common::run_binary;

/// The binary with exactly `env`: [`run_binary`] leaves out the test's own settings.
async fn partner_sync(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_binary(args, env.iter().copied()).await
}

const ENABLED: &[(&str, &str)] = &[
    ("PARTNER_SYNC__RABOT__ENABLED", "true"),
    ("PARTNER_SYNC__RABOT__CLIENT_ID", "client"),
    ("PARTNER_SYNC__RABOT__CLIENT_SECRET", "s3cr3t-value"),
];

#[tokio::test]
async fn invalid_values_stop_start_up_with_one_line_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "PARTNER_SYNC__RABOT__SCHEDULE",
            "every minute",
            "rabot.schedule",
        ),
        (
            "PARTNER_SYNC__RABOT__SCHEDULE",
            "0 * * * *",
            "rabot.schedule",
        ),
        (
            "PARTNER_SYNC__RABOT__COSTS_SCHEDULE",
            "daily",
            "rabot.costs_schedule",
        ),
        ("PARTNER_SYNC__RABOT__PAGE_SIZE", "0", "rabot.page_size"),
        ("PARTNER_SYNC__RABOT__PAGE_SIZE", "1001", "rabot.page_size"),
        (
            "PARTNER_SYNC__RABOT__API_BASE_URL",
            "ftp://example.com/v1",
            "rabot.api_base_url",
        ),
        (
            "PARTNER_SYNC__RABOT__TOKEN_URL",
            "not a url",
            "rabot.token_url",
        ),
        ("PARTNER_SYNC__RABOT__CLIENT_ID", "", "rabot.client_id"),
        (
            "PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND",
            "0",
            "rabot.requests_per_second",
        ),
        ("PARTNER_SYNC__RABOT__BURST", "0", "rabot.burst"),
        ("PARTNER_SYNC__RABOT__PAGE_SIZE", "many", "page_size"),
        (
            "PARTNER_SYNC__SERVER__LINK_DONE_URL",
            "platform.example/done",
            "server.link_done_url",
        ),
        (
            "PARTNER_SYNC__SERVER__ADMIN_TOKEN",
            "s3cr3t-value",
            "server.admin_token",
        ),
        (
            "PARTNER_SYNC__SERVER__OPS_LISTEN",
            "127.0.0.1:8080",
            "server.ops_listen",
        ),
        (
            "PARTNER_SYNC__SERVER__REQUEST_TIMEOUT",
            "0s",
            "server.request_timeout",
        ),
        (
            "PARTNER_SYNC__SERVER__HEADER_READ_TIMEOUT",
            "0s",
            "server.header_read_timeout",
        ),
        ("PARTNER_SYNC__SERVER__BODY_LIMIT", "0", "server.body_limit"),
        ("PARTNER_SYNC__SERVER__BODY_LIMIT", "64 KiB", "body_limit"),
        (
            "PARTNER_SYNC__DAEMON__TIMEZONE",
            "Mars/Olympus",
            "daemon.timezone",
        ),
        // Misspelt: the error names the zone that was meant.
        (
            "PARTNER_SYNC__DAEMON__TIMEZONE",
            "Europe/Amsterdan",
            "Europe/Amsterdam",
        ),
        (
            "PARTNER_SYNC__SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections",
        ),
        (
            "PARTNER_SYNC__RABOT__STALE_AFTER",
            "0s",
            "rabot.stale_after",
        ),
        ("PARTNER_SYNC__RABOT__STALE_AFTER", "soon", "stale_after"),
        (
            "PARTNER_SYNC__RABOT__METRICS_TIMEZONE",
            "Europe/Berlim",
            "rabot.metrics_timezone",
        ),
        (
            "PARTNER_SYNC__RABOT__METRICS_TIMEZONE",
            "Europe/Berlim",
            "Europe/Berlin",
        ),
        (
            "PARTNER_SYNC__RABOT__CONSUMPTION_INTERVAL",
            "Fortnightly",
            "rabot.consumption_interval",
        ),
        (
            "PARTNER_SYNC__RABOT__CONSUMPTION_SCHEDULE",
            "daily",
            "rabot.consumption_schedule",
        ),
        (
            "PARTNER_SYNC__RABOT__CONSUMPTION_BACKFILL_LIMIT",
            "0s",
            "rabot.consumption_backfill_limit",
        ),
        (
            "PARTNER_SYNC__RABOT__METRIC_TYPE_PARAMETER",
            "Metric Type",
            "rabot.metric_type_parameter",
        ),
        (
            "PARTNER_SYNC__RABOT__VALUE_TYPE_PARAMETER",
            "",
            "rabot.value_type_parameter",
        ),
        // Shorter than the consumption back-fill: purged periods would be read back.
        (
            "PARTNER_SYNC__RETENTION__RAW_CONSUMPTION",
            "30d",
            "rabot.consumption_backfill_limit",
        ),
    ];
    for (key, value, named) in cases {
        let mut env = ENABLED.to_vec();
        env.push((key, value));
        let out = partner_sync(&["check-config"], &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(named),
            "{key}={value} should name {named}: {stderr}"
        );
        assert!(!stderr.contains("s3cr3t-value"));
    }
    // Disabled partners are not validated: the defaults alone are a valid configuration.
    let out = partner_sync(&["check-config"], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn check_config_prints_effective_settings_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(
        &file,
        "[rabot]\npage_size = 250\nconcurrency = 2\nstale_after = \"90m\"\n",
    )
    .unwrap();
    let mut env = ENABLED.to_vec();
    env.push((
        "DATABASE_URL",
        "postgres://sync:db-pa55word@db.internal:5432/mirror",
    ));
    env.push(("PARTNER_SYNC__RABOT__CONCURRENCY", "6"));
    env.push(("PARTNER_SYNC__RABOT__EXTERNAL_IDS", "EXT-1, EXT-2"));
    let out = partner_sync(&["--config", file.to_str().unwrap(), "check-config"], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("page_size = 250"),
        "file layer applied: {stdout}"
    );
    assert!(
        stdout.contains("concurrency = 6"),
        "environment wins over the file: {stdout}"
    );
    // An optional duration: set in the file for RABOT, unset (empty) for the others.
    assert!(
        stdout.contains("stale_after = \"1h 30m\"") && stdout.contains("stale_after = \"\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"EXT-1\"") && stdout.contains("\"EXT-2\""),
        "{stdout}"
    );
    assert!(stdout.contains("db.internal"), "{stdout}");
    assert!(
        !stdout.contains("s3cr3t-value") && !stdout.contains("db-pa55word"),
        "{stdout}"
    );
    assert!(stdout.contains("client_secret = \"********\""), "{stdout}");

    // The admin token is masked like every other secret.
    env.push((
        "PARTNER_SYNC__SERVER__ADMIN_TOKEN",
        "admin-s3cr3t-0123456789",
    ));
    let out = partner_sync(&["check-config"], &env).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(!stdout.contains("admin-s3cr3t"), "{stdout}");
    assert!(stdout.contains("admin_token = \"********\""), "{stdout}");
}

#[tokio::test]
async fn a_missing_config_file_is_a_settings_error() {
    let out = partner_sync(
        &["--config", "/nonexistent/partner-sync.toml", "check-config"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/partner-sync.toml"));
}

#[test]
fn partner_sync_env_beats_database_url() {
    let settings = Settings::load_from(
        None,
        [
            ("DATABASE_URL".to_owned(), "postgres://a@h1/one".to_owned()),
            (
                "PARTNER_SYNC__DATABASE__URL".to_owned(),
                "postgres://a@h2/two".to_owned(),
            ),
        ],
    )
    .unwrap();
    assert!(settings.to_masked_toml().contains("h2/two"));
    let settings = Settings::load_from(
        None,
        [("DATABASE_URL".to_owned(), "postgres://a@h1/one".to_owned())],
    )
    .unwrap();
    assert!(settings.to_masked_toml().contains("h1/one"));
}

#[test]
fn debug_output_never_shows_secrets() {
    let settings = Settings::load_from(
        None,
        [
            (
                "DATABASE_URL".to_owned(),
                "postgres://u:db-pa55word@h/d".to_owned(),
            ),
            (
                "PARTNER_SYNC__RABOT__CLIENT_SECRET".to_owned(),
                "s3cr3t-value".to_owned(),
            ),
        ],
    )
    .unwrap();
    let debug = format!("{settings:?}");
    assert!(debug.contains("RabotSettings"), "{debug}");
    assert!(
        !debug.contains("s3cr3t-value") && !debug.contains("db-pa55word"),
        "{debug}"
    );
}

#[test]
fn environment_values_are_taken_as_written() {
    let settings = Settings::load_from(
        None,
        [
            ("PARTNER_SYNC__RABOT__CLIENT_ID", "0042"),
            ("PARTNER_SYNC__RABOT__CLIENT_SECRET", "1e3"),
            ("PARTNER_SYNC__RABOT__EXTERNAL_IDS", " 007 ,EXT-2,,"),
            ("PARTNER_SYNC__RABOT__PAGE_SIZE", "250"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    assert_eq!(
        settings.rabot.client_id, "0042",
        "ids keep their leading zeros"
    );
    assert_eq!(
        settings.rabot.client_secret.expose_secret(),
        "1e3",
        "secrets are not numbers"
    );
    assert_eq!(settings.rabot.external_ids, ["007", "EXT-2"]);
    assert_eq!(settings.rabot.page_size, 250);
}

const RABOBANK: &[(&str, &str)] = &[
    ("PARTNER_SYNC__RABOBANK__ENABLED", "true"),
    ("PARTNER_SYNC__RABOBANK__CLIENT_ID", "bank-client"),
    ("PARTNER_SYNC__RABOBANK__CLIENT_SECRET", "bank-s3cr3t"),
    (
        "PARTNER_SYNC__SECURITY__TOKEN_KEY",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ),
];

#[tokio::test]
async fn rabobank_settings_are_validated_and_the_token_key_is_never_shown() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "PARTNER_SYNC__SECURITY__TOKEN_KEY",
            "",
            "security.token_key",
        ),
        (
            "PARTNER_SYNC__SECURITY__TOKEN_KEY",
            "not base64!",
            "security.token_key",
        ),
        // 16 bytes: AES-128 is not what is asked for.
        (
            "PARTNER_SYNC__SECURITY__TOKEN_KEY",
            "AAECAwQFBgcICQoLDA0ODw==",
            "security.token_key",
        ),
        ("PARTNER_SYNC__RABOBANK__VARIANT", "gold", "variant"),
        (
            "PARTNER_SYNC__RABOBANK__SCHEDULE",
            "daily",
            "rabobank.schedule",
        ),
        (
            "PARTNER_SYNC__RABOBANK__CLIENT_SECRET",
            "",
            "rabobank.client_secret",
        ),
        (
            "PARTNER_SYNC__RABOBANK__ROTATE_BEFORE",
            "0s",
            "rabobank.rotate_before",
        ),
        (
            "PARTNER_SYNC__SERVER__PUBLIC_URL",
            "callback.example",
            "server.public_url",
        ),
        ("PARTNER_SYNC__SERVER__LISTEN", "port 80", "listen"),
        (
            "PARTNER_SYNC__DAEMON__STUCK_AFTER",
            "0s",
            "daemon.stuck_after",
        ),
        (
            "PARTNER_SYNC__RABOBANK__STALE_AFTER",
            "0s",
            "rabobank.stale_after",
        ),
    ];
    for (key, value, named) in cases {
        let mut env = RABOBANK.to_vec();
        env.push((key, value));
        let out = partner_sync(&["check-config"], &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(
            stderr.contains(named),
            "{key}={value} should name {named}: {stderr}"
        );
        assert!(!stderr.contains("bank-s3cr3t") && !stderr.contains("AAECAwQF"));
    }

    let out = partner_sync(
        &["check-config"],
        &[
            RABOBANK,
            &[
                (
                    "PARTNER_SYNC__SERVER__PUBLIC_URL",
                    "https://sync.example.com/",
                ),
                ("PARTNER_SYNC__RABOBANK__VARIANT", "premium"),
            ],
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("bank-s3cr3t") && !stdout.contains("AAECAwQF"),
        "{stdout}"
    );
    assert!(stdout.contains("token_key = \"********\""), "{stdout}");
    // Derived values are shown as they will be used.
    assert!(
        stdout.contains("redirect_uri = \"https://sync.example.com/oauth/rabobank/callback\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("oauth_base_url = \"https://oauth.rabobank.nl/openapi/oauth2-premium\""),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_config_masks_passwords_in_url_queries_too() {
    let mut env = ENABLED.to_vec();
    env.push((
        "DATABASE_URL",
        "postgres://sync:user-pa55@db.internal:5432/mirror?sslmode=require&password=q-pa55word&SSLPassword=ssl-pa55word",
    ));
    env.push((
        "PARTNER_SYNC__RABOT__TOKEN_URL",
        "https://id:url-pa55word@auth.example/connect/token?api_key=key-pa55word&tenant=t1",
    ));
    let out = partner_sync(&["check-config"], &env).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "user-pa55",
        "q-pa55word",
        "ssl-pa55word",
        "url-pa55word",
        "key-pa55word",
    ] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
    // What ops need to read stays.
    for kept in [
        "db.internal:5432/mirror",
        "sslmode=require",
        "auth.example/connect/token",
        "tenant=t1",
    ] {
        assert!(stdout.contains(kept), "{kept} missing: {stdout}");
    }
    // URLs with nothing to hide are shown exactly as set.
    assert!(
        stdout.contains("api_base_url = \"https://api.rabot-charge.de"),
        "{stdout}"
    );
}

/// A settings file that does not parse, with a secret on the broken line: `check-config` and
/// `run` both stop with exit 2 and one line naming the file and the position, never the line.
#[tokio::test]
async fn a_settings_file_syntax_error_names_file_and_position_but_never_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(
        &file,
        "[rabot]\npage_size = 250\nclient_secret = \"file-s3cr3t-value\nconcurrency = 2\n",
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let out = partner_sync(&["--config", file.to_str().unwrap(), command], &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("settings file {}", file.display()))
                && stderr.contains("TOML syntax error at line 3 column"),
            "{command}: {stderr}"
        );
        assert!(
            !stderr.contains("s3cr3t") && !stderr.contains("client_secret ="),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_settings_type_error_names_the_key_but_never_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    let cases = [
        (
            "[database]\nmax_connections = \"typed-s3cr3t\"\n",
            "database.max_connections",
        ),
        (
            "[daemon]\nshutdown_grace = \"grace-s3cr3t\"\n",
            "daemon.shutdown_grace",
        ),
        ("[rabot]\nenabled = \"yes-s3cr3t\"\n", "rabot.enabled"),
    ];
    for (text, key) in cases {
        std::fs::write(&file, text).unwrap();
        let out = partner_sync(&["--config", file.to_str().unwrap(), "check-config"], &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(!stderr.contains("s3cr3t"), "{stderr}");
    }
    // The same from the environment.
    let mut env = ENABLED.to_vec();
    env.push(("PARTNER_SYNC__HTTP__MAX_ATTEMPTS", "env-s3cr3t"));
    let out = partner_sync(&["check-config"], &env).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max_attempts"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

#[tokio::test]
async fn lists_are_read_as_people_write_them_commas_spaces_or_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(
        &file,
        "[rabot]\nexternal_ids = \"EXT-1 EXT-2,EXT-3\"\n[energyzero]\nuser_ids = [\"u-1, u-2\", \"u-3\"]\n",
    )
    .unwrap();
    let env = [
        ("PARTNER_SYNC__RABOT__ENABLED", "true"),
        ("PARTNER_SYNC__RABOT__CLIENT_ID", "client"),
        ("PARTNER_SYNC__RABOT__CLIENT_SECRET", "s3cr3t-value"),
        // As RABOT's own documents and OAuth write scopes.
        (
            "PARTNER_SYNC__RABOT__SCOPES",
            "api:partner role:finance-reporting",
        ),
        (
            "PARTNER_SYNC__RABOBANK__SCOPES",
            "ais.balances.read,  ais.transactions.read-90days",
        ),
    ];
    let settings = Settings::load_from(
        Some(&file),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("valid settings");
    assert_eq!(
        settings.rabot.scopes,
        ["api:partner", "role:finance-reporting"]
    );
    assert_eq!(
        settings.rabobank.scopes,
        ["ais.balances.read", "ais.transactions.read-90days"]
    );
    assert_eq!(settings.rabot.external_ids, ["EXT-1", "EXT-2", "EXT-3"]);
    assert_eq!(settings.energyzero.user_ids, ["u-1", "u-2", "u-3"]);

    // The binary agrees: the space-separated scopes pass the api:partner check.
    let out = partner_sync(&["check-config"], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty list variable is an empty list, not "unset": the demo relies on it to mirror every
/// customer whatever the settings file lists.
#[test]
fn an_empty_list_variable_empties_the_files_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(&file, "[rabot]\nexternal_ids = [\"EXT-1\", \"EXT-2\"]\n").unwrap();
    let env =
        [("PARTNER_SYNC__RABOT__EXTERNAL_IDS", "")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let settings = Settings::load_from(Some(&file), env).expect("valid settings");
    assert!(settings.rabot.external_ids.is_empty());
}

#[tokio::test]
async fn unknown_keys_in_a_file_or_the_environment_stop_start_up_naming_the_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partner-sync.toml");
    std::fs::write(&file, "[rabot]\nschedul = \"0 0 3 * * *\"\n").unwrap();
    let out = partner_sync(
        &["check-config", "--config", file.to_str().unwrap()],
        ENABLED,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown setting rabot.schedul")
            && stderr.contains(file.to_str().unwrap())
            && stderr.contains("closest known setting is rabot.schedule")
            && !stderr.contains("0 0 3"),
        "{stderr}"
    );

    let mut env = ENABLED.to_vec();
    env.push(("PARTNER_SYNC__RABOT__EXTERNAL_ID", "EXT-1"));
    for command in [&["check-config"][..], &["run"][..]] {
        let out = partner_sync(command, &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains("unknown setting rabot.external_id")
                && stderr.contains("PARTNER_SYNC__RABOT__EXTERNAL_ID")
                && stderr.contains("closest known setting is rabot.external_ids")
                && !stderr.contains("EXT-1"),
            "{command:?}: {stderr}"
        );
    }
}
