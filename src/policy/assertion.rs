//! Compiled `identity_assertion:` (see `config/assertion.rs` and `pipeline/assertion.rs`).

use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::{Algorithm, EncodingKey};

/// How the identity assertion is signed and sent.
#[derive(Clone)]
pub struct AssertionSettings {
    /// The request header it travels in.
    pub header: HeaderName,
    /// `HS256` or `EdDSA`.
    pub algorithm: Algorithm,
    /// The signing key.
    pub encoding: EncodingKey,
    /// Lifetime of each assertion.
    pub ttl: Duration,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// EdDSA: the key id and the public JWKS document served on the admin port.
    pub jwks: Option<(String, String)>,
}

impl std::fmt::Debug for AssertionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSettings")
            .field("header", &self.header)
            .field("algorithm", &self.algorithm)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}
