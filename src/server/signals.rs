//! Process signals: SIGTERM/SIGINT start the drain, SIGHUP asks for a reload.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info};

use crate::state::{ReloadHandle, Trigger};

/// SIGTERM and SIGINT handlers, installed before readiness is announced.
pub struct Terminate(Option<(Signal, Signal)>);

impl Terminate {
    /// Whether the handlers are installed (a second signal can be waited for).
    pub fn installed(&self) -> bool {
        self.0.is_some()
    }
}

/// Installs the SIGTERM/SIGINT handlers. Call before the listeners announce readiness, so a
/// supervisor that signals right away gets a drain rather than the default action (death).
pub fn install_terminate() -> Terminate {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => Terminate(Some((t, i))),
        _ => Terminate(None),
    }
}

/// Completes on the next SIGTERM or SIGINT (at once when the handlers could not be
/// installed).
pub async fn terminate(handlers: &mut Terminate) {
    let Some((term, int)) = handlers.0.as_mut() else {
        error!("cannot install SIGTERM/SIGINT handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => info!(signal = "SIGINT", "shutdown requested"),
    }
}

/// Installs the SIGHUP handler. Call before the listeners announce readiness, so a supervisor
/// that signals right away cannot kill the process (SIGHUP's default action).
pub fn sighup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "cannot install SIGHUP handler; reload on SIGHUP is unavailable");
            None
        }
    }
}

/// Forwards every SIGHUP to the reload task, until the process ends.
pub async fn forward_sighup(mut hup: Signal, reload: ReloadHandle) {
    while hup.recv().await.is_some() {
        info!(signal = "SIGHUP", "reload requested");
        reload.request(Trigger::Signal);
    }
}
