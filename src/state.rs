//! Everything a request handler needs, shared by all connections (cheap to clone).

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::revocation::Revocations;
use crate::config::ConfigHandle;
use crate::metrics::Metrics;
use crate::pipeline::ids::IdGen;
use crate::proxy::Forwarder;
use crate::reload::ReloadHandle;
use crate::server::tls::CertStore;

/// Shared state of one fortress instance.
#[derive(Debug)]
pub struct State {
    /// The active config (one `ArcSwap`).
    pub config: ConfigHandle,
    /// This instance's metrics.
    pub metrics: Metrics,
    /// The upstream client.
    pub forwarder: Forwarder,
    /// Request id generator.
    pub ids: IdGen,
    /// Revoked token ids (kept across reloads).
    pub revocations: Arc<dyn Revocations>,
    /// Asks the reload task to reload.
    pub reload: ReloadHandle,
    /// The serving certificate, when the client listener is TLS.
    pub tls: Option<Arc<CertStore>>,
    /// The config file, when there is one (the demo has none).
    pub config_path: Option<PathBuf>,
}

/// Handle to the shared state.
pub type AppState = Arc<State>;
