//! Test harness: a real upstream, a real fortress (in-process or the binary), and clients that
//! speak HTTP/1.1 (raw bytes or hyper), HTTP/2 over TLS, and scrape metrics.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fortress::Fortress;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Body type of test upstream responses.
pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type BoxFut = Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>;

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    /// Headers as received.
    pub headers: HeaderMap,
    /// Which upstream connection it came on (0, 1, … in accept order).
    pub conn: usize,
}

/// A real HTTP/1.1 upstream on an ephemeral port.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts an upstream whose responses come from `handler`.
    pub async fn spawn<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let handler: Arc<dyn Fn(Request<Incoming>) -> BoxFut + Send + Sync> =
            Arc::new(move |req| Box::pin(handler(req)) as BoxFut);
        let (seen2, hits2) = (seen.clone(), hits.clone());
        tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let conn = accepted;
                accepted += 1;
                let (handler, seen, hits) = (handler.clone(), seen2.clone(), hits2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        seen.lock().expect("lock").push(Seen {
                            conn,
                            method: req.method().to_string(),
                            target: req
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, std::convert::Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, hits }
    }

    /// An upstream that answers 200 `upstream saw METHOD TARGET` with `x-upstream: yes`.
    pub async fn echo() -> Self {
        Self::spawn(|req: Request<Incoming>| async move {
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let mut r = Response::new(full(format!("upstream saw {} {}", req.method(), target)));
            r.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static("yes"));
            r
        })
        .await
    }

    /// An upstream that reads headers the way a CGI/WSGI app does (`HTTP_` + the name upper
    /// cased with `-` → `_`, so `X-Org-Id` and `X_Org_Id` are the same key) and answers 200
    /// with that environ as JSON: each key with every value that could land there (an app
    /// keeps one of them, which one depends on the server).
    pub async fn wsgi() -> Self {
        Self::spawn(|req: Request<Incoming>| async move {
            let body = serde_json::to_string(&wsgi_environ(req.headers())).expect("json");
            Response::new(full(body))
        })
        .await
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The CGI/WSGI view of request headers: `HTTP_X_ORG_ID` → every value sent under any
/// spelling that folds onto it (`Content-Type`/`Content-Length` lose the `HTTP_` prefix, as in
/// CGI).
pub fn wsgi_environ(headers: &HeaderMap) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut env: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in headers {
        let key = name.as_str().to_ascii_uppercase().replace('-', "_");
        let key = match key.as_str() {
            "CONTENT_TYPE" | "CONTENT_LENGTH" => key,
            _ => format!("HTTP_{key}"),
        };
        env.entry(key)
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    env
}

/// A config with ephemeral listeners in front of `upstream`, plus `rest` appended verbatim
/// (routes, default, …). `server_extra` lines are indented into `server:`.
pub fn config(upstream: SocketAddr, server_extra: &str, rest: &str) -> String {
    let extra: String = server_extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect();
    format!(
        "version: 1\nserver:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  upstream: http://{upstream}\n  \
         environment: local\n  require_https: false\n{extra}{rest}"
    )
}

/// A routes block that sends everything under `/` to the upstream.
pub const CATCH_ALL: &str =
    "routes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n";

/// A fortress started in-process from a config file in a temp directory.
pub struct TestFortress {
    /// The running instance.
    pub fx: Fortress,
    /// The temp directory holding the config.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config_path: PathBuf,
}

impl TestFortress {
    /// Writes `yaml` to `DIR/fortress.yaml` and starts fortress on it.
    pub async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("fortress.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let fx = Fortress::start(&config_path)
            .await
            .expect("fortress starts");
        Self {
            fx,
            dir,
            config_path,
        }
    }

    /// Client listener address.
    pub fn addr(&self) -> SocketAddr {
        self.fx.client_addr
    }

    /// Admin listener address.
    pub fn admin(&self) -> SocketAddr {
        self.fx.admin_addr
    }
}

/// A parsed HTTP/1.1 response read from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends raw bytes and reads one response until the server closes the connection.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("response within 20s")
        .expect("read");
    parse_response(&buf)
}

/// Sends raw bytes and reads one response with a `Content-Length` body, without waiting for
/// the server to close the connection (for requests that cannot say `Connection: close`).
pub async fn raw_one(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let r = parse_response(&buf);
                let len: usize = r
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if buf.len() >= end + 4 + len {
                    return;
                }
            }
            if n == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("response within 20s");
    parse_response(&buf)
}

/// `GET target` over a fresh connection with `Connection: close`.
pub async fn get(addr: SocketAddr, target: &str) -> RawResponse {
    get_with(addr, target, &[]).await
}

/// `GET target` with extra header lines.
pub async fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

/// Parses one HTTP/1.1 response (content-length, chunked, or until EOF).
pub fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..nl]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[nl + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// An HTTP/1.1 hyper client connection.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

/// Reads a whole response body.
pub async fn body_bytes(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.expect("body").to_bytes()
}

/// Scrapes the admin `/metrics` and returns the value of the sample `series`
/// (e.g. `fortress_policy_reload_total{result="error"}`).
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let r = get(admin, "/metrics").await;
    let text = r.text();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` until it returns true or `limit` passes (for events with no direct signal,
/// such as a file watcher noticing a change).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The fortress binary running as a child process.
pub struct FortressProcess {
    /// The child.
    pub child: Child,
    /// Client listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Log lines, collected by a reader thread.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl FortressProcess {
    /// Starts `fortress run --config PATH` and waits for its "fortress listening" line.
    pub fn spawn(config: &Path) -> Self {
        let config = config.to_str().expect("utf-8 path");
        Self::spawn_args(&["run", "--config", config])
    }

    /// Starts `fortress ARGS…` and waits for its "fortress listening" line.
    pub fn spawn_args(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fortress"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fortress");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (logs, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("fortress listening") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().expect("lock").push(line);
                }
            });
        }
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("fortress did not start: {:?}", logs.lock().expect("lock")));
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        };
        let (addr, admin) = (field("client"), field("admin"));
        Self {
            child,
            addr,
            admin,
            logs,
        }
    }

    /// Sends a signal (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM")
    }

    /// Current resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("lock").clone()
    }
}

impl Drop for FortressProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client connection trusting `ca_pem`, with ALPN `alpn`.
pub async fn tls_stream(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    try_tls_stream(addr, ca_pem, alpn)
        .await
        .expect("TLS handshake")
}

/// Like [`tls_stream`], but a failed handshake is an `Err`, not a panic.
pub async fn try_tls_stream(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// HTTP/2 client over TLS.
pub async fn h2_tls(
    addr: SocketAddr,
    ca_pem: &str,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    h2_over(tls_stream(addr, ca_pem, &[b"h2"]).await).await
}

/// An HTTP/2 client over an established TLS stream (ALPN must have chosen h2).
pub async fn h2_over(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// A throwaway CA and a `localhost`/127.0.0.1 server certificate signed by it.
pub struct TestCerts {
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// Server certificate chain (PEM).
    pub cert_pem: String,
    /// Server key (PEM).
    pub key_pem: String,
}

impl TestCerts {
    /// Makes a new CA and server certificate; `cn` tells certificates apart.
    pub fn new(cn: &str) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{cn} CA"));
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `server.crt` and `server.key` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("server.crt"), &self.cert_pem).expect("write cert");
        std::fs::write(dir.join("server.key"), &self.key_pem).expect("write key");
    }
}

/// Starts fortress with TLS from `certs` (written as `server.crt`/`server.key` next to the
/// config, referenced by relative paths) in front of `upstream`, with `rest` (routes, …)
/// appended to the config. The directory lives as long as the returned guard.
pub async fn tls_fortress(
    upstream: SocketAddr,
    certs: &TestCerts,
    rest: &str,
) -> (Fortress, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    certs.write(dir.path());
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(upstream, "tls: { cert: server.crt, key: server.key }", rest),
    )
    .expect("write config");
    let fx = Fortress::start(&path).await.expect("fortress starts");
    (fx, dir)
}

/// A clock the test moves: a file holding milliseconds since the epoch, read by fortress on
/// every request (`fortress::clock::Clock::File`). Starts at 2026-01-01T00:00:00Z.
pub struct TestClock {
    dir: tempfile::TempDir,
    now: std::sync::atomic::AtomicU64,
}

impl TestClock {
    /// 2026-01-01T00:00:00Z in ms.
    pub const START: u64 = 1_767_225_600_000;

    /// A clock at [`TestClock::START`].
    pub fn new() -> Self {
        let clock = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            now: std::sync::atomic::AtomicU64::new(0),
        };
        clock.set(Self::START);
        clock
    }

    /// The file fortress reads.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("now")
    }

    /// The clock fortress is given.
    pub fn clock(&self) -> fortress::clock::Clock {
        fortress::clock::Clock::File(self.path())
    }

    /// Now, in ms since the epoch.
    pub fn now(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets now (atomically: written beside, then renamed).
    pub fn set(&self, ms: u64) {
        self.now.store(ms, std::sync::atomic::Ordering::SeqCst);
        let tmp = self.dir.path().join("now.tmp");
        std::fs::write(&tmp, ms.to_string()).expect("write clock");
        std::fs::rename(&tmp, self.path()).expect("rename clock");
    }

    /// Moves now forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.set(self.now() + ms);
    }
}

impl TestFortress {
    /// Like [`TestFortress::start`], with time read from `clock`.
    pub async fn start_with_clock(yaml: &str, clock: &TestClock) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("fortress.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let fx = Fortress::start_with_clock(&config_path, clock.clock())
            .await
            .expect("fortress starts");
        Self {
            fx,
            dir,
            config_path,
        }
    }
}

/// An upstream that reads the whole body and answers with it; records every complete body.
pub async fn body_upstream() -> (Upstream, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let up = Upstream::spawn(move |req| {
        let seen = seen.clone();
        async move {
            match http_body_util::BodyExt::collect(req.into_body()).await {
                Ok(b) => {
                    let b = b.to_bytes();
                    seen.lock().expect("lock").push(b.to_vec());
                    http::Response::new(full(b))
                }
                Err(_) => http::Response::new(full("broken")),
            }
        }
    })
    .await;
    (up, bodies)
}

/// The trace id of fortress's `traceresponse` header (`00-TRACE-SPAN-FLAGS`): what its error
/// bodies carry as `trace_id`.
pub fn trace_id_in(headers: &HeaderMap) -> String {
    let v = headers
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .expect("traceresponse header");
    v.split('-').nth(1).expect("trace id").to_owned()
}

/// [`trace_id_in`] of a raw response.
pub fn trace_id(r: &RawResponse) -> String {
    let v = r.header("traceresponse").expect("traceresponse header");
    v.split('-').nth(1).expect("trace id").to_owned()
}

impl FortressProcess {
    /// Like [`FortressProcess::spawn_args`], with a clean environment plus `env` (and
    /// `RUST_LOG=info`): the startup checks see only what the test sets.
    pub fn spawn_args_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortress"));
        cmd.args(args).env_clear().env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fortress");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (logs, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().expect("lock").push(line.clone());
                    if line.contains("fortress listening") {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("fortress did not start: {:?}", logs.lock().expect("lock")));
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        };
        let (addr, admin) = (field("client"), field("admin"));
        Self {
            child,
            addr,
            admin,
            logs,
        }
    }
}

/// Every audit record in `dir` (all `audit-*.jsonl` files, oldest first, in order).
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a record is JSON"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A real redis-server for the shared-state tests.
pub mod redis;
