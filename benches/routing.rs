//! Path normalization + route matching per request, with 10 and 10 000 routes.
//! Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fortress::pipeline::normalize::normalize_path;
use fortress::policy::route::{Lookup, Route, Router};
use http::Method;

fn table(n: usize) -> Router {
    let mut routes = Vec::with_capacity(n);
    for i in 0..n {
        let (pattern, methods) = match i % 4 {
            0 => (
                format!("/svc{i}/orgs/{{org_id}}/reports/**"),
                Some(vec![Method::GET]),
            ),
            1 => (format!("/svc{i}/items/{{id}}"), None),
            2 => (format!("/svc{i}/health"), None),
            _ => (
                format!("/svc{i}/admin/**"),
                Some(vec![Method::POST, Method::GET]),
            ),
        };
        routes.push(Route {
            name: format!("r{i}").into(),
            pattern,
            methods,
            public: false,
            upstream_timeout: Duration::from_secs(30),
            access: Default::default(),
            stream: None,
            websocket: false,
            params_used: Vec::new(),
            index: 0,
            edge: Default::default(),
            limits: Default::default(),
        });
    }
    Router::build(routes).unwrap_or_else(|e| panic!("bench routes invalid: {e:?}"))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize+route");
    for n in [10usize, 10_000] {
        let router = table(n);
        // A request to the last-but-one "reports" route: worst case for a linear scan.
        let target = (n - 1) / 4 * 4;
        let path = format!("/svc{target}/orgs/acme/reports/2026/q3");
        group.bench_with_input(BenchmarkId::new("routes", n), &path, |b, path| {
            b.iter(|| {
                let canonical = normalize_path(black_box(path)).unwrap_or_else(|e| panic!("{e}"));
                match router.lookup(&Method::GET, &canonical) {
                    Lookup::Found { route, .. } => black_box(route.name.len()),
                    _ => panic!("no match"),
                }
            })
        });
        // A path that needs rewriting (encoded unreserved chars, duplicate slash, dot segment).
        let messy = format!("/svc{target}//orgs/%61cme/./reports/2026/q3");
        group.bench_with_input(
            BenchmarkId::new("routes-messy-path", n),
            &messy,
            |b, path| {
                b.iter(|| {
                    let canonical =
                        normalize_path(black_box(path)).unwrap_or_else(|e| panic!("{e}"));
                    match router.lookup(&Method::GET, &canonical) {
                        Lookup::Found { route, .. } => black_box(route.name.len()),
                        _ => panic!("no match"),
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
