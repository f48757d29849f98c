//! The OTLP/HTTP JSON exporter: a bounded queue of finished requests' spans, one background
//! task that batches them and POSTs `ExportTraceServiceRequest` JSON to the collector with
//! the existing hyper client. A full queue drops (and counts); a slow or dead collector only
//! delays this task (each call is bounded by the export timeout); shutdown flushes within a
//! bound. See docs/tracing.md for why this is not the `opentelemetry` SDK.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::Finished;
use crate::policy::telemetry::OtlpSettings;

/// The spans of one finished request.
#[derive(Debug)]
pub struct Trace {
    /// 32 lower-case hex digits.
    pub trace_id: [u8; 32],
    /// The server span first, then its children.
    pub spans: Vec<Span>,
}

/// One span.
#[derive(Debug)]
pub struct Span {
    /// 16 lower-case hex digits.
    pub span_id: [u8; 16],
    /// The parent's span id.
    pub parent_span_id: Option<[u8; 16]>,
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: Kind,
    /// Unix nanoseconds.
    pub start: u64,
    /// Unix nanoseconds.
    pub end: u64,
    /// Attributes.
    pub attrs: Vec<Attr>,
    /// Status `ERROR` (else unset).
    pub error: bool,
}

/// OTLP span kinds used here.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `SPAN_KIND_INTERNAL`.
    Internal = 1,
    /// `SPAN_KIND_SERVER`.
    Server = 2,
    /// `SPAN_KIND_CLIENT`.
    Client = 3,
}

/// An attribute.
#[derive(Debug)]
pub struct Attr {
    key: &'static str,
    value: AttrValue,
}

#[derive(Debug)]
enum AttrValue {
    Str(String),
    Int(i64),
}

impl Attr {
    /// A string attribute.
    pub fn str(key: &'static str, value: &str) -> Self {
        Self {
            key,
            value: AttrValue::Str(value.to_owned()),
        }
    }

    /// An integer attribute (OTLP JSON encodes 64-bit integers as strings).
    pub fn int(key: &'static str, value: i64) -> Self {
        Self {
            key,
            value: AttrValue::Int(value),
        }
    }
}

/// A 16-hex-digit id as a byte array (invalid input gives zeros, which collectors reject:
/// ids here always come from `pipeline::ids`).
pub fn hex8(s: &str) -> [u8; 16] {
    <[u8; 16]>::try_from(s.as_bytes()).unwrap_or([b'0'; 16])
}

/// A 32-hex-digit id as a byte array.
pub fn hex16(s: &str) -> [u8; 32] {
    <[u8; 32]>::try_from(s.as_bytes()).unwrap_or([b'0'; 32])
}

/// A new random span id (16 lower-case hex digits; aws-lc's CSPRNG, or zeros' replacement
/// from the time should it fail: a span id is no secret, only unique in practice).
pub fn random_span_id() -> [u8; 16] {
    let mut random = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        random = (t as u64 | 1).to_le_bytes();
    }
    let mut out = [b'0'; 16];
    for (pair, b) in out.chunks_mut(2).zip(random) {
        if let [hi, lo] = pair {
            *hi = HEX[usize::from(b >> 4)];
            *lo = HEX[usize::from(b & 0xf)];
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn id_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

/// Export counters (spans).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExporterStats {
    /// Accepted by the collector.
    pub exported: u64,
    /// Dropped because the queue was full.
    pub dropped: u64,
    /// Lost to a failed export call (refused, unreachable, timed out).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// The queue is full (one log line per change, not per request).
    dropping: AtomicBool,
}

/// The exporter: the queue's sending side and the background task.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Finished>,
    counters: Arc<Counters>,
    stop: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Exporter {
    /// Starts the background task (on the current Tokio runtime).
    pub fn start(settings: &OtlpSettings) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(settings.queue);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(Notify::new());
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        let task = tokio::spawn(run(
            rx,
            Sender {
                client,
                settings: settings.clone(),
                body_prefix: resource_prefix(&settings.service_name),
                counters: counters.clone(),
                healthy: true,
            },
            stop.clone(),
        ));
        tracing::info!(
            endpoint = %settings.endpoint,
            service.name = %settings.service_name,
            "OTLP trace export on"
        );
        Arc::new(Self {
            tx,
            counters,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Queues a finished request's spans; never waits. A full queue drops them (counted).
    pub fn submit(&self, finished: Finished) {
        let n = finished.span_count();
        match self.tx.try_send(finished) {
            Ok(()) => {
                if self.counters.dropping.load(Ordering::Relaxed)
                    && self.counters.dropping.swap(false, Ordering::Relaxed)
                {
                    tracing::info!("OTLP export queue has room again: spans are queued");
                }
            }
            Err(_) => {
                self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                if !self.counters.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "OTLP export queue full (collector slow or down): spans are dropped"
                    );
                }
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ExporterStats {
        ExporterStats {
            exported: self.counters.exported.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Exports what is queued, then stops; gives up (dropping the rest) after `bound`.
    pub async fn shutdown(&self, bound: Duration) {
        self.stop.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let Some(task) = task else { return };
        let abort = task.abort_handle();
        if tokio::time::timeout(bound, task).await.is_err() {
            abort.abort();
            tracing::warn!(
                bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                "OTLP export not flushed at shutdown in time: the rest of the spans are dropped"
            );
        }
    }
}

/// Batches and sends until stopped, then flushes what is queued.
async fn run(mut rx: mpsc::Receiver<Finished>, mut sender: Sender, stop: Arc<Notify>) {
    let batch = sender.settings.batch.max(1);
    // Grown by `recv_many` as needed: a large configured batch reserves nothing up front.
    let mut buf: Vec<Finished> = Vec::with_capacity(batch.min(64));
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            biased;
            () = stop.notified() => break,
            n = rx.recv_many(&mut buf, batch) => if n == 0 { break },
        }
        // Wait a little for the batch to fill: fewer, larger calls.
        let deadline = tokio::time::Instant::now() + sender.settings.delay;
        while buf.len() < batch {
            let room = batch - buf.len();
            tokio::select! {
                biased;
                () = stop.notified() => { stopping = true; break }
                () = tokio::time::sleep_until(deadline) => break,
                n = rx.recv_many(&mut buf, room) => if n == 0 { stopping = true; break },
            }
        }
        sender.send(&mut buf).await;
    }
    // Shutdown: what is already queued goes out (bounded by `Exporter::shutdown`).
    rx.close();
    while let Some(t) = rx.recv().await {
        buf.push(t);
        if buf.len() >= batch {
            sender.send(&mut buf).await;
        }
    }
    if !buf.is_empty() {
        sender.send(&mut buf).await;
    }
}

struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    settings: OtlpSettings,
    /// `{"resourceSpans":[{"resource":…,"scopeSpans":[{"scope":…,"spans":` (fixed).
    body_prefix: String,
    counters: Arc<Counters>,
    /// The last call succeeded (one log line per change, not per batch).
    healthy: bool,
}

impl Sender {
    async fn send(&mut self, buf: &mut Vec<Finished>) {
        if buf.is_empty() {
            return;
        }
        let traces: Vec<Trace> = buf.drain(..).map(Finished::into_trace).collect();
        let spans: u64 = traces.iter().map(|t| t.spans.len() as u64).sum();
        let body = self.encode(&traces);
        let result = tokio::time::timeout(self.settings.timeout, self.post(body)).await;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("timed out".to_owned()),
        };
        match error {
            None => {
                self.counters.exported.fetch_add(spans, Ordering::Relaxed);
                if !self.healthy {
                    self.healthy = true;
                    tracing::info!(endpoint = %self.settings.endpoint, "OTLP export recovered");
                }
            }
            Some(e) => {
                self.counters.failed.fetch_add(spans, Ordering::Relaxed);
                if self.healthy {
                    self.healthy = false;
                    tracing::warn!(
                        endpoint = %self.settings.endpoint,
                        error = %e,
                        "OTLP export failing: spans are lost until the collector answers"
                    );
                }
            }
        }
    }

    async fn post(&self, body: String) -> Result<(), String> {
        let req = http::Request::post(self.settings.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the (small) answer so the connection can be reused.
        let _answer = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}"))
        }
    }

    /// `ExportTraceServiceRequest` in the OTLP JSON encoding (hex ids, integers as strings).
    fn encode(&self, buf: &[Trace]) -> String {
        let mut body = String::with_capacity(self.body_prefix.len() + 640 * buf.len());
        body.push_str(&self.body_prefix);
        body.push('[');
        let mut first = true;
        for t in buf {
            for s in &t.spans {
                if !first {
                    body.push(',');
                }
                first = false;
                write_span(&mut body, &t.trace_id, s);
            }
        }
        body.push_str("]}]}]}");
        body
    }
}

/// One span in the OTLP JSON encoding, written directly (no intermediate JSON tree: this
/// runs for every exported span). Ids are hex digits and keys are constants; every string
/// from a request goes through serde_json's escaping.
fn write_span(out: &mut String, trace_id: &[u8; 32], s: &Span) {
    use std::fmt::Write;
    out.push_str(r#"{"traceId":""#);
    out.push_str(id_str(trace_id));
    out.push_str(r#"","spanId":""#);
    out.push_str(id_str(&s.span_id));
    out.push('"');
    if let Some(p) = &s.parent_span_id {
        out.push_str(r#","parentSpanId":""#);
        out.push_str(id_str(p));
        out.push('"');
    }
    out.push_str(r#","name":"#);
    push_json_str(out, &s.name);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        r#","kind":{},"startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":["#,
        s.kind as u8, s.start, s.end
    );
    for (i, a) in s.attrs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"key":"#);
        push_json_str(out, a.key);
        match &a.value {
            AttrValue::Str(v) => {
                out.push_str(r#","value":{"stringValue":"#);
                push_json_str(out, v);
                out.push_str("}}");
            }
            AttrValue::Int(n) => {
                let _ = write!(out, r#","value":{{"intValue":"{n}"}}}}"#);
            }
        }
    }
    out.push_str(if s.error {
        r#"],"status":{"code":2}}"#
    } else {
        r#"],"status":{}}"#
    });
}

/// A JSON string literal (quoted and escaped).
fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str(r#""""#),
    }
}

fn resource_prefix(service_name: &str) -> String {
    let resource = json!({
        "attributes": [
            {"key": "service.name", "value": {"stringValue": service_name}},
            {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
            {"key": "telemetry.sdk.name", "value": {"stringValue": "fortress"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "rust"}},
        ]
    });
    let scope = json!({"name": "fortress", "version": env!("CARGO_PKG_VERSION")});
    format!(
        r#"{{"resourceSpans":[{{"resource":{resource},"scopeSpans":[{{"scope":{scope},"spans":"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn encoding_is_otlp_json() {
        let settings = OtlpSettings {
            endpoint: "http://127.0.0.1:1/v1/traces".parse().expect("uri"),
            service_name: "svc \"quoted\"".into(),
            queue: 1,
            batch: 1,
            delay: Duration::from_millis(1),
            timeout: Duration::from_millis(1),
        };
        let sender = Sender {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            body_prefix: resource_prefix(&settings.service_name),
            settings,
            counters: Arc::default(),
            healthy: true,
        };
        let trace = Trace {
            trace_id: hex16("4bf92f3577b34da6a3ce929d0e0e4736"),
            spans: vec![Span {
                span_id: hex8("00f067aa0ba902b7"),
                parent_span_id: Some(hex8("1111111111111111")),
                name: "GET /a/{id}".into(),
                kind: Kind::Server,
                start: 1,
                end: 2,
                attrs: vec![
                    Attr::str("url.path", "/a/\"x\""),
                    Attr::int("http.response.status_code", 200),
                ],
                error: false,
            }],
        };
        let second = Trace {
            trace_id: hex16("0af7651916cd43dd8448eb211c80319c"),
            spans: vec![Span {
                span_id: hex8("b7ad6b7169203331"),
                parent_span_id: None,
                name: "POST \u{1}\n\\é".into(),
                kind: Kind::Client,
                start: u64::MAX,
                end: u64::MAX,
                attrs: vec![Attr::int("n", -1)],
                error: true,
            }],
        };
        let body: Value = serde_json::from_str(&sender.encode(&[trace, second])).expect("json");
        assert_eq!(
            body,
            json!({"resourceSpans": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "svc \"quoted\""}},
                    {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
                    {"key": "telemetry.sdk.name", "value": {"stringValue": "fortress"}},
                    {"key": "telemetry.sdk.language", "value": {"stringValue": "rust"}},
                ]},
                "scopeSpans": [{
                    "scope": {"name": "fortress", "version": env!("CARGO_PKG_VERSION")},
                    "spans": [{
                        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                        "spanId": "00f067aa0ba902b7",
                        "parentSpanId": "1111111111111111",
                        "name": "GET /a/{id}",
                        "kind": 2,
                        "startTimeUnixNano": "1",
                        "endTimeUnixNano": "2",
                        "attributes": [
                            {"key": "url.path", "value": {"stringValue": "/a/\"x\""}},
                            {"key": "http.response.status_code", "value": {"intValue": "200"}},
                        ],
                        "status": {},
                    }, {
                        "traceId": "0af7651916cd43dd8448eb211c80319c",
                        "spanId": "b7ad6b7169203331",
                        "name": "POST \u{1}\n\\é",
                        "kind": 3,
                        "startTimeUnixNano": "18446744073709551615",
                        "endTimeUnixNano": "18446744073709551615",
                        "attributes": [{"key": "n", "value": {"intValue": "-1"}}],
                        "status": {"code": 2},
                    }],
                }],
            }]})
        );
    }
}
