//! What the binary says about itself: `--version`, the completion scripts, the man page, and
//! every command's `--help` against the README's command table.

use crate::common::*;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[tokio::test]
async fn version_names_the_release_and_the_commit() {
    let out = run_binary(&["--version"], no_env()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let expected = format!("partner-sync {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(stdout.starts_with(&expected), "{stdout}");
    let commit = stdout[expected.len()..].trim_end().trim_end_matches(')');
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{stdout}"
    );
}

#[tokio::test]
async fn completions_and_the_man_page_come_from_the_command_definitions_without_settings() {
    // A settings file that does not exist: these commands never read it.
    let env = vec![("PARTNER_SYNC_CONFIG", "/nonexistent/partner-sync.toml")];
    for (shell, marker) in [
        ("bash", "_partner__sync()"),
        ("zsh", "#compdef partner-sync"),
        ("fish", "complete -c partner-sync"),
    ] {
        let out = run_binary(&["completions", shell], env.clone()).await;
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["check-config", "rotate-tokens", "completions"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let refused = run_binary(&["completions", "tcsh"], env.clone()).await;
    assert_eq!(refused.status.code(), Some(2));

    let man = run_binary(&["man"], env).await;
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    assert!(page.contains(".TH partner-sync 1"), "{page}");
    assert!(
        page.contains("check\\-config") && page.contains("rotate\\-tokens"),
        "{page}"
    );
}
