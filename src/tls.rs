//! TLS for the client listener: rustls (TLS 1.2 and 1.3 only, ALPN `h2` + `http/1.1`) with a
//! certificate that can be replaced while running (cert-manager rotation). New handshakes use
//! the new certificate; established connections keep theirs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::policy::TlsFiles;

mod not_after;

/// The serving certificate and the rustls server config built around it.
pub struct CertStore {
    current: Arc<CurrentCert>,
    server_config: Arc<rustls::ServerConfig>,
    provider: Arc<CryptoProvider>,
    /// `notAfter` of the serving certificate, Unix seconds (0: unknown); the metrics read it.
    not_after: Arc<AtomicI64>,
}

impl CertStore {
    /// Loads the certificate chain and key; fails with a message naming the file at fault.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = load_key(files, &provider)?;
        let not_after = Arc::new(AtomicI64::new(expiry(&key)));
        let current = Arc::new(CurrentCert {
            key: ArcSwap::from_pointee(key),
            files: ArcSwap::from_pointee(files.clone()),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            current,
            server_config: Arc::new(config),
            provider,
            not_after,
        })
    }

    /// The rustls config for new handshakes.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// Re-reads `files` (which may be new paths) and swaps the certificate in. On failure the
    /// current certificate stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        let key = load_key(files, &self.provider)?;
        self.not_after.store(expiry(&key), Ordering::Relaxed);
        self.current.key.store(Arc::new(key));
        self.current.files.store(Arc::new(files.clone()));
        Ok(())
    }

    /// The serving certificate's `notAfter` (Unix seconds, 0 when it could not be read),
    /// kept current across reloads (`fortress_tls_cert_expiry_timestamp_seconds`).
    pub fn not_after(&self) -> &Arc<AtomicI64> {
        &self.not_after
    }

    /// The files the current certificate came from.
    pub fn files(&self) -> TlsFiles {
        TlsFiles::clone(&self.current.files.load())
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files())
            .finish()
    }
}

struct CurrentCert {
    key: ArcSwap<CertifiedKey>,
    files: ArcSwap<TlsFiles>,
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

/// `notAfter` of the leaf (first) certificate of the chain, 0 when unreadable.
fn expiry(key: &CertifiedKey) -> i64 {
    key.cert
        .first()
        .and_then(|c| not_after::not_after(c.as_ref()))
        .unwrap_or(0)
}

fn load_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("{}: cannot read certificate: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM certificate: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: cannot read private key: {e}", files.key.display()))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "{} / {}: certificate and key are not usable together: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &std::path::Path, year: i32) -> TlsFiles {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let files = TlsFiles {
            cert: dir.join(format!("{year}.crt")),
            key: dir.join(format!("{year}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&files.key, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        files
    }

    #[test]
    fn the_expiry_follows_the_serving_certificate() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            CertStore::load(&write_cert(dir.path(), 2030)).unwrap_or_else(|e| panic!("{e}"));
        let expiry = store.not_after().clone();
        // 2030-01-01T00:00:00Z
        assert_eq!(expiry.load(Ordering::Relaxed), 1_893_456_000);
        store
            .reload(&write_cert(dir.path(), 2031))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expiry.load(Ordering::Relaxed), 1_893_456_000 + 365 * 86_400);
        // A refused reload keeps the serving certificate, and its expiry.
        let broken = TlsFiles {
            cert: dir.path().join("none.crt"),
            key: dir.path().join("none.key"),
        };
        assert!(store.reload(&broken).is_err());
        assert_eq!(expiry.load(Ordering::Relaxed), 1_893_456_000 + 365 * 86_400);
    }
}
