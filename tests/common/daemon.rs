//! The real binary as a child of the test: started with its settings, its log (stderr) and its
//! stdout in files of its own, signalled, stopped, and killed when dropped, so a test that fails
//! half-way leaves no daemon behind holding ports or the build's lock.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_partner-sync");
/// A schedule that never fires during a test.
pub const NEVER: &str = "0 0 0 1 1 *";
/// How long a daemon may take to start (a loaded machine runs many side by side).
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long a clean stop may take in [`Daemon::stop_cleanly`].
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// The signals the daemon answers (SIGTERM stops, SIGHUP reloads, SIGUSR1/2 resync).
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Term,
    Kill,
    Hup,
    Usr1,
    Usr2,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Hup => libc::SIGHUP,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
        }
    }
}

/// How a process ended, and how long after the stop began.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub took: Duration,
}

/// A command line not started yet: `partner-sync <args>` with no inherited `RUST_LOG`.
pub struct Launch {
    command: Command,
}

impl Launch {
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn envs<K, V>(mut self, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(env);
        self
    }

    /// Settings from `file` (`PARTNER_SYNC_CONFIG`), under whatever the environment sets.
    pub fn settings_file(self, file: &Path) -> Self {
        self.env("PARTNER_SYNC_CONFIG", file)
    }

    /// Changes the command before it starts (e.g. the child's limits).
    pub fn configure(mut self, configure: impl FnOnce(&mut Command)) -> Self {
        configure(&mut self.command);
        self
    }

    pub fn start(mut self) -> Daemon {
        let dir = tempfile::tempdir().expect("a directory for the daemon's files");
        let log = dir.path().join("stderr.log");
        let output = dir.path().join("stdout.log");
        let child = self
            .command
            .stdout(std::fs::File::create(&output).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        Daemon {
            child,
            log,
            output,
            _dir: dir,
        }
    }
}

/// A running `partner-sync` process; SIGKILLed when dropped (tokio reaps it).
pub struct Daemon {
    child: Child,
    log: PathBuf,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `partner-sync <args>`, to be given settings and started.
    pub fn command(args: &[&str]) -> Launch {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("RUST_LOG");
        Launch { command }
    }

    /// `partner-sync run` with `env`, started.
    pub fn run<K, V>(env: impl IntoIterator<Item = (K, V)>) -> Daemon
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        Self::command(&["run"]).envs(env).start()
    }

    /// [`Daemon::run`], then [`Daemon::wait_ready`].
    pub async fn run_ready<K, V>(env: impl IntoIterator<Item = (K, V)>) -> Daemon
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let daemon = Self::run(env);
        daemon.wait_ready().await;
        daemon
    }

    /// The process id, while it runs (`sync.runs.host` ends with it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the daemon logged "daemon running": its jobs are scheduled and it handles
    /// signals (a SIGTERM before that kills it like SIGKILL). Fails the test with the log.
    pub async fn wait_ready(&self) {
        assert!(
            self.wait_for_log("daemon running", START_LIMIT).await,
            "the daemon did not start: {}",
            self.log()
        );
    }

    /// Waits until the log contains `needle`; false after `limit`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `http://{address}` of the listener the JSON log announced with `message` ("HTTP server
    /// listening", "operations server listening"); port 0 picks the port.
    pub async fn logged_address(&self, message: &str) -> String {
        let started = Instant::now();
        loop {
            let logged = self.log();
            let address = logged.lines().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                (event["message"] == message)
                    .then(|| event["address"].as_str().map(str::to_owned))?
            });
            if let Some(address) = address {
                return format!("http://{address}");
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "no {message:?} in the log: {logged}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What it wrote to stderr so far: the daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What it wrote to stdout so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Sends `signal`; the process must not have been waited for yet.
    pub fn signal(&self, signal: Signal) {
        let pid = self.pid().expect("the daemon was not waited for yet");
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped, so the pid
        // cannot belong to another process.
        let sent = unsafe { libc::kill(pid, signal.number()) };
        assert_eq!(
            sent,
            0,
            "kill {signal:?}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `limit` for the process to exit on its own; None if it still runs.
    pub async fn wait(&mut self, limit: Duration) -> Option<Exit> {
        let started = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait()).await.ok()?;
        Some(Exit {
            status: status.expect("wait for the daemon"),
            took: started.elapsed(),
        })
    }

    /// SIGTERM, then waits up to `limit`; a process still running then gets SIGKILL, so its
    /// exit status is not a success and `took` is at least `limit`.
    pub async fn stop(&mut self, limit: Duration) -> Exit {
        let started = Instant::now();
        self.signal(Signal::Term);
        if let Some(exit) = self.wait(limit).await {
            return exit;
        }
        let status = self.kill().await;
        Exit {
            status,
            took: started.elapsed(),
        }
    }

    /// SIGTERM, and the process must exit 0 within 15 s (the test fails with the log
    /// otherwise); returns the whole log.
    pub async fn stop_cleanly(mut self) -> String {
        let exit = self.stop(STOP_LIMIT).await;
        let log = self.log();
        assert!(exit.status.success(), "{exit:?}: {log}");
        log
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.kill().await.expect("SIGKILL the daemon");
        self.child.wait().await.expect("wait for the daemon")
    }
}
