//! The migrations are embedded at compile time (`sqlx::migrate!`); a migration added or edited
//! must rebuild the crate, which cargo does not know by itself. `--version` names the commit
//! the binary was built from: `PARTNER_SYNC_GIT_COMMIT`, "unknown" where there is no git or no
//! repository (a container build copying only the sources).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    println!(
        "cargo:rustc-env=PARTNER_SYNC_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    // A new commit (HEAD moving, or the branch it names) must rebuild, or the version lies.
    if commit.is_some() {
        let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(branch);
        }
        for name in watched {
            if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
