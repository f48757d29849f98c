//! Compiles `authentication:`: key material loaded and bound to the allowed algorithms.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::Env;
use super::compile::{duration_or, resolve};
use super::raw::{Environment, RawAuthentication, RawJwks, RawSecret};
use super::yaml::{ConfigError, Located, Pos};
use crate::auth::cache::TokenCache;
use crate::auth::jwks::{Jwks, JwksSettings, JwksSource};
use crate::auth::jwt::{Authenticator, ClaimMap, StaticKey};
use crate::proxy::identity::IdentityHeaders;

/// Compiled authentication settings.
#[derive(Debug)]
pub struct AuthSettings {
    /// Token verification.
    pub authenticator: Authenticator,
    /// Cookie to read the token from when there is no `Authorization` header.
    pub cookie: Option<String>,
    /// Forward the client's `Authorization` header to the app.
    pub forward_token: bool,
    /// Client headers that only fortress may set.
    pub identity_headers: IdentityHeaders,
}

/// Compiles `authentication:`; errors are appended to `errors`.
pub fn compile(
    raw: &RawAuthentication,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<AuthSettings>> {
    let jwt = &raw.jwt;
    let start = errors.len();
    let mut algorithms = Vec::new();
    for a in &jwt.algorithms {
        if a.value.eq_ignore_ascii_case("none") {
            errors.push(ConfigError::at(
                a.pos,
                "algorithm `none` can never be allowed",
            ));
            continue;
        }
        match a.value.parse::<Algorithm>() {
            Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Ok(_) => errors.push(ConfigError::at(
                a.pos,
                format!("algorithm `{}` is listed twice", a.value),
            )),
            Err(_) => errors.push(ConfigError::at(
                a.pos,
                format!(
                    "`{}` is not an algorithm: expected HS256, HS384, HS512, RS256, RS384, RS512, \
                     PS256, PS384, PS512, ES256, ES384 or EdDSA",
                    a.value
                ),
            )),
        }
    }
    if jwt.algorithms.is_empty() {
        errors.push(ConfigError::at(
            jwt.issuer.pos,
            "`algorithms` must list at least one algorithm",
        ));
    }
    let secret = jwt
        .secret
        .as_ref()
        .and_then(|s| secret(s, base, environment, env, errors));
    let mut static_keys = Vec::new();
    for k in &jwt.keys {
        let path = resolve(base, &k.file.value);
        match std::fs::read(&path) {
            Ok(pem) => match public_key(&pem) {
                Some((family, key)) => static_keys.push(StaticKey {
                    kid: k.kid.clone(),
                    family,
                    key,
                }),
                None => errors.push(ConfigError::at(
                    k.file.pos,
                    format!(
                        "{}: not a PEM RSA, EC (P-256/P-384) or Ed25519 public key",
                        path.display()
                    ),
                )),
            },
            Err(e) => errors.push(ConfigError::at(
                k.file.pos,
                format!("{}: cannot read: {e}", path.display()),
            )),
        }
    }
    let jwks = jwt.jwks.as_ref().and_then(|j| jwks(j, base, errors));
    // Bind each algorithm to a key type: HS only with the secret, RS/PS only with RSA keys,
    // ES with EC keys, EdDSA with Ed25519 keys (JWKS may supply the asymmetric ones).
    for (alg, a) in algorithms.iter().zip(&jwt.algorithms) {
        let family = alg.family();
        let has_key = match family {
            AlgorithmFamily::Hmac => jwt.secret.is_some(),
            f => jwt.jwks.is_some() || static_keys.iter().any(|k| k.family == f),
        };
        if !has_key {
            let needs = match family {
                AlgorithmFamily::Hmac => "a `secret`",
                AlgorithmFamily::Rsa => "an RSA public key in `keys` or a `jwks`",
                AlgorithmFamily::Ec => "an EC public key in `keys` or a `jwks`",
                AlgorithmFamily::Ed => "an Ed25519 public key in `keys` or a `jwks`",
            };
            errors.push(ConfigError::at(
                a.pos,
                format!("algorithm `{}` needs {needs}", a.value),
            ));
        }
    }
    if let Some(s) = &jwt.secret
        && !algorithms
            .iter()
            .any(|a| a.family() == AlgorithmFamily::Hmac)
    {
        errors.push(ConfigError::at(
            secret_pos(s).unwrap_or(jwt.issuer.pos),
            "a `secret` is configured but no HS256/HS384/HS512 algorithm is allowed",
        ));
    }
    if jwt.issuer.value.is_empty() {
        errors.push(ConfigError::at(
            jwt.issuer.pos,
            "`issuer` must not be empty",
        ));
    }
    if jwt.audiences.is_empty() || jwt.audiences.iter().any(|a| a.value.is_empty()) {
        errors.push(ConfigError::at(
            jwt.issuer.pos,
            "`audiences` must list at least one non-empty audience",
        ));
    }
    let leeway = duration_or(&jwt.leeway, Duration::from_secs(30), errors);
    let max_token_bytes = match &jwt.max_token_bytes {
        Some(m) if m.value < 64 => {
            errors.push(ConfigError::at(
                m.pos,
                "`max_token_bytes` must be at least 64",
            ));
            0
        }
        Some(m) => m.value as usize,
        None => 8192,
    };
    let mut identity = IdentityHeaders::default();
    for h in &raw.identity_headers {
        if let Err(msg) = identity.add(&h.value) {
            errors.push(ConfigError::at(h.pos, msg));
        }
    }
    let claims = raw.claims.as_ref();
    let claim = |get: fn(&super::raw::RawClaims) -> &Option<String>, default: &str| {
        claims
            .and_then(|c| get(c).clone())
            .unwrap_or_else(|| default.to_string())
    };
    if errors.len() > start {
        return None;
    }
    Some(Arc::new(AuthSettings {
        authenticator: Authenticator {
            algorithms,
            issuer: jwt.issuer.value.clone(),
            audiences: jwt.audiences.iter().map(|a| a.value.clone()).collect(),
            leeway,
            required_claims: jwt
                .required_claims
                .iter()
                .map(|c| c.value.clone())
                .collect(),
            claims: ClaimMap {
                subject: claim(|c| &c.subject, "sub"),
                roles: claim(|c| &c.roles, "roles"),
                tenant: claim(|c| &c.tenant, "tenant"),
            },
            secret,
            static_keys,
            jwks,
            max_token_bytes,
            cache: TokenCache::new(jwt.cache_size.unwrap_or(10_000) as usize),
        },
        cookie: jwt.cookie.as_ref().map(|c| c.value.clone()),
        forward_token: raw.forward_token.unwrap_or(true),
        identity_headers: identity,
    }))
}

fn secret(
    raw: &RawSecret,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<DecodingKey> {
    let pos = secret_pos(raw).unwrap_or_default();
    let sources = [raw.env.is_some(), raw.file.is_some(), raw.value.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        errors.push(ConfigError::at(
            pos,
            "`secret` needs exactly one of `env`, `file` or `value`",
        ));
        return None;
    }
    let (value, at): (String, Pos) = if let Some(name) = &raw.env {
        match env.var(&name.value) {
            Some(v) => (v, name.pos),
            None => {
                errors.push(ConfigError::at(
                    name.pos,
                    format!("environment variable `{}` is not set", name.value),
                ));
                return None;
            }
        }
    } else if let Some(file) = &raw.file {
        let path = resolve(base, &file.value);
        match std::fs::read_to_string(&path) {
            Ok(v) => (v.trim_end_matches(['\n', '\r']).to_string(), file.pos),
            Err(e) => {
                errors.push(ConfigError::at(
                    file.pos,
                    format!("{}: cannot read: {e}", path.display()),
                ));
                return None;
            }
        }
    } else {
        let v: &Located<String> = raw.value.as_ref()?;
        if environment != Environment::Local {
            errors.push(ConfigError::at(
                v.pos,
                "an inline secret `value` is only allowed with `environment: local`; use `env` or `file`",
            ));
            return None;
        }
        (v.value.clone(), v.pos)
    };
    if environment != Environment::Local {
        if value.len() < MIN_SECRET_BYTES {
            errors.push(ConfigError::at(
                at,
                format!("the secret is shorter than {MIN_SECRET_BYTES} bytes"),
            ));
            return None;
        }
        if INSECURE_SECRETS
            .iter()
            .any(|s| value.eq_ignore_ascii_case(s))
        {
            errors.push(ConfigError::at(
                at,
                "the secret is a well-known default; generate a random one",
            ));
            return None;
        }
    } else if value.is_empty() {
        errors.push(ConfigError::at(at, "the secret is empty"));
        return None;
    }
    Some(DecodingKey::from_secret(value.as_bytes()))
}

fn secret_pos(raw: &RawSecret) -> Option<Pos> {
    raw.env
        .as_ref()
        .or(raw.file.as_ref())
        .or(raw.value.as_ref())
        .map(|l| l.pos)
}

fn public_key(pem: &[u8]) -> Option<(AlgorithmFamily, DecodingKey)> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Some((AlgorithmFamily::Rsa, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some((AlgorithmFamily::Ec, k));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Some((AlgorithmFamily::Ed, k));
    }
    None
}

fn jwks(raw: &RawJwks, base: &Path, errors: &mut Vec<ConfigError>) -> Option<Arc<Jwks>> {
    let source = match (&raw.file, &raw.url) {
        (Some(f), None) => JwksSource::File(resolve(base, &f.value)),
        (None, Some(u)) => match u.value.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                JwksSource::Url(uri)
            }
            _ => {
                errors.push(ConfigError::at(
                    u.pos,
                    format!("`{}` is not an http(s) URL", u.value),
                ));
                return None;
            }
        },
        _ => {
            let pos = raw.file.as_ref().or(raw.url.as_ref()).map(|l| l.pos);
            errors.push(ConfigError {
                pos,
                message: "`jwks` needs exactly one of `file` or `url`".into(),
            });
            return None;
        }
    };
    let ttl = duration_or(&raw.ttl, Duration::from_secs(300), errors);
    let min_refresh_interval =
        duration_or(&raw.min_refresh_interval, Duration::from_secs(30), errors);
    Some(Arc::new(Jwks::new(JwksSettings {
        source,
        ttl,
        min_refresh_interval,
        ca_file: raw.ca_file.as_ref().map(|c| resolve(base, &c.value)),
    })))
}

/// Shortest HMAC secret accepted outside `environment: local` (HS256 wants 256 bits).
const MIN_SECRET_BYTES: usize = 32;
/// Secrets seen in tutorials and defaults; refused outside local.
const INSECURE_SECRETS: [&str; 8] = [
    "secret",
    "changeme",
    "change-me",
    "your-256-bit-secret",
    "your-secret-key",
    "jwt-secret",
    "supersecret",
    "please-change-this-secret-in-production-0123456789",
];
