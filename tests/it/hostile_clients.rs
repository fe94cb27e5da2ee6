//! The HTTP server against clients that misbehave: idle connections by the thousand under a
//! 1,024 file-descriptor limit, a 600 MiB body, requests that stop halfway, and a shutdown while
//! they do. The real binary where the process matters (file descriptors, memory, signals);
//! the server in this process where only its timeouts are looked at.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use partner_sync::partners::rabot::links::RabotLinks;
use partner_sync::server::{self, Partners, ScrapeSettings, ServerLimits, ServerState};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const ADMIN_TOKEN: &str = "hostile-clients-admin-token";
const MIB: u64 = 1024 * 1024;

/// A daemon and the addresses its listeners bound.
struct Served {
    daemon: Daemon,
    public: SocketAddr,
    ops: SocketAddr,
}

impl Served {
    /// The daemon over `sandbox` with the admin endpoint on and `overrides`, its command
    /// changed by `configure` first.
    async fn start(
        sandbox: &partner_sync_sandbox::Sandbox,
        db: &TestDb,
        overrides: &[(&str, &str)],
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Self {
        let mut env = sandbox_env(sandbox, &db.url);
        env.push((
            "PARTNER_SYNC__SERVER__ADMIN_TOKEN".into(),
            ADMIN_TOKEN.into(),
        ));
        env.push(("PARTNER_SYNC__RABOT__SCHEDULE".into(), NEVER.into()));
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let daemon = Daemon::command(&["run"])
            .envs(env)
            .configure(configure)
            .start();
        let address =
            |url: String| -> SocketAddr { url.trim_start_matches("http://").parse().unwrap() };
        let public = address(daemon.logged_address("HTTP server listening").await);
        let ops = address(daemon.logged_address("operations server listening").await);
        daemon.wait_ready().await;
        Self {
            daemon,
            public,
            ops,
        }
    }

    fn logged(&self) -> String {
        self.daemon.log()
    }

    /// The largest resident set the process has had, from `/proc/<pid>/status` (VmHWM).
    fn peak_rss_bytes(&self) -> u64 {
        let pid = self.daemon.pid().expect("the daemon runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }
}

/// Reads an HTTP response head (up to the blank line, or what came before the connection closed).
async fn response_head(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends `request` on a new connection and reads the answer's head.
async fn exchange(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    response_head(&mut stream).await
}

fn get_healthz() -> &'static str {
    "GET /healthz HTTP/1.1\r\nHost: partner-sync\r\n\r\n"
}

/// The head of an admin link request whose body is `length` bytes long (or chunked).
fn link_request_head(length: Option<u64>) -> String {
    let framing = match length {
        Some(length) => format!("Content-Length: {length}"),
        None => "Transfer-Encoding: chunked".to_owned(),
    };
    format!(
        "POST /links/rabot HTTP/1.1\r\nHost: partner-sync\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\n{framing}\r\n\r\n"
    )
}

/// Raises this process's soft limit on open files to its hard limit, to hold many sockets.
fn raise_own_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

#[tokio::test]
async fn idle_connections_beyond_the_file_limit_do_not_stop_healthz() {
    const IDLE: usize = 1_100;
    assert!(
        raise_own_file_limit() > 2 * IDLE as u64,
        "this test holds {IDLE} sockets"
    );
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    // The daemon as shipped (default server.* limits) in a process allowed 1,024 open files.
    let daemon = Served::start(&sandbox, &db, &[], |command| {
        // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 1024,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    })
    .await;

    let mut idle = Vec::with_capacity(2 * IDLE);
    for address in [daemon.public, daemon.ops] {
        for _ in 0..IDLE {
            idle.push(TcpStream::connect(address).await.expect("connects"));
        }
    }

    for address in [daemon.public, daemon.ops] {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), exchange(address, get_healthz()))
            .await
            .unwrap_or_else(|_| panic!("/healthz on {address} did not answer within 1 s"));
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{address}: {answer:?} after {:?}\n{}",
            started.elapsed(),
            daemon.logged()
        );
    }
    drop(idle);
    assert!(
        !daemon.logged().contains("cannot accept"),
        "the server ran out of file descriptors: {}",
        daemon.logged()
    );
}

#[tokio::test]
async fn a_600_mib_body_is_refused_413_without_being_held_in_memory() {
    const BODY: u64 = 600 * MIB;
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let daemon = Served::start(&sandbox, &db, &[], |_| {}).await;

    // Announced: refused from the header, before any of it is read.
    let answer = exchange(daemon.public, &link_request_head(Some(BODY))).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // Streamed without a length: refused once the limit is passed. The sender stops when the
    // answer arrives or the server stops reading; the test never holds more than one chunk.
    let stream = TcpStream::connect(daemon.public).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(link_request_head(None).as_bytes())
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let size = format!("{:x}\r\n", chunk.len());
        let mut sent = 0;
        while sent < BODY {
            let wrote = async {
                writer.write_all(size.as_bytes()).await?;
                writer.write_all(&chunk).await?;
                writer.write_all(b"\r\n").await
            };
            if wrote.await.is_err() {
                return;
            }
            sent += chunk.len() as u64;
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
    });
    let answer = response_head(&mut reader).await;
    sender.abort();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // Still serving, and the process never grew past 64 MiB.
    assert!(
        exchange(daemon.public, get_healthz())
            .await
            .starts_with("HTTP/1.1 200")
    );
    let peak = daemon.peak_rss_bytes();
    assert!(peak < 64 * MIB, "peak RSS {} MiB", peak / MIB);
}

#[tokio::test]
async fn half_sent_requests_do_not_hold_shutdown_past_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(2);
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    // Timeouts far beyond the grace period: only the stop itself may end these requests.
    let daemon = Served::start(
        &sandbox,
        &db,
        &[
            ("PARTNER_SYNC__DAEMON__SHUTDOWN_GRACE", "2s"),
            ("PARTNER_SYNC__SERVER__HEADER_READ_TIMEOUT", "5m"),
            ("PARTNER_SYNC__SERVER__REQUEST_TIMEOUT", "5m"),
        ],
        |_| {},
    )
    .await;
    let mut daemon = daemon;

    // Each connection first completes a request, so the server has surely accepted it.
    let open = || async {
        let mut stream = TcpStream::connect(daemon.public).await.unwrap();
        stream.write_all(get_healthz().as_bytes()).await.unwrap();
        assert!(response_head(&mut stream).await.starts_with("HTTP/1.1 200"));
        // The body of /healthz ("ok\n") follows the head.
        let mut body = [0u8; 3];
        stream.read_exact(&mut body).await.unwrap();
        stream
    };
    // Headers never finished.
    let mut unfinished_head = open().await;
    unfinished_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: partner-sync\r\n")
        .await
        .unwrap();
    // A body promised by Content-Length and never sent.
    let body = br#"{"externalId": "HALF-SENT"}"#;
    let mut unsent_body = open().await;
    unsent_body
        .write_all(link_request_head(Some(body.len() as u64)).as_bytes())
        .await
        .unwrap();
    unsent_body.write_all(&body[..5]).await.unwrap();
    // The same, but its body arrives during the grace period: it is answered.
    let mut late_body = open().await;
    late_body
        .write_all(link_request_head(Some(body.len() as u64)).as_bytes())
        .await
        .unwrap();
    late_body.write_all(&body[..5]).await.unwrap();

    daemon.daemon.signal(Signal::Term);
    let stopping = Instant::now();
    assert!(
        daemon
            .daemon
            .wait_for_log("stopping", Duration::from_secs(5))
            .await
    );
    late_body.write_all(&body[5..]).await.unwrap();
    let answer = response_head(&mut late_body).await;
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "a request in progress finishes during the grace period: {answer:?}\n{}",
        daemon.logged()
    );

    let margin = Duration::from_millis(1500);
    let status = daemon
        .daemon
        .wait(GRACE + Duration::from_secs(10))
        .await
        .expect("the daemon exits")
        .status;
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{}", daemon.logged());
    assert!(
        took < GRACE + margin,
        "stopped {took:?} after SIGTERM with a {GRACE:?} grace period\n{}",
        daemon.logged()
    );
    drop((unfinished_head, unsent_body));
}

/// This process's public server over `sandbox`, with `limits`; the admin endpoint is on.
async fn serve_here(
    sandbox: &partner_sync_sandbox::Sandbox,
    db: &TestDb,
    limits: ServerLimits,
) -> (SocketAddr, CancellationToken) {
    let settings = settings(
        sandbox,
        db,
        &[("PARTNER_SYNC__SERVER__ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let (listener, address) = server::bind("127.0.0.1:0".parse().unwrap(), "server.listen")
        .await
        .unwrap();
    let state = ServerState {
        pool: db.pool.clone(),
        partners: tokio::sync::watch::channel(Partners {
            rabobank: None,
            rabot: RabotLinks::from_settings(&settings).unwrap(),
        })
        .1,
        control: tokio::sync::mpsc::channel(1).0,
        admin_token: settings.server.admin_token.clone(),
        link_done_url: String::new(),
        metrics: partner_sync::metrics::install(),
        stuck_after: settings.daemon.stuck_after,
        scrape: tokio::sync::watch::channel(ScrapeSettings::from_settings(&settings)).1,
    };
    let stop = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        server::public_router(state),
        limits,
        stop.clone(),
    ));
    (address, stop)
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_a_stalled_head_is_closed() {
    let db = TestDb::new().await;
    let sandbox = start_sandbox(small_sandbox(1)).await;
    let defaults = ServerLimits::from_settings(&settings(&sandbox, &db, &[]));
    let limits = ServerLimits {
        request_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        ..defaults
    };
    let (address, stop) = serve_here(&sandbox, &db, limits).await;

    let mut stalled_body = TcpStream::connect(address).await.unwrap();
    stalled_body
        .write_all(link_request_head(Some(100)).as_bytes())
        .await
        .unwrap();
    stalled_body.write_all(b"{").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), response_head(&mut stalled_body))
        .await
        .expect("answered by the request timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    let mut stalled_head = TcpStream::connect(address).await.unwrap();
    stalled_head
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // The header read timeout closes it (hyper answers 408 first, or nothing).
    tokio::time::timeout(Duration::from_secs(10), stalled_head.read_to_end(&mut rest))
        .await
        .expect("closed by the header read timeout")
        .ok();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest:?}"
    );
    stop.cancel();
}
