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
use crate::auth::jwks::{Jwks, JwksStats};
use crate::auth::jwt::Verifier;
use crate::clock::Clock;
use crate::policy::Policy;
use crate::policy::auth::{JwksSource, JwtSettings};
use crate::store::StateStore;
use crate::store::classes::ClassRegistry;

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
    clock: Arc<Clock>,
    classes: ClassRegistry,
    last_auth_failure: Arc<std::sync::atomic::AtomicU64>,
    jwks_stats: Arc<JwksStats>,
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
            clock: Arc::new(Clock::System),
            last_auth_failure: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            classes: ClassRegistry::default(),
            jwks_stats: Arc::default(),
        }
    }

    /// The JWKS fetch counters of every source this instance binds (for the metrics).
    pub fn jwks_stats(&self) -> &Arc<JwksStats> {
        &self.jwks_stats
    }

    /// The same live state reading time from `clock` (tests: [`Clock::File`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The concurrency-class gates (kept across reloads; see `store::classes`).
    pub fn classes(&self) -> &ClassRegistry {
        &self.classes
    }

    /// When (ms, process clock) the last failed authentication was charged to a client IP in
    /// this process: the throttle check skips its store read while none fell in the current
    /// window (see `pipeline/auth_throttle.rs`).
    pub fn last_auth_failure(&self) -> &Arc<std::sync::atomic::AtomicU64> {
        &self.last_auth_failure
    }

    /// The process clock (every policy version reads the same one).
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
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
                // A new source: its key-set age starts when its own first fetch succeeds.
                self.jwks_stats
                    .last_ok_unix_ms
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                let jwks = Arc::new(Jwks::new(settings).with_stats(self.jwks_stats.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn policy(jwks_path: &std::path::Path) -> Policy {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  \
             upstream: http://127.0.0.1:1\n  environment: local\n  require_https: false\n\
             authentication:\n  jwt:\n    issuer: i\n    audiences: [a]\n    algorithms: [RS256]\n    \
             jwks: {{ file: \"{}\", ttl: 10m, min_refresh_interval: 1s }}\n\
             routes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n",
            jwks_path.display()
        );
        crate::config::load_str(&text, &jwks_path.with_file_name("fortress.yaml"))
            .expect("valid policy")
    }

    fn jwks_doc() -> String {
        let jwk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/rsa.jwk.json"
        ))
        .expect("jwk");
        format!(r#"{{"keys":[{jwk}]}}"#)
    }

    #[tokio::test]
    async fn jwks_task_starts_on_first_bind_and_stops_when_the_source_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, two) = (dir.path().join("one.json"), dir.path().join("two.json"));
        std::fs::write(&one, jwks_doc()).expect("write");
        std::fs::write(&two, jwks_doc()).expect("write");
        let live = Live::new(Arc::new(MemoryStore::new(16)));
        assert!(live.jwks_ready(), "no source bound: nothing to wait for");

        let first = live.bind(&policy(&one)).expect("auth");
        let jwks = first.jwks.clone().expect("jwks bound");
        live.first_fetches(crate::auth::jwks::FETCH_TIMEOUT).await;
        assert!(jwks.is_loaded(), "the task fetched the set");
        assert!(live.jwks_ready());
        assert_eq!(jwks.current().keys.len(), 1);

        // The same source again: same cache, no second task.
        let again = live.bind(&policy(&one)).expect("auth");
        assert!(Arc::ptr_eq(&jwks, again.jwks.as_ref().expect("jwks")));
        drop((first, again));
        // Held by the registry, its task and this test.
        assert_eq!(Arc::strong_count(&jwks), 3);

        // Another source: the old one leaves the registry and its task stops.
        let other = live.bind(&policy(&two)).expect("auth");
        assert!(!Arc::ptr_eq(&jwks, other.jwks.as_ref().expect("jwks")));
        let mut stopped = false;
        for _ in 0..1000 {
            if Arc::strong_count(&jwks) == 1 {
                stopped = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(stopped, "the dropped source's task released it");
    }

    #[tokio::test]
    async fn jwks_stats_count_fetches_and_restart_the_age_with_a_new_source() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().expect("tempdir");
        let (good, missing) = (
            dir.path().join("good.json"),
            dir.path().join("missing.json"),
        );
        std::fs::write(&good, jwks_doc()).expect("write");
        let live = Live::new(Arc::new(MemoryStore::new(16)));
        let stats = live.jwks_stats().clone();

        let first = live.bind(&policy(&good)).expect("auth");
        live.first_fetches(crate::auth::jwks::FETCH_TIMEOUT).await;
        assert_eq!(stats.fetch_ok.load(Relaxed), 1);
        assert_eq!(stats.fetch_error.load(Relaxed), 0);
        assert!(stats.last_ok_unix_ms.load(Relaxed) > 1_700_000_000_000);

        // A new source that cannot be read: an error counted, and no age (its set never
        // loaded; the old source's success says nothing about it).
        drop(first);
        let second = live.bind(&policy(&missing)).expect("auth");
        live.first_fetches(crate::auth::jwks::FETCH_TIMEOUT).await;
        assert_eq!(stats.fetch_ok.load(Relaxed), 1);
        assert_eq!(stats.fetch_error.load(Relaxed), 1);
        assert_eq!(stats.last_ok_unix_ms.load(Relaxed), 0);
        drop(second);
    }
}
