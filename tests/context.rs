//! One request context per request, seen from outside: a request the client abandons before
//! any response exists is recorded as aborted (never as allowed), a 405 lists the methods the
//! path accepts, clients see public reasons while logs, metrics and `fortress explain` carry
//! the detailed one, and request ids are random.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use fortress::Fortress;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::sync::mpsc;

/// Starts fortress with TLS from `certs` (written next to the config) in front of `upstream`,
/// with `rest` (routes, …) appended to the config.
async fn start_tls(
    upstream: SocketAddr,
    certs: &TestCerts,
    rest: &str,
) -> (Fortress, tempfile::TempDir) {
    tls_fortress(upstream, certs, rest).await
}

/// `METHOD https://localhost:PORT{path}` on an HTTP/2 connection.
fn h2_request(method: &str, addr: SocketAddr, path: &str) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .body(full(Bytes::new()))
        .expect("request")
}

/// The `fortress_requests_total` series of `route` with the given labels.
fn requests_series(route: &str, method: &str, status: &str, decision: &str) -> String {
    format!(
        "fortress_requests_total{{decision=\"{decision}\",method=\"{method}\",mode=\"enforce\",\
         route=\"{route}\",status=\"{status}\"}}"
    )
}

/// Every non-zero `fortress_requests_total` sample line of `route` whose decision is
/// `decision`.
async fn samples_with_decision(admin: SocketAddr, route: &str, decision: &str) -> Vec<String> {
    let text = get(admin, "/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with("fortress_requests_total{"))
        .filter(|l| l.contains(&format!("decision=\"{decision}\"")))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn h2_stream_reset_while_waiting_for_the_upstream_is_recorded_as_aborted() {
    // `/hold` is held by the upstream until the test ends; the upstream reports its arrival.
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<String>();
    let up = Upstream::spawn(move |req: Request<Incoming>| {
        let arrived = arrived_tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            if path == "/hold" {
                let _ = arrived.send(path.clone());
                std::future::pending::<()>().await;
            }
            Response::new(full(format!("upstream saw {} {path}", req.method())))
        }
    })
    .await;
    let certs = TestCerts::new("abort-test");
    let routes = "routes:\n  - name: held\n    match: { path: \"/**\" }\n    public: true\n";
    let (fx, _dir) = start_tls(up.addr, &certs, routes).await;
    let (addr, admin) = (fx.client_addr, fx.admin_addr);
    let aborted = requests_series("held", "GET", "none", "aborted");
    assert_eq!(metric(admin, &aborted).await, None, "nothing aborted yet");

    let mut h2 = h2_tls(addr, &certs.ca_pem).await;
    let pending = h2.send_request(h2_request("GET", addr, "/hold"));
    // Drive the request until the upstream has it: fortress is now waiting for the upstream.
    let arrived = tokio::select! {
        _ = pending => panic!("the held request was answered"),
        arrived = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv()) => arrived,
    }
    .expect("the request reaches the upstream within 10s")
    .expect("path");
    assert_eq!(arrived, "/hold");
    // `select!` dropped the response future: the client resets the stream (RST_STREAM CANCEL).

    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(admin, &aborted).await == Some(1.0)
        })
        .await,
        "the reset request is not recorded as {aborted}: {:?}",
        get(admin, "/metrics").await.text()
    );
    assert_eq!(
        samples_with_decision(admin, "held", "allow").await,
        Vec::<String>::new(),
        "the reset request was counted as allowed"
    );

    // The connection survives the reset: another stream on it is served.
    let resp = h2
        .send_request(h2_request("GET", addr, "/after"))
        .await
        .expect("second stream on the same connection");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(
        body_bytes(resp).await,
        Bytes::from_static(b"upstream saw GET /after")
    );
    let allowed = requests_series("held", "GET", "2xx", "allow");
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(admin, &allowed).await == Some(1.0)
        })
        .await,
        "the second request is recorded as allowed"
    );
    assert_eq!(
        samples_with_decision(admin, "held", "allow").await,
        vec![format!("{allowed} 1")],
        "only the second request is allowed"
    );
    assert_eq!(metric(admin, &aborted).await, Some(1.0));
    assert_eq!(up.hits(), 2);
}

/// `/x` accepts GET (one route) and POST, PUT (another).
const SPLIT_METHODS: &str = "routes:\n  \
    - name: x-read\n    match: { path: /x, methods: [GET] }\n    public: true\n  \
    - name: x-write\n    match: { path: /x, methods: [POST, PUT] }\n    public: true\n";

/// Asserts the exact 405 for `/x`: JSON body with the request id, `Allow`, no-store.
fn assert_405(status: u16, headers: &http::HeaderMap, body: &[u8], case: &str) {
    assert_eq!(status, 405, "{case}: {}", String::from_utf8_lossy(body));
    let h = |n: &str| headers.get(n).map(|v| v.to_str().expect("ascii"));
    let rid = h("x-request-id").expect("x-request-id");
    assert_eq!(rid.len(), 32, "{case}");
    assert_eq!(
        String::from_utf8_lossy(body),
        format!(
            r#"{{"error":"method_not_allowed","reason":"method_not_allowed","request_id":"{rid}","trace_id":"{}"}}"#,
            trace_id_in(headers)
        ),
        "{case}"
    );
    // HEAD follows GET, so the path accepts it too.
    assert_eq!(h("allow"), Some("GET, HEAD, POST, PUT"), "{case}");
    assert_eq!(headers.get_all("allow").iter().count(), 1, "{case}");
    assert_eq!(h("content-type"), Some("application/json"), "{case}");
    assert_eq!(h("cache-control"), Some("no-store"), "{case}");
}

#[tokio::test]
async fn method_not_allowed_lists_the_methods_of_every_route_on_the_path() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("allow-test");
    let (fx, _dir) = start_tls(up.addr, &certs, SPLIT_METHODS).await;
    let addr = fx.client_addr;

    // HTTP/1.1 over TLS.
    let tls = tls_stream(addr, &certs.ca_pem, &[b"http/1.1"]).await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    for method in ["DELETE", "PATCH"] {
        let req = Request::builder()
            .method(method)
            .uri("/x")
            .header("host", "app.test")
            .body(full(Bytes::new()))
            .expect("request");
        let resp = h1.send_request(req).await.expect("response");
        assert_eq!(resp.version(), Version::HTTP_11);
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        assert_405(status, &headers, &body_bytes(resp).await, method);
    }

    // HTTP/2.
    let mut h2 = h2_tls(addr, &certs.ca_pem).await;
    let resp = h2
        .send_request(h2_request("DELETE", addr, "/x"))
        .await
        .expect("h2 response");
    assert_eq!(resp.version(), Version::HTTP_2);
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    assert_405(status, &headers, &body_bytes(resp).await, "DELETE over h2");
    assert_eq!(up.hits(), 0, "no refused method reached the upstream");

    // Each accepted method reaches the upstream through its own route.
    for method in ["GET", "POST", "PUT"] {
        let resp = h2
            .send_request(h2_request(method, addr, "/x"))
            .await
            .expect("h2 response");
        assert_eq!(resp.status(), 200, "{method}");
        assert_eq!(resp.headers().get("allow"), None, "{method}");
        assert_eq!(
            body_bytes(resp).await,
            Bytes::from(format!("upstream saw {method} /x"))
        );
    }
    assert_eq!(up.hits(), 3);
    let admin = fx.admin_addr;
    for (route, method) in [("x-read", "GET"), ("x-write", "POST"), ("x-write", "PUT")] {
        let series = requests_series(route, method, "2xx", "allow");
        assert!(
            eventually(Duration::from_secs(5), || async {
                metric(admin, &series).await == Some(1.0)
            })
            .await,
            "{series}"
        );
    }
}

const SECRET: &str = "fortress-context-test-secret-0123456789-abcdef";
const ISSUER: &str = "test-issuer";

/// An HS256 token for `claims` signed with `secret`.
fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// Claims the policy of [`public_vs_detailed_reasons`] accepts, with `iss` = `issuer`.
fn claims(issuer: &str) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp();
    serde_json::json!({
        "sub": "alice",
        "roles": ["reader"],
        "iss": issuer,
        "aud": "api-a",
        "iat": now,
        "exp": now + 600,
    })
}

/// Runs `fortress explain --json` for `GET /api/items` with `token`: (exit code, JSON).
fn explain(config: &Path, token: &str) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args([
            "explain",
            "--config",
            config.to_str().expect("utf8"),
            "--path",
            "/api/items",
            "--token",
            token,
            "--json",
        ])
        .output()
        .expect("run fortress explain");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain did not print JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[tokio::test]
async fn untrusted_client_sees_invalid_token_while_logs_metrics_and_explain_see_why() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("write secret");
    let rest = format!(
        "authentication:\n  jwt:\n    issuer: {ISSUER}\n    audiences: [api-a]\n    \
         algorithms: [HS256]\n    secret: {{ file: \"{}\" }}\n\
         routes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n",
        secret.display()
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, config(up.addr, "allow_insecure_local: true", &rest))
        .expect("write config");
    let fp = FortressProcess::spawn(&path);

    let good = hs256(&claims(ISSUER), SECRET);
    let r = get_with(
        fp.addr,
        "/api/items",
        &[("Authorization", &format!("Bearer {good}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream saw GET /api/items");

    let forged = hs256(&claims(ISSUER), "another-secret-another-secret-0123456789");
    let foreign = hs256(&claims("someone-else"), SECRET);
    let details = ["invalid_signature", "invalid_issuer"];
    for (token, detail) in [(&forged, details[0]), (&foreign, details[1])] {
        let r = get_with(
            fp.addr,
            "/api/items",
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status, 401, "{detail}: {}", r.text());
        let rid = r.header("x-request-id").expect("x-request-id").to_owned();
        assert_eq!(
            r.text(),
            format!(
                r#"{{"error":"unauthorized","reason":"invalid_token","request_id":"{rid}","trace_id":"{}"}}"#,
                trace_id(&r)
            ),
            "{detail}"
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="fortress", error="invalid_token""#),
            "{detail}"
        );
        // No detailed reason anywhere in what the client gets.
        for d in details {
            assert!(!r.text().contains(d), "{detail}: body names {d}");
            for (name, value) in &r.headers {
                assert!(
                    !value.contains(d) && !name.contains(d),
                    "{detail}: header {name}: {value} names {d}"
                );
            }
        }

        // The access log line of this request carries the detailed reason.
        let line_of = |logs: Vec<String>| {
            logs.into_iter()
                .find(|l| l.contains("request finished") && l.contains(&rid))
        };
        assert!(
            eventually(Duration::from_secs(10), || async {
                line_of(fp.logs()).is_some()
            })
            .await,
            "{detail}: no \"request finished\" line for {rid}: {:#?}",
            fp.logs()
        );
        let line = line_of(fp.logs()).expect("log line");
        assert!(
            line.contains(&format!("reason=\"{detail}\"")),
            "{detail}: {line}"
        );
        assert!(line.contains("decision=\"deny\""), "{detail}: {line}");
        assert!(line.contains("http.status=401"), "{detail}: {line}");
        assert!(!line.contains("invalid_token"), "{detail}: {line}");

        // So do the metrics…
        let series = format!("fortress_auth_failures_total{{reason=\"{detail}\"}}");
        assert_eq!(metric(fp.admin, &series).await, Some(1.0), "{series}");

        // …and `fortress explain` on the same config and token.
        let (code, v) = explain(&path, token);
        assert_eq!(code, Some(1), "{detail}: {v}");
        assert_eq!(v["decision"], "deny", "{v}");
        assert_eq!(v["status"], 401, "{v}");
        assert_eq!(v["reason"], detail, "{v}");
        let authn = v["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .find(|s| s["stage"] == "authn")
            .unwrap_or_else(|| panic!("no authn stage in {v}"));
        assert_eq!(authn["outcome"], "deny", "{v}");
        assert!(
            authn["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(detail)),
            "{v}"
        );
        assert!(!v.to_string().contains("invalid_token"), "{v}");
    }
    assert_eq!(
        metric(
            fp.admin,
            "fortress_auth_failures_total{reason=\"invalid_token\"}"
        )
        .await,
        None,
        "the public reason is not a metric label"
    );
    assert_eq!(up.hits(), 1, "only the valid token reached the upstream");
}

/// Whether `s` is 32 lower-case hex digits.
fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `GET target` on a keep-alive connection with `headers`: (status, x-request-id, body).
async fn get_keepalive(
    send: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Bytes) {
    let mut req = Request::get(target).header("host", "app.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(full(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let rid = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    (status, rid, body_bytes(resp).await)
}

#[tokio::test]
async fn untrusted_clients_get_random_request_ids() {
    const N: usize = 200;
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let mut send = h1(fx.addr()).await;
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        // The client's own id is not trusted: it is replaced.
        let own = format!("client-{i}");
        let (status, rid, body) =
            get_keepalive(&mut send, &format!("/r/{i}"), &[("X-Request-ID", &own)]).await;
        assert_eq!(status, 200);
        assert_eq!(body, Bytes::from(format!("upstream saw GET /r/{i}")));
        assert!(is_hex32(&rid), "request id {rid:?}");
        let seen = up.requests().pop().expect("seen");
        assert_eq!(seen.target, format!("/r/{i}"));
        assert_eq!(
            seen.headers["x-request-id"],
            rid.as_str(),
            "the upstream saw it"
        );
        ids.push(rid);
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "a request id repeated");
    // A counter (or a counter under a fixed prefix) shares a long prefix with the id before
    // it; random ids share more than 8 leading hex digits with probability 16^-9.
    let common_prefix =
        |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let long_prefixes = ids
        .windows(2)
        .filter(|w| common_prefix(&w[0], &w[1]) > 8)
        .count();
    assert!(
        long_prefixes <= 2,
        "{long_prefixes} consecutive ids share more than 8 leading hex digits: {ids:#?}"
    );
    // Nor do they share a long suffix (a counter in the low digits under a random prefix).
    let common_suffix = |a: &str, b: &str| {
        a.bytes()
            .rev()
            .zip(b.bytes().rev())
            .take_while(|(x, y)| x == y)
            .count()
    };
    let long_suffixes = ids
        .windows(2)
        .filter(|w| common_suffix(&w[0], &w[1]) > 8)
        .count();
    assert!(long_suffixes <= 2, "{long_suffixes}: {ids:#?}");
}

#[tokio::test]
async fn trusted_client_keeps_a_valid_request_id() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "trusted_proxies: [127.0.0.0/8]",
        CATCH_ALL,
    ))
    .await;
    let mut send = h1(fx.addr()).await;
    let edge = "edge-7f3a.b_c:d";
    let (status, rid, body) = get_keepalive(&mut send, "/t", &[("X-Request-ID", edge)]).await;
    assert_eq!(status, 200);
    assert_eq!(body, Bytes::from_static(b"upstream saw GET /t"));
    assert_eq!(rid, edge);
    assert_eq!(up.requests()[0].headers["x-request-id"], edge);

    // An id that is not a safe token is replaced, even from a trusted peer.
    let (status, rid, _) =
        get_keepalive(&mut send, "/t", &[("X-Request-ID", "bad id \"<x>\"")]).await;
    assert_eq!(status, 200);
    assert!(is_hex32(&rid), "{rid:?}");
    assert_eq!(up.requests()[1].headers["x-request-id"], rid.as_str());

    // Without one, a random id.
    let (status, rid, _) = get_keepalive(&mut send, "/t", &[]).await;
    assert_eq!(status, 200);
    assert!(is_hex32(&rid), "{rid:?}");
}
