//! `identity_assertion:` → [`AssertionSettings`]: the key that signs the short-lived JWT
//! fortress adds to every forwarded request (HS256 with a shared secret, or EdDSA with an
//! Ed25519 private key whose public half is served at `/.well-known/jwks.json`).

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use http::HeaderName;
use jsonwebtoken::{Algorithm, EncodingKey};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use schemars::JsonSchema;
use serde::Deserialize;

use super::Env;
use super::compile::duration_or;
use super::raw::RawSecret;
use super::yaml::{ConfigError, Located};
use crate::policy::Environment;
use crate::policy::assertion::AssertionSettings;

/// Default header.
const DEFAULT_HEADER: &str = "x-fortress-assertion";
/// Longest lifetime allowed: the assertion is for one hop, not a session.
const MAX_TTL: Duration = Duration::from_secs(300);

/// `identity_assertion:` settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    /// Request header carrying the assertion (default `X-Fortress-Assertion`). A client's own
    /// header of that name is always replaced.
    #[serde(default)]
    pub header: Option<Located<String>>,
    /// `HS256` (a shared secret, default) or `EdDSA` (an Ed25519 private key, PKCS#8 PEM; the
    /// app verifies with the public key from `/.well-known/jwks.json` on the admin port).
    #[serde(default)]
    pub algorithm: Option<Located<String>>,
    /// The secret (HS256, at least 32 bytes) or the PEM private key (EdDSA): `{ env: NAME }`,
    /// `{ file: PATH }`, or (local only) `{ value: … }`.
    pub key: RawSecret,
    /// Lifetime of each assertion (default 30s, at most 5m).
    #[serde(default)]
    pub ttl: Option<Located<String>>,
    /// `iss` of the assertion (default `fortress`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` of the assertion (default `app`).
    #[serde(default)]
    pub audience: Option<String>,
}

/// Compiles `identity_assertion:`; errors go to `errors`.
pub fn compile(
    raw: &RawAssertion,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<AssertionSettings> {
    let before = errors.len();
    let header = match &raw.header {
        None => HeaderName::from_static(DEFAULT_HEADER),
        Some(h) => match HeaderName::from_bytes(h.value.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                errors.push(ConfigError::at(
                    h.pos,
                    format!("`{}` is not a header name", h.value),
                ));
                HeaderName::from_static(DEFAULT_HEADER)
            }
        },
    };
    let algorithm = match raw.algorithm.as_ref().map(|a| a.value.as_str()) {
        None | Some("HS256") => Algorithm::HS256,
        Some("EdDSA") => Algorithm::EdDSA,
        Some(other) => {
            errors.push(ConfigError::at(
                raw.algorithm.as_ref().map(|a| a.pos).unwrap_or_default(),
                format!("`{other}`: the assertion is signed with `HS256` or `EdDSA`"),
            ));
            Algorithm::HS256
        }
    };
    let ttl = duration_or(&raw.ttl, Duration::from_secs(30), errors);
    if ttl.is_zero() || ttl > MAX_TTL {
        errors.push(ConfigError::at(
            raw.ttl.as_ref().map(|t| t.pos).unwrap_or_default(),
            "`ttl` must be between 1s and 5m: an assertion is for one hop",
        ));
    }
    let key = super::auth::secret(&raw.key, base, environment, env, errors)?;
    let (encoding, jwks) = match algorithm {
        Algorithm::EdDSA => match ed25519(&key) {
            Ok(pair) => pair,
            Err(e) => {
                errors.push(ConfigError::whole(format!("`identity_assertion.key`: {e}")));
                return None;
            }
        },
        _ => {
            if key.len() < 32 {
                errors.push(ConfigError::whole(
                    "`identity_assertion.key`: an HS256 secret must be at least 32 bytes",
                ));
                return None;
            }
            (EncodingKey::from_secret(key.as_bytes()), None)
        }
    };
    (errors.len() == before).then(|| AssertionSettings {
        header,
        algorithm,
        encoding,
        ttl,
        issuer: raw.issuer.clone().unwrap_or_else(|| "fortress".into()),
        audience: raw.audience.clone().unwrap_or_else(|| "app".into()),
        jwks,
    })
}

/// The signing key and the public JWKS document (`kid`: the first 16 hex digits of the
/// public key's SHA-256).
fn ed25519(pem: &str) -> Result<(EncodingKey, Option<(String, String)>), String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "not a PEM private key (PKCS#8 `PRIVATE KEY`)")?;
    let der = der.secret_pkcs8_der();
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|_| "not an Ed25519 PKCS#8 private key")?;
    let public = pair.public_key().as_ref().to_vec();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
    let kid: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&public);
    let doc = serde_json::json!({
        "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" }]
    })
    .to_string();
    let encoding = EncodingKey::from_ed_der(der);
    Ok((encoding, Some((kid, doc))))
}
