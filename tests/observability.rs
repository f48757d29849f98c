//! The shipped Grafana dashboard and Prometheus alert rules against a real fortress: every
//! metric name they reference is exported by a running instance (TLS, JWKS, a stream route,
//! the audit trail on), the dashboard is valid JSON with panels, the rules file has the
//! shape Prometheus expects (`.ci/run` also runs `promtool check rules` and `promtool test
//! rules`), the Helm templates ship both, and docs/observability.md names every metric.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde::Deserialize;
use serde_json::Value;
use support::*;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("helm/fortress-sidecar/dashboards/fortress.json"))
        .expect("the dashboard is valid JSON")
}

/// A Prometheus rules file, strictly: an unknown or misspelled key is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules_text() -> String {
    read("helm/fortress-sidecar/dashboards/fortress-alerts.yaml")
}

fn rules() -> RulesFile {
    serde_saphyr::from_str(&rules_text()).expect("the rules file is valid YAML of rule groups")
}

/// Every PromQL expression of the dashboard: panel targets and templating queries.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression references (`fortress_…`, `process_…`), outside
/// quoted label values.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut unquoted = String::with_capacity(expr.len());
    let mut in_quote = false;
    for c in expr.chars() {
        if c == '"' {
            in_quote = !in_quote;
            unquoted.push(' ');
        } else if !in_quote {
            unquoted.push(c);
        }
    }
    for word in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("fortress_") || word.starts_with("process_") {
            names.insert(word.to_owned());
        }
    }
    names
}

/// The sample names of a scrape (histograms as `_bucket`, `_sum`, `_count`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The family names of a scrape (`# TYPE` lines).
fn families(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Referenced names the scrape does not export.
fn missing(referenced: &BTreeSet<String>, scrape: &BTreeSet<String>) -> Vec<String> {
    referenced.difference(scrape).cloned().collect()
}

const STREAMS: &str = "
streams:
  chat:
    order: [thinking, end]
    required: [end]
    terminal: [end]
routes:
  - name: ask
    match: { methods: [POST], path: /api/ask }
    public: true
    stream: chat
  - name: open
    match: { path: \"/open/**\" }
    public: true
  - name: private
    match: { path: \"/private/**\" }
";

/// `notAfter` of rcgen's default validity (4096-01-01T00:00:00Z), which `TestCerts` keeps.
const TEST_CERT_NOT_AFTER: f64 = 67_090_118_400.0;

/// Starts fortress with TLS, a JWKS file, a stream route and the audit trail on; sends
/// an allowed request, a refused one and a stream that breaks its rules; returns the scrape.
async fn scrape_of_a_busy_fortress() -> String {
    let up = Upstream::spawn(|req: Request<Incoming>| async move {
        if req.uri().path() == "/api/ask" {
            let mut r = Response::new(full("this is not json\n"));
            r.headers_mut().insert(
                "content-type",
                "application/x-ndjson".parse().expect("header value"),
            );
            return r;
        }
        Response::new(full("ok"))
    })
    .await;
    let certs = TestCerts::new("observability");
    let dir = tempfile::tempdir().expect("tempdir");
    certs.write(dir.path());
    let jwk = read("tests/keys/rsa.jwk.json");
    std::fs::write(
        dir.path().join("jwks.json"),
        format!(r#"{{"keys":[{jwk}]}}"#),
    )
    .expect("write jwks");
    let auth = "authentication:\n  jwt:\n    issuer: https://issuer.example\n    \
                audiences: [api]\n    algorithms: [RS256]\n    jwks: { file: jwks.json }\n";
    // The audit trail records the startup and (strict: before the response) the refusal.
    let audit = "audit:\n  dir: audit\n  include: [denied]\n  durability: strict\n";
    let yaml = config(
        up.addr,
        "tls: { cert: server.crt, key: server.key }",
        &format!("{audit}{auth}{STREAMS}"),
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let fx = fortress::Fortress::start(&path)
        .await
        .expect("fortress starts");

    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let send = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(full(Bytes::new()))
            .expect("request")
    };
    let r = h2
        .send_request(send("GET", "/open/x"))
        .await
        .expect("response");
    assert_eq!(r.status(), 200);
    assert_eq!(body_bytes(r).await, "ok");
    let r = h2
        .send_request(send("GET", "/private/x"))
        .await
        .expect("response");
    assert_eq!(r.status(), 401);
    let refused: Value = serde_json::from_slice(&body_bytes(r).await).expect("json body");
    assert_eq!(refused["reason"], "missing_token");
    let r = h2
        .send_request(send("POST", "/api/ask"))
        .await
        .expect("response");
    assert_eq!(r.status(), 200);
    // The guard ends the stream with its error line; read to the end so the violation is
    // counted before the scrape.
    let mut body = r.into_body();
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            text.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8(text).expect("utf-8");
    assert!(
        !text.contains("this is not json"),
        "the bad line is not forwarded: {text}"
    );
    assert_eq!(up.hits(), 2, "the refused request never reached the app");

    let scrape = get(fx.admin_addr, "/metrics").await;
    assert_eq!(scrape.status, 200);
    let text = scrape.text();
    drop(fx);
    text
}

fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    let mut referenced: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let rules = rules();
    for rule in rules.groups.iter().flat_map(|g| &g.rules) {
        referenced.extend(metric_names(&rule.expr));
    }
    // What the dashboard and rules promise to show, at least.
    for name in [
        "fortress_requests_total",
        "fortress_refusals_total",
        "fortress_request_duration_seconds_bucket",
        "fortress_request_ttfb_seconds_bucket",
        "fortress_upstream_response_seconds_bucket",
        "fortress_stream_violations_total",
        "fortress_policy_reload_total",
        "fortress_policy_last_reload_successful",
        "fortress_audit_sink_up",
        "fortress_audit_queue_depth",
        "fortress_audit_records_refused_total",
        "fortress_audit_records_written_total",
        "fortress_budget_warnings_total",
        "fortress_tls_cert_expiry_timestamp_seconds",
        "fortress_jwks_age_seconds",
        "fortress_store_up",
        "process_resident_memory_bytes",
    ] {
        assert!(referenced.contains(name), "nothing references {name}");
    }

    let scrape = scrape_of_a_busy_fortress().await;
    let names = exported(&scrape);
    assert_eq!(
        missing(&referenced, &names),
        Vec::<String>::new(),
        "referenced by the dashboard or the alert rules but not exported"
    );
    // The check itself: a misspelled name is caught, and so is a name inside a label
    // matcher's neighbourhood (only quoted values are skipped).
    let typo = metric_names("sum(rate(fortress_request_totl{reason=~\"fortress_x\"}[5m]))");
    assert_eq!(
        typo,
        BTreeSet::from(["fortress_request_totl".to_owned()]),
        "names outside quotes"
    );
    assert_eq!(missing(&typo, &names), vec!["fortress_request_totl"]);

    // What the scenario produced, by value.
    assert_eq!(
        sample(&scrape, "fortress_tls_cert_expiry_timestamp_seconds"),
        Some(TEST_CERT_NOT_AFTER)
    );
    assert_eq!(
        sample(&scrape, r#"fortress_jwks_fetch_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, r#"fortress_jwks_fetch_total{result="error"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&scrape, "fortress_audit_enabled"), Some(1.0));
    assert_eq!(sample(&scrape, "fortress_audit_sink_up"), Some(1.0));
    assert_eq!(
        sample(&scrape, "fortress_audit_records_written_total"),
        Some(2.0)
    );
    assert_eq!(sample(&scrape, "fortress_audit_chain_head_seq"), Some(1.0));
    assert!(sample(&scrape, "fortress_audit_chain_head_hash_prefix").is_some());
    assert_eq!(
        sample(
            &scrape,
            r#"fortress_refusals_total{reason="missing_token",route="private"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            r#"fortress_request_ttfb_seconds_count{route="open"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            r#"fortress_request_ttfb_seconds_count{route="ask"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "fortress_policy_last_reload_successful"),
        Some(1.0)
    );
    assert!(sample(&scrape, "process_open_fds").is_some_and(|n| n > 0.0));

    // Every exported family is documented.
    let doc = read("docs/observability.md");
    let undocumented: Vec<String> = families(&scrape)
        .into_iter()
        .filter(|f| !doc.contains(&format!("`{f}`")))
        .collect();
    assert_eq!(
        undocumented,
        Vec::<String>::new(),
        "missing from docs/observability.md"
    );
}

#[test]
fn the_dashboard_has_panels_with_queries() {
    let d = dashboard();
    assert_eq!(d["uid"], "fortress-sidecar");
    let panels = d["panels"].as_array().expect("panels");
    let graphs: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 20, "{} panels", graphs.len());
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().expect("id")), "duplicate id");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{}", p["title"]);
    }
    for p in graphs {
        let title = p["title"].as_str().expect("title");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{title}: {expr}"
            );
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for t in [
        "Request rate by decision",
        "Denials by reason",
        "Time to first byte p50 / p99",
        "Stream violations by route and reason",
        "Rate-limit and budget refusals",
        "Certificate expires in",
        "JWKS key-set age",
        "Audit queue depth",
    ] {
        assert!(titles.contains(&t), "no panel {t}");
    }
}

#[test]
fn the_alert_rules_are_well_formed() {
    let rules = rules();
    assert_eq!(rules.groups.len(), 1);
    assert_eq!(rules.groups[0].name, "fortress");
    let mut alerts = BTreeSet::new();
    for r in &rules.groups[0].rules {
        assert!(alerts.insert(r.alert.clone()), "duplicate {}", r.alert);
        assert!(!r.expr.trim().is_empty(), "{}", r.alert);
        assert!(
            !metric_names(&r.expr).is_empty(),
            "{}: no metric in {}",
            r.alert,
            r.expr
        );
        let (digits, unit) = r.for_.split_at(r.for_.len() - 1);
        assert!(
            digits.parse::<u32>().is_ok() && ["s", "m", "h"].contains(&unit),
            "{}: for {}",
            r.alert,
            r.for_
        );
        assert!(
            ["warning", "critical"].contains(&r.labels.get("severity").map_or("", |s| s)),
            "{}: severity",
            r.alert
        );
        for key in ["summary", "description"] {
            assert!(
                r.annotations.get(key).is_some_and(|s| !s.is_empty()),
                "{}: {key}",
                r.alert
            );
        }
    }
    for a in [
        "FortressReloadFailing",
        "FortressAuditFailingClosed",
        "FortressAuditNotWriting",
        "FortressCertExpiringSoon",
        "FortressDenialSpike",
        "FortressJwksStale",
        "FortressStateStoreDown",
    ] {
        assert!(alerts.contains(a), "no alert {a}");
    }
    // A misspelled key is refused, so the strict parse above means something.
    let bad = rules_text().replacen("annotations:", "anotations:", 1);
    assert!(serde_saphyr::from_str::<RulesFile>(&bad).is_err());

    // Every alert has a promtool unit test in which it fires.
    let tests: Value = serde_saphyr::from_str(&read(ALERT_TESTS)).expect("alert tests YAML");
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired.insert(case["alertname"].as_str().expect("alertname").to_owned());
            }
        }
    }
    assert_eq!(
        fired, alerts,
        "alerts without a firing case in {ALERT_TESTS}"
    );

    // `promtool check rules` and `promtool test rules` run in `.ci/run` (which installs
    // promtool), not here: `cargo test` needs nothing beyond the Rust toolchain.
}

/// promtool unit tests of the alert rules.
const ALERT_TESTS: &str = "tests/alerts/fortress-alerts.test.yaml";

#[test]
fn the_chart_ships_the_dashboard_and_the_rules() {
    let dash = read("helm/fortress-sidecar/templates/grafana-dashboard.yaml");
    assert!(dash.starts_with("{{- if .Values.grafanaDashboard.enabled }}"));
    assert!(dash.contains(r#"grafana_dashboard: "1""#));
    assert!(dash.contains(r#".Files.Get "dashboards/fortress.json""#));
    let rule = read("helm/fortress-sidecar/templates/prometheusrule.yaml");
    assert!(rule.starts_with("{{- if .Values.prometheusRule.enabled }}"));
    assert!(rule.contains("kind: PrometheusRule"));
    assert!(rule.contains(r#".Files.Get "dashboards/fortress-alerts.yaml""#));
    let values = read("helm/fortress-sidecar/values.yaml");
    assert!(values.contains("grafanaDashboard:\n  enabled: false"));
    assert!(values.contains("prometheusRule:\n  enabled: false"));
    // The rules file goes under `spec:` as it is: nothing but comments before `groups:`.
    let text = rules_text();
    let first = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty());
    assert_eq!(first, Some("groups:"));
    let doc = read("docs/observability.md");
    for f in [
        "dashboards/fortress.json",
        "dashboards/fortress-alerts.yaml",
    ] {
        assert!(doc.contains(f), "docs/observability.md does not link {f}");
    }
}

#[tokio::test]
async fn ttfb_is_observed_at_the_response_head_not_at_the_end_of_a_stream() {
    type Chunk = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let up = Upstream::spawn(move |_req: Request<Incoming>| {
        let rx = rx.lock().expect("lock").take();
        async move {
            match rx {
                Some(rx) => Response::new(BodyExt::boxed(http_body_util::StreamBody::new(
                    fortress::demo::ReceiverStream::new(rx),
                ))),
                None => Response::new(full("second request")),
            }
        }
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let mut client = h1(fx.addr()).await;
    let resp = client
        .send_request(
            Request::get("/stream")
                .header("host", "a")
                .body(full(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response head");
    assert_eq!(resp.status(), 200);
    tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
        .await
        .expect("send");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("frame").expect("data");
    assert_eq!(first.into_data().expect("data"), "first");

    // The head is out, the body still open: TTFB recorded, the request not finished.
    let text = get(fx.admin(), "/metrics").await.text();
    assert_eq!(
        sample(&text, r#"fortress_request_ttfb_seconds_count{route="all"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"fortress_request_duration_seconds_count{route="all"}"#
        ),
        Some(0.0)
    );

    drop(tx);
    while let Some(f) = body.frame().await {
        f.expect("frame");
    }
    // The completion record is written when fortress drops the finished body (no signal
    // to wait on but the metric itself).
    let done = eventually(std::time::Duration::from_secs(5), || async {
        metric(
            fx.admin(),
            r#"fortress_request_duration_seconds_count{route="all"}"#,
        )
        .await
            == Some(1.0)
    })
    .await;
    assert!(done, "the request was recorded once its body ended");
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_request_ttfb_seconds_count{route="all"}"#
        )
        .await,
        Some(1.0),
        "once per request"
    );
}

#[tokio::test]
async fn a_reverted_config_clears_the_failed_reload() {
    let up = Upstream::echo().await;
    let good = config(up.addr, "", CATCH_ALL);
    let fx = TestFortress::start(&good).await;
    let admin = fx.admin();
    let successful = "fortress_policy_last_reload_successful";
    assert_eq!(metric(admin, successful).await, Some(1.0), "startup");
    let started_at = metric(
        admin,
        "fortress_policy_last_reload_success_timestamp_seconds",
    )
    .await
    .expect("success time");

    // A broken edit, seen by the file watcher: refused, the old config stays.
    std::fs::write(&fx.config_path, format!("{good}  - oops\n")).expect("write");
    let refused = eventually(std::time::Duration::from_secs(10), || async {
        metric(admin, successful).await == Some(0.0)
    })
    .await;
    assert!(refused, "the broken edit was refused");
    assert_eq!(
        metric(admin, r#"fortress_policy_reload_total{result="error"}"#).await,
        Some(1.0)
    );

    // Reverted to exactly the active config: not a new reload, but no longer failing.
    std::fs::write(&fx.config_path, &good).expect("write");
    let cleared = eventually(std::time::Duration::from_secs(10), || async {
        metric(admin, successful).await == Some(1.0)
    })
    .await;
    assert!(cleared, "the revert cleared the failed reload");
    assert_eq!(
        metric(admin, r#"fortress_policy_reload_total{result="ok"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(
            admin,
            "fortress_policy_last_reload_success_timestamp_seconds"
        )
        .await,
        Some(started_at),
        "the active config was loaded at startup, not now"
    );
}
