//! Verified-token cache: SHA-256 of the token → principal, bounded, sharded (no global lock),
//! entries never outlive the token's `exp` nor the key set they were verified with, and are
//! only reused under the same JWT settings (their fingerprint, the `scope`). Live state: the
//! cache survives reloads, and a reload that changes the JWT settings simply stops matching
//! the old entries.

use std::collections::HashMap;
use std::sync::Mutex;

use super::SharedPrincipal;

/// A bounded cache of verified tokens.
#[derive(Debug)]
pub struct TokenCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
    capacity: usize,
}

/// A verification to remember.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who the token says the caller is.
    pub principal: SharedPrincipal,
    /// Until when (seconds since the epoch; `exp` plus leeway).
    pub valid_until: u64,
    /// The JWKS generation the signature was checked with (0 without JWKS).
    pub key_generation: u64,
    /// The JWT settings fingerprint.
    pub scope: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    principal: SharedPrincipal,
    valid_until: u64,
    key_generation: u64,
    scope: u64,
}

impl TokenCache {
    /// A cache holding at most about `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity == 0 { 0 } else { SHARDS };
        Self {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS.max(1)),
            capacity,
        }
    }

    /// The principal for `token`, if cached, still valid at `now`, and verified with the
    /// current key set under the JWT settings `scope`.
    pub fn get(
        &self,
        token: &str,
        now: u64,
        key_generation: u64,
        scope: u64,
    ) -> Option<SharedPrincipal> {
        let key = digest(token);
        let shard = self.shard(&key)?;
        let mut map = shard.lock().ok()?;
        match map.get(&key) {
            Some(e)
                if e.valid_until >= now
                    && e.key_generation == key_generation
                    && e.scope == scope =>
            {
                Some(e.principal.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `valid_until` (seconds since the epoch).
    pub fn insert(&self, token: &str, verified: Verified, now: u64) {
        let key = digest(token);
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let Ok(mut map) = shard.lock() else { return };
        if map.len() >= self.per_shard {
            map.retain(|_, e| e.valid_until >= now);
            if map.len() >= self.per_shard
                && let Some(victim) = map.keys().next().copied()
            {
                map.remove(&victim);
            }
        }
        map.insert(
            key,
            Entry {
                principal: verified.principal,
                valid_until: verified.valid_until,
                key_generation: verified.key_generation,
                scope: verified.scope,
            },
        );
    }

    /// The capacity this cache was built with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn shard(&self, key: &[u8; 32]) -> Option<&Mutex<HashMap<[u8; 32], Entry>>> {
        if self.shards.is_empty() {
            return None;
        }
        self.shards.get(usize::from(key[0]) % self.shards.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

const SHARDS: usize = 16;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Principal;

    fn p(s: &str) -> SharedPrincipal {
        Arc::new(Principal {
            subject: s.into(),
            roles: vec![],
            tenant: None,
            jti: None,
            expires_at: 100,
            issued_at: None,
        })
    }

    fn v(s: &str, valid_until: u64, key_generation: u64, scope: u64) -> Verified {
        Verified {
            principal: p(s),
            valid_until,
            key_generation,
            scope,
        }
    }

    #[test]
    fn entries_expire_and_follow_key_generation() {
        let c = TokenCache::new(100);
        c.insert("t", v("a", 100, 1, 7), 0);
        assert_eq!(
            c.get("t", 50, 1, 7).map(|p| p.subject.clone()),
            Some("a".into())
        );
        assert!(
            c.get("t", 50, 1, 8).is_none(),
            "other JWT settings do not match"
        );
        assert!(c.get("t", 50, 2, 7).is_none(), "new key set invalidates");
        c.insert("t", v("a", 100, 1, 7), 0);
        assert!(c.get("t", 101, 1, 7).is_none(), "expired");
        assert!(c.get("other", 50, 1, 7).is_none());
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(32);
        for i in 0..1000 {
            c.insert(&format!("t{i}"), v("x", 100, 1, 0), 0);
        }
        let total: usize = c
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(total <= 32, "{total}");
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let c = TokenCache::new(0);
        c.insert("t", v("a", 100, 1, 0), 0);
        assert!(c.get("t", 1, 1, 0).is_none());
    }
}
