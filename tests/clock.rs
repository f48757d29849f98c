//! The test clock: time-based decisions read a clock tests move (a file, `FORTRESS_TEST_CLOCK`),
//! never the system clock alone; and the hook is refused outside `environment: local`.

mod support;

use std::process::Command;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::*;

const SECRET: &str = "fortress-clock-test-secret-0123456789-abcdef";

fn token(iat: u64, exp: u64) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({ "sub": "alice", "iss": "clock-test", "aud": "api", "iat": iat, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn token_times_follow_the_test_clock() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, SECRET).expect("write secret");
    let rest = format!(
        "authentication:\n  jwt:\n    issuer: clock-test\n    audiences: [api]\n    algorithms: [HS256]\n    secret: {{ file: \"{}\" }}\n    \
         leeway: 1s\n  \
         claims: {{ subject: sub }}\nroutes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n",
        secret.display()
    );
    let fx = TestFortress::start_with_clock(
        &config(up.addr, "allow_insecure_local: true", &rest),
        &clock,
    )
    .await;
    // Issued at the clock's start, valid ten minutes: long expired by the system clock.
    let start = TestClock::START / 1000;
    let bearer = format!("Bearer {}", token(start, start + 600));
    let auth = [("authorization", bearer.as_str())];

    let r = get_with(fx.addr(), "/api/x", &auth).await;
    assert_eq!(r.status, 200, "{}", r.text());
    clock.advance(599_000);
    assert_eq!(get_with(fx.addr(), "/api/x", &auth).await.status, 200);
    clock.advance(3_000);
    let r = get_with(fx.addr(), "/api/x", &auth).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "invalid_token");
    assert_eq!(up.hits(), 2);
}

#[test]
fn test_clock_is_refused_outside_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    let yaml = "version: 1\nserver:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  \
                upstream: http://127.0.0.1:9\n  environment: production\n\
                routes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n";
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(["run", "--config"])
        .arg(&path)
        .env("FORTRESS_TEST_CLOCK", dir.path().join("now"))
        .output()
        .expect("run fortress");
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stderr.contains(
            "FORTRESS_TEST_CLOCK is set: the test clock is only available with `environment: local`"
        ),
        "{stderr}"
    );
    assert!(!out.status.success());
}
