//! The accept loop under each listener: HTTP/1.1 connections from hyper (for its header read
//! timeout, which `axum::serve` cannot set), at most `max_connections` of them open at once, and
//! a stop that lets requests in progress finish within the grace period.
//!
//! The cap is a semaphore whose permits the connections hold. When it is full, the connection
//! that has been idle the longest (no request in progress) is closed to make room, as nginx does
//! with keep-alive connections: closing an idle HTTP/1.1 connection is allowed at any time and
//! clients reopen one. If none is idle, new connections wait in the kernel's accept queue until
//! a request ends; they are not refused, since every connection in use is doing work that ends
//! within `request_timeout`. So neither idle clients nor slow ones (a header read is idle too,
//! and ends after `header_read_timeout`) can keep the server from answering, and the process
//! never holds more than `max_connections + 1` client sockets.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::ServerLimits;

/// After an accept error that is not about one connection (out of file descriptors), wait this
/// long before the next accept instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open = OpenConnections::default();
    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: connections still open are dropped.
    let abandon = CancellationToken::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);

    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !open.reclaim_idle() {
                    tracing::debug!("every connection is busy; new ones wait to be accepted");
                }
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed; if it were, nothing could be served.
                        Err(_) => break,
                    },
                }
            }
        };
        let connection = open.register();
        let service = service(router.clone(), connection.activity.clone());
        let serving = http.serve_connection(TokioIo::new(stream), service);
        let (shutdown, abandon) = (shutdown.clone(), abandon.clone());
        tracker.spawn(async move {
            drive(serving, &connection, &shutdown, &abandon).await;
            drop(connection);
            drop(permit);
        });
    }

    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "HTTP requests still unfinished after the grace period are dropped"
        );
        abandon.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// Serves one connection until it ends, is reclaimed, or the server stops. A connection with no
/// request in progress is then dropped at once; one with a request in progress finishes that
/// request (within the grace period) and closes.
async fn drive<S>(
    serving: http1::Connection<TokioIo<TcpStream>, S>,
    connection: &Registered,
    shutdown: &CancellationToken,
    abandon: &CancellationToken,
) where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut serving = std::pin::pin!(serving);
    tokio::select! {
        ended = serving.as_mut() => return log_end(ended),
        _ = connection.activity.reclaim.cancelled() => {}
        _ = shutdown.cancelled() => {}
    }
    // Checked here, between polls of the connection: a request whose head has arrived has
    // reached the service by now, so "idle" cannot turn busy before the connection is dropped.
    if connection.activity.is_idle() {
        return;
    }
    serving.as_mut().graceful_shutdown();
    tokio::select! {
        ended = serving => log_end(ended),
        _ = abandon.cancelled() => {}
    }
}

fn log_end(ended: Result<(), hyper::Error>) {
    // Clients that time out, reset or send garbage are routine on a public listener.
    if let Err(error) = ended {
        tracing::debug!(error = %error, "HTTP connection ended with an error");
    }
}

async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    // A connection that went away between the kernel's accept queue and us: take the next one.
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %error, "cannot accept an HTTP connection");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// The router behind one connection, counting its requests in progress: from the moment hyper
/// hands over a request until the response body has been sent and dropped.
fn service(
    router: Router,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = Busy::start(activity.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            // The guard lives in the body, so the count drops when hyper is done sending it.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &busy;
                    frame
                }))
            }))
        }
    })
}

/// What the accept loop knows of one open connection.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since the server started at which the last request ended (or the connection
    /// was accepted): the least recently used idle connection is reclaimed first.
    idle_since_ms: AtomicU64,
    /// Cancelled to ask the connection to close because the cap is reached.
    reclaim: CancellationToken,
    epoch: Instant,
}

impl Activity {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A request in progress on a connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections of one listener, so that an idle one can be reclaimed.
#[derive(Clone)]
struct OpenConnections {
    inner: Arc<Mutex<Registry>>,
    epoch: Instant,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Activity>>,
}

impl Default for OpenConnections {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

impl OpenConnections {
    fn register(&self) -> Registered {
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            reclaim: CancellationToken::new(),
            epoch: self.epoch,
        });
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Release);
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.open.insert(id, activity.clone());
        Registered {
            id,
            activity,
            open: self.clone(),
        }
    }

    /// Asks the connection idle for longest to close; false if every connection is busy.
    fn reclaim_idle(&self) -> bool {
        let registry = self.lock();
        let oldest = registry
            .open
            .values()
            .filter(|a| a.is_idle() && !a.reclaim.is_cancelled())
            .min_by_key(|a| a.idle_since_ms.load(Ordering::Acquire));
        match oldest {
            Some(activity) => {
                activity.reclaim.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry stays consistent even if a holder panicked: every change is one call.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection's entry in [`OpenConnections`], removed when the connection's task ends.
struct Registered {
    id: u64,
    activity: Arc<Activity>,
    open: OpenConnections,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().open.remove(&self.id);
    }
}
