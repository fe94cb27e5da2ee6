//! Resync requests through Postgres: `partner-sync resync` stores a request and NOTIFYs channel
//! `partner_sync`; every daemon listens, and the control loop claims it (exactly one replica
//! wins). The listener reconnects on its own, and after every (re)connect it picks up requests
//! nobody claimed, so a notification sent while it was away is not lost.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Control;
use crate::store::trigger_requests::{self, CHANNEL};

/// Unclaimed requests older than this are stale: nobody waits for them any more.
const UNCLAIMED_HORIZON: Duration = Duration::from_secs(10 * 60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn listen(pool: PgPool, control: mpsc::Sender<Control>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = subscribe(&pool) => connected,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, retry_in_s = backoff.as_secs(), "cannot listen for resync requests");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        tracing::info!(channel = CHANNEL, "listening for resync requests");
        match trigger_requests::unclaimed(&pool, UNCLAIMED_HORIZON).await {
            Ok(ids) => {
                for id in ids {
                    let _ = control.send(Control::Request(id)).await;
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot read unclaimed resync requests"),
        }
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => match notification.payload().parse() {
                    Ok(id) => {
                        if control.send(Control::Request(id)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => tracing::warn!(
                        payload = notification.payload(),
                        "ignored a notification that is not a request id"
                    ),
                },
                // The connection was lost: reconnect and sweep what was missed.
                Ok(None) => {
                    tracing::warn!(
                        "lost the database connection for resync requests; reconnecting"
                    );
                    break;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "resync request listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
