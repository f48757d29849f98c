//! The probe listener (`server.probes`, issue 15): `/livez`, `/healthz`, `/readyz` and
//! `/metrics` only — never the admin API, the JWKS document or anything else — so a
//! production config may put it on the pod address (kubelet probes, Prometheus) while
//! `server.admin` stays on loopback.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::*;

const SECRET: &str = "q8Jz3vWt0pLx7Rk2mN5bY4cH9sD1fG6aQ2wE8rT5yU3iO7pZ";

/// A production config that passes every startup check, with the probe listener on every
/// address (`0.0.0.0`), in front of `upstream`.
fn production(upstream: SocketAddr, audit: &std::path::Path, admin: &str) -> String {
    format!(
        "\
version: 1
server:
  listen: 127.0.0.1:0
  admin: {admin}
  probes: 0.0.0.0:0
  upstream: http://{upstream}
  environment: production
  trusted_proxies: [10.0.0.0/8]
audit:
  dir: {audit}
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: {{ env: JWT_SECRET }}
roles:
  analyst: [\"reports:read\"]
default: deny
routes:
  - name: health
    match: {{ path: /health }}
    public: true
",
        audit = audit.display()
    )
}

/// The `probes=` address of the "fortress listening" line, reached on 127.0.0.1.
fn probes_addr(fp: &FortressProcess) -> SocketAddr {
    let line = fp
        .logs()
        .into_iter()
        .find(|l| l.contains("fortress listening"))
        .expect("listening line");
    let bound: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("probes="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no probes= in {line:?}"));
    assert!(bound.ip().is_unspecified(), "{bound}");
    SocketAddr::from(([127, 0, 0, 1], bound.port()))
}

async fn request(addr: SocketAddr, method: &str, target: &str) -> RawResponse {
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn production_accepts_a_probe_listener_on_every_address_and_it_serves_only_probes() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        production(up.addr, &dir.path().join("audit"), "127.0.0.1:0"),
    )
    .expect("write");

    // `fortress check` (the same rules as `run`) accepts it.
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .arg("check")
        .arg(&path)
        .env_clear()
        .env("JWT_SECRET", SECRET)
        .output()
        .expect("run check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let fp = FortressProcess::spawn_args_env(
        &["run", "--config", path.to_str().expect("utf-8")],
        &[("JWT_SECRET", SECRET)],
    );
    let probes = probes_addr(&fp);

    for path in ["/livez", "/healthz"] {
        let r = request(probes, "GET", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let r = request(probes, "GET", "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"status": "ready"}));
    // No guard details here: `?verbose` is the admin listener's.
    let r = request(probes, "GET", "/readyz?verbose").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"status": "ready"}));

    let r = request(probes, "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.text().contains("fortress_policy_last_reload_successful"),
        "{}",
        r.text()
    );
    // The admin listener's Host rule: a name an outsider controls gets 421.
    let r = raw(
        probes,
        b"GET /metrics HTTP/1.1\r\nHost: metrics.attacker.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 421);
    assert_eq!(r.json()["reason"], "unexpected_host");

    for (method, path) in [
        ("POST", "/readyz"),
        ("PUT", "/livez"),
        ("DELETE", "/metrics"),
    ] {
        let r = request(probes, method, path).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }

    // Nothing else: every admin API path, the JWKS document, the proxy's routes.
    for (method, path) in [
        ("POST", "/admin/reload"),
        ("GET", "/admin/reload"),
        ("GET", "/admin/toggles"),
        ("PUT", "/admin/toggles/training_enabled"),
        ("GET", "/admin/revocations"),
        ("POST", "/admin/revocations"),
        ("GET", "/admin/policy"),
        ("GET", "/admin/budgets/acme"),
        ("GET", "/admin"),
        ("GET", "/admin/"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/health"),
        ("GET", "/"),
        ("GET", "/livez/"),
        ("GET", "//admin/reload"),
        ("GET", "/metrics/../admin/policy"),
    ] {
        let r = request(probes, method, path).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "not_found", "reason": "no_route", "request_id": "-"}),
            "{method} {path}"
        );
    }
    // The probe listener never reaches the app.
    assert_eq!(up.hits(), 0);

    // The admin API is still served, on loopback, by the admin listener.
    let r = request(fp.admin, "GET", "/admin/policy").await;
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn production_still_refuses_the_admin_listener_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        production(
            "127.0.0.1:9".parse().expect("addr"),
            &dir.path().join("audit"),
            "0.0.0.0:0",
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(["run", "--config"])
        .arg(&path)
        .env_clear()
        .env("JWT_SECRET", SECRET)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("the admin listener `0.0.0.0:0` is not a loopback address"),
        "{text}"
    );
    assert!(!text.contains("probes"), "{text}");
}

#[tokio::test]
async fn a_probe_address_equal_to_another_listener_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        "version: 1\nserver:\n  listen: 127.0.0.1:8443\n  admin: 127.0.0.1:9901\n  probes: 127.0.0.1:9901\n  \
         upstream: http://127.0.0.1:9\n  environment: local\n  require_https: false\n\
         routes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("fortress.yaml:5:11: `server.probes` must differ from `server.listen` and `server.admin`"),
        "{text}"
    );
}

#[tokio::test]
async fn the_probe_listener_answers_readyz_503_when_the_app_is_down() {
    // An address nothing listens on: bind, note, drop.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let yaml = config(closed, "probes: 127.0.0.1:0", CATCH_ALL);
    let fx = TestFortress::start(&yaml).await;
    let probes = fx.fx.probes_addr.expect("probe listener bound");
    let r = request(probes, "GET", "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), serde_json::json!({"status": "not_ready"}));
    let r = request(probes, "GET", "/livez").await;
    assert_eq!(r.status, 200);
    // Without `server.probes` nothing is bound.
    let up = Upstream::echo().await;
    let fx2 = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    assert_eq!(fx2.fx.probes_addr, None);
}

#[tokio::test]
async fn the_probe_listener_caps_connections_and_frees_silent_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "probes: 127.0.0.1:0", CATCH_ALL)).await;
    let probes = fx.fx.probes_addr.expect("probes");
    // 64 silent connections hold every slot.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(
            tokio::net::TcpStream::connect(probes)
                .await
                .expect("connect"),
        );
    }
    // Each is accepted and being served once fortress has read a byte of it: a request on
    // one of them answers, so all 64 are past accept.
    let last = held.last_mut().expect("one");
    last.write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    last.read_exact(&mut buf).await.expect("answer");
    assert_eq!(&buf, b"HTTP/1.1 200");
    // The 65th is closed without an answer.
    let mut extra = tokio::net::TcpStream::connect(probes)
        .await
        .expect("connect");
    let _ = extra
        .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), extra.read_to_end(&mut got))
        .await
        .expect("closed");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // A silent connection is closed by fortress (header-read timeout), freeing its slot.
    let mut first = held.remove(0);
    let n = tokio::time::timeout(Duration::from_secs(20), first.read(&mut buf))
        .await
        .expect("closed within 20s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(held);
    let freed = eventually(Duration::from_secs(20), || async move {
        let Ok(mut c) = tokio::net::TcpStream::connect(probes).await else {
            return false;
        };
        let req = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if c.write_all(req).await.is_err() {
            return false;
        }
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
        got.starts_with(b"HTTP/1.1 200")
    })
    .await;
    assert!(freed);
}
