//! Live state bound to a policy when it is installed: one JWKS cache per source, the
//! verified-token cache and the state store. All outlive any one policy version.
//!
//! [`Live::bind`] runs once per install (startup and every reload), never per request:
//! - a JWKS source that the new policy still uses keeps its cache (keys, last good set,
//!   refresh bookkeeping) and its background refresh task, so a reload neither fetches it
//!   again nor loses it while the identity provider is down; a new source gets its task
//!   (started here, when the source is first bound); a source no policy uses any more is
//!   dropped, and its task stopped;
//! - the token cache is kept unless its capacity changed; entries verified under other JWT
//!   settings stop matching by themselves (see `auth::cache`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::cache::TokenCache;
use crate::auth::jwks::Jwks;
use crate::auth::jwt::Verifier;
use crate::policy::Policy;
use crate::policy::auth::{JwksSource, JwtSettings};
use crate::store::StateStore;

/// What identifies a JWKS cache: its source, and the CA file used to fetch it.
type JwksOrigin = (JwksSource, Option<PathBuf>);

/// A JWKS cache and its background refresh task (stopped when the entry is dropped).
#[derive(Debug)]
struct JwksEntry {
    jwks: Arc<Jwks>,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for JwksEntry {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The live state policies bind to.
#[derive(Debug)]
pub struct Live {
    jwks: Mutex<HashMap<JwksOrigin, JwksEntry>>,
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

    /// Waits until every bound JWKS source finished its first fetch attempt (successful or
    /// not), at most `limit` (startup: the instance reports ready only once keys are loaded).
    pub async fn first_fetches(&self, limit: Duration) {
        for jwks in self.jwks_sets() {
            jwks.first_attempt(limit).await;
        }
    }

    /// Fetches every bound JWKS source once, now (for `fortress explain`, which has no
    /// background tasks).
    pub async fn fetch_once(&self) {
        for jwks in self.jwks_sets() {
            jwks.refresh_once().await;
        }
    }

    /// Whether every bound JWKS source has a key set (readiness).
    pub fn jwks_ready(&self) -> bool {
        self.jwks_sets().iter().all(|j| j.is_loaded())
    }

    fn jwks_sets(&self) -> Vec<Arc<Jwks>> {
        let sets = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        sets.values().map(|e| e.jwks.clone()).collect()
    }

    /// Binds live state to `policy`, reusing what an earlier policy left (see the module doc).
    /// `None` when the policy has no authentication.
    pub fn bind(&self, policy: &Policy) -> Option<AuthBinding> {
        let jwt = &policy.auth.as_ref()?.jwt;
        // A poisoned lock only means another install panicked mid-way; the maps stay valid.
        let mut sets = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        let jwks = jwt.jwks.as_ref().map(|settings| {
            let entry = sets.entry(settings.origin()).or_insert_with(|| {
                let jwks = Arc::new(Jwks::new(settings));
                // Outside a runtime (explain) nothing runs in the background: the caller
                // fetches once itself (`Live::fetch_once`).
                let task = tokio::runtime::Handle::try_current()
                    .ok()
                    .map(|rt| rt.spawn(jwks.clone().run()).abort_handle());
                JwksEntry { jwks, task }
            });
            entry.jwks.update_settings(settings);
            entry.jwks.clone()
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
