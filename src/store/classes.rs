//! Concurrency classes, live: one gate per class (a semaphore, a bounded wait queue and,
//! optionally, per-tenant counters), kept across reloads by [`ClassRegistry`].
//!
//! - A gate is keyed by its whole [`ClassSpec`] (name and numbers): a reload that keeps a
//!   class keeps its gate, hence its in-flight count and its queue. A reload that changes a
//!   class's numbers builds a new gate; requests in flight on the old one finish on it (they
//!   hold it through their permit), so for a while both count: up to old in-flight + new
//!   `max_in_flight`. A class no policy uses any more is dropped from the registry when the
//!   next policy is bound, and freed when its last permit is.
//! - Waiting holds no lock: a queued request waits on the class's semaphore (FIFO), with a
//!   counter bounding how many may wait; the per-tenant counters are sharded maps locked for
//!   an increment or a decrement only, and an entry is removed when its count drops to zero
//!   (memory is bounded by the requests in flight, whatever the number of tenants).
//! - A [`ClassPermit`] gives everything back when dropped: the semaphore permit, the tenant
//!   count, the in-flight gauge. The request context holds it until the response body ends
//!   or is dropped (the client went away).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::policy::classes::{ClassSpec, Classes};

/// Shards of the per-tenant counters.
const TENANT_SHARDS: usize = 16;

/// The gauges of one class name (shared by every gate of that name).
#[derive(Debug, Clone)]
pub struct ClassGauges {
    /// Requests holding a permit.
    pub in_flight: IntGauge,
    /// Requests waiting in the queue.
    pub queued: IntGauge,
}

/// Why a request did not get a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every permit taken and the queue full (or no queue).
    QueueFull,
    /// Waited `queue_timeout` in the queue.
    QueueTimeout,
    /// The tenant already holds `per_tenant_max_in_flight` permits.
    TenantCap,
    /// Every permit taken (a request that may not wait, e.g. on a dry-run route).
    Full,
}

impl Shed {
    /// The reason, for logs and explain.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue full",
            Shed::QueueTimeout => "queue timeout",
            Shed::TenantCap => "tenant at its per-tenant cap",
            Shed::Full => "class full",
        }
    }
}

/// One class's live state.
#[derive(Debug)]
pub struct ClassGate {
    spec: Arc<ClassSpec>,
    semaphore: Arc<Semaphore>,
    waiting: AtomicU32,
    tenants: Option<TenantCounts>,
    gauges: ClassGauges,
}

impl ClassGate {
    fn new(spec: Arc<ClassSpec>, gauges: ClassGauges) -> Self {
        let permits = usize::try_from(spec.max_in_flight).unwrap_or(usize::MAX);
        Self {
            semaphore: Arc::new(Semaphore::new(permits)),
            waiting: AtomicU32::new(0),
            tenants: spec.per_tenant_max_in_flight.map(|_| TenantCounts::new()),
            spec,
            gauges,
        }
    }

    /// The class.
    pub fn spec(&self) -> &Arc<ClassSpec> {
        &self.spec
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Takes a permit for a request of `tenant` (`None`: no tenant; such requests share one
    /// bucket under a per-tenant cap). With `may_wait`, waits in the class queue (if it has
    /// room) up to `queue_timeout`; otherwise only takes a free permit. Cancel-safe: a
    /// request dropped while queued leaves the queue.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: Option<&str>,
        may_wait: bool,
    ) -> Result<ClassPermit, Shed> {
        self.acquire_counted(tenant, may_wait, true).await
    }

    /// [`acquire`](Self::acquire); `count_tenant: false` leaves the per-tenant cap to a
    /// shared store (the request's admission took a lease there).
    pub async fn acquire_counted(
        self: &Arc<Self>,
        tenant: Option<&str>,
        may_wait: bool,
        count_tenant: bool,
    ) -> Result<ClassPermit, Shed> {
        let tenant_slot = match (&self.tenants, self.spec.per_tenant_max_in_flight) {
            (Some(counts), Some(cap)) if count_tenant => {
                counts.take(tenant.unwrap_or(""), cap)?;
                // Given back when dropped: on every refusal below, or with the permit.
                Some(TenantSlot {
                    tenant: Box::from(tenant.unwrap_or("")),
                    gate: self.clone(),
                })
            }
            _ => None,
        };
        let permit = match self.semaphore.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if !may_wait => return Err(Shed::Full),
            Err(_) => self.wait().await?,
        };
        self.gauges.in_flight.inc();
        Ok(ClassPermit {
            _permit: permit,
            _tenant: tenant_slot,
            _lease: None,
            gate: self.clone(),
        })
    }

    async fn wait(&self) -> Result<OwnedSemaphorePermit, Shed> {
        let queue = self.spec.queue;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < queue).then_some(w + 1)
            })
            .map_err(|_| Shed::QueueFull)?;
        let _queued = Queued::enter(self);
        match tokio::time::timeout(
            self.spec.queue_timeout,
            self.semaphore.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; fail closed anyway.
            Ok(Err(_)) | Err(_) => Err(Shed::QueueTimeout),
        }
    }
}

/// A place in the queue, given back however the wait ends (permit, timeout, cancelled).
struct Queued<'a>(&'a ClassGate);

impl<'a> Queued<'a> {
    fn enter(gate: &'a ClassGate) -> Self {
        gate.gauges.queued.inc();
        Self(gate)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.gauges.queued.dec();
    }
}

/// A request's place in a class, held until the response ends.
#[derive(Debug)]
pub struct ClassPermit {
    _permit: OwnedSemaphorePermit,
    _tenant: Option<TenantSlot>,
    _lease: Option<SharedLease>,
    gate: Arc<ClassGate>,
}

impl ClassPermit {
    /// The class.
    pub fn class(&self) -> &ClassSpec {
        &self.gate.spec
    }

    /// Holds a shared store's per-tenant lease with the permit (given back with it).
    pub fn hold(&mut self, lease: SharedLease) {
        self._lease = Some(lease);
    }
}

/// A per-tenant concurrency lease taken in a shared store by the request's admission
/// (`StateStore::admit` with a `Concurrency` check), given back when dropped (a task releases
/// it; should the release fail, the lease still expires after its `lease_ms`).
pub struct SharedLease {
    store: Arc<dyn super::StateStore>,
    key: String,
}

impl SharedLease {
    /// The lease of `key` in `store`.
    pub fn new(store: Arc<dyn super::StateStore>, key: String) -> Self {
        Self { store, key }
    }
}

impl std::fmt::Debug for SharedLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLease")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for SharedLease {
    fn drop(&mut self) {
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let keys = [key.as_str()];
                if let Err(e) = store.release(now, &keys).await {
                    tracing::debug!(error = %e, "lease not released; it expires on its own");
                }
            });
        }
    }
}

impl Drop for ClassPermit {
    fn drop(&mut self) {
        self.gate.gauges.in_flight.dec();
    }
}

/// One count of a tenant, given back when dropped.
#[derive(Debug)]
struct TenantSlot {
    tenant: Box<str>,
    gate: Arc<ClassGate>,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        if let Some(counts) = &self.gate.tenants {
            counts.give_back(&self.tenant);
        }
    }
}

/// One shard of the per-tenant counts: tenant → requests in flight (always > 0).
type TenantShard = Mutex<HashMap<Box<str>, u32>>;

/// In-flight requests per tenant, sharded; an entry exists only while its count is above 0.
#[derive(Debug)]
struct TenantCounts {
    shards: Box<[TenantShard]>,
    hasher: RandomState,
}

impl TenantCounts {
    fn new() -> Self {
        Self {
            shards: (0..TENANT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, tenant: &str) -> &TenantShard {
        // Truncating the hash only picks a shard.
        let i = (self.hasher.hash_one(tenant) as usize) % self.shards.len();
        &self.shards[i]
    }

    fn take(&self, tenant: &str, cap: u32) -> Result<(), Shed> {
        // A poisoned lock only means a panic elsewhere mid-update; the counts stay valid.
        let mut map = self
            .shard(tenant)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(tenant) {
            Some(n) if *n >= cap => return Err(Shed::TenantCap),
            Some(n) => *n += 1,
            None => {
                map.insert(Box::from(tenant), 1);
            }
        }
        Ok(())
    }

    fn give_back(&self, tenant: &str) {
        let mut map = self
            .shard(tenant)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(tenant);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The gates of every class, by spec; lives as long as the process.
#[derive(Debug, Default)]
pub struct ClassRegistry {
    gates: Mutex<HashMap<Arc<ClassSpec>, Arc<ClassGate>>>,
}

impl ClassRegistry {
    /// The gates for `classes` (same order), reusing the gate of every unchanged class; gates
    /// of classes `classes` does not have leave the registry. Install time only.
    pub fn bind(
        &self,
        classes: &Classes,
        gauges: impl Fn(&str) -> ClassGauges,
    ) -> Vec<Arc<ClassGate>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        let bound: Vec<Arc<ClassGate>> = classes
            .list
            .iter()
            .map(|spec| {
                gates
                    .entry(spec.clone())
                    .or_insert_with(|| Arc::new(ClassGate::new(spec.clone(), gauges(&spec.name))))
                    .clone()
            })
            .collect();
        gates.retain(|spec, _| classes.list.contains(spec));
        bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(max: u32, queue: u32, per_tenant: Option<u32>) -> Arc<ClassSpec> {
        Arc::new(ClassSpec {
            name: Arc::from("bulk"),
            max_in_flight: max,
            queue,
            queue_timeout: Duration::from_millis(50),
            per_tenant_max_in_flight: per_tenant,
        })
    }

    fn gauges() -> ClassGauges {
        ClassGauges {
            in_flight: IntGauge::new("in_flight", "x").expect("gauge"),
            queued: IntGauge::new("queued", "x").expect("gauge"),
        }
    }

    #[tokio::test]
    async fn permits_queue_and_timeout() {
        let g = Arc::new(ClassGate::new(spec(1, 1, None), gauges()));
        let first = g.acquire(None, true).await.expect("free");
        assert_eq!(g.gauges.in_flight.get(), 1);
        assert_eq!(g.acquire(None, false).await.err(), Some(Shed::Full));
        // One may wait; a second waiter finds the queue full at once.
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(None, true).await.map(|_| ()) });
        while g.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(g.gauges.queued.get(), 1);
        assert_eq!(g.acquire(None, true).await.err(), Some(Shed::QueueFull));
        drop(first);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!((g.waiting(), g.gauges.queued.get()), (0, 0));
        assert_eq!((g.available(), g.gauges.in_flight.get()), (1, 0));
        // Timeout.
        let held = g.acquire(None, true).await.expect("free");
        assert_eq!(g.acquire(None, true).await.err(), Some(Shed::QueueTimeout));
        assert_eq!(g.waiting(), 0);
        drop(held);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let g = Arc::new(ClassGate::new(spec(1, 1, None), gauges()));
        let held = g.acquire(None, true).await.expect("free");
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(None, true).await.map(|_| ()) });
        while g.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!((g.waiting(), g.gauges.queued.get()), (0, 0));
        drop(held);
        assert_eq!(g.available(), 1);
    }

    #[tokio::test]
    async fn per_tenant_cap_and_bounded_counts() {
        let g = Arc::new(ClassGate::new(spec(10, 0, Some(2)), gauges()));
        let a1 = g.acquire(Some("a"), true).await.expect("a1");
        let a2 = g.acquire(Some("a"), true).await.expect("a2");
        assert_eq!(
            g.acquire(Some("a"), true).await.err(),
            Some(Shed::TenantCap)
        );
        let b = g.acquire(Some("b"), true).await.expect("b");
        let n1 = g.acquire(None, true).await.expect("anonymous");
        let n2 = g.acquire(None, true).await.expect("anonymous");
        assert_eq!(g.acquire(None, true).await.err(), Some(Shed::TenantCap));
        assert_eq!(g.available(), 5);
        drop((a1, n1));
        let a3 = g.acquire(Some("a"), true).await.expect("a again");
        drop((a2, a3, b, n2));
        let tenants = g.tenants.as_ref().expect("counts");
        assert_eq!(tenants.len(), 0, "entries at zero are removed");
        // Many tenants, one at a time: the map never grows past what is in flight.
        for i in 0..1000 {
            let p = g.acquire(Some(&format!("t{i}")), true).await.expect("t");
            drop(p);
        }
        assert_eq!(tenants.len(), 0);
        assert_eq!(g.available(), 10);
    }

    #[tokio::test]
    async fn a_tenant_refused_by_the_class_gives_its_count_back() {
        let g = Arc::new(ClassGate::new(spec(1, 0, Some(1)), gauges()));
        let a = g.acquire(Some("a"), true).await.expect("a");
        assert_eq!(
            g.acquire(Some("b"), true).await.err(),
            Some(Shed::QueueFull)
        );
        assert_eq!(g.tenants.as_ref().expect("counts").len(), 1);
        drop(a);
        assert!(g.acquire(Some("b"), true).await.is_ok());
    }

    #[test]
    fn registry_keeps_unchanged_classes() {
        let reg = ClassRegistry::default();
        let one = Classes {
            list: vec![spec(2, 0, None)],
        };
        let a = reg.bind(&one, |_| gauges());
        let b = reg.bind(&one, |_| gauges());
        assert!(Arc::ptr_eq(&a[0], &b[0]));
        let changed = Classes {
            list: vec![spec(3, 0, None)],
        };
        let c = reg.bind(&changed, |_| gauges());
        assert!(!Arc::ptr_eq(&a[0], &c[0]));
        assert_eq!(reg.gates.lock().expect("lock").len(), 1);
    }
}
