//! Traces end to end: W3C trace context through a real fortress (a trusted peer's
//! `traceparent` kept with its sampled flag, fortress's span id forwarded upstream, the
//! `traceresponse` header, `trace_id` in error bodies), OTLP/HTTP export to a test collector
//! (a real HTTP server decoding the OTLP JSON it receives), and a dead or hung collector that
//! never holds up a request.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::Notify;

const SECRET: &str = "otel-test-secret-0123456789abcdef-xyz";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// One OTLP/HTTP request the collector received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Value,
}

/// A test OTLP/HTTP collector: accepts `POST /v1/traces` with OTLP JSON and answers `{}`.
struct Collector {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
    arrived: Arc<Notify>,
}

impl Collector {
    async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (p, a) = (posts.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (p, a) = (p.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (p, a) = (p.clone(), a.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_owned();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let bytes = req.into_body().collect().await.expect("body").to_bytes();
                            let body: Value = serde_json::from_slice(&bytes).expect("OTLP JSON");
                            p.lock().expect("lock").push(Post {
                                path,
                                content_type,
                                body,
                            });
                            a.notify_waiters();
                            Ok::<_, std::convert::Infallible>(Response::new(full("{}")))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            posts,
            arrived,
        }
    }

    /// Every span received so far, with its resource's attributes.
    fn spans(&self) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        for post in self.posts.lock().expect("lock").iter() {
            for rs in post.body["resourceSpans"]
                .as_array()
                .expect("resourceSpans")
            {
                for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
                    for s in ss["spans"].as_array().expect("spans") {
                        out.push((rs["resource"]["attributes"].clone(), s.clone()));
                    }
                }
            }
        }
        out
    }

    /// The spans of `trace_id`, once `n` of them arrived (server first, then by start).
    async fn wait_spans(&self, trace_id: &str, n: usize) -> Vec<Value> {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let mut spans: Vec<Value> = self
                    .spans()
                    .into_iter()
                    .map(|(_, s)| s)
                    .filter(|s| s["traceId"] == trace_id)
                    .collect();
                if spans.len() >= n {
                    spans.sort_by_key(|s| (s["kind"] != 2, s["startTimeUnixNano"].to_string()));
                    return spans;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the collector received the spans within 30s")
    }
}

fn policy(collector: SocketAddr, secret_file: &str, telemetry_extra: &str) -> String {
    format!(
        "telemetry:\n  otlp_endpoint: http://{collector}\n  service_name: fortress-test\n{telemetry_extra}\
         authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ file: \"{secret_file}\" }}\n\
         routes:\n  - name: items\n    match: {{ methods: [GET], path: \"/api/items/{{id}}\" }}\n  \
         - name: health\n    match: {{ path: /health }}\n    public: true\n"
    )
}

struct Setup {
    up: Upstream,
    fx: TestFortress,
    _dir: tempfile::TempDir,
}

/// Fortress in front of an echo upstream, exporting to `collector`; `trusted`: the loopback
/// client is a trusted proxy (its `traceparent` is kept).
async fn start(collector: SocketAddr, trusted: bool, telemetry_extra: &str) -> Setup {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let server = if trusted {
        "allow_insecure_local: true\ntrusted_proxies: [127.0.0.0/8]"
    } else {
        "allow_insecure_local: true"
    };
    let yaml = config(
        up.addr,
        server,
        &policy(collector, &secret.display().to_string(), telemetry_extra),
    );
    let fx = TestFortress::start(&yaml).await;
    Setup { up, fx, _dir: dir }
}

fn token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims =
        json!({"sub": "alice", "roles": ["reader"], "iss": "iss", "aud": "aud", "exp": now + 600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// `00-TRACE-SPAN-FLAGS` → (trace, span, flags), checked for shape.
fn split_traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00", "{v}");
    let hex = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2),
        "{v}"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn attrs(span: &Value) -> Value {
    let mut map = serde_json::Map::new();
    for a in span["attributes"].as_array().expect("attributes") {
        let v = &a["value"];
        let v = v
            .get("stringValue")
            .cloned()
            .or_else(|| v.get("intValue").cloned())
            .expect("string or int value");
        map.insert(a["key"].as_str().expect("key").to_owned(), v);
    }
    Value::Object(map)
}

fn nanos(span: &Value, field: &str) -> u128 {
    span[field]
        .as_str()
        .expect("nanos as a string")
        .parse()
        .expect("nanos")
}

#[tokio::test]
async fn trusted_traceparent_is_kept_and_the_request_spans_are_exported() {
    let collector = Collector::spawn().await;
    let s = start(collector.addr, true, "").await;
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let bearer = format!("Bearer {}", token());
    let r = get_with(
        s.fx.addr(),
        "/api/items/./42",
        &[("traceparent", &incoming), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /api/items/42");

    // The client learns fortress's span: same trace, fortress's span id, sampled.
    let (trace, span, flags) = split_traceparent(r.header("traceresponse").expect("traceresponse"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(span, PARENT);
    // The upstream's parent is fortress's span.
    let seen = s.up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["traceparent"],
        format!("00-{TRACE}-{span}-01").as_str()
    );

    let spans = collector.wait_spans(TRACE, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (server, children) = (&spans[0], &spans[1..]);
    assert_eq!(server["spanId"], span.as_str());
    assert_eq!(server["parentSpanId"], PARENT);
    assert_eq!(server["name"], "GET /api/items/{id}");
    assert_eq!(server["kind"], 2);
    assert_eq!(server["status"], json!({}));
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        attrs(server),
        json!({
            "http.request.method": "GET",
            "fortress.decision": "allow",
            "fortress.request_id": rid,
            "fortress.route": "items",
            "url.path": "/api/items/42",
            "http.route": "/api/items/{id}",
            "http.response.status_code": "200",
        })
    );
    let authn = children
        .iter()
        .find(|c| c["name"] == "authenticate")
        .expect("authentication span");
    let upstream = children
        .iter()
        .find(|c| c["name"] == "GET upstream")
        .expect("upstream span");
    for child in [authn, upstream] {
        assert_eq!(child["parentSpanId"], span.as_str());
        assert_eq!(child["traceId"], TRACE);
        assert_ne!(child["spanId"], span.as_str());
        assert_eq!(child["status"], json!({}));
    }
    assert_ne!(authn["spanId"], upstream["spanId"]);
    assert_eq!(authn["kind"], 1);
    assert_eq!(upstream["kind"], 3);
    assert_eq!(
        attrs(upstream),
        json!({"http.request.method": "GET", "url.path": "/api/items/42"})
    );
    // Authentication, then the upstream call, both within the server span.
    let order = [
        nanos(server, "startTimeUnixNano"),
        nanos(authn, "startTimeUnixNano"),
        nanos(authn, "endTimeUnixNano"),
        nanos(upstream, "startTimeUnixNano"),
        nanos(upstream, "endTimeUnixNano"),
        nanos(server, "endTimeUnixNano"),
    ];
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");

    // What the collector was sent: OTLP/HTTP JSON on /v1/traces, with the service name.
    let posts = collector.posts.lock().expect("lock").clone();
    assert!(!posts.is_empty());
    for p in &posts {
        assert_eq!(p.path, "/v1/traces");
        assert_eq!(p.content_type, "application/json");
    }
    let (resource, _) = collector.spans().into_iter().next().expect("a span");
    assert!(
        resource
            .as_array()
            .expect("attributes")
            .contains(&json!({"key": "service.name", "value": {"stringValue": "fortress-test"}})),
        "{resource}"
    );
}

#[tokio::test]
async fn refusal_carries_the_trace_id_and_its_span_says_why() {
    let collector = Collector::spawn().await;
    // Not a trusted peer: its traceparent is ignored, a new trace starts.
    let s = start(collector.addr, false, "").await;
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = get_with(s.fx.addr(), "/api/items/7", &[("traceparent", &incoming)]).await;
    assert_eq!(r.status, 401);
    let (trace, span, flags) = split_traceparent(r.header("traceresponse").expect("traceresponse"));
    assert_ne!(trace, TRACE);
    assert_eq!(flags, "01");
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "unauthorized", "reason": "missing_token", "request_id": rid, "trace_id": trace})
    );
    assert_eq!(s.up.hits(), 0);

    let spans = collector.wait_spans(&trace, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (server, authn) = (&spans[0], &spans[1]);
    assert_eq!(server["spanId"], span.as_str());
    assert_eq!(
        server.get("parentSpanId"),
        None,
        "a new trace has no parent"
    );
    assert_eq!(
        attrs(server),
        json!({
            "http.request.method": "GET",
            "fortress.decision": "deny",
            "fortress.request_id": rid,
            "fortress.route": "items",
            "url.path": "/api/items/7",
            "http.route": "/api/items/{id}",
            "http.response.status_code": "401",
            "fortress.reason": "missing_token",
        })
    );
    // A 4xx is the client's error, not the server span's; the failed authentication is.
    assert_eq!(server["status"], json!({}));
    assert_eq!(authn["name"], "authenticate");
    assert_eq!(authn["parentSpanId"], span.as_str());
    assert_eq!(authn["status"], json!({"code": 2}));
}

#[tokio::test]
async fn unsampled_parent_is_kept_and_nothing_is_exported() {
    let collector = Collector::spawn().await;
    let s = start(collector.addr, true, "").await;
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    let r = get_with(s.fx.addr(), "/health", &[("traceparent", &unsampled)]).await;
    assert_eq!(r.status, 200);
    let (trace, span, flags) = split_traceparent(r.header("traceresponse").expect("traceresponse"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "00"));
    assert_eq!(
        s.up.requests()[0].headers["traceparent"],
        format!("00-{TRACE}-{span}-00").as_str()
    );

    // A sampled request after it: once its spans are in, the unsampled one would have been
    // exported before them (one queue, in order) had it been recorded.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let sampled = format!("00-{other}-b7ad6b7169203331-01");
    let r = get_with(s.fx.addr(), "/health", &[("traceparent", &sampled)]).await;
    assert_eq!(r.status, 200);
    let spans = collector.wait_spans(other, 2).await;
    // A public route: no authentication span; the upstream call is one.
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(spans[1]["name"], "GET upstream");
    assert!(
        collector.spans().iter().all(|(_, s)| s["traceId"] != TRACE),
        "an unsampled trace was exported"
    );
}

#[tokio::test]
async fn sampler_always_off_still_forwards_trace_context() {
    let collector = Collector::spawn().await;
    let s = start(collector.addr, false, "  sampler: always_off\n").await;
    let r = get(s.fx.addr(), "/health").await;
    assert_eq!(r.status, 200);
    let (trace, span, flags) = split_traceparent(r.header("traceresponse").expect("traceresponse"));
    assert_eq!(flags, "00");
    assert_eq!(
        s.up.requests()[0].headers["traceparent"],
        format!("00-{trace}-{span}-00").as_str()
    );
    let stats = s.fx.fx.state.telemetry.as_ref().expect("exporter").stats();
    assert_eq!(stats.dropped, 0);
}

/// `n` requests through fortress, each answered, all within a generous bound.
async fn requests_complete(s: &Setup, n: usize) {
    let all = async {
        for i in 0..n {
            let r = get(s.fx.addr(), &format!("/health?i={i}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), format!("upstream saw GET /health?i={i}"));
            assert!(r.header("traceresponse").is_some());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("requests complete whatever the collector does");
    assert_eq!(s.up.hits(), n);
}

#[tokio::test]
async fn dead_collector_never_fails_a_request() {
    // A closed port: every export call is refused at once.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let s = start(closed, false, "").await;
    requests_complete(&s, 20).await;
    let exporter = s.fx.fx.state.telemetry.clone().expect("exporter");
    assert!(
        eventually(Duration::from_secs(30), || {
            let e = exporter.clone();
            async move { e.stats().failed > 0 }
        })
        .await,
        "export failures are counted"
    );
    assert_eq!(exporter.stats().exported, 0);
    // The counters are on /metrics.
    let failed = metric(
        s.fx.admin(),
        r#"fortress_otlp_spans_total{result="failed"}"#,
    )
    .await;
    assert!(failed.is_some_and(|f| f >= 1.0), "{failed:?}");
    assert_eq!(
        metric(
            s.fx.admin(),
            r#"fortress_otlp_spans_total{result="exported"}"#
        )
        .await,
        Some(0.0)
    );
    // Shutdown is not held up by the dead collector.
    s.fx.fx.shutdown();
    assert!(
        tokio::time::timeout(Duration::from_secs(60), s.fx.fx.wait())
            .await
            .expect("shutdown completes")
    );
}

#[tokio::test]
async fn hung_collector_never_delays_a_request_and_a_full_queue_drops() {
    // A collector that accepts connections and never answers (nor reads).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    let accepted = Arc::new(Notify::new());
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            h.lock().expect("lock").push(tcp);
            a.notify_one();
        }
    });
    let s = start(addr, false, "  queue: 1\n").await;
    requests_complete(&s, 20).await;
    // The exporter connected (and waits for an answer that never comes).
    tokio::time::timeout(Duration::from_secs(30), accepted.notified())
        .await
        .expect("the exporter connected to the collector");
    let exporter = s.fx.fx.state.telemetry.clone().expect("exporter");
    let stats = exporter.stats();
    assert_eq!(stats.exported, 0);
    // One queue slot, one batch in flight: most of the 20 requests' spans were dropped.
    assert!(stats.dropped > 0, "{stats:?}");
    let dropped = metric(
        s.fx.admin(),
        r#"fortress_otlp_spans_total{result="dropped"}"#,
    )
    .await;
    assert!(
        dropped.is_some_and(|d| d >= stats.dropped as f64),
        "{dropped:?}"
    );
    s.fx.fx.shutdown();
    assert!(
        tokio::time::timeout(Duration::from_secs(60), s.fx.fx.wait())
            .await
            .expect("shutdown completes within its flush bound")
    );
}

/// No `OTEL_*` variables, whatever the test process has.
struct NoEnv;

impl fortress::config::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

#[test]
fn telemetry_block_is_checked() {
    let path = std::path::Path::new("/tmp/fortress.yaml");
    let base = "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
                environment: local\n  require_https: false\n";
    for (block, expected) in [
        (
            "telemetry:\n  otlp_endpoint: http://c:4318\n  sampler: sometimes\n",
            "fortress.yaml:9:12: unknown sampler `sometimes`",
        ),
        (
            "telemetry:\n  ratio: 2\n",
            "fortress.yaml:8:10: `ratio` must be between 0 and 1",
        ),
        (
            "telemetry:\n  otlp_endpoint: https://c:4318\n",
            "fortress.yaml:8:18: `otlp_endpoint`: `https://c:4318/v1/traces`: fortress exports over plain HTTP only",
        ),
        (
            "telemetry:\n  endpoint: x\n",
            "fortress.yaml:8:3: unknown key `endpoint`, expected one of: otlp_endpoint, service_name, sampler, ratio, queue",
        ),
    ] {
        let text = format!("{base}{block}");
        let err = fortress::config::load_str_with_env(&text, path, &NoEnv)
            .expect_err(block)
            .to_string();
        assert!(err.contains(expected), "{block}: {err}");
    }
    let ok = fortress::config::load_str_with_env(
        &format!("{base}telemetry:\n  otlp_endpoint: http://c:4318/\n  sampler: parentbased_traceidratio\n  ratio: 0.5\n"),
        path,
        &NoEnv,
    )
    .expect("valid");
    let otlp = ok.telemetry.otlp.expect("export on");
    assert_eq!(otlp.endpoint, "http://c:4318/v1/traces");
    assert_eq!(otlp.service_name, "fortress");
    assert_eq!(
        ok.telemetry.sampler,
        fortress::policy::telemetry::Sampler::ParentBased(
            fortress::policy::telemetry::Root::TraceIdRatio(0.5)
        )
    );
}

#[tokio::test]
async fn shutdown_flushes_the_queued_spans() {
    let collector = Collector::spawn().await;
    let s = start(collector.addr, false, "").await;
    let r = get(s.fx.addr(), "/health").await;
    assert_eq!(r.status, 200);
    let (trace, span, _) = split_traceparent(r.header("traceresponse").expect("traceresponse"));
    // At once: the batch is still waiting to fill when shutdown starts.
    s.fx.fx.shutdown();
    assert!(
        tokio::time::timeout(Duration::from_secs(60), s.fx.fx.wait())
            .await
            .expect("shutdown completes")
    );
    // Sent before the shutdown finished: already there, no waiting.
    let spans: Vec<Value> = collector
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s["traceId"] == trace.as_str())
        .collect();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(spans[0]["spanId"], span.as_str());
}

#[tokio::test]
async fn trace_context_without_export() {
    // No `telemetry:` block (and no OTEL_* variables in the test environment): no exporter,
    // trace context as always.
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "trusted_proxies: [127.0.0.0/8]",
        CATCH_ALL,
    ))
    .await;
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        assert!(fx.fx.state.telemetry.is_none());
        let metrics = get(fx.admin(), "/metrics").await.text();
        assert!(
            !metrics.contains("fortress_otlp"),
            "no export, no export metrics"
        );
    }
    for flags in ["00", "01"] {
        let incoming = format!("00-{TRACE}-{PARENT}-{flags}");
        let r = get_with(fx.addr(), "/x", &[("traceparent", &incoming)]).await;
        assert_eq!(r.status, 200);
        let (trace, span, back) =
            split_traceparent(r.header("traceresponse").expect("traceresponse"));
        assert_eq!((trace.as_str(), back.as_str()), (TRACE, flags));
        let seen = up.requests().pop().expect("forwarded");
        assert_eq!(
            seen.headers["traceparent"],
            format!("00-{TRACE}-{span}-{flags}").as_str()
        );
    }
    // A refusal carries it too (404: no route), in the header and the body.
    let fx404 = TestFortress::start(&config(up.addr, "", "")).await;
    let r = get(fx404.addr(), "/nothing").await;
    assert_eq!(r.status, 404);
    let (trace, _, flags) = split_traceparent(r.header("traceresponse").expect("traceresponse"));
    assert_eq!(flags, "01");
    assert_eq!(r.json()["trace_id"], trace.as_str());
}
