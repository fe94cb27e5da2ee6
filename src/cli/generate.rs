//! Shell completions and the man page, generated from the same clap definitions that parse the
//! command line, so they cannot describe options that do not exist.

use std::io::Write as _;

use clap::{CommandFactory as _, ValueEnum};

use super::Cli;

/// `--version`: the crate's version and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PARTNER_SYNC_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`, on standard output.
pub(super) fn completions(shell: CompletionShell) -> anyhow::Result<()> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    // Into memory first: clap_complete panics when its writer fails (`… | head` closing the
    // pipe), and a closed pipe is no reason to panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "partner-sync", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// The man page (roff), on standard output: `partner-sync man > partner-sync.1`.
pub(super) fn man() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    out.flush()?;
    Ok(())
}
