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

/// The names under `Commands:` in a help text (clap's own `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim_end() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The first cell of each row of the README's `## Commands` table, without the backticks:
/// `partner-sync sync JOB [--allow-mass-delete]`.
fn readme_command_rows() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Commands\n")
        .nth(1)
        .expect("a ## Commands section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .take_while(|line| !line.starts_with("### "))
        .filter_map(|line| line.strip_prefix("| `partner-sync "))
        .filter_map(|rest| rest.split('`').next())
        .map(|usage| usage.replace("\\|", "|"))
        .collect()
}

async fn help_of(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let out = run_binary(&args, no_env()).await;
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        help.lines()
            .next()
            .is_some_and(|about| !about.trim().is_empty()),
        "{args:?} has no description: {help}"
    );
    help
}

#[tokio::test]
async fn every_command_has_help_and_a_readme_row_and_every_row_a_command() {
    let rows = readme_command_rows();
    assert!(rows.len() > 10, "{rows:?}");
    let top = help_of(&[]).await;
    let commands = subcommands(&top);
    let mut documented = Vec::new();
    for command in &commands {
        let help = help_of(&[command]).await;
        let nested = subcommands(&help);
        let paths: Vec<String> = if nested.is_empty() {
            vec![command.clone()]
        } else {
            let mut paths = Vec::new();
            for sub in &nested {
                help_of(&[command, sub]).await;
                paths.push(format!("{command} {sub}"));
            }
            paths
        };
        for path in paths {
            let own: Vec<&String> = rows
                .iter()
                .filter(|row| *row == &path || row.starts_with(&format!("{path} ")))
                .collect();
            assert!(
                !own.is_empty(),
                "`partner-sync {path}` has no row in README's ## Commands table"
            );
            // Every flag a row shows exists: the help of that command lists it.
            let words: Vec<&str> = path.split(' ').collect();
            let help = help_of(&words).await;
            for row in own {
                for flag in row
                    .split(|c: char| c.is_whitespace() || "[]|…".contains(c))
                    .filter(|word| word.starts_with("--"))
                {
                    assert!(
                        help.contains(flag),
                        "README shows {flag} for `{path}`; its --help has none"
                    );
                }
            }
            documented.push(path);
        }
    }
    for row in &rows {
        assert!(
            documented
                .iter()
                .any(|path| row == path || row.starts_with(&format!("{path} "))),
            "README's ## Commands row `partner-sync {row}` names no command of `partner-sync --help`"
        );
    }
}
