//! Revoked token ids (`jti`). In memory for now, behind a trait so the admin API and a shared
//! store can provide it later.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Answers whether a token id is revoked.
pub trait Revocations: Send + Sync + std::fmt::Debug {
    /// Whether `jti` is revoked.
    fn is_revoked(&self, jti: &str) -> bool;
    /// Revokes `jti`.
    fn revoke(&self, jti: &str);
}

/// In-process revocation set: reads are lock-free (one atomic load), writes copy the set.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    set: ArcSwap<HashSet<String>>,
}

impl Revocations for MemoryRevocations {
    fn is_revoked(&self, jti: &str) -> bool {
        self.set.load().contains(jti)
    }

    fn revoke(&self, jti: &str) {
        self.set.rcu(|current| {
            let mut next = HashSet::clone(current);
            next.insert(jti.to_owned());
            Arc::new(next)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_then_lookup() {
        let r = MemoryRevocations::default();
        assert!(!r.is_revoked("a"));
        r.revoke("a");
        assert!(r.is_revoked("a"));
        assert!(!r.is_revoked("b"));
    }
}
