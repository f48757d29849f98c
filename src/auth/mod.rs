//! Authentication: JWT verification (HMAC secrets, PEM public keys, JWKS), a verified-token
//! cache, and revoked token ids.

pub mod cache;
pub mod jwks;
pub mod jwt;

pub mod revocation;
pub mod token;

use std::sync::Arc;

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
}

/// Why a token was refused. Each has a short public reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token was presented.
    MissingToken,
    /// Not a well-formed JWT, two `Authorization` headers, wrong scheme, or too large.
    MalformedToken,
    /// The signature does not verify with any configured key.
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    TokenNotYetValid,
    /// `iss` is not the configured issuer.
    InvalidIssuer,
    /// `aud` names none of the configured audiences.
    InvalidAudience,
    /// A required claim is missing (or the subject is not a non-empty string).
    MissingClaim,
    /// The header's `alg` is not in the allowlist (`none` never is).
    DisallowedAlgorithm,
    /// The header's `kid` names no known key, even after a JWKS refresh.
    UnknownKid,
    /// The token's `jti` has been revoked.
    TokenRevoked,
    /// No key material is available (e.g. JWKS never fetched).
    KeysUnavailable,
}

impl AuthError {
    /// The public reason code.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::MalformedToken => "malformed_token",
            AuthError::InvalidSignature => "invalid_signature",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::InvalidIssuer => "invalid_issuer",
            AuthError::InvalidAudience => "invalid_audience",
            AuthError::MissingClaim => "missing_claim",
            AuthError::DisallowedAlgorithm => "disallowed_algorithm",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::TokenRevoked => "token_revoked",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }

    /// Every reason code (for pre-registering metrics).
    pub const ALL: [AuthError; 12] = [
        AuthError::MissingToken,
        AuthError::MalformedToken,
        AuthError::InvalidSignature,
        AuthError::TokenExpired,
        AuthError::TokenNotYetValid,
        AuthError::InvalidIssuer,
        AuthError::InvalidAudience,
        AuthError::MissingClaim,
        AuthError::DisallowedAlgorithm,
        AuthError::UnknownKid,
        AuthError::TokenRevoked,
        AuthError::KeysUnavailable,
    ];
}

/// A verified principal shared between the cache and requests.
pub type SharedPrincipal = Arc<Principal>;
