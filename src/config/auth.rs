//! Compiles `authentication:`: key material loaded and bound to the allowed algorithms.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::Env;
use super::compile::{duration_or, resolve};
use super::raw::{Environment, RawAuthentication, RawJwks, RawSecret};
use super::yaml::{ConfigError, Located, Pos};
pub use crate::policy::auth::AuthSettings;
use crate::policy::auth::{ClaimMap, JwksSettings, JwksSource, JwtSettings, StaticKey};
use crate::policy::identity::IdentityHeaders;

/// Compiles `authentication:`; errors are appended to `errors`.
pub fn compile(
    raw: &RawAuthentication,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<AuthSettings> {
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
    // Everything that decides whether a token verifies goes into the fingerprint (see
    // `JwtSettings::fingerprint`), secret and key bytes included.
    let mut print = Fingerprint::default();
    if let (Some(s), Some(_)) = (&jwt.secret, jwt.secrets.first()) {
        errors.push(ConfigError::at(
            secret_pos(s).unwrap_or(jwt.issuer.pos),
            "use `secret` or `secrets` (a list, for rotation), not both",
        ));
    }
    let mut secrets = Vec::new();
    for s in jwt.secret.iter().chain(&jwt.secrets) {
        if let Some(value) = secret(s, base, environment, env, errors) {
            print.add(b"secret", value.as_bytes());
            secrets.push(DecodingKey::from_secret(value.as_bytes()));
        }
    }
    let has_secret = jwt.secret.is_some() || !jwt.secrets.is_empty();
    let mut static_keys = Vec::new();
    for k in &jwt.keys {
        let path = resolve(base, &k.file.value);
        match std::fs::read(&path) {
            Ok(pem) => match public_key(&pem) {
                Some((family, key)) => {
                    print.add(b"key", &pem);
                    print.add(b"kid", k.kid.as_deref().unwrap_or("").as_bytes());
                    static_keys.push(StaticKey {
                        kid: k.kid.clone(),
                        family,
                        key,
                    })
                }
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
            AlgorithmFamily::Hmac => has_secret,
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
    if let Some(s) = jwt.secret.as_ref().or(jwt.secrets.first())
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
    let claims = ClaimMap {
        subject: claim(|c| &c.subject, "sub"),
        roles: claim(|c| &c.roles, "roles"),
        tenant: claim(|c| &c.tenant, "tenant"),
    };
    let issuer = jwt.issuer.value.clone();
    let audiences: Vec<String> = jwt.audiences.iter().map(|a| a.value.clone()).collect();
    let required_claims: Vec<String> = jwt
        .required_claims
        .iter()
        .map(|c| c.value.clone())
        .collect();
    print.add(b"algorithms", format!("{algorithms:?}").as_bytes());
    print.add(b"issuer", issuer.as_bytes());
    for a in &audiences {
        print.add(b"audience", a.as_bytes());
    }
    for c in &required_claims {
        print.add(b"required", c.as_bytes());
    }
    print.add(b"claims", format!("{claims:?}").as_bytes());
    print.add(b"leeway", &leeway.as_millis().to_le_bytes());
    print.add(b"max", &max_token_bytes.to_le_bytes());
    print.add(
        b"jwks",
        format!("{:?}", jwks.as_ref().map(|j| j.origin())).as_bytes(),
    );
    Some(AuthSettings {
        jwt: JwtSettings {
            algorithms,
            issuer,
            audiences,
            leeway,
            required_claims,
            claims,
            secrets,
            static_keys,
            jwks,
            max_token_bytes,
            cache_size: jwt.cache_size.unwrap_or(10_000) as usize,
            fingerprint: print.finish(),
        },
        cookie: jwt.cookie.as_ref().map(|c| c.value.clone()),
        forward_token: raw.forward_token.unwrap_or(true),
        forward_unverified_credentials: raw.forward_unverified_credentials.unwrap_or(false),
        identity_headers: identity,
    })
}

/// A SHA-256 over length-prefixed, labelled parts, cut to 64 bits.
#[derive(Default)]
struct Fingerprint(Vec<u8>);

impl Fingerprint {
    fn add(&mut self, label: &[u8], value: &[u8]) {
        for part in [label, value] {
            self.0.extend_from_slice(&(part.len() as u64).to_le_bytes());
            self.0.extend_from_slice(part);
        }
    }

    fn finish(self) -> u64 {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        let mut out = [0u8; 8];
        // INVARIANT: a SHA-256 digest is 32 bytes.
        out.copy_from_slice(&d.as_ref()[..8]);
        u64::from_le_bytes(out)
    }
}

pub(crate) fn secret(
    raw: &RawSecret,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
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
    Some(value)
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

fn jwks(raw: &RawJwks, base: &Path, errors: &mut Vec<ConfigError>) -> Option<JwksSettings> {
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
    Some(JwksSettings {
        source,
        ttl,
        min_refresh_interval,
        ca_file: raw.ca_file.as_ref().map(|c| resolve(base, &c.value)),
    })
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

/// The files a policy reads besides itself: `{ file: … }` secrets (authentication and audit)
/// and PEM key files. The reload task watches them.
pub fn input_files(raw: &super::raw::RawConfig, base: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut secret_file = |s: &RawSecret| {
        if let Some(f) = &s.file {
            out.push(resolve(base, &f.value));
        }
    };
    if let Some(a) = &raw.authentication {
        for s in a.jwt.secret.iter().chain(&a.jwt.secrets) {
            secret_file(s);
        }
    }
    if let Some(a) = &raw.audit {
        for s in a.hmac_key.iter().chain(&a.redact_key) {
            secret_file(s);
        }
    }
    if let Some(a) = &raw.identity_assertion {
        secret_file(&a.key);
    }
    if let Some(a) = &raw.authentication {
        for k in &a.jwt.keys {
            out.push(resolve(base, &k.file.value));
        }
    }
    out.sort();
    out.dedup();
    out
}
