//! JWKS key sets from a file or an HTTP(S) URL, fetched by a background task (one per source)
//! and never on the request path: requests only read the current (last good) set, lock-free.
//!
//! The task ([`Jwks::run`]) refetches before the TTL runs out, retries a failed fetch with
//! backoff (from `min_refresh_interval`, doubling), and keeps the last good set meanwhile. A
//! token naming an unknown `kid` only *asks* for an early refresh ([`Jwks::request_refresh`]),
//! itself rate-limited to once per `min_refresh_interval` since the last attempt, so a flood of
//! random `kid`s cannot hammer the endpoint and a hung endpoint never stalls a request.
//!
//! A [`Jwks`] is live state: `store::Live` keeps one per source across policy reloads (and
//! runs its task), so a reload neither throws the keys away nor fetches them again. The TTL and
//! refresh interval come from the policy bound last ([`Jwks::update_settings`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

pub use crate::policy::auth::{JwksSettings, JwksSource};

/// One usable public key from the set.
#[derive(Clone)]
pub struct JwkKey {
    /// Key id.
    pub kid: Option<String>,
    /// Which algorithm family the key serves.
    pub family: AlgorithmFamily,
    /// The algorithm the set pins the key to, if any.
    pub alg: Option<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

/// A fetched key set.
#[derive(Clone, Default)]
pub struct KeySet {
    /// Keys.
    pub keys: Vec<JwkKey>,
    /// Bumped whenever a fetch brings a different document (token cache entries carry it, so
    /// a key removed from the set stops working for cached tokens too).
    pub generation: u64,
    fetched_at: Option<Instant>,
    doc: Bytes,
}

impl KeySet {
    /// Whether a set was ever loaded (an empty set before the first good fetch).
    pub fn loaded(&self) -> bool {
        self.fetched_at.is_some()
    }
}

/// Fetch counters the metrics read at scrape time (`fortress_jwks_fetch_total{result}`,
/// `fortress_jwks_age_seconds`). One per instance (`store::Live` owns it), shared by the
/// cache of every source it binds.
#[derive(Debug, Default)]
pub struct JwksStats {
    /// Successful fetches.
    pub fetch_ok: AtomicU64,
    /// Failed fetches (the last good set stays).
    pub fetch_error: AtomicU64,
    /// Unix ms of the current source's last successful fetch (0: none yet).
    pub last_ok_unix_ms: AtomicU64,
}

impl JwksStats {
    fn fetched(&self, ok: bool) {
        if ok {
            self.fetch_ok.fetch_add(1, Ordering::Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.last_ok_unix_ms.store(now, Ordering::Relaxed);
        } else {
            self.fetch_error.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The cached key set of one source.
pub struct Jwks {
    source: JwksSource,
    ca_file: Option<PathBuf>,
    settings: ArcSwap<JwksSettings>,
    current: ArcSwap<KeySet>,
    /// Early-refresh asks (unknown `kid`), coalesced.
    wake: Notify,
    /// When the last fetch attempt started (ms since `epoch`; `u64::MAX`: never).
    last_attempt_ms: AtomicU64,
    /// When a request last asked for an early refresh (ms since `epoch`; `u64::MAX`: never).
    asked_ms: AtomicU64,
    /// Finished fetch attempts (the first one is awaited at startup).
    attempts: watch::Sender<u64>,
    epoch: Instant,
    stats: Arc<JwksStats>,
    /// The last fetch attempt failed (the endpoint or file cannot be read now).
    failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .finish()
    }
}

impl Jwks {
    /// An empty cache for `settings`' source; its task ([`Jwks::run`]) fetches.
    pub fn new(settings: &JwksSettings) -> Self {
        Self {
            source: settings.source.clone(),
            ca_file: settings.ca_file.clone(),
            settings: ArcSwap::from_pointee(settings.clone()),
            current: ArcSwap::from_pointee(KeySet::default()),
            wake: Notify::new(),
            last_attempt_ms: AtomicU64::new(u64::MAX),
            asked_ms: AtomicU64::new(u64::MAX),
            attempts: watch::Sender::new(0),
            epoch: Instant::now(),
            stats: Arc::default(),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same cache counting its fetches into `stats` (the instance's, for the metrics).
    pub fn with_stats(mut self, stats: Arc<JwksStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The current key set (lock-free; never fetches).
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// The generation of the current key set.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Whether a key set was ever loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().loaded()
    }

    /// Whether the last fetch attempt failed: a token whose key is not in the (last good) set
    /// cannot be judged now.
    pub fn unreachable(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Whether this cache serves `settings` (same source, fetched the same way).
    pub fn serves(&self, settings: &JwksSettings) -> bool {
        self.source == settings.source && self.ca_file == settings.ca_file
    }

    /// Takes the TTL and refresh interval of the policy bound last.
    pub fn update_settings(&self, settings: &JwksSettings) {
        self.settings.store(Arc::new(settings.clone()));
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Asks the background task for an early refresh (a token named an unknown `kid`). Does
    /// not wait. Ignored when the last attempt or ask was less than `min_refresh_interval` ago.
    pub fn request_refresh(&self) {
        let min = self.settings.load().min_refresh_interval;
        let now = self.now_ms();
        let since = |t: u64| t == u64::MAX || Duration::from_millis(now.saturating_sub(t)) >= min;
        let asked = self.asked_ms.load(Ordering::Acquire);
        if !since(self.last_attempt_ms.load(Ordering::Acquire)) || !since(asked) {
            return;
        }
        // One ask per interval, however many requests race here.
        if self
            .asked_ms
            .compare_exchange(asked, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }

    /// Waits until the first fetch attempt finished (successful or not), at most `limit`.
    pub async fn first_attempt(&self, limit: Duration) {
        let mut rx = self.attempts.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n > 0)).await;
    }

    /// The background task: fetches at once, then before the TTL runs out, early when asked,
    /// and with backoff after a failure. Runs until aborted (its source left the registry).
    pub async fn run(self: Arc<Self>) {
        let mut failures: u32 = 0;
        loop {
            let ok = self.refresh_once().await;
            let settings = self.settings.load_full();
            failures = if ok { 0 } else { failures.saturating_add(1) };
            let wait = if ok {
                // Before the set gets stale: at three quarters of the TTL.
                settings.ttl.mul_f64(0.75).max(MIN_REFRESH_GAP)
            } else {
                backoff(&settings, failures)
            };
            let due = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => break,
                    () = self.wake.notified() => {
                        // An ask: honoured when the last attempt is far enough back (asks that
                        // piled up while a fetch ran are dropped).
                        let min = self.settings.load().min_refresh_interval;
                        let last = self.last_attempt_ms.load(Ordering::Acquire);
                        let since = Duration::from_millis(self.now_ms().saturating_sub(last));
                        if last == u64::MAX || since >= min {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// One fetch attempt; a good document replaces the set, a failure keeps the last good one.
    pub async fn refresh_once(&self) -> bool {
        self.last_attempt_ms.store(self.now_ms(), Ordering::Release);
        let loaded = self.load().await;
        let ok = match loaded {
            Ok((doc, keys)) => {
                let cur = self.current.load_full();
                // The same document keeps its generation (cached tokens stay valid); a changed
                // one bumps it, so tokens verified with a removed key stop matching.
                let generation = if cur.loaded() && cur.doc == doc {
                    cur.generation
                } else {
                    cur.generation + 1
                };
                if generation != cur.generation {
                    info!(keys = keys.len(), source = ?self.source, "JWKS fetched");
                } else {
                    debug!(source = ?self.source, "JWKS refetched, unchanged");
                }
                self.current.store(Arc::new(KeySet {
                    keys,
                    generation,
                    fetched_at: Some(Instant::now()),
                    doc,
                }));
                true
            }
            Err(e) => {
                warn!(error = %e, source = ?self.source, "JWKS fetch failed; keeping the last good key set");
                false
            }
        };
        self.failing.store(!ok, Ordering::Release);
        self.stats.fetched(ok);
        self.attempts.send_modify(|n| *n = n.saturating_add(1));
        ok
    }

    async fn load(&self) -> Result<(Bytes, Vec<JwkKey>), String> {
        let bytes = match &self.source {
            JwksSource::File(p) => tokio::fs::read(p)
                .await
                .map(Bytes::from)
                .map_err(|e| format!("{}: {e}", p.display()))?,
            JwksSource::Url(uri) => {
                tokio::time::timeout(FETCH_TIMEOUT, fetch_url(uri, self.ca_file.as_ref()))
                    .await
                    .map_err(|_| format!("{uri}: timed out"))??
            }
        };
        let keys = parse(&bytes)?;
        Ok((bytes, keys))
    }
}

/// The wait before retrying after `failures` failed attempts in a row: `min_refresh_interval`
/// doubled per further failure, at most the TTL (and never below the interval).
fn backoff(settings: &JwksSettings, failures: u32) -> Duration {
    let base = settings.min_refresh_interval.max(MIN_REFRESH_GAP);
    let cap = settings.ttl.min(MAX_BACKOFF).max(base);
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(cap)
}

/// Parses a JWKS document into usable keys (symmetric `oct` keys are ignored: a shared secret
/// does not belong in a published key set).
pub fn parse(bytes: &[u8]) -> Result<Vec<JwkKey>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("invalid JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            warn!(kid = ?jwk.common.key_id, "JWKS key skipped: unusable");
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        keys.push(JwkKey {
            kid: jwk.common.key_id.clone(),
            family,
            alg,
            key,
        });
    }
    Ok(keys)
}

async fn fetch_url(uri: &Uri, ca_file: Option<&PathBuf>) -> Result<Bytes, String> {
    let host = uri.host().ok_or("JWKS URL has no host")?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{uri}: connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{uri}: {e}"))?;
    let resp = if https {
        let connector = tls_connector(ca_file)?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{uri}: {e}"))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{uri}: TLS: {e}"))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if !resp.status().is_success() {
        return Err(format!("{uri}: HTTP {}", resp.status()));
    }
    Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{uri}: body: {e}"))
}

async fn send<I>(
    io: I,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

fn tls_connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// How long one fetch may take (the first one is awaited this long at startup).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest gap between two scheduled fetches.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(50);
/// The longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ttl_ms: u64, min_ms: u64) -> JwksSettings {
        JwksSettings {
            source: JwksSource::File(PathBuf::from("/nonexistent/jwks.json")),
            ca_file: None,
            ttl: Duration::from_millis(ttl_ms),
            min_refresh_interval: Duration::from_millis(min_ms),
        }
    }

    #[test]
    fn backoff_doubles_from_the_refresh_interval_up_to_the_ttl() {
        let s = settings(10_000, 1_000);
        let waits: Vec<u64> = (1..=6)
            .map(|n| u64::try_from(backoff(&s, n).as_millis()).expect("ms"))
            .collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        // A TTL shorter than the interval never makes retries faster than the interval.
        assert_eq!(backoff(&settings(300, 2_000), 3), Duration::from_secs(2));
        assert_eq!(
            backoff(&settings(u64::MAX / 2, 1_000), 40),
            MAX_BACKOFF,
            "capped, no overflow"
        );
    }

    #[tokio::test]
    async fn unknown_kid_asks_are_rate_limited_and_never_wait() {
        let j = Jwks::new(&settings(60_000, 60_000));
        // Never attempted: the first ask goes through, at once.
        j.request_refresh();
        let woke = tokio::time::timeout(Duration::ZERO, j.wake.notified()).await;
        assert!(woke.is_ok(), "the first ask wakes the task");
        // More asks within the interval are dropped.
        for _ in 0..10 {
            j.request_refresh();
        }
        let woke = tokio::time::timeout(Duration::ZERO, j.wake.notified()).await;
        assert!(
            woke.is_err(),
            "asks within min_refresh_interval are dropped"
        );
        // A failed attempt keeps nothing and reports no key set.
        assert!(!j.refresh_once().await);
        assert!(!j.is_loaded());
        assert_eq!(j.generation(), 0);
        j.first_attempt(Duration::ZERO).await;
    }
}
