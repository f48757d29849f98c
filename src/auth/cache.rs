//! Verified-token cache: the token itself → principal, bounded, sharded (no global lock),
//! entries never outlive the token's `exp` nor the key set they were verified with, and are
//! only reused under the same JWT settings (their fingerprint, the `scope`). Live state: the
//! cache survives reloads, and a reload that changes the JWT settings simply stops matching
//! the old entries.
//!
//! Keys are the token's bytes, compared whole (a hit is the very token that was verified, never
//! a hash collision), hashed with the standard library's keyed SipHash (a per-process random
//! key: no crafted collisions). A token longer than [`INLINE_MAX`] is keyed by its SHA-256
//! instead, so an entry never holds more than that many bytes of key; the common token pays
//! no cryptographic hash on a hit (a SHA-256 was a tenth of a proxied request's instructions).

use std::collections::HashMap;
use std::sync::Mutex;

use super::SharedPrincipal;

/// One lock's share of the cache: token (or digest) bytes → entry.
type Shard = Mutex<HashMap<Box<[u8]>, Entry>>;

/// A bounded cache of verified tokens.
#[derive(Debug)]
pub struct TokenCache {
    shards: Vec<Shard>,
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
        let key = Key::of(token);
        let shard = self.shard(token)?;
        let mut map = shard.lock().ok()?;
        match map.get(key.as_bytes()) {
            Some(e)
                if e.valid_until >= now
                    && e.key_generation == key_generation
                    && e.scope == scope =>
            {
                Some(e.principal.clone())
            }
            Some(_) => {
                map.remove(key.as_bytes());
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `valid_until` (seconds since the epoch).
    pub fn insert(&self, token: &str, verified: Verified, now: u64) {
        let key = Key::of(token);
        let Some(shard) = self.shard(token) else {
            return;
        };
        let Ok(mut map) = shard.lock() else { return };
        if map.len() >= self.per_shard {
            map.retain(|_, e| e.valid_until >= now);
            if map.len() >= self.per_shard
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
        }
        map.insert(
            Box::from(key.as_bytes()),
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

    /// The token's shard, from the last bytes of its signature (spreads tokens over the
    /// locks; a client choosing its shard only chooses which lock it waits on).
    fn shard(&self, token: &str) -> Option<&Shard> {
        if self.shards.is_empty() {
            return None;
        }
        let tail = token.as_bytes().iter().rev().take(4);
        let mix = tail.fold(token.len(), |h, &b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.shards.get(mix % self.shards.len())
    }
}

/// Longest token kept as its own key; longer ones are keyed by their SHA-256.
pub const INLINE_MAX: usize = 2048;

/// A cache key: the token, or for a long token a marker byte (never in a token, which is
/// ASCII) and its SHA-256.
enum Key<'a> {
    Inline(&'a [u8]),
    Digest([u8; 33]),
}

impl<'a> Key<'a> {
    fn of(token: &'a str) -> Self {
        if token.len() <= INLINE_MAX {
            return Self::Inline(token.as_bytes());
        }
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 33];
        out[0] = 0xFF;
        out[1..].copy_from_slice(d.as_ref());
        Self::Digest(out)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(b) => b,
            Self::Digest(d) => d,
        }
    }
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
    fn a_hit_is_the_same_token_byte_for_byte() {
        let c = TokenCache::new(100);
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        c.insert(token, v("a", 100, 1, 0), 0);
        assert!(c.get(token, 1, 1, 0).is_some());
        // Same length, same shard bytes (the tail), one byte different in the payload.
        let other = token.replacen("eyJzdWIiOiJhIn0", "eyJzdWIiOiJiIn0", 1);
        assert_eq!(other.len(), token.len());
        assert!(c.get(&other, 1, 1, 0).is_none());
        assert!(c.get(&token[..token.len() - 1], 1, 1, 0).is_none());
    }

    #[test]
    fn long_tokens_are_keyed_by_digest_and_still_exact() {
        let c = TokenCache::new(100);
        let long = "a".repeat(INLINE_MAX + 10);
        let mut other = long.clone();
        other.replace_range(5..6, "b");
        c.insert(&long, v("long", 100, 1, 0), 0);
        assert_eq!(
            c.get(&long, 1, 1, 0).map(|p| p.subject.clone()),
            Some("long".into())
        );
        assert!(c.get(&other, 1, 1, 0).is_none());
        let stored: Vec<usize> = c
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .map(|m| m.keys().map(|k| k.len()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            stored,
            vec![33],
            "a long token's key is its digest, not the token"
        );
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let c = TokenCache::new(0);
        c.insert("t", v("a", 100, 1, 0), 0);
        assert!(c.get("t", 1, 1, 0).is_none());
    }
}
