//! The full per-request decision: transport, canonical path, route match, JWT HS256 (cached),
//! RBAC and tenant isolation — the same `decide()` the proxy runs. Run: `cargo bench --bench
//! decision`.

use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fortress::config;
use fortress::metrics::Metrics;
use fortress::pipeline::conn::ConnInfo;
use fortress::pipeline::context::RequestContext;
use fortress::pipeline::decide;
use fortress::state::Snapshot;
use fortress::store::live::Live;
use fortress::store::{MemoryStore, StateStore};

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

fn policy_text() -> String {
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
    let policy =
        config::load_str(&policy_text(), Path::new("bench.yaml")).unwrap_or_else(|e| panic!("{e}"));
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
    let request = |target: &str| {
        let req = http::Request::get(target)
            .header("host", "app")
            .header("x-forwarded-proto", "https")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        req.into_parts().0
    };
    let parts = request("/api/orgs/acme/reports/2026/q3?format=csv");
    // An upper-case letter: the route stage also looks up the spellings a case-insensitive
    // app reads as the same path (`paths.route_variants`, three more lookups).
    let upper = request("/api/orgs/acme/reports/2026/Q3?format=csv");
    let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new(1024));
    let live = Live::new(store);
    let snapshot = Arc::new(Snapshot::bind(policy, &live, &metrics));
    // The same policy with `paths.route_variants: ignore` (no spelling looked up).
    let ignore = config::load_str(
        &format!("{}paths: {{ route_variants: ignore }}\n", policy_text()),
        Path::new("bench.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ignore = Arc::new(Snapshot::bind(ignore, &live, &metrics));
    let peer = "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}"));
    let conn = Arc::new(ConnInfo::new(peer, false));
    let context = |snapshot: &Arc<Snapshot>| {
        RequestContext::new(
            snapshot.clone(),
            conn.clone(),
            None,
            parts.method.clone(),
            &parts.headers,
        )
    };
    // With HS256 and no JWKS nothing in decide() waits: one poll completes it.
    let mut cx = Context::from_waker(Waker::noop());
    let mut run = |ctx: &mut RequestContext, parts: &http::request::Parts| {
        let mut obs = ();
        let polled = pin!(decide::decide(ctx, black_box(parts), &mut obs)).poll(&mut cx);
        match polled {
            Poll::Ready(Ok(())) => black_box(ctx.route),
            Poll::Ready(Err(r)) => panic!("denied: {r:?}"),
            Poll::Pending => panic!("decide() waited"),
        }
    };
    // The checks alone (the context is built outside the timed part).
    c.bench_function("decide/route+jwt-hs256-cached+rbac+tenant", |b| {
        b.iter_batched_ref(
            || context(&snapshot),
            |ctx| run(ctx, &parts),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("decide/route_variants-ignore", |b| {
        b.iter_batched_ref(
            || context(&ignore),
            |ctx| run(ctx, &parts),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("decide/upper-case-path", |b| {
        b.iter_batched_ref(
            || context(&snapshot),
            |ctx| run(ctx, &upper),
            BatchSize::SmallInput,
        )
    });
    // What the proxy does per request before forwarding: a context (ids from the CSPRNG,
    // snapshot) and the checks.
    c.bench_function("context+decide/route+jwt-hs256-cached+rbac+tenant", |b| {
        b.iter(|| {
            let mut ctx = context(&snapshot);
            run(&mut ctx, &parts)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
