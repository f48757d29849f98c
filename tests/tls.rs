//! TLS on the client listener: HTTP/2 and HTTP/1.1 through ALPN, refused handshakes (old
//! protocol versions, plain HTTP) and certificate rotation without a restart.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use fortress::Fortress;
use http::{Request, Version};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts fortress with TLS from `certs` (written as `server.crt`/`server.key` next to the
/// config, referenced by relative paths) in front of `upstream`.
async fn start_tls(upstream: SocketAddr, certs: &TestCerts) -> (Fortress, tempfile::TempDir) {
    tls_fortress(upstream, certs, CATCH_ALL).await
}

/// The leaf certificate (DER) of a PEM chain.
fn leaf_der(cert_pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert pem")
}

/// The leaf certificate the server presented on `tls`.
fn presented_leaf(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented a certificate")
        .clone()
        .into_owned()
}

/// `GET https://localhost:PORT{path}` on an HTTP/2 connection: (status, version, body).
async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    addr: SocketAddr,
    path: &str,
) -> (u16, Version, Bytes) {
    let req = Request::get(format!("https://localhost:{}{path}", addr.port()))
        .body(full(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("h2 response");
    let (status, version) = (resp.status().as_u16(), resp.version());
    (status, version, body_bytes(resp).await)
}

/// Reads until the peer closes (EOF or reset) or 10s pass; returns what arrived.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("server kept the connection open after a failed handshake"),
        }
    }
}

/// A ClientHello from a client that speaks TLS 1.1 at most (no `supported_versions`
/// extension, legacy version 0x0302), offering the usual ECDHE/RSA CBC suites. Real TLS 1.1
/// clients send no `signature_algorithms` (a TLS 1.2 extension); `sig_algs` adds it anyway,
/// so the server's version check itself is what refuses the hello.
fn tls11_client_hello(sig_algs: bool) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&[0x03, 0x02]); // client_version: TLS 1.1
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // empty session id
    let suites: [u16; 4] = [0xc013, 0xc009, 0x002f, 0x0035];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    // server_name: localhost
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    // supported_groups: secp256r1
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    if sig_algs {
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
        ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01]);
    }
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);

    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 record version
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Whether `bytes` is exactly one fatal TLS alert record with `description`.
fn is_fatal_alert(bytes: &[u8], description: u8) -> bool {
    bytes.len() == 7
        && bytes[0] == 0x15
        && bytes[1] == 0x03
        && bytes[3..5] == [0x00, 0x02]
        && bytes[5] == 2
        && bytes[6] == description
}

/// Atomically replaces `dir/name` with `contents` (temp file in the same dir, then rename).
fn replace_file(dir: &Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, dir.join(name)).expect("rename over");
}

const HANDSHAKE_ERRORS: &str = "fortress_tls_handshake_errors_total";
const CERT_RELOAD_OK: &str = r#"fortress_tls_cert_reload_total{result="ok"}"#;

#[tokio::test]
async fn http2_over_tls_proxies_to_http1_upstream() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h2-test");
    let (fx, _dir) = start_tls(up.addr, &certs).await;

    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let req = Request::get(format!(
        "https://localhost:{}/api//items/./x/../y?q=%2F&a=1",
        fx.client_addr.port()
    ))
    .header("x-forwarded-proto", "http")
    .body(full(Bytes::new()))
    .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    let rid = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(rid.len(), 32);
    assert_eq!(
        body_bytes(resp).await,
        Bytes::from_static(b"upstream saw GET /api/items/y?q=%2F&a=1")
    );

    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/api/items/y?q=%2F&a=1");
    let authority = format!("localhost:{}", fx.client_addr.port());
    let h = &seen[0].headers;
    assert_eq!(h["host"], authority.as_str());
    assert_eq!(h["x-forwarded-host"], authority.as_str());
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "TLS wins over the client's claim"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-request-id"], rid.as_str());

    // A second stream on the same connection is served too.
    let (status, version, body) = h2_get(&mut h2, fx.client_addr, "/again").await;
    assert_eq!((status, version), (200, Version::HTTP_2));
    assert_eq!(body, Bytes::from_static(b"upstream saw GET /again"));
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn http1_over_tls_with_alpn_http11() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h1-test");
    let (fx, _dir) = start_tls(up.addr, &certs).await;

    let tls = tls_stream(fx.client_addr, &certs.ca_pem, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    for (sent, canonical) in [("/one//two", "/one/two"), ("/three/%7e", "/three/~")] {
        let req = Request::get(sent)
            .header("host", "app.example")
            .body(full(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200, "{sent}");
        assert_eq!(resp.version(), Version::HTTP_11);
        assert_eq!(resp.headers()["x-upstream"], "yes");
        assert_eq!(
            body_bytes(resp).await,
            Bytes::from(format!("upstream saw GET {canonical}"))
        );
    }
    let seen = up.requests();
    assert_eq!(
        seen.len(),
        2,
        "both requests on one keep-alive TLS connection"
    );
    for s in &seen {
        assert_eq!(s.headers["host"], "app.example");
        assert_eq!(s.headers["x-forwarded-host"], "app.example");
        assert_eq!(s.headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn old_tls_versions_and_plain_http_fail_the_handshake_and_are_counted() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("refuse-test");
    let (fx, _dir) = start_tls(up.addr, &certs).await;
    let admin = fx.admin_addr;
    assert_eq!(metric(admin, HANDSHAKE_ERRORS).await, Some(0.0));

    // Plain HTTP on the TLS port: answered with a TLS alert, never with HTTP.
    let mut tcp = TcpStream::connect(fx.client_addr).await.expect("connect");
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let reply = read_until_closed(&mut tcp).await;
    assert!(
        is_fatal_alert(&reply, 50),
        "expected a decode_error alert, got {reply:?} ({:?})",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(admin, HANDSHAKE_ERRORS).await == Some(1.0)
        })
        .await,
        "plain HTTP handshake failure counted"
    );

    // Clients that offer TLS 1.1 at most: a realistic one is refused for lacking
    // signature_algorithms (handshake_failure), one that sends it anyway is refused by the
    // version check (protocol_version).
    for (sig_algs, alert, count) in [(false, 40, 2.0), (true, 70, 3.0)] {
        let mut tcp = TcpStream::connect(fx.client_addr).await.expect("connect");
        tcp.write_all(&tls11_client_hello(sig_algs))
            .await
            .expect("write");
        let reply = read_until_closed(&mut tcp).await;
        assert!(
            is_fatal_alert(&reply, alert),
            "sig_algs={sig_algs}: expected fatal alert {alert}, got {reply:?}"
        );
        assert!(
            eventually(Duration::from_secs(5), || async {
                metric(admin, HANDSHAKE_ERRORS).await == Some(count)
            })
            .await,
            "TLS 1.1 handshake failure counted (sig_algs={sig_algs})"
        );
    }

    // Still serving TLS clients, and a good handshake is not counted as an error.
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let (status, version, body) = h2_get(&mut h2, fx.client_addr, "/after").await;
    assert_eq!((status, version), (200, Version::HTTP_2));
    assert_eq!(body, Bytes::from_static(b"upstream saw GET /after"));
    assert_eq!(metric(admin, HANDSHAKE_ERRORS).await, Some(3.0));
    assert_eq!(
        up.hits(),
        1,
        "nothing from the refused connections reached the upstream"
    );
}

#[tokio::test]
async fn certificate_rotation_applies_to_new_handshakes_and_keeps_old_connections() {
    let up = Upstream::echo().await;
    let a = TestCerts::new("cert-a");
    let b = TestCerts::new("cert-b");
    let (fx, dir) = start_tls(up.addr, &a).await;
    let (addr, admin) = (fx.client_addr, fx.admin_addr);
    assert_eq!(metric(admin, CERT_RELOAD_OK).await, Some(0.0));

    // Before: cert A is served; a client trusting only CA-B is refused.
    let tls_a = try_tls_stream(addr, &a.ca_pem, &[b"h2"])
        .await
        .expect("CA-A client connects before rotation");
    assert_eq!(presented_leaf(&tls_a), leaf_der(&a.cert_pem));
    assert!(
        try_tls_stream(addr, &b.ca_pem, &[b"h2"]).await.is_err(),
        "a CA-B client must not connect before the rotation"
    );
    let mut before = h2_over(tls_a).await;
    let (status, _, body) = h2_get(&mut before, addr, "/before").await;
    assert_eq!(status, 200);
    assert_eq!(body, Bytes::from_static(b"upstream saw GET /before"));

    // Rotate the way cert-manager does: new files renamed over the old ones.
    replace_file(dir.path(), "server.crt", &b.cert_pem);
    replace_file(dir.path(), "server.key", &b.key_pem);

    // Poll (the file watcher gives no signal) until a new handshake presents cert B.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let tls_b = loop {
        if let Ok(tls) = try_tls_stream(addr, &b.ca_pem, &[b"h2"]).await {
            break tls;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new handshakes did not switch to cert B within 10s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let leaf = presented_leaf(&tls_b);
    assert_eq!(leaf, leaf_der(&b.cert_pem));
    assert_ne!(leaf, leaf_der(&a.cert_pem));
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(admin, CERT_RELOAD_OK).await == Some(1.0)
        })
        .await,
        "cert reload counted once"
    );
    assert!(
        try_tls_stream(addr, &a.ca_pem, &[b"h2"]).await.is_err(),
        "new handshakes must no longer present cert A"
    );

    let mut after = h2_over(tls_b).await;
    let (status, version, body) = h2_get(&mut after, addr, "/new-conn").await;
    assert_eq!((status, version), (200, Version::HTTP_2));
    assert_eq!(body, Bytes::from_static(b"upstream saw GET /new-conn"));

    // The connection made before the rotation keeps working.
    let (status, version, body) = h2_get(&mut before, addr, "/old-conn").await;
    assert_eq!((status, version), (200, Version::HTTP_2));
    assert_eq!(body, Bytes::from_static(b"upstream saw GET /old-conn"));
    assert_eq!(metric(admin, CERT_RELOAD_OK).await, Some(1.0));
}
