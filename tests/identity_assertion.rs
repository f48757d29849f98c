//! The identity assertion through a real fortress: every forwarded request carries a
//! short-lived JWT signed by fortress over who, which roles and tenant, which method and
//! canonical path and which request id; a client's own header of that name is replaced; with
//! EdDSA the app verifies it with the public key served on the admin port.

mod support;

use std::net::SocketAddr;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "assertion-test-secret-0123456789abcdef";
const ASSERTION_KEY: &str = "assertion-signing-key-0123456789abcdef";

fn token(sub: &str, roles: &[&str], tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "roles": roles, "tenant": tenant, "iss": "iss", "aud": "aud", "exp": now + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn policy(up: SocketAddr, assertion: &str) -> String {
    config(
        up,
        "allow_insecure_local: true",
        &format!(
            "identity_assertion:\n{assertion}\
             authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
             secret: {{ value: \"{SECRET}\" }}\nroles:\n  analyst: [\"reports:read\"]\n\
             routes:\n  - name: open\n    match: {{ path: \"/open/**\" }}\n    public: true\n  \
             - name: reports\n    match: {{ path: \"/api/**\" }}\n    require: [\"reports:read\"]\n"
        ),
    )
}

/// The assertion the upstream received on its last request.
fn received(up: &Upstream) -> String {
    let seen = up.requests();
    let last = seen.last().expect("a forwarded request");
    let all: Vec<_> = last
        .headers
        .get_all("x-fortress-assertion")
        .iter()
        .collect();
    assert_eq!(all.len(), 1, "exactly one assertion header");
    all[0].to_str().expect("ascii").to_owned()
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&["fortress"]);
    v.set_audience(&["app"]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v
}

#[tokio::test]
async fn hs256_assertion_names_who_what_and_which_request_and_replaces_a_forged_one() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&policy(
        up.addr,
        &format!("  key: {{ value: \"{ASSERTION_KEY}\" }}\n  ttl: 20s\n"),
    ))
    .await;
    let bearer = format!("Bearer {}", token("alice", &["analyst"], "acme"));
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &json!({ "sub": "root", "iss": "fortress", "aud": "app", "exp": 9_999_999_999u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    let r = get_with(
        fx.addr(),
        "/api//reports/./q1?x=1",
        &[
            ("authorization", bearer.as_str()),
            ("x-fortress-assertion", forged.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let jwt = received(&up);
    assert_ne!(jwt, forged);
    let key = DecodingKey::from_secret(ASSERTION_KEY.as_bytes());
    let data = jsonwebtoken::decode::<Value>(&jwt, &key, &validation(Algorithm::HS256))
        .expect("the app verifies the assertion");
    let c = data.claims;
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["roles"], json!(["analyst"]));
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["method"], "GET");
    assert_eq!(
        c["path"], "/api/reports/q1",
        "the canonical path fortress judged"
    );
    assert_eq!(c["jti"], r.header("x-request-id").expect("request id"));
    let (iat, exp) = (
        c["iat"].as_u64().expect("iat"),
        c["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, 20);
    // Another key cannot have made it.
    assert!(
        jsonwebtoken::decode::<Value>(
            &jwt,
            &DecodingKey::from_secret(b"another-key-0123456789abcdef-0123"),
            &validation(Algorithm::HS256)
        )
        .is_err()
    );

    // A public route: no subject, still asserted (the request came through fortress).
    let r = get(fx.addr(), "/open/x").await;
    assert_eq!(r.status, 200);
    let c = jsonwebtoken::decode::<Value>(&received(&up), &key, &validation(Algorithm::HS256))
        .expect("verifies")
        .claims;
    assert_eq!(c["sub"], Value::Null);
    assert_eq!(c["roles"], json!([]));
    assert_eq!(c["path"], "/open/x");
}

#[tokio::test]
async fn eddsa_assertion_verifies_with_the_public_key_from_the_admin_port() {
    let up = Upstream::echo().await;
    let key_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ed25519.pem");
    let fx = TestFortress::start(&policy(
        up.addr,
        &format!("  algorithm: EdDSA\n  key: {{ file: \"{key_file}\" }}\n"),
    ))
    .await;
    let bearer = format!("Bearer {}", token("bob", &["analyst"], "globex"));
    let r = get_with(fx.addr(), "/api/x", &[("authorization", bearer.as_str())]).await;
    assert_eq!(r.status, 200);
    let jwks = get(fx.admin(), "/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    let doc = jwks.json();
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(doc["keys"][0].clone()).expect("a JWK");
    let jwt = received(&up);
    let header = jsonwebtoken::decode_header(&jwt).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), doc["keys"][0]["kid"].as_str());
    let key = DecodingKey::from_jwk(&jwk).expect("key");
    let c = jsonwebtoken::decode::<Value>(&jwt, &key, &validation(Algorithm::EdDSA))
        .expect("verifies with the published key")
        .claims;
    assert_eq!((&c["sub"], &c["tenant"]), (&json!("bob"), &json!("globex")));
    // No private material in the document.
    assert!(doc["keys"][0].get("d").is_none());
}

#[tokio::test]
async fn without_eddsa_there_is_no_published_key() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&policy(
        up.addr,
        &format!("  key: {{ value: \"{ASSERTION_KEY}\" }}\n"),
    ))
    .await;
    assert_eq!(get(fx.admin(), "/.well-known/jwks.json").await.status, 404);
}

#[test]
fn bad_assertion_settings_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    for (assertion, want) in [
        (
            "  key: { value: \"short\" }\n".to_owned(),
            "at least 32 bytes",
        ),
        (
            format!("  algorithm: RS256\n  key: {{ value: \"{ASSERTION_KEY}\" }}\n"),
            "`HS256` or `EdDSA`",
        ),
        (
            format!("  key: {{ value: \"{ASSERTION_KEY}\" }}\n  ttl: 1h\n"),
            "between 1s and 5m",
        ),
        (
            "  algorithm: EdDSA\n  key: { value: \"not a pem\" }\n".to_owned(),
            "not a PEM private key",
        ),
    ] {
        let path = dir.path().join("fortress.yaml");
        std::fs::write(&path, policy(up, &assertion)).expect("write");
        let err = match fortress::config::load_file(&path) {
            Ok(_) => panic!("accepted: {assertion}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{assertion}: {err}");
    }
}
