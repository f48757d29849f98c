//! The running instance: what it owns and shares with every connection (cheap to clone).
//!
//! A reload replaces only the [`Snapshot`] behind [`PolicyHandle`]; everything else here
//! (metrics, the upstream pool, live state, the certificate) lives as long as the process.

pub mod admin;
pub mod reload;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::proxy::Forwarder;
use crate::store::StateStore;
use crate::store::live::Live;
use crate::tls::CertStore;
pub use reload::{Outcome, ReloadHandle, Trigger};
pub use snapshot::{PolicyHandle, Snapshot};

/// Shared state of one fortress instance.
#[derive(Debug)]
pub struct State {
    /// The active policy (one `ArcSwap`), compiled from the config file.
    pub config: PolicyHandle,
    /// This instance's metrics.
    pub metrics: Arc<Metrics>,
    /// The upstream client (its connection pool is kept across reloads).
    pub forwarder: Forwarder,
    /// JWKS key sets and the verified-token cache, kept across reloads.
    pub live: Live,
    /// Revocations, toggle overrides, rate-limit and budget state (kept across reloads).
    pub store: Arc<dyn StateStore>,
    /// Asks the reload task to reload.
    pub reload: ReloadHandle,
    /// The serving certificate, when the client listener is TLS.
    pub tls: Option<Arc<CertStore>>,
    /// The config file, when there is one (the demo has none).
    pub config_path: Option<PathBuf>,
    /// The audit trail, when `audit:` is configured (started with the first policy).
    pub audit: Option<Arc<crate::audit::Trail>>,
    /// The OTLP span exporter, when export is on (started once; restart to change it).
    pub telemetry: Option<Arc<crate::telemetry::Exporter>>,
    /// The admin API's state (persistence of its changes, reload history).
    pub admin: admin::AdminControl,
    /// Set at SIGTERM: `/readyz` answers 503 from then on (`server.timeouts.shutdown_delay`).
    pub shutting_down: std::sync::atomic::AtomicBool,
}

impl State {
    /// Compiles-in a new policy: binds it to the live state and swaps it in. A JWKS source
    /// the policy adds gets its first fetch awaited (bounded by the fetch timeout) before the
    /// swap, so requests do not meet an empty key set; a kept source is not waited for.
    pub async fn install(&self, policy: crate::policy::Policy) -> Arc<Snapshot> {
        let hash = policy.hash.clone();
        for w in &policy.warnings {
            tracing::warn!(warning = %w, "policy lint warning");
        }
        let next = Snapshot::bind(policy, &self.live, &self.metrics);
        if let Some(jwks) = next.live_auth.as_ref().and_then(|a| a.jwks.as_ref()) {
            jwks.first_attempt(crate::auth::jwks::FETCH_TIMEOUT).await;
        }
        let old = self.config.replace(next);
        self.metrics.set_policy(&hash);
        old
    }
}

/// Handle to the shared state.
pub type AppState = Arc<State>;
