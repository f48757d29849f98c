//! Readiness guards (`readiness:` and a route's `guard:`), compiled: named sets of
//! conditions fortress checks itself; a route whose guard fails answers 503 `not_ready`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// One condition of a guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The audit trail is configured and its sink takes records (`Trail::available()`).
    Audit,
    /// The route's stream has a SQL guard (static: known at load time).
    SqlGuard,
    /// Every JWKS key set of the policy is loaded.
    Jwks,
    /// A toggle (index into `Policy::toggles`) is on: its override, else its default.
    Toggle(usize),
}

impl Condition {
    /// The condition's name (logs, `/readyz?verbose`).
    pub fn name(self) -> &'static str {
        match self {
            Condition::Audit => "audit",
            Condition::SqlGuard => "sql_guard",
            Condition::Jwks => "jwks",
            Condition::Toggle(_) => "toggle",
        }
    }
}

/// One named guard.
#[derive(Debug)]
pub struct Guard {
    /// Its name under `readiness:`.
    pub name: Arc<str>,
    /// Its conditions, all of which must hold.
    pub conditions: Vec<Condition>,
    /// The state last logged: 0 never evaluated, 1 open, 2 closed (per policy version).
    pub last: AtomicU8,
}

impl Guard {
    /// Records `open` and returns whether it changed since the last evaluation.
    pub fn changed(&self, open: bool) -> bool {
        let now = if open { 1 } else { 2 };
        self.last.swap(now, Ordering::Relaxed) != now
    }
}

/// Every guard, and which guard each route has.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Guards, in name order.
    pub guards: Vec<Arc<Guard>>,
    /// Indexed by `Route::index`: the route's guard (an index into `guards`).
    pub by_route: Vec<Option<usize>>,
    /// Indexed by `Route::index`: whether the route's stream has a SQL guard.
    pub sql_guarded: Vec<bool>,
}

impl Readiness {
    /// The guard of the route at `index`, if it has one.
    pub fn of_route(&self, index: usize) -> Option<&Arc<Guard>> {
        self.by_route
            .get(index)
            .copied()
            .flatten()
            .and_then(|g| self.guards.get(g))
    }
}
