//! JWT verification: algorithm allowlist bound to key types, issuer/audience/time checks,
//! required claims, claim mapping, and the verified-token cache.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use super::cache::TokenCache;
use super::jwks::{Jwks, KeySet};
use super::{AuthError, Principal, SharedPrincipal};

/// Where claims are read from (dotted paths such as `realm_access.roles` are allowed).
#[derive(Debug, Clone)]
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

/// Compiled JWT settings and key material. Immutable; rebuilt on reload (so is the cache).
pub struct Authenticator {
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
    /// HMAC secret, for HS* algorithms.
    pub secret: Option<DecodingKey>,
    /// PEM public keys.
    pub static_keys: Vec<StaticKey>,
    /// JWKS, if configured.
    pub jwks: Option<Arc<Jwks>>,
    /// Largest accepted token, in bytes.
    pub max_token_bytes: usize,
    /// Verified tokens.
    pub cache: TokenCache,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("static_keys", &self.static_keys.len())
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Verifies `token` at time `now` (seconds since the epoch) and maps its claims.
    pub async fn verify(&self, token: &str, now: u64) -> Result<SharedPrincipal, AuthError> {
        if token.is_empty() || token.len() > self.max_token_bytes {
            return Err(AuthError::MalformedToken);
        }
        // Fast path: a token verified before against the current key set. A stale JWKS skips
        // it, so the slow path refetches and keys removed from the set stop working.
        let fresh_generation = match &self.jwks {
            None => Some(0),
            Some(j) if !j.is_stale() => Some(j.generation()),
            Some(_) => None,
        };
        if let Some(g) = fresh_generation
            && let Some(p) = self.cache.get(token, now, g)
        {
            return Ok(p);
        }
        let alg = self.header_algorithm(token)?;
        let family = alg.family();
        let jwks = match (&self.jwks, family) {
            (Some(j), AlgorithmFamily::Rsa | AlgorithmFamily::Ec | AlgorithmFamily::Ed) => {
                Some(j.keys().await)
            }
            _ => None,
        };
        let generation = match (&jwks, &self.jwks) {
            (Some(k), _) => k.generation,
            (None, Some(j)) => j.generation(),
            (None, None) => 0,
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        let validation = self.validation(alg);
        let claims = match family {
            AlgorithmFamily::Hmac => {
                let key = self.secret.as_ref().ok_or(AuthError::DisallowedAlgorithm)?;
                decode(token, key, &validation)?
            }
            _ => {
                let mut keys = jwks;
                let mut found = self.try_keys(
                    token,
                    alg,
                    header.kid.as_deref(),
                    keys.as_deref(),
                    &validation,
                );
                if matches!(found, Err(AuthError::UnknownKid))
                    && let Some(j) = &self.jwks
                {
                    let refreshed = j.refresh_for_unknown_kid().await;
                    found = self.try_keys(
                        token,
                        alg,
                        header.kid.as_deref(),
                        Some(&refreshed),
                        &validation,
                    );
                    keys = Some(refreshed);
                }
                let claims = found?;
                if let Some(k) = keys.as_ref()
                    && k.generation != generation
                {
                    return self.finish(token, claims, now, k.generation);
                }
                claims
            }
        };
        self.finish(token, claims, now, generation)
    }

    fn finish(
        &self,
        token: &str,
        claims: Value,
        now: u64,
        generation: u64,
    ) -> Result<SharedPrincipal, AuthError> {
        let leeway = self.leeway.as_secs();
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_u64().ok_or(AuthError::MalformedToken)?;
            if iat > now.saturating_add(leeway) {
                return Err(AuthError::TokenNotYetValid);
            }
        }
        for name in &self.required_claims {
            if lookup(&claims, name).is_none_or(Value::is_null) {
                return Err(AuthError::MissingClaim);
            }
        }
        let principal = Arc::new(self.principal(&claims)?);
        let valid_until = principal.expires_at.saturating_add(leeway);
        self.cache
            .insert(token, principal.clone(), valid_until, generation, now);
        Ok(principal)
    }

    /// Reads `alg` from the header without trusting anything else in it, so that `none` (in
    /// any case) and unknown names are refused as disallowed algorithms.
    fn header_algorithm(&self, token: &str) -> Result<Algorithm, AuthError> {
        let header_b64 = token.split('.').next().ok_or(AuthError::MalformedToken)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| AuthError::MalformedToken)?;
        let header: Value =
            serde_json::from_slice(&bytes).map_err(|_| AuthError::MalformedToken)?;
        let name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthError::MalformedToken)?;
        let alg: Algorithm = name.parse().map_err(|_| AuthError::DisallowedAlgorithm)?;
        if self.algorithms.contains(&alg) {
            Ok(alg)
        } else {
            Err(AuthError::DisallowedAlgorithm)
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v
    }

    /// Tries the keys that may have signed the token: by `kid` when given, else every key of
    /// the algorithm's family.
    fn try_keys(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        jwks: Option<&KeySet>,
        validation: &Validation,
    ) -> Result<Value, AuthError> {
        let family = alg.family();
        let statics = self
            .static_keys
            .iter()
            .filter(|k| k.family == family)
            .map(|k| (k.kid.as_deref(), &k.key, None));
        let fetched = jwks
            .into_iter()
            .flat_map(|s| s.keys.iter())
            .filter(|k| k.family == family)
            .map(|k| (k.kid.as_deref(), &k.key, k.alg));
        let mut tried = false;
        for (key_kid, key, pinned) in statics.chain(fetched) {
            // A key with a `kid` answers only to that `kid`; a key without one to any token.
            if let (Some(kid), Some(key_kid)) = (kid, key_kid)
                && kid != key_kid
            {
                continue;
            }
            if pinned.is_some_and(|p| p != alg) {
                continue;
            }
            tried = true;
            match decode(token, key, validation) {
                Ok(claims) => return Ok(claims),
                Err(AuthError::InvalidSignature) => continue,
                // Anything else means the signature was good but a claim is not: report it.
                Err(e) => return Err(e),
            }
        }
        match (tried, kid) {
            (true, _) => Err(AuthError::InvalidSignature),
            (false, Some(_)) => Err(AuthError::UnknownKid),
            (false, None) if self.jwks.is_some() => Err(AuthError::KeysUnavailable),
            (false, None) => Err(AuthError::InvalidSignature),
        }
    }

    /// Maps claims that were *not* verified (explain's `--claims`) to a principal.
    pub fn principal_from_claims(&self, claims: &Value) -> Result<SharedPrincipal, AuthError> {
        let mut claims = claims.clone();
        if claims.get("exp").is_none()
            && let Some(obj) = claims.as_object_mut()
        {
            obj.insert("exp".into(), Value::from(u64::MAX));
        }
        self.principal(&claims).map(Arc::new)
    }

    fn principal(&self, claims: &Value) -> Result<Principal, AuthError> {
        let subject = lookup(claims, &self.claims.subject)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim)?
            .to_owned();
        let roles = match lookup(claims, &self.claims.roles) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                // Roles travel upstream comma-joined: a role containing `,` or white space
                // would be ambiguous there, so such a token is refused.
                .map(|v| match v.as_str() {
                    Some(r) if !r.is_empty() && !r.contains([',', ' ']) => Ok(r.to_owned()),
                    _ => Err(AuthError::MalformedToken),
                })
                .collect::<Result<_, _>>()?,
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(_) => return Err(AuthError::MalformedToken),
        };
        let tenant = match lookup(claims, &self.claims.tenant) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let jti = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::MissingClaim)?;
        Ok(Principal {
            subject,
            roles,
            tenant,
            jti,
            expires_at,
        })
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Value, AuthError> {
    jsonwebtoken::decode::<Value>(token, key, validation)
        .map(|d| d.claims)
        .map_err(|e| map_error(e.kind()))
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::DisallowedAlgorithm,
        _ => AuthError::MalformedToken,
    }
}

/// Follows a dotted path (`realm_access.roles`) through nested objects. An exact key that
/// contains dots wins over the path.
pub fn lookup<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut cur = claims;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// Signs and verifies a throwaway HS256 token, so a missing crypto backend fails at startup
/// instead of panicking on the first request.
pub fn self_test() -> Result<(), String> {
    let run = || -> Result<(), String> {
        let claims = serde_json::json!({"sub": "self-test", "exp": 4_000_000_000u64, "iss": "f", "aud": "f"});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"fortress-self-test-secret-0123456789"),
        )
        .map_err(|e| e.to_string())?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["f"]);
        v.set_audience(&["f"]);
        jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"fortress-self-test-secret-0123456789"),
            &v,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    std::panic::catch_unwind(run)
        .map_err(|_| "JWT crypto backend self-test panicked".to_string())?
        .map_err(|e| format!("JWT crypto backend self-test failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }

    #[test]
    fn dotted_lookup() {
        let v = serde_json::json!({"realm_access": {"roles": ["a"]}, "a.b": 1});
        assert_eq!(
            lookup(&v, "realm_access.roles"),
            Some(&serde_json::json!(["a"]))
        );
        assert_eq!(lookup(&v, "a.b"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "missing.x"), None);
    }
}
