//! The active policy as requests see it: the immutable [`Policy`] plus what the running
//! instance bound to it when it was installed (per-route metric handles, the live JWKS and
//! token caches). One `ArcSwap`; each request takes one snapshot and keeps it to the end.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::jwt::Verifier;
use crate::clock::Clock;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::Policy;
use crate::store::StateStore;
use crate::store::classes::ClassGate;
use crate::store::live::{AuthBinding, Live};

/// One installed policy version.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled policy.
    pub policy: Policy,
    /// Live authentication state bound to this policy (`None` without authentication).
    pub live_auth: Option<AuthBinding>,
    /// Revocations, toggle overrides, rate-limit and budget state.
    pub store: Arc<dyn StateStore>,
    /// The process clock (rate limits, budgets, token times).
    pub clock: Arc<Clock>,
    /// When this process last charged a failed authentication (kept across reloads).
    pub last_auth_failure: Arc<std::sync::atomic::AtomicU64>,
    /// The live gate of each concurrency class (same order as `policy.classes`).
    pub classes: Vec<Arc<ClassGate>>,
    routes: Vec<Arc<RouteMetrics>>,
    unmatched: Arc<RouteMetrics>,
}

impl Snapshot {
    /// Binds `policy` to the instance's live state and metrics. Runs at install time only.
    pub fn bind(policy: Policy, live: &Live, metrics: &Metrics) -> Self {
        let live_auth = live.bind(&policy);
        let routes = policy
            .router
            .routes()
            .iter()
            .map(|r| metrics.route(r.name.clone()))
            .collect();
        let classes = live
            .classes()
            .bind(&policy.classes, |name| metrics.class_gauges(name));
        Self {
            classes,
            live_auth,
            store: live.store().clone(),
            clock: live.clock().clone(),
            last_auth_failure: live.last_auth_failure().clone(),
            routes,
            unmatched: metrics.unmatched().clone(),
            policy,
        }
    }

    /// The token verifier, when the policy has authentication.
    pub fn verifier(&self) -> Option<Verifier<'_>> {
        let jwt = &self.policy.auth.as_ref()?.jwt;
        Some(self.live_auth.as_ref()?.verifier(jwt))
    }

    /// The request metrics of route `index` (or of unmatched requests).
    pub fn route_metrics(&self, index: Option<usize>) -> &Arc<RouteMetrics> {
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.unmatched)
    }
}

impl Deref for Snapshot {
    type Target = Policy;

    fn deref(&self) -> &Policy {
        &self.policy
    }
}

/// The active snapshot, swapped atomically on reload.
#[derive(Debug)]
pub struct PolicyHandle(ArcSwap<Snapshot>);

impl PolicyHandle {
    /// Wraps the first snapshot.
    pub fn new(first: Snapshot) -> Self {
        Self(ArcSwap::from_pointee(first))
    }

    /// One load per request; the `Arc` keeps this version alive until the response ends.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Installs a new snapshot, returning the old one.
    pub fn replace(&self, next: Snapshot) -> Arc<Snapshot> {
        self.0.swap(Arc::new(next))
    }
}
