//! JWT authentication end to end: a real upstream behind a real fortress, tokens signed with
//! HS256/RS256/ES256/EdDSA (keys in `tests/keys/`), hand-crafted malformed tokens, exact 401
//! bodies and challenges, identity headers, revocation, cookies, and JWKS rotation.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, Response};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "fortress-authn-test-secret-0123456789-abcdef";
const ISSUER: &str = "test-issuer";

/// Absolute path of a file in `tests/keys/`.
fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn key_bytes(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims every accepting config below takes: subject `alice`, two roles, a tenant.
fn claims() -> Value {
    let now = now();
    json!({
        "sub": "alice",
        "roles": ["reader", "writer"],
        "tenant": "t1",
        "iss": ISSUER,
        "aud": "api-a",
        "iat": now,
        "exp": now + 600,
    })
}

/// `claims()` with `changes` applied; a `null` value removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    let (Value::Object(map), Value::Object(changes)) = (&mut c, changes) else {
        panic!("objects expected");
    };
    for (k, v) in changes {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
    c
}

/// The signing key for `alg` (the private half of the configured keys, or the shared secret).
fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&key_bytes("rsa.pem")).expect("rsa key"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key_bytes("ec.pem")).expect("ec key"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&key_bytes("ed25519.pem")).expect("ed key"),
        other => panic!("no test key for {other:?}"),
    }
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    sign_with(Header::new(alg), claims, &encoding_key(alg))
}

fn sign_kid(alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    sign_with(header, claims, key)
}

fn sign_with(header: Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled by hand: `b64(header).b64(claims).signature`.
fn craft(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// `token` with its payload replaced by `claims` and the original header and signature kept.
fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// `token` with its header replaced by `header` and the payload and signature kept.
fn with_header(token: &str, header: &Value) -> String {
    let (_, rest) = token.split_once('.').expect("three segments");
    format!("{}.{rest}", b64(header.to_string().as_bytes()))
}

/// `header.payload.HMAC-SHA256(secret)` over arbitrary (possibly invalid) segments: a
/// correctly signed token whose content is broken.
fn hmac_token(header_b64: &str, payload_b64: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signing_input = format!("{header_b64}.{payload_b64}");
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(tag.as_ref()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An upstream, a fortress in front of it, and the temp directory holding the secret.
struct Setup {
    up: Upstream,
    fx: TestFortress,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// Starts fortress with `authentication:` built from `jwt` (lines inside `jwt:`, secret
    /// excluded) and `claims` (the `claims:` mapping), plus an `/api/**` route and a public
    /// `/health`. The HMAC secret is written to a file and referenced as `secret: { file }`
    /// when `with_secret`.
    async fn start(jwt: &str, with_secret: bool, claims_map: &str) -> Self {
        Self::start_full(jwt, with_secret, claims_map, "", "").await
    }

    /// Like [`Setup::start`], with `auth_extra` lines inside `authentication:` (e.g.
    /// `forward_token: false`) and `routes_extra` route entries appended to `routes:`.
    async fn start_full(
        jwt: &str,
        with_secret: bool,
        claims_map: &str,
        auth_extra: &str,
        routes_extra: &str,
    ) -> Self {
        let up = Upstream::echo().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_path = dir.path().join("secret");
        std::fs::write(&secret_path, format!("{SECRET}\n")).expect("write secret");
        let mut jwt_lines = String::new();
        for line in jwt.lines().filter(|l| !l.trim().is_empty()) {
            jwt_lines.push_str(&format!("    {line}\n"));
        }
        if with_secret {
            jwt_lines.push_str(&format!(
                "    secret: {{ file: \"{}\" }}\n",
                secret_path.display()
            ));
        }
        let auth_lines: String = auth_extra
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("  {l}\n"))
            .collect();
        let rest = format!(
            "authentication:\n  jwt:\n{jwt_lines}  claims: {claims_map}\n{auth_lines}\
             roles:\n  fortress-admin: [\"admin:*\"]\n\
             routes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n  \
             - name: health\n    match: {{ path: /health }}\n    public: true\n{routes_extra}"
        );
        let yaml = config(up.addr, "allow_insecure_local: true", &rest);
        let fx = TestFortress::start(&yaml).await;
        Self { up, fx, _dir: dir }
    }

    /// The standard setup: every algorithm family, static PEM keys, a shared secret.
    async fn standard() -> Self {
        Self::start(
            &format!(
                "issuer: {ISSUER}\n\
                 audiences: [api-a, api-b]\n\
                 algorithms: [HS256, RS256, ES256, EdDSA]\n\
                 keys:\n\
                 \x20 - {{ file: \"{}\" }}\n\
                 \x20 - {{ file: \"{}\" }}\n\
                 \x20 - {{ file: \"{}\" }}\n\
                 leeway: 30s\n\
                 required_claims: [sub, roles]",
                key_path("rsa.pub.pem"),
                key_path("ec.pub.pem"),
                key_path("ed25519.pub.pem"),
            ),
            true,
            DEFAULT_CLAIMS,
        )
        .await
    }

    fn addr(&self) -> SocketAddr {
        self.fx.addr()
    }

    /// `GET /api/items` with `headers`.
    async fn call(&self, headers: &[(&str, &str)]) -> RawResponse {
        get_with(self.addr(), "/api/items", headers).await
    }

    /// `GET /api/items` with `Authorization: Bearer TOKEN`.
    async fn call_token(&self, token: &str) -> RawResponse {
        self.call(&[("Authorization", &bearer(token))]).await
    }

    /// Sends `token`, asserts it is refused with `reason` and never reaches the upstream.
    async fn refused(&self, token: &str, reason: &str, case: &str) {
        let before = self.up.hits();
        let counted = self.failures(reason).await;
        let r = self.call_token(token).await;
        assert_refused(&r, reason, case);
        // The detailed reason the client no longer sees is the one counted.
        assert_eq!(
            self.failures(reason).await,
            counted + 1.0,
            "{case}: {reason}"
        );
        assert_eq!(
            self.up.hits(),
            before,
            "{case}: the upstream saw a refused request"
        );
    }

    /// Sends `token`, asserts 200 and returns the identity headers the upstream saw.
    async fn accepted(&self, token: &str, case: &str) -> Identity {
        let r = self.call_token(token).await;
        self.assert_forwarded(&r, case)
    }

    fn assert_forwarded(&self, r: &RawResponse, case: &str) -> Identity {
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        assert_eq!(r.text(), "upstream saw GET /api/items", "{case}");
        let seen = self
            .up
            .requests()
            .pop()
            .expect("the upstream saw the request");
        let h = |n: &str| {
            seen.headers
                .get(n)
                .map(|v| v.to_str().expect("ascii").to_owned())
        };
        Identity {
            subject: h("x-auth-subject"),
            roles: h("x-auth-roles"),
            tenant: h("x-tenant-id"),
        }
    }

    async fn failures(&self, reason: &str) -> f64 {
        let series = format!("fortress_auth_failures_total{{reason=\"{reason}\"}}");
        metric(self.fx.admin(), &series)
            .await
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    }
}

const DEFAULT_CLAIMS: &str = "{ subject: sub, roles: roles, tenant: tenant }";

/// Identity headers the upstream received.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    subject: Option<String>,
    roles: Option<String>,
    tenant: Option<String>,
}

impl Identity {
    fn of(subject: &str, roles: &str, tenant: Option<&str>) -> Self {
        Self {
            subject: Some(subject.to_owned()),
            roles: Some(roles.to_owned()),
            tenant: tenant.map(str::to_owned),
        }
    }

    /// The identity of `claims()`.
    fn alice() -> Self {
        Self::of("alice", "reader,writer", Some("t1"))
    }
}

/// Asserts a 401 with the exact JSON body and bearer challenge for the detailed `reason`:
/// the client sees `missing_token` or, for every other reason, `invalid_token` (the detailed
/// reason is only in logs, metrics and explain; callers check it through the metrics).
fn assert_refused(r: &RawResponse, reason: &str, case: &str) {
    if reason == "keys_unavailable" {
        // A key-set outage is not the client's fault: 503, retry shortly, no challenge.
        assert_eq!(r.status, 503, "{case}: {}", r.text());
        let rid = r.header("x-request-id").expect("x-request-id on the 503");
        assert_eq!(
            r.text(),
            format!(
                r#"{{"error":"service_unavailable","reason":"keys_unavailable","request_id":"{rid}","trace_id":"{}"}}"#,
                trace_id(r)
            ),
            "{case}"
        );
        assert_eq!(r.header("retry-after"), Some("5"), "{case}");
        assert_eq!(r.header("www-authenticate"), None, "{case}");
        return;
    }
    assert_eq!(r.status, 401, "{case}: {}", r.text());
    let rid = r.header("x-request-id").expect("x-request-id on the 401");
    assert!(!rid.is_empty(), "{case}");
    let public = if reason == "missing_token" {
        "missing_token"
    } else {
        "invalid_token"
    };
    assert_eq!(
        r.text(),
        format!(
            r#"{{"error":"unauthorized","reason":"{public}","request_id":"{rid}","trace_id":"{}"}}"#,
            trace_id(r)
        ),
        "{case}"
    );
    let challenge = if reason == "missing_token" {
        r#"Bearer realm="fortress""#
    } else {
        r#"Bearer realm="fortress", error="invalid_token""#
    };
    assert_eq!(r.header("www-authenticate"), Some(challenge), "{case}");
    let challenges = r
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .count();
    assert_eq!(challenges, 1, "{case}: one challenge");
    assert_eq!(r.header("content-type"), Some("application/json"), "{case}");
}

enum Expect {
    Accept,
    Refuse(&'static str),
}

#[tokio::test]
async fn token_table() {
    let s = Setup::standard().await;
    let now = now();
    let rsa_pub = key_bytes("rsa.pub.pem");
    let hs = |c: Value| sign(Algorithm::HS256, &c);
    let none_token = |alg: &str| craft(&json!({"alg": alg, "typ": "JWT"}), &claims(), "");
    let good_rs = sign(Algorithm::RS256, &claims());
    let good_hs = sign(Algorithm::HS256, &claims());
    let rs_header = good_rs.split('.').next().expect("header").to_owned();
    let rs_payload = good_rs.split('.').nth(1).expect("payload").to_owned();
    let hs_header = good_hs.split('.').next().expect("header").to_owned();
    let hs_payload = good_hs.split('.').nth(1).expect("payload").to_owned();
    let rsa2 = EncodingKey::from_rsa_pem(&key_bytes("rsa2.pem")).expect("rsa2 key");

    let cases: Vec<(&str, String, Expect)> = vec![
        // Every algorithm family, each with its own key.
        ("valid HS256", good_hs.clone(), Expect::Accept),
        ("valid RS256", good_rs.clone(), Expect::Accept),
        (
            "valid ES256",
            sign(Algorithm::ES256, &claims()),
            Expect::Accept,
        ),
        (
            "valid EdDSA",
            sign(Algorithm::EdDSA, &claims()),
            Expect::Accept,
        ),
        // `alg: none` in every spelling, unsigned.
        (
            "alg none",
            none_token("none"),
            Expect::Refuse("disallowed_algorithm"),
        ),
        (
            "alg None",
            none_token("None"),
            Expect::Refuse("disallowed_algorithm"),
        ),
        (
            "alg NONE",
            none_token("NONE"),
            Expect::Refuse("disallowed_algorithm"),
        ),
        (
            "alg nOnE",
            none_token("nOnE"),
            Expect::Refuse("disallowed_algorithm"),
        ),
        (
            "alg none with a copied signature",
            format!(
                "{}.{rs_payload}.{}",
                b64(br#"{"alg":"none"}"#),
                good_rs.rsplit('.').next().expect("sig")
            ),
            Expect::Refuse("disallowed_algorithm"),
        ),
        (
            "alg RS384 (not in the allowlist)",
            sign_with(
                Header::new(Algorithm::RS384),
                &claims(),
                &encoding_key(Algorithm::RS256),
            ),
            Expect::Refuse("disallowed_algorithm"),
        ),
        (
            "alg that does not exist",
            with_header(&good_hs, &json!({"alg": "HS257", "typ": "JWT"})),
            Expect::Refuse("disallowed_algorithm"),
        ),
        // Key confusion: HMAC keyed with the RSA public key. HS256 is allowed here, but only
        // with the configured secret, so the signature is simply wrong.
        (
            "HS256 keyed with the RSA public key PEM",
            sign_with(
                Header::new(Algorithm::HS256),
                &claims(),
                &EncodingKey::from_secret(&rsa_pub),
            ),
            Expect::Refuse("invalid_signature"),
        ),
        // An RSA signature relabelled as ES256 / EdDSA / HS256.
        (
            "RS256 signature relabelled ES256",
            with_header(&good_rs, &json!({"alg": "ES256", "typ": "JWT"})),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "RS256 signature relabelled EdDSA",
            with_header(&good_rs, &json!({"alg": "EdDSA", "typ": "JWT"})),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "RS256 signature relabelled HS256",
            with_header(&good_rs, &json!({"alg": "HS256", "typ": "JWT"})),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "RS256 signed by a key that is not configured",
            sign_with(Header::new(Algorithm::RS256), &claims(), &rsa2),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "HS256 signed with another secret",
            sign_with(
                Header::new(Algorithm::HS256),
                &claims(),
                &EncodingKey::from_secret(b"another-secret-another-secret-0123456789"),
            ),
            Expect::Refuse("invalid_signature"),
        ),
        // Tampering: a new payload under the original signature.
        (
            "tampered payload (RS256)",
            with_payload(&good_rs, &claims_with(json!({"sub": "mallory"}))),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "tampered payload (HS256)",
            with_payload(&good_hs, &claims_with(json!({"roles": ["admin"]}))),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "empty signature (RS256)",
            format!("{rs_header}.{rs_payload}."),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "empty signature (HS256)",
            format!("{hs_header}.{hs_payload}."),
            Expect::Refuse("invalid_signature"),
        ),
        // Time claims, with a 30s leeway.
        (
            "expired 1h ago",
            hs(claims_with(json!({"iat": now - 7200, "exp": now - 3600}))),
            Expect::Refuse("token_expired"),
        ),
        (
            "expired 10s ago (inside the leeway)",
            hs(claims_with(json!({"iat": now - 600, "exp": now - 10}))),
            Expect::Accept,
        ),
        (
            "expired 60s ago (beyond the leeway)",
            hs(claims_with(json!({"iat": now - 600, "exp": now - 60}))),
            Expect::Refuse("token_expired"),
        ),
        (
            "expired 1h ago (RS256)",
            sign(
                Algorithm::RS256,
                &claims_with(json!({"iat": now - 7200, "exp": now - 3600})),
            ),
            Expect::Refuse("token_expired"),
        ),
        (
            "nbf 1h ahead",
            hs(claims_with(json!({"nbf": now + 3600}))),
            Expect::Refuse("token_not_yet_valid"),
        ),
        (
            "nbf 10s ahead (inside the leeway)",
            hs(claims_with(json!({"nbf": now + 10}))),
            Expect::Accept,
        ),
        (
            "iat 1h ahead",
            hs(claims_with(json!({"iat": now + 3600, "exp": now + 7200}))),
            Expect::Refuse("token_not_yet_valid"),
        ),
        (
            "iat 10s ahead (inside the leeway)",
            hs(claims_with(json!({"iat": now + 10}))),
            Expect::Accept,
        ),
        // Issuer and audience.
        (
            "wrong iss",
            hs(claims_with(json!({"iss": "someone-else"}))),
            Expect::Refuse("invalid_issuer"),
        ),
        (
            "aud string naming the second audience",
            hs(claims_with(json!({"aud": "api-b"}))),
            Expect::Accept,
        ),
        (
            "aud list with one match",
            hs(claims_with(json!({"aud": ["other", "api-b"]}))),
            Expect::Accept,
        ),
        (
            "aud string matching none",
            hs(claims_with(json!({"aud": "other"}))),
            Expect::Refuse("invalid_audience"),
        ),
        (
            "aud list matching none",
            hs(claims_with(json!({"aud": ["x", "y"]}))),
            Expect::Refuse("invalid_audience"),
        ),
        // Required claims.
        (
            "missing exp",
            hs(claims_with(json!({"exp": null}))),
            Expect::Refuse("missing_claim"),
        ),
        (
            "missing iss",
            hs(claims_with(json!({"iss": null}))),
            Expect::Refuse("missing_claim"),
        ),
        (
            "missing aud",
            hs(claims_with(json!({"aud": null}))),
            Expect::Refuse("missing_claim"),
        ),
        (
            "missing sub",
            hs(claims_with(json!({"sub": null}))),
            Expect::Refuse("missing_claim"),
        ),
        (
            "sub that is not a string",
            hs(claims_with(json!({"sub": 42}))),
            Expect::Refuse("invalid_claim_type"),
        ),
        (
            "empty sub",
            hs(claims_with(json!({"sub": ""}))),
            Expect::Refuse("missing_claim"),
        ),
        (
            "missing roles (a required claim)",
            sign(Algorithm::ES256, &claims_with(json!({"roles": null}))),
            Expect::Refuse("missing_claim"),
        ),
        // A registered claim of the wrong JSON type (more in `jose_header_and_claim_types`).
        (
            "exp that is not a number",
            hs(claims_with(json!({"exp": "tomorrow"}))),
            Expect::Refuse("invalid_claim_type"),
        ),
        (
            "nbf that is not a number",
            hs(claims_with(json!({"nbf": "later"}))),
            Expect::Refuse("invalid_claim_type"),
        ),
        (
            "iat that is not a number",
            hs(claims_with(json!({"iat": "now"}))),
            Expect::Refuse("invalid_claim_type"),
        ),
        // Not a JWT at all.
        (
            "garbage abc.def",
            "abc.def".to_owned(),
            Expect::Refuse("malformed_token"),
        ),
        (
            "two segments",
            format!("{hs_header}.{hs_payload}"),
            Expect::Refuse("malformed_token"),
        ),
        (
            "header is not JSON",
            format!("{}.{hs_payload}.sig", b64(b"not json")),
            Expect::Refuse("malformed_token"),
        ),
        (
            "header without alg",
            craft(&json!({"typ": "JWT"}), &claims(), "c2ln"),
            Expect::Refuse("malformed_token"),
        ),
        (
            "unsigned garbage payload",
            format!("{hs_header}.!!!.c2ln"),
            Expect::Refuse("invalid_signature"),
        ),
        (
            "validly signed payload that is not base64url",
            hmac_token(&hs_header, "!!!"),
            Expect::Refuse("malformed_token"),
        ),
        (
            "validly signed payload that is not JSON",
            hmac_token(&hs_header, &b64(b"not json")),
            Expect::Refuse("malformed_token"),
        ),
        (
            "validly signed payload that is a JSON array",
            hmac_token(&hs_header, &b64(b"[1,2]")),
            Expect::Refuse("malformed_token"),
        ),
        (
            "64 KiB token",
            {
                let filler = 64 * 1024 - hs_header.len() - ".".len() - ".c2ln".len();
                format!("{hs_header}.{}.c2ln", "A".repeat(filler))
            },
            Expect::Refuse("malformed_token"),
        ),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());

    let mut expected_failures: BTreeMap<&str, u32> = BTreeMap::new();
    for (case, token, expect) in &cases {
        match expect {
            Expect::Accept => {
                let seen = s.accepted(token, case).await;
                assert_eq!(seen, Identity::alice(), "{case}");
            }
            Expect::Refuse(reason) => {
                s.refused(token, reason, case).await;
                *expected_failures.entry(reason).or_default() += 1;
            }
        }
    }
    let accepted = cases
        .iter()
        .filter(|c| matches!(c.2, Expect::Accept))
        .count();
    assert_eq!(
        s.up.hits(),
        accepted,
        "only accepted tokens reached the upstream"
    );

    // The per-reason counters match the table exactly; reasons not exercised stay at zero.
    for reason in [
        "missing_token",
        "malformed_token",
        "invalid_signature",
        "token_expired",
        "token_not_yet_valid",
        "invalid_issuer",
        "invalid_audience",
        "missing_claim",
        "disallowed_algorithm",
        "unknown_kid",
        "token_revoked",
        "keys_unavailable",
        "critical_header",
        "unencoded_payload",
        "invalid_claim_type",
        "duplicate_member",
        "invalid_identity",
    ] {
        let want = f64::from(expected_failures.get(reason).copied().unwrap_or(0));
        assert_eq!(s.failures(reason).await, want, "{reason}");
    }
}

#[tokio::test]
async fn header_extraction() {
    let s = Setup::standard().await;
    let token = sign(Algorithm::HS256, &claims());

    // No token: a challenge without `error=`.
    let r = s.call(&[]).await;
    assert_refused(&r, "missing_token", "no token");

    // The scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = s
            .call(&[("Authorization", &format!("{scheme} {token}"))])
            .await;
        assert_eq!(s.assert_forwarded(&r, scheme), Identity::alice());
    }

    let hits = s.up.hits();
    let refused: [(&str, String); 5] = [
        ("Basic scheme", "Basic YWxpY2U6c2VjcmV0".to_owned()),
        ("Basic scheme carrying a JWT", format!("Basic {token}")),
        ("scheme without a token", "Bearer".to_owned()),
        ("token without a scheme", token.clone()),
        ("two tokens", format!("Bearer {token} {token}")),
    ];
    for (case, value) in &refused {
        let r = s.call(&[("Authorization", value)]).await;
        assert_refused(&r, "malformed_token", case);
    }

    // Two Authorization headers, even both valid, are refused.
    let r = raw(
        s.addr(),
        format!(
            "GET /api/items HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_refused(&r, "malformed_token", "two Authorization headers");
    assert_eq!(s.up.hits(), hits, "no refused request reached the upstream");

    // A public route needs no token.
    let r = get(s.addr(), "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /health");
    assert_eq!(r.header("www-authenticate"), None);

    assert_eq!(s.failures("missing_token").await, 1.0);
    assert_eq!(s.failures("malformed_token").await, 6.0);
}

#[tokio::test]
async fn client_identity_headers_are_replaced() {
    let s = Setup::standard().await;
    let token = sign(
        Algorithm::RS256,
        &claims_with(json!({"sub": "bob", "roles": ["viewer"], "tenant": null})),
    );
    let r = s
        .call(&[
            ("Authorization", &bearer(&token)),
            ("X-Auth-Subject", "admin"),
            ("X-Auth-Roles", "admin"),
            ("X-Tenant-Id", "other-tenant"),
        ])
        .await;
    let seen = s.assert_forwarded(&r, "spoofed identity headers");
    assert_eq!(seen, Identity::of("bob", "viewer", None));
    // An underscore spelling (which a WSGI app reads as the same header) is refused outright.
    let hits = s.up.hits();
    let r = s
        .call(&[
            ("Authorization", &bearer(&token)),
            ("X_Tenant_Id", "other-tenant"),
        ])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["reason"], "protected_header_spelling");
    assert_eq!(s.up.hits(), hits);
}

#[tokio::test]
async fn key_confusion_with_only_rs256_allowed() {
    let s = Setup::start(
        &format!(
            "issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [RS256]\n\
             keys: [{{ file: \"{}\" }}]",
            key_path("rsa.pub.pem")
        ),
        false,
        DEFAULT_CLAIMS,
    )
    .await;
    // The classic attack: HMAC keyed with the (public) RSA key, hoping the verifier feeds the
    // PEM to HMAC. HS256 is not allowed, so it never gets that far.
    let forged = sign_with(
        Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&key_bytes("rsa.pub.pem")),
    );
    s.refused(
        &forged,
        "disallowed_algorithm",
        "HS256 keyed with the RSA PEM",
    )
    .await;
    // Same with the DER bytes of the key (another common variant).
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            String::from_utf8(key_bytes("rsa.pub.pem"))
                .expect("utf8")
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("der");
    let forged_der = sign_with(
        Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&der),
    );
    s.refused(
        &forged_der,
        "disallowed_algorithm",
        "HS256 keyed with the RSA DER",
    )
    .await;
    s.refused(
        &craft(&json!({"alg": "none"}), &claims(), ""),
        "disallowed_algorithm",
        "alg none",
    )
    .await;
    // ES256 has no key here either.
    s.refused(
        &sign(Algorithm::ES256, &claims()),
        "disallowed_algorithm",
        "ES256 not allowed",
    )
    .await;
    assert_eq!(
        s.accepted(&sign(Algorithm::RS256, &claims()), "RS256")
            .await,
        Identity::alice()
    );
    assert_eq!(s.failures("disallowed_algorithm").await, 4.0);
}

/// A JWKS document with the RSA JWKs of `keys` (file stem, kid).
fn jwks_json(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(file, kid)| {
            let mut jwk: Value =
                serde_json::from_slice(&key_bytes(&format!("{file}.jwk.json"))).expect("jwk json");
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn jwks_file_kids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks_json(&[("rsa", "k1")])).expect("write jwks");
    let s = Setup::start(
        &format!(
            "issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [RS256, ES256]\n\
             jwks: {{ file: \"{}\" }}",
            jwks_path.display()
        ),
        false,
        DEFAULT_CLAIMS,
    )
    .await;
    let rsa = encoding_key(Algorithm::RS256);
    let rsa2 = EncodingKey::from_rsa_pem(&key_bytes("rsa2.pem")).expect("rsa2");

    assert_eq!(
        s.accepted(&sign_kid(Algorithm::RS256, "k1", &claims(), &rsa), "kid k1")
            .await,
        Identity::alice()
    );
    assert_eq!(
        s.accepted(
            &sign(Algorithm::RS256, &claims()),
            "no kid: every RSA key is tried"
        )
        .await,
        Identity::alice()
    );
    s.refused(
        &sign_kid(Algorithm::RS256, "nope", &claims(), &rsa),
        "unknown_kid",
        "kid nope",
    )
    .await;
    s.refused(
        &sign_kid(Algorithm::RS256, "k1", &claims(), &rsa2),
        "invalid_signature",
        "kid k1 signed by another key",
    )
    .await;
    // A loaded, reachable set without a key for the token is the token's problem (401).
    s.refused(
        &sign(Algorithm::ES256, &claims()),
        "unknown_kid",
        "ES256 without kid and no EC key in the set",
    )
    .await;
    s.refused(
        &sign_kid(
            Algorithm::RS256,
            "k1",
            &claims_with(json!({"exp": now() - 3600})),
            &rsa,
        ),
        "token_expired",
        "kid k1, expired",
    )
    .await;
    assert_eq!(s.failures("unknown_kid").await, 2.0);
    assert_eq!(s.failures("keys_unavailable").await, 0.0);
}

#[tokio::test]
async fn revoked_jti_is_refused_even_when_cached() {
    let s = Setup::standard().await;
    let token = sign(Algorithm::RS256, &claims_with(json!({"jti": "j1"})));
    let other = sign(Algorithm::RS256, &claims_with(json!({"jti": "j2"})));
    // Twice: the second answer comes from the verified-token cache.
    assert_eq!(s.accepted(&token, "j1 first").await, Identity::alice());
    assert_eq!(s.accepted(&token, "j1 cached").await, Identity::alice());
    assert_eq!(s.accepted(&other, "j2").await, Identity::alice());

    let revocation = fortress::store::Revocation::Token {
        jti: "j1".into(),
        expires_at: u64::MAX,
        reason: "test".into(),
    };
    let now_ms = jsonwebtoken::get_current_timestamp() * 1000;
    s.fx.fx
        .state
        .store
        .revoke(now_ms, revocation)
        .await
        .expect("revoked");
    s.refused(&token, "token_revoked", "j1 revoked").await;
    s.refused(&token, "token_revoked", "j1 revoked, again")
        .await;
    assert_eq!(s.accepted(&other, "j2 still fine").await, Identity::alice());
    assert_eq!(s.failures("token_revoked").await, 2.0);
}

#[tokio::test]
async fn cached_token_still_expires() {
    let s = Setup::standard().await;
    // Inside the 30s leeway now, beyond it in about 3s.
    let now = now();
    let token = sign(
        Algorithm::HS256,
        &claims_with(json!({"iat": now - 600, "exp": now - 27})),
    );
    assert_eq!(
        s.accepted(&token, "inside the leeway").await,
        Identity::alice()
    );
    assert_eq!(s.accepted(&token, "cached").await, Identity::alice());
    let expired = eventually(Duration::from_secs(8), || async {
        let r = s.call_token(&token).await;
        r.status == 401
    })
    .await;
    assert!(expired, "the cache does not extend a token's life");
    s.refused(&token, "token_expired", "after the leeway").await;
}

#[tokio::test]
async fn token_from_cookie() {
    let s = Setup::start(
        &format!(
            "issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [HS256]\ncookie: session\n\
             required_claims: [sub]"
        ),
        true,
        DEFAULT_CLAIMS,
    )
    .await;
    let token = sign(Algorithm::HS256, &claims());
    let r = s
        .call(&[("Cookie", &format!("theme=dark; session={token}; lang=en"))])
        .await;
    assert_eq!(s.assert_forwarded(&r, "session cookie"), Identity::alice());

    let before = s.up.hits();
    let r = s.call(&[("Cookie", &format!("other={token}"))]).await;
    assert_refused(&r, "missing_token", "another cookie");
    let tampered = with_payload(&token, &claims_with(json!({"sub": "mallory"})));
    let r = s.call(&[("Cookie", &format!("session={tampered}"))]).await;
    assert_refused(&r, "invalid_signature", "tampered cookie");
    assert_eq!(s.up.hits(), before);

    // The Authorization header, when present, is what counts.
    let r = s
        .call(&[
            ("Authorization", "Bearer abc.def"),
            ("Cookie", &format!("session={token}")),
        ])
        .await;
    assert_refused(&r, "malformed_token", "header wins over cookie");
}

#[tokio::test]
async fn roles_as_a_space_separated_string() {
    let s = Setup::standard().await;
    let cases = [
        (json!("a b"), "a,b"),
        (json!("a,b"), "a,b"),
        (json!("  a   b  "), "a,b"),
        (json!(["a", "b"]), "a,b"),
        (json!([]), ""),
        (json!("solo"), "solo"),
    ];
    for (roles, want) in cases {
        let token = sign(Algorithm::HS256, &claims_with(json!({"roles": roles})));
        let seen = s.accepted(&token, &roles.to_string()).await;
        assert_eq!(seen, Identity::of("alice", want, Some("t1")), "{roles}");
    }
    // Roles that are neither a string nor a list of strings are refused.
    for roles in [json!(7), json!([1, 2]), json!({"a": "b"})] {
        let token = sign(Algorithm::HS256, &claims_with(json!({"roles": roles})));
        s.refused(&token, "malformed_token", &roles.to_string())
            .await;
    }
}

#[tokio::test]
async fn dotted_claim_mapping() {
    let s = Setup::start(
        &format!(
            "issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [HS256]\n\
             required_claims: [realm_access.roles]"
        ),
        true,
        "{ subject: preferred_username, roles: realm_access.roles, tenant: org.id }",
    )
    .await;
    let keycloak_like = claims_with(json!({
        "sub": "0b6c-uuid",
        "preferred_username": "carol",
        "roles": null,
        "tenant": null,
        "realm_access": {"roles": ["editor", "auditor"]},
        "org": {"id": "acme"},
    }));
    let seen = s
        .accepted(&sign(Algorithm::HS256, &keycloak_like), "dotted")
        .await;
    assert_eq!(seen, Identity::of("carol", "editor,auditor", Some("acme")));

    // A required dotted claim that is missing.
    let no_roles = claims_with(json!({
        "preferred_username": "carol",
        "realm_access": {"other": 1},
    }));
    s.refused(
        &sign(Algorithm::HS256, &no_roles),
        "missing_claim",
        "realm_access.roles missing",
    )
    .await;
    // The claim mapped to the roles holds its member twice (serde_json would keep the last,
    // `admin`), or the object holding it is given twice: refused, whichever copy an app or
    // library would have read.
    let hs_header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut without = keycloak_like.clone();
    without
        .as_object_mut()
        .expect("object")
        .remove("realm_access");
    let without = without.to_string();
    let without = without.trim_end_matches('}');
    let with_all = keycloak_like.to_string();
    let with_all = with_all.trim_end_matches('}');
    for (case, payload) in [
        (
            "nested roles member repeated",
            format!(r#"{without},"realm_access":{{"roles":["viewer"],"roles":["admin"]}}}}"#),
        ),
        (
            "realm_access repeated at the top level",
            format!(r#"{with_all},"realm_access":{{"roles":["admin"]}}}}"#),
        ),
        (
            "nested roles member repeated through an escape",
            format!(r#"{without},"realm_access":{{"roles":["viewer"],"r\u006fles":["admin"]}}}}"#),
        ),
    ] {
        s.refused(
            &hmac_token(&hs_header, &b64(payload.as_bytes())),
            "duplicate_member",
            case,
        )
        .await;
    }
    // The mapped subject claim is missing (`sub` alone does not count).
    let no_subject = claims_with(json!({"realm_access": {"roles": ["editor"]}}));
    s.refused(
        &sign(Algorithm::HS256, &no_subject),
        "missing_claim",
        "preferred_username missing",
    )
    .await;
}

/// A JWKS server answering with the current document; `hits()` counts fetches.
async fn jwks_server(doc: Arc<Mutex<String>>) -> Upstream {
    Upstream::spawn(move |_req: Request<Incoming>| {
        let body = doc.lock().expect("lock").clone();
        async move {
            let mut r = Response::new(full(body));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    })
    .await
}

async fn jwks_setup(jwks: &Upstream, ttl: &str, min_refresh: &str) -> Setup {
    Setup::start(
        &format!(
            "issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [RS256]\n\
             jwks: {{ url: \"http://{}/jwks.json\", ttl: {ttl}, min_refresh_interval: {min_refresh} }}",
            jwks.addr
        ),
        false,
        DEFAULT_CLAIMS,
    )
    .await
}

/// Rotation through an unknown `kid`. The TTL is long, so the only refetch is the one the
/// unknown kid asks for. Since the background-refresh change the first request with the new
/// kid is refused at once (`unknown_kid`) instead of waiting for the refetch; a later one
/// passes once the refreshed set landed.
#[tokio::test]
async fn jwks_rotation() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let jwks = jwks_server(doc.clone()).await;
    let s = jwks_setup(&jwks, "10m", "100ms").await;
    let k1 = encoding_key(Algorithm::RS256);
    let k2 = EncodingKey::from_rsa_pem(&key_bytes("rsa2.pem")).expect("rsa2");
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &k1);
    let t2 = sign_kid(Algorithm::RS256, "k2", &claims(), &k2);

    assert_eq!(
        s.accepted(&t1, "k1 before rotation").await,
        Identity::alice()
    );
    assert_eq!(jwks.hits(), 1, "fetched once, at startup");

    // Rotate: the set now holds only k2. The k2 token is refused at once (no wait for a
    // fetch) and asks for a refresh; once it landed the same token passes.
    *doc.lock().expect("lock") = jwks_json(&[("rsa2", "k2")]);
    s.refused(&t2, "unknown_kid", "k2 before the refresh").await;
    let landed = eventually(Duration::from_secs(10), || async {
        let r = s.call_token(&t2).await;
        if r.status != 200 {
            assert_refused(&r, "unknown_kid", "k2 while the refresh is pending");
        }
        r.status == 200
    })
    .await;
    assert!(landed, "k2 is accepted once the refreshed set landed");
    assert_eq!(
        jwks.hits(),
        2,
        "exactly one refetch, asked by the unknown kid"
    );

    // k1 is gone from the set; its cached verification does not outlive the key set.
    let hits = s.up.hits();
    s.refused(&t1, "unknown_kid", "k1 after rotation").await;
    assert_eq!(
        s.up.hits(),
        hits,
        "no k1 request reached the upstream after rotation"
    );
    assert_eq!(
        s.accepted(&t2, "k2 still accepted").await,
        Identity::alice()
    );
}

/// Rotation with no request asking: the background task refetches before the TTL runs out,
/// so the new key works and the removed one (cached token too) stops, with no unknown `kid`
/// ever seen.
#[tokio::test]
async fn jwks_background_refresh_rotates_keys_before_the_ttl() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let jwks = jwks_server(doc.clone()).await;
    let s = jwks_setup(&jwks, "400ms", "1m").await;
    let k1 = encoding_key(Algorithm::RS256);
    let k2 = EncodingKey::from_rsa_pem(&key_bytes("rsa2.pem")).expect("rsa2");
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &k1);
    let t2 = sign_kid(Algorithm::RS256, "k2", &claims(), &k2);
    assert_eq!(s.accepted(&t1, "k1, cached now").await, Identity::alice());

    *doc.lock().expect("lock") = jwks_json(&[("rsa2", "k2")]);
    let changed_at = jwks.hits();
    // A fetch counted after the change served the new document; wait until one happened and
    // the cached k1 token stops working.
    let refreshed = eventually(Duration::from_secs(10), || async {
        jwks.hits() > changed_at && s.call_token(&t1).await.status == 401
    })
    .await;
    assert!(refreshed, "the background refresh replaced the set");
    s.refused(&t1, "unknown_kid", "k1 after the background refresh")
        .await;
    assert_eq!(s.accepted(&t2, "k2").await, Identity::alice());
    assert_eq!(
        s.failures("unknown_kid").await,
        2.0,
        "k2 was never an unknown kid; only the two refused k1 requests counted"
    );
}

/// A JWKS endpoint that serves `doc` until `hang` is set; from then on it accepts connections
/// and never answers. Counts accepted connections, and how many of the hung ones the client
/// (fortress) closed.
struct HungJwks {
    addr: SocketAddr,
    hang: Arc<std::sync::atomic::AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    hung_closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl HungJwks {
    async fn spawn(doc: String) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hang = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let hung_closed = Arc::new(AtomicUsize::new(0));
        let (h, a, c) = (hang.clone(), accepted.clone(), hung_closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let hung = h.load(Ordering::SeqCst);
                let (doc, c) = (doc.clone(), c.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    if hung {
                        // Read whatever comes, answer nothing, note when the client gives up.
                        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                        c.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{doc}",
                        doc.len()
                    );
                    let _ = tcp.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self {
            addr,
            hang,
            accepted,
            hung_closed,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn hung_closed(&self) -> usize {
        self.hung_closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A hung JWKS endpoint (accepts, never answers) stalls no request: a token whose key set is
/// loaded is answered while fortress's fetch still hangs on the endpoint, and an unknown `kid`
/// is refused at once, with at most one refresh attempt on the endpoint.
#[tokio::test]
async fn hung_jwks_endpoint_never_stalls_requests() {
    let jwks = HungJwks::spawn(jwks_json(&[("rsa", "k1")])).await;
    let s = Setup::start(
        &format!(
            "issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [RS256]\n\
             jwks: {{ url: \"http://{}/jwks.json\", ttl: 10m, min_refresh_interval: 100ms }}",
            jwks.addr
        ),
        false,
        DEFAULT_CLAIMS,
    )
    .await;
    let key = encoding_key(Algorithm::RS256);
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &key);
    assert_eq!(s.accepted(&t1, "k1, set loaded").await, Identity::alice());
    assert_eq!(jwks.accepted(), 1, "the startup fetch");

    // The endpoint hangs. Unknown kids are refused at once; one of them gets the background
    // task to try a refresh, which hangs on the endpoint.
    jwks.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut i = 0;
    let (s_ref, jwks_ref) = (&s, &jwks);
    let attempted = eventually(Duration::from_secs(10), || {
        i += 1;
        let t = sign_kid(Algorithm::RS256, &format!("rnd-{i}"), &claims(), &key);
        let (s, jwks) = (s_ref, jwks_ref);
        async move {
            s.refused(&t, "unknown_kid", "unknown kid, endpoint hung")
                .await;
            jwks.accepted() == 2
        }
    })
    .await;
    assert!(attempted, "the unknown kid asked for a refresh");

    // While that fetch hangs: more unknown kids, refused at once, ask nothing more; tokens
    // signed by the loaded key (new ones, not in the token cache) pass.
    for n in 0..5 {
        let t = sign_kid(Algorithm::RS256, &format!("later-{n}"), &claims(), &key);
        s.refused(&t, "unknown_kid", "unknown kid during the hung fetch")
            .await;
        let fresh = sign_kid(
            Algorithm::RS256,
            "k1",
            &claims_with(json!({"jti": format!("hung-{n}")})),
            &key,
        );
        assert_eq!(
            s.accepted(&fresh, "a new k1 token during the hung fetch")
                .await,
            Identity::alice()
        );
    }
    assert_eq!(
        jwks.accepted(),
        2,
        "at most one refresh attempt on the endpoint"
    );
    assert_eq!(
        jwks.hung_closed(),
        0,
        "every request above was answered while fortress's fetch was still hanging"
    );
}

/// A JWKS endpoint that fails at startup: fortress starts, is not ready, refuses RS256 tokens
/// with `keys_unavailable`, keeps retrying in the background, and turns ready (and accepts the
/// token) once the endpoint answers.
#[tokio::test]
async fn readiness_waits_for_the_first_key_set() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let jwks = switchable_jwks_server(doc, failing.clone()).await;
    let s = jwks_setup(&jwks, "1s", "100ms").await;
    assert!(
        jwks.hits() >= 1,
        "the first fetch was tried before startup finished"
    );
    let readyz = || async {
        raw(
            s.fx.admin(),
            b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await
    };
    let r = readyz().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), r#"{"status":"not_ready"}"#);
    let key = encoding_key(Algorithm::RS256);
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &key);
    s.refused(&t1, "keys_unavailable", "no key set yet").await;
    let retried = eventually(Duration::from_secs(10), || async { jwks.hits() >= 2 }).await;
    assert!(retried, "the background task retries");
    let r = readyz().await;
    assert_eq!(r.status, 503, "still not ready while the endpoint fails");

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let ready = eventually(Duration::from_secs(10), || async {
        readyz().await.status == 200
    })
    .await;
    assert!(ready, "ready once the key set is loaded");
    assert_eq!(readyz().await.text(), r#"{"status":"ready"}"#);
    assert_eq!(s.accepted(&t1, "k1 once loaded").await, Identity::alice());
}

#[tokio::test]
async fn unknown_kid_flood_is_rate_limited() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let jwks = jwks_server(doc).await;
    let s = jwks_setup(&jwks, "1m", "10s").await;
    let key = encoding_key(Algorithm::RS256);
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            sign_kid(
                Algorithm::RS256,
                &format!("rnd-{salt:x}-{i}"),
                &claims(),
                &key,
            )
        })
        .collect();

    // Cold start, all at once: the first request fetches, the rest wait for it and are then
    // held back by min_refresh_interval.
    let addr = s.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        tasks.spawn(async move {
            get_with(addr, "/api/items", &[("Authorization", &bearer(&token))]).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_refused(&r.expect("task"), "unknown_kid", "random kid");
    }
    let fetches = jwks.hits();
    assert!(
        (1..=3).contains(&fetches),
        "{fetches} JWKS fetches for 50 unknown kids"
    );
    assert_eq!(s.up.hits(), 0);
    assert_eq!(s.failures("unknown_kid").await, 50.0);

    // The known kid still works, without another fetch.
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &key);
    assert_eq!(s.accepted(&t1, "k1").await, Identity::alice());
    assert_eq!(jwks.hits(), fetches);
}

#[tokio::test]
async fn failing_jwks_endpoint_keeps_the_last_good_set_without_hammering() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let jwks = {
        let (failing, doc2) = (failing.clone(), doc.clone());
        Upstream::spawn(move |_req: Request<Incoming>| {
            let body = doc2.lock().expect("lock").clone();
            let fail = failing.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                let mut r = Response::new(full(if fail { String::new() } else { body }));
                if fail {
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                r
            }
        })
        .await
    };
    let s = jwks_setup(&jwks, "300ms", "2s").await;
    let key = encoding_key(Algorithm::RS256);
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &key);
    assert_eq!(s.accepted(&t1, "k1").await, Identity::alice());
    assert_eq!(jwks.hits(), 1);

    // The endpoint breaks and the TTL passes: the last good set keeps serving, and the
    // endpoint is retried at most once per min_refresh_interval, not once per request.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let outage = std::time::Instant::now();
    for i in 0..20 {
        assert_eq!(
            s.accepted(&t1, &format!("k1 while the endpoint fails #{i}"))
                .await,
            Identity::alice()
        );
        let t = sign_kid(Algorithm::RS256, &format!("rnd-{i}"), &claims(), &key);
        // The key may exist: the set cannot be refreshed, so it is fortress's outage (503).
        s.refused(
            &t,
            "keys_unavailable",
            "unknown kid while the endpoint fails",
        )
        .await;
    }
    let fetches = jwks.hits();
    // One good fetch, then one failed retry per started 2s interval (the 40 requests take far
    // less than 2s unless the machine is very busy).
    let intervals = usize::try_from(outage.elapsed().as_secs() / 2).expect("small") + 1;
    assert!(
        fetches <= 1 + intervals,
        "{fetches} JWKS fetches for 40 requests with a failing endpoint"
    );

    // The endpoint recovers with a new key: it is picked up at the next retry.
    *doc.lock().expect("lock") = jwks_json(&[("rsa", "k1"), ("rsa2", "k2")]);
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let k2 = EncodingKey::from_rsa_pem(&key_bytes("rsa2.pem")).expect("rsa2");
    let t2 = sign_kid(Algorithm::RS256, "k2", &claims(), &k2);
    let recovered = eventually(Duration::from_secs(6), || async {
        s.call_token(&t2).await.status == 200
    })
    .await;
    assert!(
        recovered,
        "the new key is fetched once the endpoint works again"
    );
    assert_eq!(
        s.accepted(&t1, "k1 after recovery").await,
        Identity::alice()
    );
    // Reachable again: a kid the fresh set lacks is the token's problem.
    let t3 = sign_kid(Algorithm::RS256, "no-such-kid", &claims(), &key);
    s.refused(&t3, "unknown_kid", "unknown kid, endpoint reachable")
        .await;
}

/// A JWKS server answering with the current document, or with an empty 500 while `failing`
/// is set; `hits()` counts every request, failed ones included.
async fn switchable_jwks_server(
    doc: Arc<Mutex<String>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
) -> Upstream {
    Upstream::spawn(move |_req: Request<Incoming>| {
        let body = doc.lock().expect("lock").clone();
        let fail = failing.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut r = Response::new(full(if fail { String::new() } else { body }));
            if fail {
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            } else {
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
            }
            r
        }
    })
    .await
}

/// The policy hash fortress reports for a config file's bytes: SHA-256, first 8 bytes, hex.
fn sha8(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A route appended to the end of a [`Setup`] config (whose `routes:` list comes last).
const EXTRA_ROUTE: &str = "  - name: extra\n    match: { path: \"/extra/**\" }\n    public: true\n";

impl Setup {
    /// Rewrites the config file with `edit` applied (atomically), reloads through `POST
    /// /admin/reload` (with a `fortress-admin` token signed by the RS256 key `k1`, which the
    /// active policy's key set holds in every caller), asserts the new config was applied (its
    /// hash is the active policy) and returns it.
    async fn reload_with(&self, edit: impl FnOnce(&str) -> String) -> String {
        let old = std::fs::read_to_string(&self.fx.config_path).expect("read config");
        let new = edit(&old);
        assert_ne!(sha8(&new), sha8(&old), "the edit changes the policy");
        let tmp = self.fx.config_path.with_file_name(".fortress.yaml.tmp");
        std::fs::write(&tmp, &new).expect("write temp");
        std::fs::rename(&tmp, &self.fx.config_path).expect("rename over");
        let admin_token = sign_kid(
            Algorithm::RS256,
            "k1",
            &claims_with(json!({"sub": "ops", "roles": ["fortress-admin"], "jti": null})),
            &encoding_key(Algorithm::RS256),
        );
        let r = raw(
            self.fx.admin(),
            format!(
                "POST /admin/reload HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {admin_token}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json(),
            json!({"result": "applied", "policy_hash": sha8(&new)})
        );
        let info = format!("fortress_policy_info{{hash=\"{}\"}}", sha8(&new));
        assert_eq!(metric(self.fx.admin(), &info).await, Some(1.0), "{info}");
        new
    }

    /// Asserts `/extra/x` is routed (the reload that added [`EXTRA_ROUTE`] is in effect).
    async fn assert_extra_route(&self) {
        let r = get(self.addr(), "/extra/x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "upstream saw GET /extra/x");
    }
}

#[tokio::test]
async fn jwks_keys_survive_a_reload_while_the_endpoint_is_down() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let jwks = switchable_jwks_server(doc, failing.clone()).await;
    let s = jwks_setup(&jwks, "10m", "1m").await;
    let key = encoding_key(Algorithm::RS256);
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &key);
    assert_eq!(
        s.accepted(&t1, "k1 before the outage").await,
        Identity::alice()
    );
    assert_eq!(jwks.hits(), 1, "fetched on first use");

    // The identity provider goes down; a reload that keeps the JWKS source (it adds a route)
    // must not lose the keys fetched before.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = get(jwks.addr, "/jwks.json").await;
    assert_eq!(r.status, 500, "the endpoint is down");
    let hits = jwks.hits();
    s.reload_with(|old| format!("{old}{EXTRA_ROUTE}")).await;
    s.assert_extra_route().await;

    assert_eq!(
        s.accepted(&t1, "the same k1 token after the reload").await,
        Identity::alice()
    );
    let fresh = sign_kid(
        Algorithm::RS256,
        "k1",
        &claims_with(json!({"sub": "bob", "jti": "after-reload"})),
        &key,
    );
    assert_eq!(
        s.accepted(&fresh, "a new k1 token after the reload").await,
        Identity::of("bob", "reader,writer", Some("t1"))
    );
    assert_eq!(
        jwks.hits(),
        hits,
        "the kept key set was used; the failing endpoint was not asked"
    );
    assert_eq!(s.failures("keys_unavailable").await, 0.0);
    assert_eq!(s.failures("unknown_kid").await, 0.0);
}

#[tokio::test]
async fn reload_that_keeps_the_jwks_source_does_not_fetch_it() {
    let doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let jwks = jwks_server(doc).await;
    let s = jwks_setup(&jwks, "10m", "1m").await;
    let key = encoding_key(Algorithm::RS256);
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &key);
    assert_eq!(s.accepted(&t1, "k1").await, Identity::alice());
    assert_eq!(jwks.hits(), 1, "fetched on first use");

    // A policy change elsewhere (a new route), twice: the JWKS source is untouched.
    s.reload_with(|old| format!("{old}{EXTRA_ROUTE}")).await;
    s.assert_extra_route().await;
    s.reload_with(|old| old.replace("/extra/**", "/extra2/**"))
        .await;
    assert_eq!(jwks.hits(), 1, "a reload does not fetch the key set");

    // A token never seen before (not in the token cache) verifies with the kept key set.
    for i in 0..3 {
        let fresh = sign_kid(
            Algorithm::RS256,
            "k1",
            &claims_with(json!({"jti": format!("fresh-{i}")})),
            &key,
        );
        assert_eq!(
            s.accepted(&fresh, &format!("fresh token #{i}")).await,
            Identity::alice()
        );
    }
    assert_eq!(s.accepted(&t1, "k1 again").await, Identity::alice());
    assert_eq!(jwks.hits(), 1, "no JWKS fetch after the reloads");
}

#[tokio::test]
async fn reload_that_changes_the_jwks_source_fetches_the_new_one() {
    let old_doc = Arc::new(Mutex::new(jwks_json(&[("rsa", "k1")])));
    let old_jwks = jwks_server(old_doc).await;
    let new_doc = Arc::new(Mutex::new(jwks_json(&[("rsa2", "k2")])));
    let new_jwks = jwks_server(new_doc).await;
    let s = jwks_setup(&old_jwks, "10m", "1m").await;
    let k1 = encoding_key(Algorithm::RS256);
    let k2 = EncodingKey::from_rsa_pem(&key_bytes("rsa2.pem")).expect("rsa2");
    let t1 = sign_kid(Algorithm::RS256, "k1", &claims(), &k1);
    let t2 = sign_kid(Algorithm::RS256, "k2", &claims(), &k2);
    assert_eq!(
        s.accepted(&t1, "k1 from the old set").await,
        Identity::alice()
    );
    assert_eq!(old_jwks.hits(), 1);
    assert_eq!(new_jwks.hits(), 0);

    // Point the policy at the other endpoint.
    let (old_url, new_url) = (
        format!("http://{}/jwks.json", old_jwks.addr),
        format!("http://{}/jwks.json", new_jwks.addr),
    );
    let new = s
        .reload_with(|old| {
            assert!(old.contains(&old_url), "{old}");
            old.replace(&old_url, &new_url)
        })
        .await;
    assert!(new.contains(&new_url));

    assert_eq!(
        s.accepted(&t2, "k2 from the new set").await,
        Identity::alice()
    );
    assert_eq!(new_jwks.hits(), 1, "the new source is fetched once");
    // The old set is gone with its source: even the k1 token verified (and cached) before
    // the reload is refused, and the refusal does not refetch within min_refresh_interval.
    s.refused(&t1, "unknown_kid", "k1 after the source changed")
        .await;
    assert_eq!(new_jwks.hits(), 1, "no refetch for the unknown kid");
    assert_eq!(old_jwks.hits(), 1, "the old source is not asked any more");
    assert_eq!(s.accepted(&t2, "k2 again").await, Identity::alice());
}

/// `b64(header_text).b64(payload_text).signature` signed with `alg`'s test key over the exact
/// texts given (repeated members, escapes and all).
fn sign_raw(alg: Algorithm, header_text: &str, payload_text: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(header_text.as_bytes()),
        b64(payload_text.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &encoding_key(alg), alg).expect("sign");
    format!("{input}.{sig}")
}

/// `claims()` as JSON text with `extra` (`"name":value,…`) appended as more members.
fn claims_text_with(extra: &str) -> String {
    let base = claims().to_string();
    format!("{},{extra}}}", base.trim_end_matches('}'))
}

#[tokio::test]
async fn jose_header_and_claim_types() {
    let s = Setup::standard().await;
    let now = now();
    let hs = |c: Value| sign(Algorithm::HS256, &c);
    let payload = claims().to_string();
    let with_crit = |alg: Algorithm, crit: &[&str]| {
        let mut h = Header::new(alg);
        h.crit = Some(crit.iter().map(|c| (*c).to_owned()).collect());
        sign_with(h, &claims(), &encoding_key(alg))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        // RFC 7515 §4.1.11: fortress understands no extension, so any `crit` refuses.
        (
            "crit [] (HS256)",
            with_crit(Algorithm::HS256, &[]),
            "critical_header",
        ),
        (
            "crit [exp] (RS256)",
            with_crit(Algorithm::RS256, &["exp"]),
            "critical_header",
        ),
        (
            "crit [b64] (ES256)",
            with_crit(Algorithm::ES256, &["b64"]),
            "critical_header",
        ),
        (
            "crit [b64] with b64 false (RFC 7797 form)",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
                &payload,
            ),
            "critical_header",
        ),
        (
            "crit that is not a list",
            sign_raw(Algorithm::HS256, r#"{"alg":"HS256","crit":"x"}"#, &payload),
            "critical_header",
        ),
        // RFC 7797 `b64` without `crit`, either value.
        (
            "b64 false",
            sign_raw(Algorithm::HS256, r#"{"alg":"HS256","b64":false}"#, &payload),
            "unencoded_payload",
        ),
        (
            "b64 true",
            sign_raw(Algorithm::EdDSA, r#"{"alg":"EdDSA","b64":true}"#, &payload),
            "unencoded_payload",
        ),
        // Repeated header members (RFC 7515 §4 / RFC 8725 §3.6).
        (
            "alg HS256 then none",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"HS256","typ":"JWT","alg":"none"}"#,
                &payload,
            ),
            "duplicate_member",
        ),
        (
            "alg none then HS256",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"none","alg":"HS256"}"#,
                &payload,
            ),
            "duplicate_member",
        ),
        (
            "alg repeated with the same value (RS256)",
            sign_raw(
                Algorithm::RS256,
                r#"{"alg":"RS256","alg":"RS256"}"#,
                &payload,
            ),
            "duplicate_member",
        ),
        (
            "alg spelled with a unicode escape, then plainly",
            sign_raw(
                Algorithm::HS256,
                r#"{"al\u0067":"HS256","alg":"HS256"}"#,
                &payload,
            ),
            "duplicate_member",
        ),
        (
            "kid repeated",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
                &payload,
            ),
            "duplicate_member",
        ),
        // Repeated payload members.
        (
            "sub repeated (alice, then admin)",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"HS256"}"#,
                &claims_text_with(r#""sub":"admin""#),
            ),
            "duplicate_member",
        ),
        (
            "roles repeated (RS256)",
            sign_raw(
                Algorithm::RS256,
                r#"{"alg":"RS256"}"#,
                &claims_text_with(r#""roles":["admin"]"#),
            ),
            "duplicate_member",
        ),
        (
            "exp repeated with a unicode escape",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"HS256"}"#,
                &claims_text_with(&format!(r#""\u0065xp":{}"#, now + 99_999)),
            ),
            "duplicate_member",
        ),
        (
            "member repeated inside a nested claim",
            sign_raw(
                Algorithm::ES256,
                r#"{"alg":"ES256"}"#,
                &claims_text_with(r#""org":{"id":"a","id":"b"}"#),
            ),
            "duplicate_member",
        ),
        // Registered claims of the wrong JSON type (RFC 7519 §4.1).
        (
            "iss 123",
            hs(claims_with(json!({"iss": 123}))),
            "invalid_claim_type",
        ),
        (
            "sub {}",
            hs(claims_with(json!({"sub": {}}))),
            "invalid_claim_type",
        ),
        (
            "jti 5",
            hs(claims_with(json!({"jti": 5}))),
            "invalid_claim_type",
        ),
        (
            "aud [1]",
            hs(claims_with(json!({"aud": [1]}))),
            "invalid_claim_type",
        ),
        (
            "aud [\"api-a\", 1] (RS256)",
            sign(Algorithm::RS256, &claims_with(json!({"aud": ["api-a", 1]}))),
            "invalid_claim_type",
        ),
        (
            "aud {}",
            hs(claims_with(json!({"aud": {}}))),
            "invalid_claim_type",
        ),
        (
            "exp \"9999999999\"",
            hs(claims_with(json!({"exp": "9999999999"}))),
            "invalid_claim_type",
        ),
        (
            "exp 1e20",
            sign_raw(
                Algorithm::HS256,
                r#"{"alg":"HS256"}"#,
                &claims_with(json!({"exp": "EXP"}))
                    .to_string()
                    .replace(r#""exp":"EXP""#, r#""exp":1e20"#),
            ),
            "invalid_claim_type",
        ),
        (
            "exp with a fraction (a valid NumericDate fortress does not take)",
            hs(claims_with(json!({"exp": (now + 600) as f64 + 0.5}))),
            "invalid_claim_type",
        ),
        (
            "exp negative",
            hs(claims_with(json!({"exp": -1}))),
            "invalid_claim_type",
        ),
        (
            "nbf true",
            hs(claims_with(json!({"nbf": true}))),
            "invalid_claim_type",
        ),
        (
            "iat null",
            hs(claims_with(json!({"iat": Value::Null}))),
            "missing_claim_never",
        ),
    ];
    let mut counted: BTreeMap<&str, f64> = BTreeMap::new();
    for (case, token, reason) in &cases {
        if *reason == "missing_claim_never" {
            // `claims_with` removes a null claim: this one is simply absent, and accepted.
            assert_eq!(s.accepted(token, case).await, Identity::alice(), "{case}");
            continue;
        }
        s.refused(token, reason, case).await;
        *counted.entry(reason).or_default() += 1.0;
    }
    // Refused every time: a token that failed these checks never enters the cache.
    let dup = &cases
        .iter()
        .find(|c| c.0.starts_with("sub repeated"))
        .expect("case")
        .1;
    s.refused(dup, "duplicate_member", "sub repeated, again")
        .await;
    for (reason, n) in counted {
        let extra = if reason == "duplicate_member" {
            1.0
        } else {
            0.0
        };
        assert_eq!(s.failures(reason).await, n + extra, "{reason}");
    }
    // A token with none of these problems, sent twice (the second from the cache), passes.
    let good = sign(Algorithm::RS256, &claims());
    assert_eq!(s.accepted(&good, "clean").await, Identity::alice());
    assert_eq!(s.accepted(&good, "clean, cached").await, Identity::alice());
}

#[tokio::test]
async fn identity_values_that_cannot_travel_upstream_are_refused() {
    let s = Setup::standard().await;
    let hs = |c: Value| sign(Algorithm::HS256, &c);
    let many_roles: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    let refused: Vec<(&str, Value)> = vec![
        // Subjects.
        (
            "CR/LF in the subject",
            json!({"sub": "alice\r\nX-Auth-Roles: admin"}),
        ),
        ("LF in the subject", json!({"sub": "alice\n"})),
        ("NUL in the subject", json!({"sub": "ali\u{0}ce"})),
        ("tab in the subject", json!({"sub": "ali\tce"})),
        ("DEL in the subject", json!({"sub": "ali\u{7f}ce"})),
        ("non-ASCII subject", json!({"sub": "alicé"})),
        ("U+2028 in the subject", json!({"sub": "alice\u{2028}"})),
        ("leading space in the subject", json!({"sub": " alice"})),
        ("257-byte subject", json!({"sub": "a".repeat(257)})),
        // Roles.
        (
            "comma inside a role",
            json!({"roles": ["reader", "ad,min"]}),
        ),
        ("semicolon inside a role", json!({"roles": ["a;b"]})),
        ("space inside a role", json!({"roles": ["a b"]})),
        ("CR/LF inside a role", json!({"roles": ["reader\r\nadmin"]})),
        (
            "tab inside a roles string",
            json!({"roles": "reader\tadmin"}),
        ),
        ("empty role", json!({"roles": ["reader", ""]})),
        ("non-ASCII role", json!({"roles": ["lécteur"]})),
        ("129-byte role", json!({"roles": ["r".repeat(129)]})),
        ("65 roles", json!({"roles": many_roles})),
        // Tenants.
        ("comma in the tenant", json!({"tenant": "t1,t2"})),
        ("semicolon in the tenant", json!({"tenant": "t1;x"})),
        (
            "CR/LF in the tenant",
            json!({"tenant": "t1\r\nX-Auth-Subject: root"}),
        ),
        ("space in the tenant", json!({"tenant": "t 1"})),
        ("non-ASCII tenant", json!({"tenant": "tënant"})),
        ("129-byte tenant", json!({"tenant": "t".repeat(129)})),
    ];
    for (case, change) in &refused {
        s.refused(&hs(claims_with(change.clone())), "invalid_identity", case)
            .await;
    }
    // A tenant claim fortress cannot judge is not silently "no tenant": the token is refused.
    let wrong_type: Vec<(&str, Value)> = vec![
        ("fractional tenant", json!({"tenant": 1.5})),
        ("boolean tenant", json!({"tenant": true})),
        ("list tenant", json!({"tenant": ["t1", "t2"]})),
        ("object tenant", json!({"tenant": {"id": "t1"}})),
    ];
    for (case, change) in &wrong_type {
        s.refused(&hs(claims_with(change.clone())), "invalid_claim_type", case)
            .await;
    }
    // One RS256, to show the rule is not tied to an algorithm; and a second send of the same
    // token is refused again (a refused principal is never cached).
    let rs = sign(
        Algorithm::RS256,
        &claims_with(json!({"tenant": "acme,globex"})),
    );
    s.refused(&rs, "invalid_identity", "comma tenant (RS256)")
        .await;
    s.refused(&rs, "invalid_identity", "comma tenant (RS256), again")
        .await;
    assert_eq!(
        s.failures("invalid_identity").await,
        refused.len() as f64 + 2.0
    );

    // At the limits, and the characters that are allowed, go through exactly.
    let max_roles: Vec<String> = (0..64).map(|i| format!("r{i}")).collect();
    let accepted: Vec<(&str, Value, Identity)> = vec![
        (
            "e-mail subject",
            json!({"sub": "alice@example.com"}),
            Identity::of("alice@example.com", "reader,writer", Some("t1")),
        ),
        (
            "inner space and comma in the subject",
            json!({"sub": "CN=Alice Smith,O=Acme"}),
            Identity::of("CN=Alice Smith,O=Acme", "reader,writer", Some("t1")),
        ),
        (
            "256-byte subject, 128-byte role and tenant",
            json!({"sub": "s".repeat(256), "roles": ["r".repeat(128)], "tenant": "t".repeat(128)}),
            Identity::of(&"s".repeat(256), &"r".repeat(128), Some(&"t".repeat(128))),
        ),
        (
            "64 roles",
            json!({"roles": max_roles}),
            Identity::of("alice", &max_roles.join(","), Some("t1")),
        ),
        (
            "roles with colon, star and @",
            json!({"roles": ["reports:read", "admin:*", "@ops"]}),
            Identity::of("alice", "reports:read,admin:*,@ops", Some("t1")),
        ),
        (
            "integer tenant travels as its decimal form",
            json!({"tenant": 4711}),
            Identity::of("alice", "reader,writer", Some("4711")),
        ),
        (
            "negative integer tenant",
            json!({"tenant": -3}),
            Identity::of("alice", "reader,writer", Some("-3")),
        ),
        (
            "null tenant is no tenant",
            json!({"tenant": null}),
            Identity::of("alice", "reader,writer", None),
        ),
        (
            "empty tenant is no tenant",
            json!({"tenant": ""}),
            Identity::of("alice", "reader,writer", None),
        ),
    ];
    for (case, change, want) in accepted {
        assert_eq!(
            s.accepted(&hs(claims_with(change)), case).await,
            want,
            "{case}"
        );
    }
}

/// The auth settings of the credential tests: tokens from the header or the `session` cookie.
fn cookie_jwt() -> String {
    format!("issuer: {ISSUER}\naudiences: [api-a]\nalgorithms: [HS256]\ncookie: session")
}

/// Header lines a client sends.
type Sent = Vec<(&'static str, String)>;
/// Case name, path, headers sent, `Authorization` and `Cookie` values the upstream must see.
type CredentialCase = (&'static str, &'static str, Sent, Vec<String>, Vec<String>);

/// What the upstream saw of the credentials in its last request.
fn last_credentials(up: &Upstream) -> (Vec<String>, Vec<String>) {
    let seen = up.requests().pop().expect("the upstream saw the request");
    let all = |name: &str| {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect::<Vec<_>>()
    };
    (all("authorization"), all("cookie"))
}

#[tokio::test]
async fn unverified_credentials_do_not_reach_the_app() {
    let s = Setup::start_full(
        &cookie_jwt(),
        true,
        DEFAULT_CLAIMS,
        "",
        "  - name: trial\n    match: { path: \"/trial/**\" }\n    mode: dry-run\n",
    )
    .await;
    let token = sign(Algorithm::HS256, &claims());
    let forged = with_payload(&token, &claims_with(json!({"sub": "admin"})));
    let cookie = format!("session={token}; theme=dark");
    let none: Vec<String> = Vec::new();
    let cases: Vec<CredentialCase> = vec![
        (
            "public route, valid bearer",
            "/health",
            vec![("Authorization", bearer(&token))],
            none.clone(),
            none.clone(),
        ),
        (
            "public route, forged bearer in another case",
            "/health",
            vec![("Authorization", format!("bEaReR {forged}"))],
            none.clone(),
            none.clone(),
        ),
        (
            "public route, token cookie among others",
            "/health",
            vec![("Cookie", cookie.clone())],
            none.clone(),
            vec!["theme=dark".to_owned()],
        ),
        (
            "public route, only the token cookie",
            "/health",
            vec![("Cookie", format!("session={token}"))],
            none.clone(),
            none.clone(),
        ),
        (
            "public route, bearer and cookie",
            "/health",
            vec![
                ("Authorization", bearer(&token)),
                ("Cookie", format!("lang=en; session={forged}; theme=dark")),
            ],
            none.clone(),
            vec!["lang=en; theme=dark".to_owned()],
        ),
        (
            "public route, Basic credentials are the app's own and stay",
            "/health",
            vec![("Authorization", "Basic YWxpY2U6cHc=".to_owned())],
            vec!["Basic YWxpY2U6cHc=".to_owned()],
            none.clone(),
        ),
        (
            "dry-run route, forged bearer (refused, forwarded anyway)",
            "/trial/x",
            vec![("Authorization", bearer(&forged))],
            none.clone(),
            none.clone(),
        ),
        (
            "dry-run route, forged cookie",
            "/trial/x",
            vec![("Cookie", format!("session={forged}; theme=dark"))],
            none.clone(),
            vec!["theme=dark".to_owned()],
        ),
        (
            "protected route, verified bearer kept; the unverified cookie goes",
            "/api/items",
            vec![
                ("Authorization", bearer(&token)),
                ("Cookie", format!("session={forged}; theme=dark")),
            ],
            vec![bearer(&token)],
            vec!["theme=dark".to_owned()],
        ),
        (
            "protected route, verified cookie kept whole",
            "/api/items",
            vec![("Cookie", cookie.clone())],
            none.clone(),
            vec![cookie.clone()],
        ),
        (
            "public route, token cookie in other spellings an app may read",
            "/health",
            vec![
                ("Cookie", format!("Session={forged}; theme=dark")),
                ("Cookie", format!("sess%69on={forged}; lang=en")),
            ],
            none.clone(),
            vec!["theme=dark; lang=en".to_owned()],
        ),
        (
            "protected route, verified bearer; cookie spellings go",
            "/api/items",
            vec![
                ("Authorization", bearer(&token)),
                ("Cookie", format!("SESSION={forged}; theme=dark")),
            ],
            vec![bearer(&token)],
            vec!["theme=dark".to_owned()],
        ),
    ];
    // Two token cookies (in one field, in two, in another spelling): an app that keeps the
    // last one would read a token fortress never verified. Refused, never forwarded.
    let before = s.up.hits();
    for (case, cookies) in [
        (
            "one field",
            vec![format!("session={token}; session={forged}")],
        ),
        (
            "two fields",
            vec![format!("session={token}"), format!("session={forged}")],
        ),
        (
            "case variant",
            vec![format!("session={token}; Session={forged}")],
        ),
        (
            "encoded name",
            vec![format!("session={token}; %73ession={forged}")],
        ),
    ] {
        let h: Vec<(&str, &str)> = cookies.iter().map(|c| ("Cookie", c.as_str())).collect();
        let r = get_with(s.addr(), "/api/items", &h).await;
        assert_refused(&r, "malformed_token", case);
    }
    assert_eq!(
        s.up.hits(),
        before,
        "no request with two token cookies reached the app"
    );
    for (case, path, headers, want_auth, want_cookie) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = get_with(s.addr(), path, &h).await;
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        assert_eq!(r.text(), format!("upstream saw GET {path}"), "{case}");
        let (auth, cookies) = last_credentials(&s.up);
        assert_eq!(auth, want_auth, "{case}");
        assert_eq!(cookies, want_cookie, "{case}");
        let seen = s.up.requests().pop().expect("request");
        if path == "/health" || path.starts_with("/trial") {
            assert!(seen.headers.get("x-auth-subject").is_none(), "{case}");
        }
    }
}

#[tokio::test]
async fn forward_unverified_credentials_keeps_them() {
    let s = Setup::start_full(
        &cookie_jwt(),
        true,
        DEFAULT_CLAIMS,
        "forward_unverified_credentials: true",
        "",
    )
    .await;
    let token = sign(Algorithm::HS256, &claims());
    let cookie = format!("session={token}; theme=dark");
    let r = get_with(
        s.addr(),
        "/health",
        &[("Authorization", &bearer(&token)), ("Cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /health");
    assert_eq!(
        last_credentials(&s.up),
        (vec![bearer(&token)], vec![cookie.clone()])
    );
    // A protected route with a verified token is unchanged by the switch.
    let r = s.call(&[("Cookie", &cookie)]).await;
    assert_eq!(s.assert_forwarded(&r, "cookie"), Identity::alice());
    assert_eq!(last_credentials(&s.up), (vec![], vec![cookie]));
}

#[tokio::test]
async fn forward_token_false_keeps_both_carriers_from_the_app() {
    let s = Setup::start_full(
        &cookie_jwt(),
        true,
        DEFAULT_CLAIMS,
        "forward_token: false\nforward_unverified_credentials: true",
        "",
    )
    .await;
    let token = sign(Algorithm::HS256, &claims());
    let cases: Vec<(&str, Sent, Vec<String>)> = vec![
        (
            "token in the cookie",
            vec![("Cookie", format!("session={token}; theme=dark"))],
            vec!["theme=dark".to_owned()],
        ),
        (
            "token in the cookie, no other cookie",
            vec![("Cookie", format!("session={token}"))],
            vec![],
        ),
        (
            "token in the header, a cookie too",
            vec![
                ("Authorization", bearer(&token)),
                ("Cookie", format!("theme=dark; session={token}")),
            ],
            vec!["theme=dark".to_owned()],
        ),
    ];
    for (case, headers, want_cookie) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s.call(&h).await;
        assert_eq!(s.assert_forwarded(&r, case), Identity::alice(), "{case}");
        let (auth, cookies) = last_credentials(&s.up);
        assert!(auth.is_empty(), "{case}: {auth:?}");
        assert_eq!(cookies, want_cookie, "{case}");
    }
    // On a public route too, even with forward_unverified_credentials: true.
    let r = get_with(
        s.addr(),
        "/health",
        &[
            ("Authorization", &bearer(&token)),
            ("Cookie", &format!("session={token}; theme=dark")),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        last_credentials(&s.up),
        (vec![], vec!["theme=dark".to_owned()])
    );
}

#[tokio::test]
async fn without_authentication_credentials_pass_as_sent() {
    // No `authentication` section: fortress verifies nothing and handles no credentials (there
    // is no policy to say which cookie is a token, nor a switch to keep them).
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "allow_insecure_local: true", CATCH_ALL)).await;
    let token = sign(Algorithm::HS256, &claims());
    let cookie = format!("session={token}; theme=dark");
    let r = get_with(
        fx.addr(),
        "/anything",
        &[("Authorization", &bearer(&token)), ("Cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_credentials(&up), (vec![bearer(&token)], vec![cookie]));
}
