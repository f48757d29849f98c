//! Minting HS* tokens for local testing (`fortress token`, the demo).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// What to put in a test token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `sub`.
    pub subject: String,
    /// `roles` (as a list).
    pub roles: Vec<String>,
    /// `tenant`, if any.
    pub tenant: Option<String>,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// `jti`, if any.
    pub jti: Option<String>,
}

/// Signs `spec` with an HMAC `secret` (HS256), issued now.
pub fn mint(spec: &TokenSpec, secret: &[u8], now: u64) -> Result<String, String> {
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(spec.subject.clone()));
    claims.insert("roles".into(), Value::from(spec.roles.clone()));
    if let Some(t) = &spec.tenant {
        claims.insert("tenant".into(), Value::from(t.clone()));
    }
    claims.insert("iss".into(), Value::from(spec.issuer.clone()));
    claims.insert("aud".into(), Value::from(spec.audience.clone()));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now.saturating_add(spec.ttl_secs)));
    if let Some(j) = &spec.jti {
        claims.insert("jti".into(), Value::from(j.clone()));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}
