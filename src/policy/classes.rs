//! Concurrency classes, compiled (`classes:` and a route's `class:`). Data only: the
//! semaphores that enforce them are live state (`store/classes.rs`), kept across reloads and
//! keyed by the whole [`ClassSpec`] (name and numbers).

use std::sync::Arc;
use std::time::Duration;

/// The class routes without `class:` join when it is defined.
pub const DEFAULT_CLASS: &str = "default";

/// One concurrency class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClassSpec {
    /// The class name (metrics label, logs).
    pub name: Arc<str>,
    /// Requests of this class in flight at once on this instance.
    pub max_in_flight: u32,
    /// Requests that may wait for a permit (0: refuse at once when full).
    pub queue: u32,
    /// How long a queued request waits before it is refused.
    pub queue_timeout: Duration,
    /// Requests of one tenant in flight at once in this class (`None`: no per-tenant cap).
    pub per_tenant_max_in_flight: Option<u32>,
}

/// Every class of a policy, by index (routes hold the index).
#[derive(Debug, Clone, Default)]
pub struct Classes {
    /// The classes, in name order.
    pub list: Vec<Arc<ClassSpec>>,
}

impl Classes {
    /// The index of the class named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|c| &*c.name == name)
    }
}
