//! [`RedisStore`]: the [`StateStore`] shared by every instance that names the same Redis server
//! and key prefix (docs/shared-state.md).
//!
//! * **Limits** (`admit`): one `EVALSHA` per request for all its rate limits, its budget and
//!   its per-tenant concurrency lease (`redis/admit.lua`): every check evaluated, all consumed
//!   only if all pass, atomically on the server. Time is the **Redis server's** clock (`TIME`
//!   inside the script), never the replica's, so replicas with skewed clocks still share one
//!   schedule. GCRA is the relative-tick arithmetic of [`super::gcra`]; budgets are counters
//!   keyed by window start with `PXAT` at the window end; concurrency slots are leases in a
//!   sorted set scored by expiry (a replica that dies holding them loses them at expiry).
//! * **Revocations, toggle overrides, throttled clients**: written to Redis hashes by one
//!   script that also bumps a generation counter and publishes it; every instance keeps a
//!   local mirror (the in-memory store's lock-free maps) that answers the request path
//!   without I/O, refreshed on every notification and every `resync` (a generation check,
//!   the hashes only when it changed). A mirror that has not synced for `max_staleness` is
//!   [stale](StateStore::is_stale): requests that depend on it get 503 `state_unavailable`.
//! * **Failures**: every call is bounded by `timeout`. Then `on_store_error: deny` answers
//!   [`StoreError::Unavailable`]; `allow_local` decides on the local store with every limit
//!   divided by `expected_replicas`. The change between up and down is logged once, not per
//!   request, and counted (`fortress_store_*` metrics); recovery is automatic (the connection
//!   manager reconnects).
//!
//! Keys: `<key_prefix>v1:l:<limit key>` (rate, concurrency), `…l:<key>@<window start>`
//! (budgets), `<key_prefix>v1:{revocations,toggles,blocked,gen}`, channel
//! `<key_prefix>v1:changes`. The `v1` changes when the format does.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script};
use arc_swap::ArcSwap;
use futures_core::Stream;

use super::memory::MemoryStore;
use super::{
    Admission, LimitCheck, LimitKind, LimitState, Millis, Revocation, StateStore, StoreError,
    StoreFuture, Window,
};

const COMMON: &str = include_str!("redis/common.lua");

/// Key format version, part of every key.
pub const FORMAT: &str = "v1:";

/// How to reach Redis and what to do when it does not answer.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// The URL without its password (logs).
    pub url_redacted: String,
    /// PEM roots for `rediss://` (else the system's).
    pub ca_pem: Option<Vec<u8>>,
    /// Key prefix (the format version follows it).
    pub key_prefix: String,
    /// Longest wait for one call.
    pub timeout: Duration,
    /// Connections.
    pub pool_size: usize,
    /// Mirror resync period.
    pub resync: Duration,
    /// A mirror older than this is stale.
    pub max_staleness: Duration,
    /// Decide locally (limits ÷ `replicas`) when Redis fails, instead of refusing.
    pub allow_local: bool,
    /// Expected replicas (for the local share).
    pub replicas: u64,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Health of the shared store, for metrics, readiness and logs.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Whether the last call succeeded.
    pub up: AtomicBool,
    /// Calls that failed or timed out.
    pub errors: AtomicU64,
    /// Requests decided by the local fallback (`allow_local`).
    pub local_decisions: AtomicU64,
    /// Milliseconds since start of the last successful mirror sync (0: never).
    pub last_sync: AtomicU64,
    /// Mirror syncs that fetched changed state.
    pub syncs: AtomicU64,
    started: OnceInstant,
}

/// An `Instant` fixed at construction (Default-able).
#[derive(Debug)]
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl StoreHealth {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Seconds since the mirror last synced (`None`: never).
    pub fn sync_age_secs(&self) -> Option<f64> {
        let last = self.last_sync.load(Ordering::Acquire);
        (last > 0).then(|| self.elapsed_ms().saturating_sub(last) as f64 / 1000.0)
    }
}

struct Scripts {
    admit: Script,
    charge: Script,
    release: Script,
    shared: Script,
    sync: Script,
}

impl Scripts {
    fn new() -> Self {
        let with = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            admit: with(include_str!("redis/admit.lua")),
            charge: with(include_str!("redis/charge.lua")),
            release: with(include_str!("redis/release.lua")),
            shared: Script::new(include_str!("redis/shared.lua")),
            sync: with(include_str!("redis/sync.lua")),
        }
    }
}

/// The shared keys.
struct Keys {
    limit: String,
    shared: [String; 4],
    channel: String,
}

/// The Redis-backed store. See the module documentation.
pub struct RedisStore {
    client: Client,
    conns: Box<[ConnectionManager]>,
    next: AtomicUsize,
    keys: Keys,
    scripts: Scripts,
    cfg: RedisConfig,
    /// Mirror of revocations and toggles, and the local fallback for limits.
    local: MemoryStore,
    /// Throttled clients (failed authentication): key → until (ms, caller's clock).
    blocked: ArcSwap<HashMap<String, Millis>>,
    health: Arc<StoreHealth>,
    /// Concurrency leases granted by the local fallback, by key (given back locally).
    local_leases: Mutex<HashMap<String, usize>>,
    local_lease_count: AtomicUsize,
    lease_ids: AtomicU64,
    nonce: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects lazily (startup does not wait for Redis: a store that cannot answer refuses
    /// or falls back per request, and the mirror is stale until the first sync) and starts the
    /// mirror's sync task.
    pub fn start(cfg: RedisConfig) -> Result<Arc<Self>, StoreError> {
        let client = match &cfg.ca_pem {
            Some(pem) => Client::build_with_tls(
                cfg.url.as_str(),
                ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(cfg.url.as_str()),
        }
        .map_err(unavailable)?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conns = (0..cfg.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let base = format!("{}{FORMAT}", cfg.key_prefix);
        let keys = Keys {
            limit: format!("{base}l:"),
            shared: [
                format!("{base}revocations"),
                format!("{base}toggles"),
                format!("{base}blocked"),
                format!("{base}gen"),
            ],
            channel: format!("{base}changes"),
        };
        let nonce = {
            let mut b = [0u8; 8];
            let _random = aws_lc_rs::rand::fill(&mut b);
            u64::from_le_bytes(b)
        };
        let store = Arc::new(Self {
            client,
            conns: conns.into_boxed_slice(),
            next: AtomicUsize::new(0),
            keys,
            scripts: Scripts::new(),
            cfg,
            local: MemoryStore::new(super::memory::DEFAULT_MAX_ENTRIES),
            blocked: ArcSwap::default(),
            health: Arc::default(),
            local_leases: Mutex::default(),
            local_lease_count: AtomicUsize::new(0),
            lease_ids: AtomicU64::new(0),
            nonce,
        });
        let weak = Arc::downgrade(&store);
        tokio::spawn(sync_task(weak));
        Ok(store)
    }

    /// Health counters (metrics, readiness).
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// The URL without its password.
    pub fn url_redacted(&self) -> &str {
        &self.cfg.url_redacted
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    fn ok(&self) {
        if !self.health.up.swap(true, Ordering::AcqRel) {
            tracing::info!(redis = %self.url_redacted(), "state store reachable: shared limits in force");
        }
    }

    fn failed(&self, e: &StoreError) {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        if self.health.up.swap(false, Ordering::AcqRel) {
            let fallback = if self.cfg.allow_local {
                "each instance now enforces its share of every limit locally"
            } else {
                "requests that need it get 503 state_unavailable"
            };
            tracing::error!(redis = %self.url_redacted(), error = %e, "state store unreachable: {fallback}");
        }
    }

    async fn call<T: ::redis::FromRedisValue>(
        &self,
        inv: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let r = self.call_quiet(inv).await;
        // Only failures are reported here: the store is declared up again by the sync task,
        // once every pooled connection answers (no flapping while they reconnect one by one).
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// [`call`](Self::call) without reporting failures.
    async fn call_quiet<T: ::redis::FromRedisValue>(
        &self,
        inv: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable(format!(
                "no answer within {:?}",
                self.cfg.timeout
            ))),
        }
    }

    /// Pings every pooled connection (each reconnects after an outage on its first use; this
    /// makes that use the ping, not a request). `true` when all answered.
    async fn warm_pool(&self) -> bool {
        let pings = self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let cmd = ::redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut c);
                matches!(
                    tokio::time::timeout(self.cfg.timeout * 4, ping).await,
                    Ok(Ok(_))
                )
            }
        });
        let mut all = true;
        for p in pings {
            all &= p.await;
        }
        all
    }

    async fn admit_shared(&self, checks: &[LimitCheck<'_>]) -> Result<Admission, StoreError> {
        let mut inv = self.scripts.admit.prepare_invoke();
        for c in checks {
            inv.key(format!("{}{}", self.keys.limit, c.key));
            match c.kind {
                LimitKind::Rate {
                    limit,
                    period_ms,
                    burst,
                } => {
                    inv.arg("r").arg(limit).arg(period_ms).arg(burst);
                }
                LimitKind::Budget {
                    limit,
                    window,
                    cost,
                } => {
                    inv.arg("b").arg(limit).arg(window_arg(window)).arg(cost);
                }
                LimitKind::Concurrency { limit, lease_ms } => {
                    let id = self.lease_ids.fetch_add(1, Ordering::Relaxed);
                    inv.arg("c")
                        .arg(limit)
                        .arg(lease_ms)
                        .arg(format!("{:016x}-{id}", self.nonce));
                }
            }
        }
        let reply: Vec<i64> = self.call(&inv).await?;
        parse_admission(&reply, checks)
    }

    /// The local share of a limit (`allow_local`).
    fn share(&self, kind: LimitKind) -> LimitKind {
        let r = self.cfg.replicas.max(1);
        let part = |v: u64| (v / r).max(1);
        match kind {
            LimitKind::Rate {
                limit,
                period_ms,
                burst,
            } => LimitKind::Rate {
                limit: part(limit),
                period_ms,
                burst: part(burst),
            },
            LimitKind::Budget {
                limit,
                window,
                cost,
            } => LimitKind::Budget {
                limit: limit / r,
                window,
                cost,
            },
            LimitKind::Concurrency { limit, lease_ms } => LimitKind::Concurrency {
                limit: part(limit),
                lease_ms,
            },
        }
    }

    fn admit_local(&self, now: Millis, checks: &[LimitCheck<'_>]) -> Admission {
        self.health.local_decisions.fetch_add(1, Ordering::Relaxed);
        let scaled: Vec<LimitCheck<'_>> = checks
            .iter()
            .map(|c| LimitCheck {
                key: c.key,
                kind: self.share(c.kind),
            })
            .collect();
        let mut fut = self.local.admit(now, &scaled);
        let admission = poll_ready(fut.as_mut()).unwrap_or(Admission {
            allowed: false,
            states: Vec::new(),
        });
        if admission.allowed {
            let mut held = lock(&self.local_leases);
            for c in checks {
                if matches!(c.kind, LimitKind::Concurrency { .. }) {
                    *held.entry(c.key.to_owned()).or_default() += 1;
                    self.local_lease_count.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        admission
    }

    async fn write_shared(&self, op: &[&str]) -> Result<(), StoreError> {
        let mut inv = self.scripts.shared.prepare_invoke();
        for k in &self.keys.shared {
            inv.key(k);
        }
        inv.arg(&self.keys.channel);
        for a in op {
            inv.arg(*a);
        }
        let _generation: i64 = self.call(&inv).await?;
        Ok(())
    }

    /// One sync of the mirror: the generation, and the shared hashes when it changed.
    async fn sync_once(&self, held: &mut String) -> Result<(), StoreError> {
        let mut inv = self.scripts.sync.prepare_invoke();
        for k in &self.keys.shared {
            inv.key(k);
        }
        inv.arg(held.as_str());
        let reply: ::redis::Value = self.call_quiet(&inv).await?;
        let ::redis::Value::Array(parts) = reply else {
            return Err(unavailable("unexpected sync reply"));
        };
        let generation = parts.first().and_then(as_string).unwrap_or_default();
        if parts.len() >= 4 {
            let revocations = pairs(&parts[1])
                .into_iter()
                .filter_map(|(f, v)| parse_revocation(&f, &v))
                .collect();
            let toggles = pairs(&parts[2])
                .into_iter()
                .map(|(name, v)| (name, v == "1"))
                .collect();
            let blocked = pairs(&parts[3])
                .into_iter()
                .filter_map(|(k, v)| v.parse::<Millis>().ok().map(|u| (k, u)))
                .collect();
            self.local.replace_shared(revocations, toggles);
            self.blocked.store(Arc::new(blocked));
            self.health.syncs.fetch_add(1, Ordering::Relaxed);
        }
        *held = generation;
        self.health
            .last_sync
            .store(self.health.elapsed_ms().max(1), Ordering::Release);
        Ok(())
    }
}

/// Keeps the mirror current: a sync at start, on every change notification, and every
/// `resync`; the subscription is re-established when it drops.
async fn sync_task(store: std::sync::Weak<RedisStore>) {
    let mut held = String::new();
    let Some(s) = store.upgrade() else { return };
    let (client, channel, period) = (s.client.clone(), s.keys.channel.clone(), s.cfg.resync);
    drop(s);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut messages: Option<Pin<Box<dyn Stream<Item = ::redis::Msg> + Send>>> = None;
    loop {
        if messages.is_none() {
            let connect = async {
                let mut p = client.get_async_pubsub().await?;
                p.subscribe(&channel).await?;
                Ok::<_, ::redis::RedisError>(p.into_on_message())
            };
            if let Ok(Ok(stream)) = tokio::time::timeout(period, connect).await {
                messages = Some(Box::pin(stream));
                // Subscribed: anything written before now is picked up by this sync.
                held.clear();
            }
        }
        let Some(s) = store.upgrade() else { return };
        match s.sync_once(&mut held).await {
            // Reachable again (or for the first time): every pooled connection is brought
            // back before the store reports itself up.
            Ok(()) if !s.health.up.load(Ordering::Acquire) => {
                if s.warm_pool().await {
                    s.ok();
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "state store mirror sync failed");
                s.failed(&e);
            }
        }
        drop(s);
        match messages.as_mut() {
            Some(m) => {
                tokio::select! {
                    msg = poll_fn(|cx| m.as_mut().poll_next(cx)) => {
                        if msg.is_none() {
                            messages = None;
                        }
                    }
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
    }
}

impl StateStore for RedisStore {
    fn admit<'a>(
        &'a self,
        now: Millis,
        checks: &'a [LimitCheck<'a>],
    ) -> StoreFuture<'a, Admission> {
        Box::pin(async move {
            match self.admit_shared(checks).await {
                Ok(a) => Ok(a),
                Err(_) if self.cfg.allow_local => Ok(self.admit_local(now, checks)),
                Err(e) => Err(e),
            }
        })
    }

    fn release<'a>(&'a self, now: Millis, keys: &'a [&'a str]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut remote: Vec<&str> = Vec::with_capacity(keys.len());
            if self.local_lease_count.load(Ordering::Acquire) > 0 {
                let mut held = lock(&self.local_leases);
                for k in keys {
                    match held.get_mut(*k) {
                        Some(n) if *n > 0 => {
                            *n -= 1;
                            if *n == 0 {
                                held.remove(*k);
                            }
                            self.local_lease_count.fetch_sub(1, Ordering::AcqRel);
                            let mut f = self.local.release(now, std::slice::from_ref(k));
                            let _ready = poll_ready(f.as_mut());
                        }
                        _ => remote.push(k),
                    }
                }
            } else {
                remote.extend_from_slice(keys);
            }
            if remote.is_empty() {
                return Ok(());
            }
            let mut inv = self.scripts.release.prepare_invoke();
            for k in &remote {
                inv.key(format!("{}{k}", self.keys.limit));
            }
            let _done: i64 = self.call(&inv).await?;
            Ok(())
        })
    }

    fn charge<'a>(
        &'a self,
        now: Millis,
        key: &'a str,
        limit: u64,
        window: Window,
        units: u64,
    ) -> StoreFuture<'a, LimitState> {
        Box::pin(async move {
            let mut inv = self.scripts.charge.prepare_invoke();
            inv.key(format!("{}{key}", self.keys.limit))
                .arg(limit)
                .arg(window_arg(window))
                .arg(units);
            match self.call::<Vec<i64>>(&inv).await {
                Ok(v) => {
                    let used = v.first().copied().map_or(0, to_u64);
                    let reset_after_ms = v.get(1).copied().map_or(0, to_u64);
                    Ok(LimitState::after_charge(limit, used, reset_after_ms))
                }
                Err(_) if self.cfg.allow_local => {
                    self.health.local_decisions.fetch_add(1, Ordering::Relaxed);
                    let r = self.cfg.replicas.max(1);
                    self.local.charge(now, key, limit / r, window, units).await
                }
                Err(e) => Err(e),
            }
        })
    }

    fn revoke<'a>(&'a self, now: Millis, r: Revocation) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (field, before) = match &r {
                Revocation::Token { jti, .. } => (format!("t:{jti}"), 0),
                Revocation::Subject {
                    subject, before, ..
                } => (format!("s:{subject}"), *before),
            };
            let reason = match &r {
                Revocation::Token { reason, .. } | Revocation::Subject { reason, .. } => {
                    reason.replace(['\r', '\n'], " ")
                }
            };
            let (exp, before) = (r.expires_at().to_string(), before.to_string());
            self.write_shared(&["rev", &field, &exp, &before, &reason])
                .await?;
            self.local.revoke(now, r).await
        })
    }

    fn revocations<'a>(&'a self, now: Millis) -> StoreFuture<'a, Vec<Revocation>> {
        self.local.revocations(now)
    }

    fn is_revoked(
        &self,
        now: Millis,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<u64>,
    ) -> bool {
        self.local.is_revoked(now, jti, subject, issued_at)
    }

    fn set_toggle<'a>(&'a self, name: &'a str, value: Option<bool>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match value {
                Some(v) => {
                    self.write_shared(&["set", name, if v { "1" } else { "0" }])
                        .await?
                }
                None => self.write_shared(&["clear", name]).await?,
            }
            self.local.set_toggle(name, value).await
        })
    }

    fn toggle(&self, name: &str) -> Option<bool> {
        self.local.toggle(name)
    }

    fn toggles<'a>(&'a self) -> StoreFuture<'a, Vec<(String, bool)>> {
        self.local.toggles()
    }

    fn sweep(&self, now: Millis) {
        self.local.sweep(now);
        if self.blocked.load().values().any(|&u| u <= now) {
            self.blocked.rcu(|m| {
                let mut next = HashMap::clone(m);
                next.retain(|_, u| *u > now);
                Arc::new(next)
            });
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn is_stale(&self) -> bool {
        let last = self.health.last_sync.load(Ordering::Acquire);
        let max = u64::try_from(self.cfg.max_staleness.as_millis()).unwrap_or(u64::MAX);
        last == 0 || self.health.elapsed_ms().saturating_sub(last) > max
    }

    fn blocked(&self, now: Millis, key: &str) -> Option<Millis> {
        self.blocked
            .load()
            .get(key)
            .filter(|&&until| until > now)
            .map(|&until| until - now)
    }

    fn block<'a>(&'a self, key: &'a str, until: Millis) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.blocked.rcu(|m| {
                let mut next = HashMap::clone(m);
                let e = next.entry(key.to_owned()).or_default();
                *e = (*e).max(until);
                Arc::new(next)
            });
            self.write_shared(&["block", key, &until.to_string()]).await
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls a future that is ready at once (the in-memory store's).
fn poll_ready<T>(
    fut: Pin<&mut (dyn std::future::Future<Output = Result<T, StoreError>> + Send + '_)>,
) -> Option<T> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(Ok(v)) => Some(v),
        _ => None,
    }
}

fn window_arg(w: Window) -> i64 {
    match w {
        Window::Day => 0,
        Window::Month => -1,
        Window::Fixed { period_ms } => i64::try_from(period_ms.max(1)).unwrap_or(i64::MAX),
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `{ all, (allowed, remaining, reset, retry, used) per check }` → [`Admission`].
fn parse_admission(reply: &[i64], checks: &[LimitCheck<'_>]) -> Result<Admission, StoreError> {
    if reply.len() != 1 + 5 * checks.len() {
        return Err(unavailable("unexpected admit reply"));
    }
    let states = checks
        .iter()
        .zip(reply[1..].chunks_exact(5))
        .map(|(c, v)| LimitState {
            allowed: v[0] == 1,
            limit: c.kind.limit(),
            remaining: to_u64(v[1]),
            reset_after_ms: to_u64(v[2]),
            retry_after_ms: (v[3] >= 0).then(|| to_u64(v[3])),
            used: to_u64(v[4]),
        })
        .collect();
    Ok(Admission {
        allowed: reply[0] == 1,
        states,
    })
}

fn as_string(v: &::redis::Value) -> Option<String> {
    match v {
        ::redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ::redis::Value::SimpleString(s) => Some(s.clone()),
        ::redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat `HGETALL` array → pairs.
fn pairs(v: &::redis::Value) -> Vec<(String, String)> {
    let ::redis::Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .chunks_exact(2)
        .filter_map(|p| Some((as_string(&p[0])?, as_string(&p[1])?)))
        .collect()
}

/// `t:JTI` / `s:SUBJECT` → `"EXPIRES BEFORE REASON"`.
fn parse_revocation(field: &str, value: &str) -> Option<Revocation> {
    let mut parts = value.splitn(3, ' ');
    let expires_at: u64 = parts.next()?.parse().ok()?;
    let before: u64 = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_owned();
    if let Some(jti) = field.strip_prefix("t:") {
        Some(Revocation::Token {
            jti: jti.to_owned(),
            expires_at,
            reason,
        })
    } else {
        field.strip_prefix("s:").map(|subject| Revocation::Subject {
            subject: subject.to_owned(),
            before,
            expires_at,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_fields_round_trip() {
        assert_eq!(
            parse_revocation("t:abc", "100 0 stolen laptop"),
            Some(Revocation::Token {
                jti: "abc".into(),
                expires_at: 100,
                reason: "stolen laptop".into()
            })
        );
        assert_eq!(
            parse_revocation("s:u 1", "200 150 "),
            Some(Revocation::Subject {
                subject: "u 1".into(),
                before: 150,
                expires_at: 200,
                reason: String::new()
            })
        );
        assert_eq!(parse_revocation("x:abc", "1 2 r"), None);
        assert_eq!(parse_revocation("t:abc", "garbage"), None);
    }

    #[test]
    fn admission_replies_are_checked() {
        let checks = [LimitCheck {
            key: "k",
            kind: LimitKind::Rate {
                limit: 5,
                period_ms: 1000,
                burst: 5,
            },
        }];
        let a = parse_admission(&[0, 0, 0, 200, 200, 0], &checks).unwrap();
        assert!(!a.allowed);
        assert_eq!(a.states[0].retry_after_ms, Some(200));
        assert_eq!(a.states[0].limit, 5);
        assert!(parse_admission(&[1, 1], &checks).is_err());
    }
}
