//! JWKS key sets from a file or an HTTP(S) URL: cached with a TTL, refetched when a token names
//! an unknown `kid` (itself rate-limited, so a flood of random `kid`s cannot hammer the
//! endpoint), and the last good set kept when a refresh fails.
//!
//! A [`Jwks`] is live state: `store::Live` keeps one per source across policy reloads, so a
//! reload neither throws the keys away nor fetches them again. The TTL and refresh interval
//! come from the policy that is active at the time of each call.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::net::TcpStream;
use tracing::{info, warn};

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
    /// Bumped on every successful fetch (token cache entries carry it).
    pub generation: u64,
    fetched_at: Option<Instant>,
}

/// The cached key set of one source.
pub struct Jwks {
    source: JwksSource,
    ca_file: Option<PathBuf>,
    current: ArcSwap<KeySet>,
    fetch_lock: tokio::sync::Mutex<()>,
    last_attempt_ms: AtomicU64,
    /// Whether the last fetch failed (then it is retried at most once per
    /// `min_refresh_interval`, not on every request).
    last_failed: AtomicBool,
    epoch: Instant,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .finish()
    }
}

impl Jwks {
    /// An empty cache for `settings`' source; the first use fetches.
    pub fn new(settings: &JwksSettings) -> Self {
        Self {
            source: settings.source.clone(),
            ca_file: settings.ca_file.clone(),
            current: ArcSwap::from_pointee(KeySet::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_attempt_ms: AtomicU64::new(u64::MAX),
            last_failed: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// The generation of the current key set (no fetch).
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Whether this cache serves `settings` (same source, fetched the same way).
    pub fn serves(&self, settings: &JwksSettings) -> bool {
        self.source == settings.source && self.ca_file == settings.ca_file
    }

    /// Whether the key set is missing or older than `ttl` (the next use fetches).
    pub fn is_stale(&self, ttl: Duration) -> bool {
        self.current
            .load()
            .fetched_at
            .is_none_or(|t| t.elapsed() >= ttl)
    }

    /// The key set, fetched first if it is missing or older than the TTL.
    pub async fn keys(&self, settings: &JwksSettings) -> Arc<KeySet> {
        let cur = self.current.load_full();
        let stale = cur.fetched_at.is_none_or(|t| t.elapsed() >= settings.ttl);
        if !stale {
            return cur;
        }
        self.fetch(settings, false).await
    }

    /// Fetches again because a token named an unknown `kid`, unless the last fetch was less
    /// than `min_refresh_interval` ago.
    pub async fn refresh_for_unknown_kid(&self, settings: &JwksSettings) -> Arc<KeySet> {
        self.fetch(settings, true).await
    }

    async fn fetch(&self, settings: &JwksSettings, rate_limited: bool) -> Arc<KeySet> {
        let _guard = self.fetch_lock.lock().await;
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        let since = Duration::from_millis(now_ms.saturating_sub(last));
        let cur = self.current.load_full();
        if last != u64::MAX {
            // Another request fetched while we waited for the lock, or the last fetch failed
            // (a broken endpoint is retried once per interval, not by every request).
            let fresh = cur.fetched_at.is_some_and(|t| t.elapsed() < settings.ttl);
            let failed = self.last_failed.load(Ordering::Acquire);
            if since < settings.min_refresh_interval && (rate_limited || fresh || failed) {
                return cur;
            }
        }
        self.last_attempt_ms.store(now_ms, Ordering::Release);
        let loaded = self.load().await;
        self.last_failed.store(loaded.is_err(), Ordering::Release);
        match loaded {
            Ok(keys) => {
                let next = Arc::new(KeySet {
                    keys,
                    generation: cur.generation + 1,
                    fetched_at: Some(Instant::now()),
                });
                info!(keys = next.keys.len(), source = ?self.source, "JWKS fetched");
                self.current.store(next.clone());
                next
            }
            Err(e) => {
                warn!(error = %e, source = ?self.source, "JWKS fetch failed; keeping the last good key set");
                cur
            }
        }
    }

    async fn load(&self) -> Result<Vec<JwkKey>, String> {
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
        parse(&bytes)
    }
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

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1024 * 1024;
