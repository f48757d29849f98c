//! Live state bound to a policy when it is installed: one JWKS cache per source, the
//! verified-token cache and the state store. All outlive any one policy version.
//!
//! [`Live::bind`] runs once per install (startup and every reload), never per request:
//! - a JWKS source that the new policy still uses keeps its cache (keys, last good set,
//!   refresh bookkeeping), so a reload neither fetches it again nor loses it while the
//!   identity provider is down; a source no policy uses any more is dropped;
//! - the token cache is kept unless its capacity changed; entries verified under other JWT
//!   settings stop matching by themselves (see `auth::cache`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::auth::cache::TokenCache;
use crate::auth::jwks::Jwks;
use crate::auth::jwt::Verifier;
use crate::policy::Policy;
use crate::policy::auth::{JwksSource, JwtSettings};
use crate::store::StateStore;

/// What identifies a JWKS cache: its source, and the CA file used to fetch it.
type JwksOrigin = (JwksSource, Option<PathBuf>);

/// The live state policies bind to.
#[derive(Debug)]
pub struct Live {
    jwks: Mutex<HashMap<JwksOrigin, Arc<Jwks>>>,
    tokens: Mutex<Option<Arc<TokenCache>>>,
    store: Arc<dyn StateStore>,
}

/// The live state one policy version uses (held by its snapshot).
#[derive(Debug, Clone)]
pub struct AuthBinding {
    /// The JWKS cache of the policy's source, if it has one.
    pub jwks: Option<Arc<Jwks>>,
    /// The verified-token cache.
    pub tokens: Arc<TokenCache>,
}

impl AuthBinding {
    /// A verifier for `settings` (the settings this binding was made for).
    pub fn verifier<'a>(&'a self, settings: &'a JwtSettings) -> Verifier<'a> {
        Verifier {
            settings,
            jwks: self.jwks.as_deref(),
            cache: &self.tokens,
        }
    }
}

impl Live {
    /// Live state over `store` (revocations, toggles, limits and budgets).
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            jwks: Mutex::default(),
            tokens: Mutex::default(),
            store,
        }
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Binds live state to `policy`, reusing what an earlier policy left (see the module doc).
    /// `None` when the policy has no authentication.
    pub fn bind(&self, policy: &Policy) -> Option<AuthBinding> {
        let jwt = &policy.auth.as_ref()?.jwt;
        // A poisoned lock only means another install panicked mid-way; the maps stay valid.
        let mut sets = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        let jwks = jwt.jwks.as_ref().map(|settings| {
            sets.entry(settings.origin())
                .or_insert_with(|| Arc::new(Jwks::new(settings)))
                .clone()
        });
        let origin = jwt.jwks.as_ref().map(|s| s.origin());
        sets.retain(|k, _| Some(k) == origin.as_ref());
        drop(sets);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let cache = match tokens.as_ref() {
            Some(c) if c.capacity() == jwt.cache_size => c.clone(),
            _ => Arc::new(TokenCache::new(jwt.cache_size)),
        };
        *tokens = Some(cache.clone());
        Some(AuthBinding {
            jwks,
            tokens: cache,
        })
    }
}
