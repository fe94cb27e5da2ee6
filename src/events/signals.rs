//! Process signals. SIGTERM or SIGINT asks for a graceful shutdown; a second one exits at once.
//! SIGUSR1, SIGUSR2 and SIGHUP become [`Control`] events for the daemon's control loop.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Control;

/// Cancels `shutdown` on the first SIGTERM/SIGINT and exits the process on the second.
pub fn spawn_shutdown_handler(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second shutdown signal: exiting without waiting for running jobs");
        std::process::exit(130);
    });
    Ok(())
}

/// SIGUSR1 → resync the mirrors, SIGUSR2 → rotate tokens, SIGHUP → reload the configuration.
/// A burst of signals is harmless: triggers coalesce in the runners.
pub fn spawn_control_handler(control: mpsc::Sender<Control>) -> std::io::Result<()> {
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let (event, name) = tokio::select! {
                Some(()) = usr1.recv() => (Control::ResyncMirrors, "SIGUSR1"),
                Some(()) = usr2.recv() => (Control::RotateTokens, "SIGUSR2"),
                Some(()) = hup.recv() => (Control::Reload, "SIGHUP"),
                else => break,
            };
            tracing::info!(signal = name, "signal received");
            if control.send(event).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}
