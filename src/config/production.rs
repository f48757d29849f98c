//! The environment policy of fail-closed startup (SPEC §4, issue 12 item 3): for a config as
//! written and the runtime environment, every reason a production instance must not start,
//! all at once, each with the position it was written at; and, with `environment: local`,
//! the relaxations the config states, one warning each.
//!
//! It reads the raw config (positions, and keys the compiled policy does not keep) and is
//! applied by `fortress run` (exit 2, one fatal line) and `fortress check` (as errors), not
//! by `compile()`: unit tests compile production-shaped fragments freely. Some reasons are
//! already refused by the compiler outside local (an inline secret, a secret under 32 bytes
//! or a well-known default, `allow_insecure_local`); they are reported together with these.

use std::net::SocketAddr;
use std::path::Path;

use super::compile::{parse_duration, resolve};
use super::raw::{RawConfig, RawSecret};
use super::yaml::{ConfigError, Located};
use super::{Env, Environment, TlsFiles};
use crate::policy::{DefaultAction, Mode};

/// The most clock skew a production config may allow on `exp`/`nbf`/`iat`.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Shortest secret the entropy checks look at (shorter ones are refused by the compiler).
const MIN_SECRET_BYTES: usize = 32;

/// Well-known secrets and the words they are padded from: a secret equal to one of them, or
/// made of them (repeated, joined by `-`, `_`, `.` or digits), is refused.
const WEAK_WORDS: &[&str] = &[
    "secret",
    "changeme",
    "change",
    "me",
    "in",
    "production",
    "prod",
    "password",
    "passw0rd",
    "default",
    "jwt",
    "key",
    "token",
    "your",
    "my",
    "the",
    "this",
    "please",
    "test",
    "testing",
    "dev",
    "development",
    "local",
    "admin",
    "super",
    "supersecret",
    "fortress",
    "example",
    "demo",
    "sample",
    "signing",
    "hmac",
    "bit",
    "256",
    "qwerty",
    "letmein",
    "abc",
    "abcdef",
    "xyz",
    "foo",
    "bar",
    "todo",
    "replace",
    "insecure",
    "not",
    "a",
    "real",
    "do",
    "use",
    "only",
    "for",
    "with",
    "here",
    "put",
];

/// What the runtime environment holds, for the checks that need it.
pub struct Runtime<'a> {
    /// Where `{ env: NAME }` secrets are read.
    pub env: &'a dyn Env,
    /// Every `FORTRESS_*` name set in the process environment.
    pub fortress_vars: Vec<String>,
    /// Skip the checks that need the runtime environment (env secrets, files, variables):
    /// `fortress check --offline`.
    pub offline: bool,
    /// Now, Unix seconds (certificate expiry).
    pub now_secs: i64,
}

impl Runtime<'_> {
    /// The process environment, now.
    pub fn process(offline: bool) -> Runtime<'static> {
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let vars = crate::env::fortress_var_names();
        Runtime {
            env: &super::ProcessEnv,
            fortress_vars: vars,
            offline,
            now_secs,
        }
    }
}

/// The environment `fortress check --offline` compiles with: every `{ env: NAME }` secret
/// reads as a placeholder that passes the compiler's checks (its real value is unknown);
/// fortress's own declared settings variables (`.env.schema`) read as unset: their defaults.
#[derive(Debug, Clone, Copy)]
pub struct OfflineEnv;

impl Env for OfflineEnv {
    fn var(&self, name: &str) -> Option<String> {
        if crate::env::is_declared(name) {
            return None;
        }
        Some(OFFLINE_PLACEHOLDER.to_owned())
    }
}

/// What [`OfflineEnv`] reads for an operator-chosen variable.
pub const OFFLINE_PLACEHOLDER: &str = "fortress-check-offline:q8Jz3vWt0pLx7Rk2mN5b";

/// The outcome of a review.
#[derive(Debug, Default)]
pub struct Review {
    /// Reasons not to start (outside `environment: local`).
    pub errors: Vec<ConfigError>,
    /// Relaxations the config states (with `environment: local`), one warning each.
    pub relaxations: Vec<String>,
}

/// Reviews a config as written. `base` is the config file's directory.
pub fn review(raw: &RawConfig, base: &Path, rt: &Runtime<'_>) -> Review {
    let environment = raw.server.environment.unwrap_or(Environment::Production);
    if environment == Environment::Local {
        return Review {
            errors: Vec::new(),
            relaxations: relaxations(raw),
        };
    }
    let mut e = Vec::new();
    let s = &raw.server;
    if raw.audit.is_none() {
        e.push(ConfigError::whole(
            "audit is disabled: add an `audit:` block (`dir:` and/or `stdout: true`)",
        ));
    }
    // A non-public route without authentication is refused by the lint in every environment.
    if let Some(a) = &raw.authentication {
        let jwt = &a.jwt;
        if jwt.secret.is_none()
            && jwt.secrets.is_empty()
            && jwt.keys.is_empty()
            && jwt.jwks.is_none()
        {
            e.push(ConfigError::at(
                jwt.issuer.pos,
                "authentication is on without a `secret`, `keys` or `jwks` to verify tokens with",
            ));
        }
        if !rt.offline {
            for secret in jwt.secret.iter().chain(&jwt.secrets) {
                weak_secret(secret, base, rt, &mut e);
            }
        }
        if let Some(jwks) = &jwt.jwks
            && let Some(url) = &jwks.url
            && url.value.trim().to_ascii_lowercase().starts_with("http://")
        {
            e.push(ConfigError::at(
                url.pos,
                format!(
                    "the JWKS URL `{}` is plain http://: anyone on the path can replace the keys; use https://",
                    url.value
                ),
            ));
        }
        if let Some(l) = &jwt.leeway
            && parse_duration(&l.value).is_some_and(|d| d.as_secs_f64() > MAX_LEEWAY_SECS as f64)
        {
            e.push(ConfigError::at(
                l.pos,
                format!(
                    "`leeway: {}` is over 5 minutes: expired tokens would keep working",
                    l.value
                ),
            ));
        }
    }
    if let Some(tls) = &s.tls {
        if !rt.offline {
            let files = TlsFiles {
                cert: resolve(base, &tls.cert.value),
                key: resolve(base, &tls.key.value),
            };
            match crate::tls::CertStore::load(&files) {
                Err(msg) => e.push(ConfigError::at(tls.cert.pos, format!("TLS: {msg}"))),
                Ok(store) => {
                    let not_after = store.not_after().load(std::sync::atomic::Ordering::Relaxed);
                    if not_after > 0 && not_after <= rt.now_secs {
                        e.push(ConfigError::at(
                            tls.cert.pos,
                            format!("TLS: the certificate {} has expired", files.cert.display()),
                        ));
                    }
                }
            }
        }
    } else if s.require_https == Some(false) || s.trusted_proxies.is_empty() {
        e.push(ConfigError::at(
            s.listen.pos,
            "a plain-HTTP listener needs `require_https: true` (the default) and the `trusted_proxies` \
             that terminate TLS in front of it; or configure `server.tls`",
        ));
    }
    for p in &s.trusted_proxies {
        let net = p.value.trim();
        let everyone = net
            .parse::<ipnet::IpNet>()
            .is_ok_and(|n| n.prefix_len() == 0);
        if everyone {
            e.push(ConfigError::at(
                p.pos,
                format!(
                    "trusted proxy `{net}` is every address: any client could forge X-Forwarded-*"
                ),
            ));
        }
    }
    if raw.default == Some(DefaultAction::Allow) {
        e.push(ConfigError::whole(
            "`default: allow` forwards every request no route matches: use `default: deny` and list the routes",
        ));
    }
    if raw.mode == Some(Mode::DryRun)
        && raw
            .allow_dry_run_in_production
            .as_ref()
            .is_none_or(|a| !a.value)
    {
        e.push(ConfigError::whole(
            "the global `mode: dry-run` forwards what would be denied: write \
             `allow_dry_run_in_production: true` next to it if that is meant",
        ));
    }
    if let Some(admin) = &s.admin
        && admin
            .value
            .trim()
            .parse::<SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback())
    {
        e.push(ConfigError::at(
            admin.pos,
            format!(
                "the admin listener `{}` is not a loopback address and has no TLS: its mutating API \
                 (`POST /admin/reload`) would be reachable over plain HTTP; use 127.0.0.1 \
                 (kubectl port-forward reaches it)",
                admin.value
            ),
        ));
    }
    if !rt.offline {
        let mut undeclared = crate::env::undeclared_among(rt.fortress_vars.iter().cloned());
        if rt
            .fortress_vars
            .iter()
            .any(|v| v == crate::env::FORTRESS_TEST_CLOCK)
        {
            e.push(ConfigError::whole(format!(
                "{} is set: the test clock is only available with `environment: local`",
                crate::env::FORTRESS_TEST_CLOCK
            )));
        }
        if !undeclared.is_empty() {
            undeclared.truncate(20);
            e.push(ConfigError::whole(format!(
                "environment variable(s) {} set but not declared in .env.schema (`fortress env` lists them): a typo?",
                undeclared.join(", ")
            )));
        }
    }
    e.extend(super::readiness::unsatisfiable(raw));
    Review {
        errors: e,
        relaxations: Vec::new(),
    }
}

/// With `environment: local`: the relaxations the config states.
fn relaxations(raw: &RawConfig) -> Vec<String> {
    let s = &raw.server;
    let mut out = Vec::new();
    if s.require_https == Some(false) {
        out.push("server.require_https: false: plain-HTTP requests are served".to_owned());
    }
    if s.allow_insecure_local.as_ref().is_some_and(|a| a.value) {
        out.push(
            "server.allow_insecure_local: true: bearer tokens are accepted over plain, unvouched HTTP"
                .to_owned(),
        );
    }
    if raw.audit.is_none() {
        out.push("no `audit:` block: decisions and admin changes are not recorded".to_owned());
    }
    let mut secrets: Vec<(&str, &RawSecret)> = Vec::new();
    if let Some(a) = &raw.authentication {
        if let Some(sec) = &a.jwt.secret {
            secrets.push(("authentication.jwt.secret", sec));
        }
        for sec in &a.jwt.secrets {
            secrets.push(("authentication.jwt.secrets", sec));
        }
        if let Some(url) = a.jwt.jwks.as_ref().and_then(|j| j.url.as_ref())
            && url.value.trim().to_ascii_lowercase().starts_with("http://")
        {
            out.push(format!(
                "authentication.jwt.jwks.url `{}` is plain http://",
                url.value
            ));
        }
    }
    if let Some(a) = &raw.audit {
        if let Some(k) = &a.hmac_key {
            secrets.push(("audit.hmac_key", k));
        }
        if let Some(k) = &a.redact_key {
            secrets.push(("audit.redact_key", k));
        }
    }
    if let Some(a) = &raw.identity_assertion {
        secrets.push(("identity_assertion.key", &a.key));
    }
    for (key, sec) in secrets {
        if sec.value.is_some() {
            out.push(format!("{key} is written inline (`value:`)"));
        }
    }
    if s.state_dir.is_none() && !super::store::is_redis(raw.store.as_ref()) {
        out.push(
            "no server.state_dir: budget counters (and admin state) live in memory only".to_owned(),
        );
    }
    out
}

/// Refuses a secret long enough for the compiler but with little entropy.
fn weak_secret(raw: &RawSecret, base: &Path, rt: &Runtime<'_>, e: &mut Vec<ConfigError>) {
    let (value, at): (Option<String>, &Located<String>) = if let Some(name) = &raw.env {
        (rt.env.var(&name.value), name)
    } else if let Some(file) = &raw.file {
        let v = std::fs::read_to_string(resolve(base, &file.value))
            .ok()
            .map(|v| v.trim_end_matches(['\n', '\r']).to_owned());
        (v, file)
    } else {
        return;
    };
    // Missing and short secrets are the compiler's to report.
    let Some(value) = value else { return };
    if value.len() < MIN_SECRET_BYTES {
        return;
    }
    if let Some(why) = low_entropy(&value) {
        e.push(ConfigError::at(
            at.pos,
            format!(
                "the secret is weak ({why}); generate a random one, e.g. `openssl rand -base64 48`"
            ),
        ));
    }
}

/// Why a secret of 32 bytes or more is still guessable, if it is.
pub fn low_entropy(secret: &str) -> Option<&'static str> {
    let bytes = secret.as_bytes();
    let first = *bytes.first()?;
    if bytes.iter().all(|b| *b == first) {
        return Some("one repeated character");
    }
    let distinct = {
        let mut seen = [false; 256];
        bytes.iter().for_each(|b| seen[*b as usize] = true);
        seen.iter().filter(|s| **s).count()
    };
    if distinct < 6 {
        return Some("fewer than 6 distinct characters");
    }
    if made_of_words(&secret.to_ascii_lowercase()) {
        return Some("a well-known phrase padded to length");
    }
    None
}

/// Whether `s` consists only of [`WEAK_WORDS`], separators and digits.
fn made_of_words(s: &str) -> bool {
    // Dynamic programming over byte offsets: reachable[i] when s[..i] is made of words.
    let b = s.as_bytes();
    let mut reachable = vec![false; b.len() + 1];
    reachable[0] = true;
    for i in 0..b.len() {
        if !reachable[i] {
            continue;
        }
        if matches!(b[i], b'-' | b'_' | b'.' | b' ' | b'!' | b'0'..=b'9') {
            reachable[i + 1] = true;
        }
        for w in WEAK_WORDS {
            if b[i..].starts_with(w.as_bytes()) {
                reachable[i + w.len()] = true;
            }
        }
    }
    reachable[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_entropy_secrets_are_named() {
        assert_eq!(low_entropy(&"a".repeat(40)), Some("one repeated character"));
        assert_eq!(
            low_entropy(&"ab".repeat(20)),
            Some("fewer than 6 distinct characters")
        );
        assert_eq!(
            low_entropy("change-me-in-production-change-me-in-production"),
            Some("a well-known phrase padded to length")
        );
        assert_eq!(
            low_entropy("supersecretpassword1234567890123456"),
            Some("a well-known phrase padded to length")
        );
        assert_eq!(low_entropy("k3P9vQ2xLm8RtY7wZ4bN6cD1fG5hJ0sA"), None);
    }
}
