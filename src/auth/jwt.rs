//! JWT verification: algorithm allowlist bound to key types, issuer/audience/time checks,
//! required claims, claim mapping, and the verified-token cache.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use super::cache::{TokenCache, Verified};
use super::jwks::{Jwks, KeySet};
use super::{AuthError, Principal, SharedPrincipal, identity, strict};
pub use crate::policy::auth::{ClaimMap, JwtSettings, StaticKey};

/// Verifies tokens against one policy's JWT settings, with the live key set and token cache
/// bound to it. Cheap to build per request (references only).
#[derive(Clone, Copy)]
pub struct Verifier<'a> {
    /// The policy's JWT settings.
    pub settings: &'a JwtSettings,
    /// The live JWKS cache of the settings' source, if configured.
    pub jwks: Option<&'a Jwks>,
    /// The live verified-token cache.
    pub cache: &'a TokenCache,
}

impl Verifier<'_> {
    /// Verifies `token` at time `now` (seconds since the epoch) and maps its claims.
    pub async fn verify(&self, token: &str, now: u64) -> Result<SharedPrincipal, AuthError> {
        let s = self.settings;
        if token.is_empty() || token.len() > s.max_token_bytes {
            return Err(AuthError::MalformedToken);
        }
        let jwks = match (self.jwks, &s.jwks) {
            (Some(j), Some(_)) => Some(j),
            // Settings name a JWKS but none is bound (cannot happen once installed): fail
            // closed for the key-set algorithms rather than skip the key set.
            (None, Some(_)) => return Err(AuthError::KeysUnavailable),
            _ => None,
        };
        // The current (last good) key set, read lock-free: a request never waits for a fetch.
        // The background task keeps it fresh; a refetch that changed the set bumps the
        // generation, so tokens verified with a removed key stop matching the cache.
        let keys = jwks.map(Jwks::current);
        let generation = keys.as_ref().map_or(0, |k| k.generation);
        if let Some(p) = self.cache.get(token, now, generation, s.fingerprint) {
            return Ok(p);
        }
        let alg = self.header_algorithm(token)?;
        let family = alg.family();
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        let validation = self.validation(alg);
        let claims = match family {
            AlgorithmFamily::Hmac => {
                // Rotation: the secrets in the order listed; only a bad signature moves on to
                // the next (a good signature with a bad claim is reported as that claim).
                let mut result = Err(AuthError::DisallowedAlgorithm);
                for key in &s.secrets {
                    result = decode(token, key, &validation);
                    if !matches!(result, Err(AuthError::InvalidSignature)) {
                        break;
                    }
                }
                result?
            }
            _ => {
                let found = self.try_keys(
                    token,
                    alg,
                    header.kid.as_deref(),
                    keys.as_deref(),
                    &validation,
                );
                match (found, jwks, keys.as_deref()) {
                    // No key for it: ask the background task for an early refresh (rate
                    // limited) and refuse now; a later request passes once the set landed.
                    // An outage is not the client's fault (`KeysUnavailable`, 503): no set was
                    // ever loaded, or the token names a `kid` the set lacks while the endpoint
                    // cannot be reached (the key may well exist). With a set loaded and
                    // reachable, a key the set lacks is the token's problem (401).
                    (Err(e @ (AuthError::UnknownKid | AuthError::KeysUnavailable)), Some(j), k) => {
                        j.request_refresh();
                        let loaded = k.is_some_and(KeySet::loaded);
                        return Err(match e {
                            _ if !loaded => AuthError::KeysUnavailable,
                            AuthError::UnknownKid if j.unreachable() => AuthError::KeysUnavailable,
                            _ => AuthError::UnknownKid,
                        });
                    }
                    (found, _, _) => found?,
                }
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
        let s = self.settings;
        let leeway = s.leeway.as_secs();
        // Time claims are judged here, against the caller's `now` (the process clock, which
        // tests control), not by the JWT library's own reading of the system clock. Same rule
        // as RFC 7519 §4.1.4/§4.1.5 with leeway: expired when `exp < now - leeway`, not yet
        // valid when `nbf > now + leeway`. `strict::payload` already refused non-integers.
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::MissingClaim)?;
        if exp < now.saturating_sub(leeway) {
            return Err(AuthError::TokenExpired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or(AuthError::MalformedToken)?;
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::TokenNotYetValid);
            }
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_u64().ok_or(AuthError::MalformedToken)?;
            if iat > now.saturating_add(leeway) {
                return Err(AuthError::TokenNotYetValid);
            }
        }
        for name in &s.required_claims {
            if lookup(&claims, name).is_none_or(Value::is_null) {
                return Err(AuthError::MissingClaim);
            }
        }
        let principal = Arc::new(principal(&s.claims, &claims)?);
        let verified = Verified {
            valid_until: principal.expires_at.saturating_add(leeway),
            principal: principal.clone(),
            key_generation: generation,
            scope: s.fingerprint,
        };
        self.cache.insert(token, verified, now);
        Ok(principal)
    }

    /// Reads `alg` from the header without trusting anything else in it, so that `none` (in
    /// any case) and unknown names are refused as disallowed algorithms. The header is parsed
    /// strictly first (`strict::header`): a repeated member (`alg` twice), `crit` or `b64`
    /// refuses the token before any key is tried.
    fn header_algorithm(&self, token: &str) -> Result<Algorithm, AuthError> {
        let header = strict::header(token)?;
        let name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthError::MalformedToken)?;
        let alg: Algorithm = name.parse().map_err(|_| AuthError::DisallowedAlgorithm)?;
        if self.settings.algorithms.contains(&alg) {
            Ok(alg)
        } else {
            Err(AuthError::DisallowedAlgorithm)
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let s = self.settings;
        let mut v = Validation::new(alg);
        v.leeway = s.leeway.as_secs();
        // `exp` and `nbf` are checked in `finish` against the process clock; presence of `exp`
        // is still required here.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.set_issuer(&[s.issuer.as_str()]);
        v.set_audience(&s.audiences);
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
            .settings
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
            (false, None) if self.settings.jwks.is_some() => Err(AuthError::KeysUnavailable),
            (false, None) => Err(AuthError::InvalidSignature),
        }
    }
}

/// Maps claims that were *not* verified (explain's `--claims`) to a principal, with the same
/// claim-type and identity rules as a token.
pub fn principal_from_claims(map: &ClaimMap, claims: &Value) -> Result<SharedPrincipal, AuthError> {
    strict::registered_claim_types(claims)?;
    let mut claims = claims.clone();
    if claims.get("exp").is_none()
        && let Some(obj) = claims.as_object_mut()
    {
        obj.insert("exp".into(), Value::from(u64::MAX));
    }
    principal(map, &claims).map(Arc::new)
}

/// Builds the principal. The subject, roles and tenant are the values fortress sends
/// upstream as identity headers, so they are checked here (`identity`): a value that cannot
/// travel as a header unambiguously refuses the token (`invalid_identity`) rather than being
/// dropped or mangled on the way.
fn principal(map: &ClaimMap, claims: &Value) -> Result<Principal, AuthError> {
    let subject = lookup(claims, &map.subject)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::MissingClaim)?
        .to_owned();
    identity::subject(&subject)?;
    let roles: Vec<String> = match lookup(claims, &map.roles) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(AuthError::MalformedToken)
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(AuthError::MalformedToken),
    };
    // Roles travel upstream comma-joined: a role containing `,` (or `;`, white space or a
    // control character) would be ambiguous there, so such a token is refused.
    identity::roles(&roles)?;
    // The tenant claim: a non-empty string, or an integer (tenant ids are often numeric; it
    // travels and compares as its decimal form). Anything else (a fraction, a boolean, a
    // list, an object) is not a tenant fortress can judge or forward, and a token that carries
    // one is refused rather than treated as tenant-less. An empty string is no tenant.
    let tenant = match lookup(claims, &map.tenant) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if !s.is_empty() => {
            identity::tenant(s)?;
            Some(s.clone())
        }
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
            let s = n.to_string();
            identity::tenant(&s)?;
            Some(s)
        }
        Some(_) => return Err(AuthError::InvalidClaimType),
    };
    let jti = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(AuthError::MissingClaim)?;
    let issued_at = claims.get("iat").and_then(Value::as_u64);
    Ok(Principal {
        subject,
        roles,
        tenant,
        jti,
        expires_at,
        issued_at,
    })
}

/// Verifies the signature and the claims. Once the signature is known good, the payload's
/// own decoded bytes are parsed strictly (`strict::payload`: no repeated member at any depth,
/// registered claims of the right JSON type), so the claims used are exactly the ones signed,
/// read one way. A failure there wins over the library's verdict on the same claims (an
/// `exp` that is a string is a wrong type, not a missing claim). This runs before the
/// verified-token cache is filled, so a cached token has passed it.
fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Value, AuthError> {
    match jsonwebtoken::decode::<Value>(token, key, validation) {
        Ok(d) => {
            strict::payload(token)?;
            Ok(d.claims)
        }
        Err(e) => {
            let err = map_error(e.kind());
            // These are decided before (or instead of) the signature check: the payload was
            // not shown to be the signer's, so its content says nothing.
            if !matches!(
                err,
                AuthError::InvalidSignature
                    | AuthError::DisallowedAlgorithm
                    | AuthError::UnknownKid
                    | AuthError::KeysUnavailable
            ) {
                strict::payload(token)?;
            }
            Err(err)
        }
    }
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
    fn principal_checks_identity_values_and_claim_types() {
        let map = ClaimMap {
            subject: "sub".into(),
            roles: "roles".into(),
            tenant: "tenant".into(),
        };
        let ok = principal_from_claims(
            &map,
            &serde_json::json!({"sub": "alice", "roles": "a b", "tenant": "t1"}),
        )
        .expect("valid");
        assert_eq!(ok.roles, ["a", "b"]);
        assert_eq!(ok.tenant.as_deref(), Some("t1"));
        for (claims, want) in [
            (
                serde_json::json!({"sub": "a\r\nb"}),
                AuthError::InvalidIdentity,
            ),
            (
                serde_json::json!({"sub": "a", "tenant": "t1,t2"}),
                AuthError::InvalidIdentity,
            ),
            (
                serde_json::json!({"sub": "a", "roles": ["x;y"]}),
                AuthError::InvalidIdentity,
            ),
            (
                serde_json::json!({"sub": "a", "roles": "ok bad\u{1}"}),
                AuthError::InvalidIdentity,
            ),
            (
                serde_json::json!({"sub": "a", "roles": [1]}),
                AuthError::MalformedToken,
            ),
            (serde_json::json!({"sub": 1}), AuthError::InvalidClaimType),
            (
                serde_json::json!({"sub": "a", "exp": "soon"}),
                AuthError::InvalidClaimType,
            ),
        ] {
            assert_eq!(
                principal_from_claims(&map, &claims).map(|_| ()),
                Err(want),
                "{claims}"
            );
        }
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
