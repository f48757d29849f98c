//! Authentication settings, compiled: algorithms bound to key material, claim checks and
//! mapping. No caches and no fetched key sets: the verified-token cache and JWKS key sets are
//! live state (`store/`), bound to these settings when a policy is installed.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::identity::IdentityHeaders;

/// `authentication:`, compiled.
#[derive(Debug)]
pub struct AuthSettings {
    /// Token verification.
    pub jwt: JwtSettings,
    /// Cookie to read the token from when there is no `Authorization` header.
    pub cookie: Option<String>,
    /// Forward the verified token (its `Authorization` header or token cookie) to the app.
    pub forward_token: bool,
    /// Forward a bearer token or token cookie fortress did not verify (public routes,
    /// dry-run refusals). Off by default: they are removed.
    pub forward_unverified_credentials: bool,
    /// Client headers that only fortress may set.
    pub identity_headers: IdentityHeaders,
}

/// JWT verification settings and static key material.
pub struct JwtSettings {
    /// Allowed algorithms (each bound to a key type at compile time).
    pub algorithms: Vec<Algorithm>,
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted audiences (one match suffices).
    pub audiences: Vec<String>,
    /// Clock skew allowance.
    pub leeway: Duration,
    /// Claims that must be present (dotted paths).
    pub required_claims: Vec<String>,
    /// Claim mapping.
    pub claims: ClaimMap,
    /// HMAC secrets, for HS* algorithms, in the order they are tried (`secret`, or `secrets`
    /// for rotation: a token verifies with any of them).
    pub secrets: Vec<DecodingKey>,
    /// PEM public keys.
    pub static_keys: Vec<StaticKey>,
    /// JWKS source, if configured (its key set is live state).
    pub jwks: Option<JwksSettings>,
    /// Largest accepted token, in bytes.
    pub max_token_bytes: usize,
    /// Capacity of the verified-token cache (0 disables it).
    pub cache_size: usize,
    /// Digest of everything above that decides whether a token verifies (secret and key
    /// bytes included). Cached verifications are only reused under the same fingerprint, so a
    /// reload that changes nothing here keeps the token cache warm, and one that rotates the
    /// secret or narrows the audiences invalidates it.
    pub fingerprint: u64,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("static_keys", &self.static_keys.len())
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

/// Where claims are read from (dotted paths such as `realm_access.roles` are allowed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimMap {
    /// Subject claim (default `sub`).
    pub subject: String,
    /// Roles claim (default `roles`): a list, or a space/comma-separated string.
    pub roles: String,
    /// Tenant claim (default `tenant`).
    pub tenant: String,
}

/// A public key from a PEM file.
#[derive(Clone)]
pub struct StaticKey {
    /// Optional key id it answers to.
    pub kid: Option<String>,
    /// RSA, EC or Ed25519.
    pub family: AlgorithmFamily,
    /// The key.
    pub key: DecodingKey,
}

/// Where a JWKS key set comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    /// A local file (e.g. a mounted Secret).
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(Uri),
}

/// JWKS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// Source.
    pub source: JwksSource,
    /// How long a fetched set is used before it is fetched again.
    pub ttl: Duration,
    /// Minimum time between two fetches caused by unknown `kid`s.
    pub min_refresh_interval: Duration,
    /// Extra CA certificates (PEM) for an `https` URL, besides the system roots.
    pub ca_file: Option<PathBuf>,
}

impl JwksSettings {
    /// What identifies a key set across reloads: where it is fetched from, and how.
    pub fn origin(&self) -> (JwksSource, Option<PathBuf>) {
        (self.source.clone(), self.ca_file.clone())
    }
}
