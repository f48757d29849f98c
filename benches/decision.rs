//! The full per-request decision: transport, canonical path, route match, JWT HS256 (cached),
//! RBAC and tenant isolation — the same `decide()` the proxy runs. Run: `cargo bench --bench
//! decision`.

use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use fortress::auth::revocation::MemoryRevocations;
use fortress::config;
use fortress::pipeline::decide::{self, DecideEnv, RequestView, RouteObserver};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

fn policy() -> String {
    let mut routes = String::new();
    // A realistic table: the EasyData routes plus 50 filler services.
    for i in 0..50 {
        routes.push_str(&format!(
            "  - name: svc{i}\n    match: {{ path: \"/svc{i}/**\" }}\n    require: [\"reports:read\"]\n"
        ));
    }
    format!(
        "server:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  environment: local\n  \
         require_https: true\n  trusted_proxies: [127.0.0.1/32]\n\
         authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ value: \"{SECRET}\" }}\n    required_claims: [sub, roles]\n\
         roles:\n  admin: [\"*\"]\n  analyst: [\"reports:read\", \"ask:use\"]\n  \
         ml_engineer: [\"@analyst\", \"training:run\"]\n  support: [\"tenants:cross\"]\n\
         routes:\n  - name: org-reports\n    match: {{ methods: [GET], path: \"/api/orgs/{{org_id}}/reports/**\" }}\n    \
         require: [\"reports:read\"]\n    tenant: {{ path_param: org_id, cross_tenant_permission: \"tenants:cross\" }}\n{routes}"
    )
}

fn bench(c: &mut Criterion) {
    let config =
        config::load_str(&policy(), Path::new("bench.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "alice", "roles": ["ml_engineer"], "tenant": "acme",
        "iss": "iss", "aud": "aud", "iat": now, "exp": now + 3600,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("app"));
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or_else(|e| panic!("{e}")),
    );
    let uri: Uri = "/api/orgs/acme/reports/2026/q3?format=csv"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let revocations = MemoryRevocations::default();
    let env = DecideEnv {
        revocations: &revocations,
        metrics: None,
        now,
        claims_override: None,
    };
    let method = Method::GET;
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        peer: "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}")),
        tls: false,
        trusted: true,
    };
    let metrics = fortress::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    // With HS256 and no JWKS nothing in decide() waits: one poll completes it.
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("decide/route+jwt-hs256-cached+rbac+tenant", |b| {
        b.iter(|| {
            let mut obs = RouteObserver::new(&metrics);
            let fut = pin!(decide::decide(
                &config,
                black_box(&view),
                &uri,
                &env,
                &mut obs
            ));
            match fut.poll(&mut cx) {
                Poll::Ready(Ok(d)) => black_box(d.canonical.len()),
                Poll::Ready(Err(r)) => panic!("denied: {r:?}"),
                Poll::Pending => panic!("decide() waited"),
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
