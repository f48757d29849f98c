//! Process signals: SIGTERM/SIGINT start the drain, SIGHUP asks for a reload.

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::reload::{ReloadHandle, Trigger};

/// Completes on the first SIGTERM or SIGINT.
pub async fn terminate() {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            error!("cannot install SIGTERM/SIGINT handlers; stopping");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => info!(signal = "SIGINT", "shutdown requested"),
    }
}

/// Forwards every SIGHUP to the reload task, until the process ends.
pub async fn forward_sighup(reload: ReloadHandle) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot install SIGHUP handler; reload on SIGHUP is unavailable");
        return;
    };
    while hup.recv().await.is_some() {
        info!(signal = "SIGHUP", "reload requested");
        reload.request(Trigger::Signal);
    }
}
