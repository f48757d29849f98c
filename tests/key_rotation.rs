//! Key rotation without downtime, through a real fortress: several HMAC secrets verify
//! tokens (any of them), a secret file replaced on disk is picked up without SIGHUP, and a
//! secret file that cannot be read keeps the last good secret (the reload is refused,
//! logged and counted).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::*;

const OLD: &str = "old-secret-0123456789abcdef-0123456789";
const NEW: &str = "new-secret-0123456789abcdef-0123456789";
const NEWER: &str = "newer-secret-0123456789abcdef-01234567";

fn token(secret: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "alice", "roles": [], "iss": "iss", "aud": "aud", "exp": now + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn policy(up: SocketAddr, secrets: &str) -> String {
    config(
        up,
        "allow_insecure_local: true",
        &format!(
            "authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
             {secrets}\nroutes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n"
        ),
    )
}

async fn status(addr: SocketAddr, secret: &str) -> u16 {
    let bearer = format!("Bearer {}", token(secret));
    get_with(addr, "/api/x", &[("authorization", bearer.as_str())])
        .await
        .status
}

/// Replaces `path` atomically (write beside, rename), as a Secret volume update does.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn reload_count(admin: SocketAddr, result: &str) -> f64 {
    metric(
        admin,
        &format!("fortress_policy_reload_total{{result=\"{result}\"}}"),
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test]
async fn every_listed_secret_verifies_in_order() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&policy(
        up.addr,
        &format!("secrets: [{{ value: \"{NEW}\" }}, {{ value: \"{OLD}\" }}]"),
    ))
    .await;
    assert_eq!(status(fx.addr(), NEW).await, 200);
    assert_eq!(status(fx.addr(), OLD).await, 200);
    assert_eq!(status(fx.addr(), NEWER).await, 401);
    assert_eq!(up.hits(), 2);
}

#[test]
fn secret_and_secrets_together_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        policy(
            "127.0.0.1:9".parse().expect("addr"),
            &format!("secret: {{ value: \"{NEW}\" }}\n    secrets: [{{ value: \"{OLD}\" }}]"),
        ),
    )
    .expect("write");
    let err = match fortress::config::load_file(&path) {
        Ok(_) => panic!("both accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("use `secret` or `secrets`"), "{err}");
}

#[tokio::test]
async fn a_replaced_secret_file_is_used_without_sighup_and_an_unreadable_one_keeps_the_last() {
    let up = Upstream::echo().await;
    let keys = tempfile::tempdir().expect("tempdir");
    let new_file = keys.path().join("jwt-new");
    let old_file = keys.path().join("jwt-old");
    std::fs::write(&new_file, NEW).expect("write");
    std::fs::write(&old_file, OLD).expect("write");
    let fx = TestFortress::start(&policy(
        up.addr,
        &format!(
            "secrets: [{{ file: \"{}\" }}, {{ file: \"{}\" }}]",
            new_file.display(),
            old_file.display()
        ),
    ))
    .await;
    assert_eq!(status(fx.addr(), NEW).await, 200);
    assert_eq!(status(fx.addr(), OLD).await, 200);
    assert_eq!(status(fx.addr(), NEWER).await, 401);
    let ok_before = reload_count(fx.admin(), "ok").await;

    // Rotation: the newest secret replaces the old one's file; no SIGHUP, no API call.
    replace(&old_file, NEWER);
    let picked_up = eventually(Duration::from_secs(10), || async {
        status(fx.addr(), NEWER).await == 200
    })
    .await;
    assert!(picked_up, "the replaced secret file is read again");
    assert_eq!(
        status(fx.addr(), OLD).await,
        401,
        "the dropped secret no longer verifies"
    );
    assert_eq!(status(fx.addr(), NEW).await, 200);
    assert_eq!(reload_count(fx.admin(), "ok").await, ok_before + 1.0);

    // The file disappears (a broken mount): the reload is refused and counted; the last good
    // secrets keep working.
    let errors_before = reload_count(fx.admin(), "error").await;
    std::fs::remove_file(&new_file).expect("remove");
    let refused = eventually(Duration::from_secs(10), || async {
        reload_count(fx.admin(), "error").await > errors_before
    })
    .await;
    assert!(refused, "an unreadable secret file is a refused reload");
    assert_eq!(
        status(fx.addr(), NEW).await,
        200,
        "the last good secret is kept"
    );
    assert_eq!(status(fx.addr(), NEWER).await, 200);
    assert_eq!(
        metric(fx.admin(), "fortress_policy_last_reload_successful").await,
        Some(0.0)
    );
    // It comes back as it was: the active policy matches the files again.
    replace(&new_file, NEW);
    let back = eventually(Duration::from_secs(10), || async {
        metric(fx.admin(), "fortress_policy_last_reload_successful").await == Some(1.0)
    })
    .await;
    assert!(back, "the restored file clears the failed reload");
    assert_eq!(status(fx.addr(), NEW).await, 200);
}
