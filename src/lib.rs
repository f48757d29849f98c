//! Fortress: a sidecar reverse proxy that enforces governance in front of an unmodified HTTP
//! application. See README.md and docs/ for operating it, and `docs/architecture.md` for the map of
//! these modules.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod diff;
pub mod env;
pub mod error;
pub mod explain;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod policytest;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod server;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
#[cfg(test)]
mod testutil;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use policy::Policy;
use server::Listener;
use state::{AppState, PolicyHandle, ReloadHandle, Snapshot, State};
use store::StateStore;
use store::live::Live;

/// Why fortress could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is invalid.
    #[error("{0}")]
    Config(#[from] config::LoadError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("{0}")]
    Tls(String),
    /// The JWT crypto backend failed its self-test.
    #[error("{0}")]
    Crypto(String),
    /// Loading the config did not finish (its thread failed).
    #[error("loading the config failed: {0}")]
    Load(String),
    /// The test clock was asked for outside `environment: local`.
    #[error(
        "{} is set: the test clock is only available with `environment: local`",
        clock::TEST_CLOCK_ENV
    )]
    TestClock,
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The persisted budget state could not be read (corrupt, unknown version).
    #[error("{0}")]
    State(#[from] store::persist::PersistError),
    /// The audit trail could not be opened or could not record the startup.
    #[error("audit: {0}")]
    Audit(String),
}

/// A running fortress instance.
pub struct Fortress {
    /// Bound client listener address.
    pub client_addr: SocketAddr,
    /// Bound admin listener address.
    pub admin_addr: SocketAddr,
    /// Bound probe listener address (`server.probes`), if configured.
    pub probes_addr: Option<SocketAddr>,
    /// Shared state (config handle, metrics).
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<bool>,
}

impl Fortress {
    /// Loads the config file and starts serving (with file watching and hot reload).
    pub async fn start(config_path: &Path) -> Result<Self, StartError> {
        let path = config_path.to_path_buf();
        let config = tokio::task::spawn_blocking(move || config::load_file(&path))
            .await
            .map_err(|e| StartError::Load(e.to_string()))??;
        Self::start_with(config, Some(config_path.to_path_buf())).await
    }

    /// Like [`Fortress::start`], reading time from `clock` (tests: a [`clock::Clock::File`]
    /// they move; only with `environment: local`).
    pub async fn start_with_clock(
        config_path: &Path,
        clock: clock::Clock,
    ) -> Result<Self, StartError> {
        let path = config_path.to_path_buf();
        let config = tokio::task::spawn_blocking(move || config::load_file(&path))
            .await
            .map_err(|e| StartError::Load(e.to_string()))??;
        Self::start_clocked(config, Some(config_path.to_path_buf()), clock).await
    }

    /// Starts serving an already compiled policy. Without a path, reload is unavailable. The
    /// clock is the system's unless `FORTRESS_TEST_CLOCK` names a file (see [`clock`]).
    pub async fn start_with(
        config: Policy,
        config_path: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        Self::start_clocked(config, config_path, clock::Clock::from_env()).await
    }

    async fn start_clocked(
        config: Policy,
        config_path: Option<PathBuf>,
        clock: clock::Clock,
    ) -> Result<Self, StartError> {
        auth::jwt::self_test().map_err(StartError::Crypto)?;
        let metrics = Arc::new(metrics::Metrics::new()?);
        metrics.set_policy(&config.hash);
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(
                tls::CertStore::load(files).map_err(StartError::Tls)?,
            )),
            None => None,
        };
        if let Some(t) = &tls {
            metrics.attach_cert_expiry(t.not_after().clone());
        }
        let client = bind(config.server.listen).await?;
        let admin = bind(config.server.admin).await?;
        let client_addr = client.local_addr().map_err(|e| StartError::Bind {
            addr: config.server.listen,
            source: e,
        })?;
        let admin_addr = admin.local_addr().map_err(|e| StartError::Bind {
            addr: config.server.admin,
            source: e,
        })?;
        let probes = match config.server.probes {
            Some(addr) => {
                let l = bind(addr).await?;
                let bound = l
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some((l, bound))
            }
            None => None,
        };
        let probes_addr = probes.as_ref().map(|(_, a)| *a);
        let (reload, reload_rx) = match &config_path {
            Some(_) => {
                let (h, rx) = state::reload::channel();
                (h, Some(rx))
            }
            None => (ReloadHandle::disabled(), None),
        };
        let watcher = config_path.as_deref().and_then(|p| {
            reload::watch(
                p,
                config.server.tls.as_ref(),
                &config.input_files,
                reload.clone(),
            )
        });
        let forwarder = proxy::Forwarder::new(config.server.timeouts.upstream_connect);
        metrics.attach_upstream_owned(forwarder.owned_connections());
        let memory = Arc::new(store::memory::MemoryStore::new(
            store::memory::DEFAULT_MAX_ENTRIES,
        ));
        let store: Arc<dyn StateStore> = match &config.store.backend {
            policy::store::Backend::Memory => memory.clone(),
            policy::store::Backend::Redis(r) => {
                let shared = start_redis(r, &config.store).await?;
                metrics.attach_store(shared.health().clone());
                shared as Arc<dyn StateStore>
            }
        };
        // Budgets survive restarts: loaded before serving (a corrupt file stops startup).
        let state_dir = config.server.state_dir.clone();
        let persisted = match &state_dir {
            Some(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || store::persist::load(&dir))
                    .await
                    .map_err(|e| StartError::Load(e.to_string()))??
            }
            None => Vec::new(),
        };
        if config.limits.tenant_budget.is_some() && state_dir.is_none() && !store.is_shared() {
            warn!(
                "budgets live in memory only (no server.state_dir): a restart resets every tenant's usage"
            );
        }
        for w in &config.warnings {
            warn!(warning = %w, "policy lint warning");
        }
        if clock.is_test() {
            if config.server.environment != policy::Environment::Local {
                return Err(StartError::TestClock);
            }
            warn!(
                env = clock::TEST_CLOCK_ENV,
                "test clock: time comes from a file, not the system clock"
            );
        }
        let live = Live::new(store.clone()).with_clock(clock);
        metrics.attach_jwks(live.jwks_stats().clone());
        memory.import_budgets(live.clock().now_ms(), &persisted);
        // Toggle overrides and revocations made through the admin API survive restarts too
        // (expired revocations are dropped, and the file rewritten without them). A shared
        // store keeps them itself: a local file could only bring back stale overrides.
        if let Some(dir) = state_dir.clone().filter(|_| !store.is_shared()) {
            let now = live.clock().now_ms();
            let admin_state = tokio::task::spawn_blocking(move || {
                let s = store::persist_admin::load(&dir, now)?;
                store::persist_admin::save(&dir, now, &s).map(|()| s)
            })
            .await
            .map_err(|e| StartError::Load(e.to_string()))??;
            for (name, value) in &admin_state.toggles {
                store
                    .set_toggle(name, Some(*value))
                    .await
                    .map_err(|e| StartError::Load(e.to_string()))?;
            }
            for r in admin_state.revocations {
                store
                    .revoke(now, r)
                    .await
                    .map_err(|e| StartError::Load(e.to_string()))?;
            }
        }
        // Written back at once: a state directory fortress cannot write to stops startup
        // rather than losing every charge silently later.
        if let Some(dir) = state_dir.clone() {
            let now = live.clock().now_ms();
            let entries = memory.export_budgets(now);
            tokio::task::spawn_blocking(move || store::persist::save(&dir, now, entries))
                .await
                .map_err(|e| StartError::Load(e.to_string()))??;
        }
        // The trail opens (continuing the chain) before anything is served, and the startup
        // is recorded and written first: a fortress that cannot audit does not start.
        let audit = match &config.audit {
            Some(settings) => {
                let trail = audit::Trail::start(settings, live.clock().clone())
                    .map_err(StartError::Audit)?;
                let mut r = audit::Record::new(audit::Event::Startup, live.clock().now_ms());
                r.policy_version = Some(config.hash.clone());
                r.detail = Some(serde_json::json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "listen": client_addr.to_string(),
                    "admin": admin_addr.to_string(),
                    "config": config_path.as_ref().map(|p| p.display().to_string()),
                }));
                trail
                    .event_acked(r)
                    .await
                    .map_err(|e| StartError::Audit(format!("the startup record: {e}")))?;
                metrics.attach_audit(trail.stats().clone());
                Some(Arc::new(trail))
            }
            None => None,
        };
        let admin_control =
            admin::control::AdminControl::new(state_dir.clone(), live.clock().now_ms());
        let first = Snapshot::bind(config, &live, &metrics);
        // The first JWKS fetch is awaited (bounded) before serving; if it fails, startup goes
        // on: the instance reports not ready and the background task keeps retrying.
        live.first_fetches(auth::jwks::FETCH_TIMEOUT).await;
        let telemetry = first
            .policy
            .telemetry
            .otlp
            .as_ref()
            .map(telemetry::Exporter::start);
        let state: AppState = Arc::new(State {
            config: PolicyHandle::new(first),
            metrics,
            forwarder,
            live,
            store,
            reload,
            tls,
            config_path,
            audit,
            telemetry,
            admin: admin_control,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        let (stop, drain, alive) = server::drain_pair();
        if let Some(rx) = reload_rx {
            tokio::spawn(reload::run(state.clone(), rx, stop.subscribe(), watcher));
        }
        let client_loop = tokio::spawn(server::accept_loop(
            client,
            Listener::Client,
            state.clone(),
            drain.clone(),
        ));
        let probes_loop = probes.map(|(l, _)| {
            tokio::spawn(server::accept_loop(
                l,
                Listener::Probes,
                state.clone(),
                drain.clone(),
            ))
        });
        let admin_loop = tokio::spawn(server::accept_loop(
            admin,
            Listener::Admin,
            state.clone(),
            drain,
        ));
        let maintenance = tokio::spawn(maintain(
            memory.clone(),
            state.store.clone(),
            state.live.clock().clone(),
            state_dir.clone(),
            stop.subscribe(),
        ));
        let drain_state = state.clone();
        let task = tokio::spawn(async move {
            let _ = client_loop.await;
            let _ = admin_loop.await;
            if let Some(l) = probes_loop {
                let _ = l.await;
            }
            let grace = drain_state.config.snapshot().server.timeouts.shutdown_grace;
            let drained = server::wait_drained(alive, grace).await;
            // After the drain: every charge of a finished request is in, write them once more.
            maintenance.abort();
            if let Some(dir) = state_dir {
                let now = drain_state.live.clock().now_ms();
                let entries = memory.export_budgets(now);
                let saved =
                    tokio::task::spawn_blocking(move || store::persist::save(&dir, now, entries))
                        .await;
                match saved {
                    Ok(Ok(())) => info!("budget state saved at shutdown"),
                    Ok(Err(e)) => tracing::error!(error = %e, "budget state not saved at shutdown"),
                    Err(e) => tracing::error!(error = %e, "budget state not saved at shutdown"),
                }
            }
            // Last: the shutdown record, then everything queued is written and the trail
            // sealed.
            if let Some(trail) = &drain_state.audit {
                let mut r =
                    audit::Record::new(audit::Event::Shutdown, drain_state.live.clock().now_ms());
                r.policy_version = Some(drain_state.config.snapshot().policy.hash.clone());
                r.detail = Some(serde_json::json!({ "drained": drained }));
                if let Err(e) = trail.event_acked(r).await {
                    tracing::error!(error = %e, "audit: the shutdown record was not written");
                }
                trail.close().await;
            }
            // Spans of the drained requests go out, within a bound (a dead collector does
            // not hold the exit).
            if let Some(t) = &drain_state.telemetry {
                t.shutdown(telemetry::SHUTDOWN_FLUSH).await;
            }
            drained
        });
        let probes_shown = probes_addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
        info!(client = %client_addr, admin = %admin_addr, probes = %probes_shown, "fortress listening");
        Ok(Self {
            client_addr,
            admin_addr,
            probes_addr,
            state,
            stop,
            task,
        })
    }

    /// Starts the shutdown: `/readyz` answers 503 from now on; after
    /// `server.timeouts.shutdown_delay` (at once by default, or on a second call) fortress
    /// stops accepting and drains in-flight requests.
    pub fn shutdown(&self) {
        let first = !self
            .state
            .shutting_down
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        let delay = self.state.config.snapshot().server.timeouts.shutdown_delay;
        if !first || delay.is_zero() {
            self.stop.send_replace(true);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                info!(
                    delay_ms = delay.as_millis() as u64,
                    "shutdown delay: not ready, still serving"
                );
                let stop = self.stop.clone();
                let mut stopped = self.stop.subscribe();
                rt.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => info!("shutdown delay over; draining"),
                        // A second shutdown ended the delay.
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    stop.send_replace(true);
                });
            }
            Err(_) => {
                self.stop.send_replace(true);
            }
        }
    }

    /// A handle that ends the shutdown delay (drain now), for a second SIGTERM.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Waits until every connection is closed or the grace period ran out. Returns whether
    /// the drain completed in time.
    pub async fn wait(self) -> bool {
        self.task.await.unwrap_or(false)
    }
}

/// Ends the shutdown delay: stops accepting and starts the drain now.
#[derive(Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    /// Stops accepting; in-flight requests drain within `shutdown_grace`.
    pub fn now(&self) {
        self.0.send_replace(true);
    }
}

/// Background upkeep of the live state until shutdown: expired limit state swept every
/// [`SWEEP_EVERY`] (bounded memory for keys that stopped coming), budget counters persisted
/// every [`store::persist::INTERVAL`] when they changed.
async fn maintain(
    memory: Arc<store::memory::MemoryStore>,
    store: Arc<dyn StateStore>,
    clock: Arc<clock::Clock>,
    state_dir: Option<PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(store::persist::INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = std::time::Instant::now();
    let mut last_saved: Option<Vec<store::memory::BudgetEntry>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = clock.now_ms();
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            let m = store.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || m.sweep(now)).await {
                tracing::error!(error = %e, "state sweep failed");
            }
        }
        if let Some(dir) = &state_dir {
            let (m, d, mut last) = (memory.clone(), dir.clone(), last_saved.take());
            let done = tokio::task::spawn_blocking(move || {
                let r = store::persist::save_if_changed(&m, &d, now, &mut last);
                (r, last)
            })
            .await;
            match done {
                Ok((Ok(()), last)) => last_saved = last,
                Ok((Err(e), _)) => tracing::error!(error = %e, "budget state not saved"),
                Err(e) => tracing::error!(error = %e, "budget state not saved"),
            }
        }
    }
}

/// Starts the Redis store of `settings` and waits (bounded) for its first mirror sync, so an
/// instance whose Redis answers serves at once; one whose Redis does not starts anyway, reports
/// not ready, and decides per `on_store_error` until Redis answers.
async fn start_redis(
    r: &policy::store::RedisSettings,
    settings: &policy::store::StoreSettings,
) -> Result<Arc<store::redis::RedisStore>, StartError> {
    let ca_pem = match &r.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| StartError::Load(format!("{}: cannot read: {e}", path.display())))?,
        ),
        None => None,
    };
    let shared = store::redis::RedisStore::start(store::redis::RedisConfig {
        url: r.url.clone(),
        url_redacted: r.url_redacted(),
        ca_pem,
        key_prefix: r.key_prefix.clone(),
        timeout: r.timeout,
        pool_size: r.pool_size,
        resync: r.resync,
        max_staleness: settings.max_staleness,
        allow_local: settings.on_store_error == policy::store::OnStoreError::AllowLocal,
        replicas: u64::from(settings.expected_replicas),
    })
    .map_err(|e| StartError::Load(format!("store.redis: {e}")))?;
    let deadline = tokio::time::Instant::now() + FIRST_SYNC_WAIT;
    let up =
        |s: &store::redis::RedisStore| s.health().up.load(std::sync::atomic::Ordering::Acquire);
    while (shared.is_stale() || !up(&shared)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if shared.is_stale() {
        tracing::error!(redis = %r.url_redacted(), "state store not reachable at startup: not ready until it is");
    } else {
        info!(redis = %r.url_redacted(), prefix = %r.key_prefix, "shared state store connected");
    }
    Ok(shared)
}

/// Longest wait for the first sync with a shared store at startup.
const FIRST_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often expired limit state is swept.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
