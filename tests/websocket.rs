//! WebSocket routes through a real fortress in front of a real upstream that accepts the
//! upgrade (raw TCP: reads the head, answers `101` with the accept key, greets, then echoes):
//! the handshake goes through every check first (401 / 403 with no upstream call), a valid
//! one is spliced and bytes flow both ways, an idle tunnel is closed on both sides and then
//! recorded as allowed with status 101, a malformed handshake on a websocket route is 400,
//! and on other routes `Upgrade` is stripped like any hop-by-hop header.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "websocket-test-secret-0123456789-abcdef";
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 §1.3: the accept value for [`KEY`].
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const GREETING: &[u8] = b"hello from upstream\n";

fn accept_key(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The upstream: every request head it read, upgrades it answered, tunnels that ended.
struct WsUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    closed: Arc<AtomicUsize>,
}

impl WsUpstream {
    async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (h, c) = (heads.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (h, c) = (h.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, h, c).await;
                });
            }
        });
        Self {
            addr,
            heads,
            closed,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// One upstream connection: answers each request head; an upgrade gets `101`, a greeting and
/// an echo until the peer closes.
async fn serve(
    mut tcp: TcpStream,
    heads: Arc<Mutex<Vec<String>>>,
    closed: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    loop {
        let head = read_head(&mut tcp).await?;
        let Some((head, rest)) = head else {
            return Ok(());
        };
        heads.lock().expect("lock").push(head.clone());
        let key = header(&head, "sec-websocket-key");
        let upgrade = header(&head, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        match key {
            Some(key) if upgrade => {
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept_key(&key)
                );
                tcp.write_all(resp.as_bytes()).await?;
                tcp.write_all(GREETING).await?;
                tcp.write_all(&rest).await?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                    tcp.write_all(&buf[..n]).await?;
                }
            }
            _ => {
                let body = "plain http";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                tcp.write_all(resp.as_bytes()).await?;
            }
        }
    }
}

/// Reads one request or response head; `None` at a clean EOF. Returns the head and any bytes
/// read past it.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), rest)));
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn token(sub: &str, roles: &[&str]) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": sub, "roles": roles, "iss": "iss", "aud": "aud", "exp": now + 600,
        "tenant": "acme",
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

struct Fx {
    fx: TestFortress,
    _dir: tempfile::TempDir,
}

async fn start(up: &WsUpstream, websocket_idle: &str) -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let rest = format!(
        "authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ file: \"{}\" }}\n\
         roles:\n  chatter: [\"chat:use\"]\n  viewer: [\"reports:read\"]\n\
         routes:\n  - name: ws\n    match: {{ path: \"/ws/**\" }}\n    websocket: true\n    \
         require: [\"chat:use\"]\n  \
         - name: ws-org\n    match: {{ path: \"/ws-org/**\" }}\n    websocket: true\n    \
         require: [\"chat:use\"]\n    tenant: {{ header: X-Org-Id }}\n  \
         - name: plain\n    match: {{ path: \"/plain/**\" }}\n    public: true\n",
        secret.display()
    );
    let yaml = config(
        up.addr,
        &format!("allow_insecure_local: true\ntimeouts: {{ websocket_idle: {websocket_idle} }}"),
        &rest,
    );
    Fx {
        fx: TestFortress::start(&yaml).await,
        _dir: dir,
    }
}

fn handshake(target: &str, tok: Option<&str>, extra: &str) -> String {
    let auth = tok.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "GET {target} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {KEY}\r\n{extra}{auth}\r\n"
    )
}

const VERSION_13: &str = "Sec-WebSocket-Version: 13\r\n";

/// Opens a connection, sends `request`, reads the response head.
async fn open(addr: SocketAddr, request: &str) -> (TcpStream, String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let (head, rest) = read_head(&mut tcp)
        .await
        .expect("read")
        .expect("a response head");
    (tcp, head, rest)
}

/// Reads until `want` bytes arrived (or EOF).
async fn read_exact_n(tcp: &mut TcpStream, mut got: Vec<u8>, want: usize) -> Vec<u8> {
    let mut chunk = [0u8; 1024];
    while got.len() < want {
        let n = tcp.read(&mut chunk).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

#[test]
fn accept_key_matches_rfc_6455() {
    assert_eq!(accept_key(KEY), ACCEPT);
}

#[tokio::test]
async fn handshake_goes_through_every_check_first() {
    let up = WsUpstream::spawn().await;
    let f = start(&up, "60s").await;
    let addr = f.fx.addr();
    for (what, tok, status, reason) in [
        ("no token", None, 401, "missing_token"),
        (
            "wrong role",
            Some(token("vera", &["viewer"])),
            403,
            "missing_permission",
        ),
    ] {
        let req = handshake("/ws/chat", tok.as_deref(), VERSION_13);
        let r = raw_one(addr, req.as_bytes()).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["reason"], reason, "{what}");
        assert_eq!(r.header("upgrade"), None, "{what}");
    }
    // Another tenant's channel: the tenant check refuses the handshake.
    let good = token("ann", &["chatter"]);
    let req = handshake(
        "/ws-org/chat",
        Some(&good),
        "Sec-WebSocket-Version: 13\r\nX-Org-Id: globex\r\n",
    );
    let r = raw_one(addr, req.as_bytes()).await;
    assert_eq!(r.status, 403, "other tenant: {}", r.text());
    assert_eq!(r.json()["reason"], "tenant_mismatch");
    // A malformed handshake on the websocket route: 400, whoever sends it.
    for (what, req) in [
        ("no version", handshake("/ws/chat", Some(&good), "")),
        (
            "version 8",
            handshake("/ws/chat", Some(&good), "Sec-WebSocket-Version: 8\r\n"),
        ),
        (
            "POST",
            handshake("/ws/chat", Some(&good), VERSION_13)
                .replacen("GET", "POST", 1)
                .replacen("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n", 1),
        ),
    ] {
        let r = raw_one(addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["reason"], "invalid_upgrade", "{what}");
    }
    assert!(
        up.heads().is_empty(),
        "no refused handshake reached the upstream"
    );
    // The own tenant's channel passes every check and is upgraded.
    let req = handshake(
        "/ws-org/chat",
        Some(&good),
        "Sec-WebSocket-Version: 13\r\nX-Org-Id: acme\r\n",
    );
    let (_tcp, head, _) = open(addr, &req).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let seen = up.heads();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "x-org-id").as_deref(), Some("acme"));
    assert_eq!(header(&seen[0], "x-tenant-id").as_deref(), Some("acme"));
}

#[tokio::test]
async fn valid_handshake_is_spliced_and_bytes_flow_both_ways() {
    let up = WsUpstream::spawn().await;
    let f = start(&up, "60s").await;
    let tok = token("ann", &["chatter"]);
    let (mut tcp, head, rest) =
        open(f.fx.addr(), &handshake("/ws/chat", Some(&tok), VERSION_13)).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept").as_deref(),
        Some(ACCEPT)
    );
    assert_eq!(header(&head, "upgrade").as_deref(), Some("websocket"));
    assert!(header(&head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")));

    // The upstream saw the handshake with its upgrade headers and fortress's identity.
    let seen = up.heads();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("GET /ws/chat HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert_eq!(header(&seen[0], "upgrade").as_deref(), Some("websocket"));
    assert_eq!(header(&seen[0], "connection").as_deref(), Some("upgrade"));
    assert_eq!(header(&seen[0], "sec-websocket-key").as_deref(), Some(KEY));
    assert_eq!(
        header(&seen[0], "sec-websocket-version").as_deref(),
        Some("13")
    );
    assert_eq!(header(&seen[0], "x-auth-subject").as_deref(), Some("ann"));

    // Upstream → client: the greeting; client → upstream → client: the echo, several times.
    let got = read_exact_n(&mut tcp, rest, GREETING.len()).await;
    assert_eq!(got, GREETING);
    for msg in ["one", "two\n", &"x".repeat(10_000)] {
        tcp.write_all(msg.as_bytes()).await.expect("write");
        let got = read_exact_n(&mut tcp, Vec::new(), msg.len()).await;
        assert_eq!(got, msg.as_bytes());
    }

    // The client closes: the upstream side is closed too, and the request is recorded as
    // allowed with status 101 when the tunnel ends.
    drop(tcp);
    assert!(
        eventually(Duration::from_secs(10), || async { up.closed() == 1 }).await,
        "the upstream side was closed"
    );
    let series = "fortress_requests_total{decision=\"allow\",method=\"GET\",mode=\"enforce\",\
                  route=\"ws\",status=\"1xx\"}";
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(f.fx.admin(), series).await == Some(1.0)
        })
        .await,
        "{series}"
    );
}

#[tokio::test]
async fn idle_tunnel_is_closed_on_both_sides() {
    let up = WsUpstream::spawn().await;
    let f = start(&up, "200ms").await;
    let tok = token("ann", &["chatter"]);
    let (mut tcp, head, rest) =
        open(f.fx.addr(), &handshake("/ws/chat", Some(&tok), VERSION_13)).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let got = read_exact_n(&mut tcp, rest, GREETING.len()).await;
    assert_eq!(got, GREETING);
    // Nothing more is sent either way: fortress closes the tunnel. Read until EOF (the
    // timeout only keeps a broken build from hanging the suite).
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
        .await
        .expect("fortress closed the idle tunnel")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF, no more bytes");
    assert!(
        eventually(Duration::from_secs(10), || async { up.closed() == 1 }).await,
        "the upstream side was closed too"
    );
    let series = "fortress_requests_total{decision=\"allow\",method=\"GET\",mode=\"enforce\",\
                  route=\"ws\",status=\"1xx\"}";
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(f.fx.admin(), series).await == Some(1.0)
        })
        .await,
        "{series}"
    );
}

#[tokio::test]
async fn open_tunnel_counts_as_a_connection_and_shutdown_waits_for_it() {
    let up = WsUpstream::spawn().await;
    let f = start(&up, "60s").await;
    let tok = token("ann", &["chatter"]);
    let (mut tcp, head, rest) =
        open(f.fx.addr(), &handshake("/ws/chat", Some(&tok), VERSION_13)).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let got = read_exact_n(&mut tcp, rest, GREETING.len()).await;
    assert_eq!(got, GREETING);
    // hyper's connection task is over (the connection was handed to the tunnel), but the
    // connection is still open and counted.
    assert_eq!(
        metric(f.fx.admin(), "fortress_open_connections").await,
        Some(1.0)
    );

    // Shutdown drains the tunnel like an in-flight request: the wait does not end while it is
    // open, and the tunnel keeps working meanwhile.
    let Fx { fx, _dir } = f;
    let TestFortress { fx, dir, .. } = fx;
    fx.shutdown();
    let mut wait = tokio::spawn(fx.wait());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut wait)
            .await
            .is_err(),
        "shutdown finished while a tunnel was open"
    );
    tcp.write_all(b"still here").await.expect("write");
    let got = read_exact_n(&mut tcp, Vec::new(), 10).await;
    assert_eq!(got, b"still here");
    drop(tcp);
    let drained = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("shutdown finished once the tunnel closed")
        .expect("join");
    assert!(drained, "drained within the grace period");
    drop(dir);
}

#[tokio::test]
async fn upgrade_on_other_routes_is_stripped() {
    let up = WsUpstream::spawn().await;
    let f = start(&up, "60s").await;
    let r = raw(
        f.fx.addr(),
        handshake("/plain/x", None, VERSION_13)
            .replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "plain http");
    let seen = up.heads();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "upgrade"), None, "{}", seen[0]);
    assert!(
        header(&seen[0], "connection").is_none_or(|c| !c.to_ascii_lowercase().contains("upgrade")),
        "{}",
        seen[0]
    );
}

#[tokio::test]
async fn handshake_with_a_body_is_refused() {
    let up = WsUpstream::spawn().await;
    let fx = start(&up, "60s").await;
    let addr = fx.fx.addr();
    let good = token("ann", &["chatter"]);
    let smuggled = "GET /plain/x HTTP/1.1\r\nHost: a\r\n\r\n";
    for (what, framing, body) in [
        (
            "Content-Length",
            format!("Content-Length: {}\r\n", smuggled.len()),
            smuggled.to_owned(),
        ),
        (
            "chunked",
            "Transfer-Encoding: chunked\r\n".to_owned(),
            format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()),
        ),
        (
            "Content-Length: 1",
            "Content-Length: 1\r\n".to_owned(),
            "x".to_owned(),
        ),
    ] {
        let mut req = handshake("/ws/chat", Some(&good), &format!("{VERSION_13}{framing}"));
        req.push_str(&body);
        let r = raw_one(addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.header("upgrade"), None, "{what}");
        let id = r.header("x-request-id").expect("request id").to_owned();
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "bad_request", "reason": "invalid_upgrade", "request_id": id, "trace_id": trace_id(&r)}),
            "{what}"
        );
    }
    assert!(
        up.heads().is_empty(),
        "no handshake with a body reached the upstream"
    );
    // `Content-Length: 0` is no body: upgraded.
    let req = handshake(
        "/ws/chat",
        Some(&good),
        &format!("{VERSION_13}Content-Length: 0\r\n"),
    );
    let (_tcp, head, _) = open(addr, &req).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(up.heads().len(), 1);
}
