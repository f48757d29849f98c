//! The HTTP/1 raw-byte guard's cost per request: a typical ~400-byte request head, the same
//! head with a 1 KiB chunked body, and ten pipelined heads in one read.
//! Run: `cargo bench --bench h1_guard`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fortress::server::h1_guard::{Guard, Limits};

const LIMITS: Limits = Limits {
    max_head_bytes: 96 * 1024,
    max_headers: 100,
};

fn head() -> Vec<u8> {
    let h = "GET /api/v1/orgs/acme/reports/2024-q4?format=json&page=2 HTTP/1.1\r\n\
        Host: api.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: application/json, text/plain, */*\r\n\
        Accept-Language: en-US,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl\r\n\
        X-Request-Id: 6f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b\r\n\
        Connection: keep-alive\r\n\r\n";
    h.as_bytes().to_vec()
}

fn bench(c: &mut Criterion) {
    let head = head();
    let mut g = c.benchmark_group("h1_guard");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("head_{}_bytes", head.len()), |b| {
        b.iter(|| {
            let mut guard = Guard::new(LIMITS);
            let out = guard.scan(black_box(&head));
            assert_eq!(out.released, head.len());
            out
        })
    });
    let mut chunked = head.clone();
    let at = chunked.len() - 2;
    chunked.splice(at..at, b"Transfer-Encoding: chunked\r\n".iter().copied());
    chunked.extend_from_slice(b"400;ext=1\r\n");
    chunked.extend_from_slice(&[b'x'; 1024]);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    g.bench_function("head_plus_1KiB_chunked_body", |b| {
        b.iter(|| {
            let mut guard = Guard::new(LIMITS);
            let out = guard.scan(black_box(&chunked));
            assert_eq!(out.released, chunked.len());
            out
        })
    });
    let pipelined: Vec<u8> = head.iter().copied().cycle().take(head.len() * 10).collect();
    g.throughput(Throughput::Elements(10));
    g.bench_function("ten_pipelined_heads", |b| {
        b.iter(|| {
            let mut guard = Guard::new(LIMITS);
            let out = guard.scan(black_box(&pipelined));
            assert_eq!(out.released, pipelined.len());
            out
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
