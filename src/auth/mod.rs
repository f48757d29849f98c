//! Authentication: JWT verification (HMAC secrets, PEM public keys, JWKS) against the
//! policy's settings, the JWKS key-set cache and the verified-token cache (live state, owned
//! by `store::Live` and kept across reloads), and minting tokens for local testing.

pub mod cache;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod strict;
pub mod token;

use std::sync::Arc;

pub use crate::error::AuthError;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The subject claim.
    pub subject: String,
    /// Roles from the roles claim (list, or space/comma-separated string).
    pub roles: Vec<String>,
    /// The tenant claim, if present and non-empty.
    pub tenant: Option<String>,
    /// The token id (`jti`), if present.
    pub jti: Option<String>,
    /// Expiry (`exp`, seconds since the epoch).
    pub expires_at: u64,
    /// Issued at (`iat`, seconds since the epoch), if present.
    pub issued_at: Option<u64>,
}

/// A verified principal shared between the cache and requests.
pub type SharedPrincipal = Arc<Principal>;
