//! NDJSON stream integrity check throughput (MB/s on one core): `Validator::push` over a
//! realistic stream (thinking, technical_view, many data, business_view, end; one trace id)
//! of ~200 B lines and of ~8 KiB lines, fed in 16 KiB frames, against parsing every line
//! into a `serde_json::Value` over the same bytes.
//! Run: `cargo bench --bench ndjson`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fortress::stream::validator::{StreamRules, Validator};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const FRAME: usize = 16 * 1024;
const STREAM_BYTES: usize = 4 * 1024 * 1024;

/// One result row as an analytics app would stream it.
fn row(i: usize) -> String {
    let regions = ["EU-West", "US-East", "APAC", "LATAM"];
    let region = regions.get(i % regions.len()).copied().unwrap_or("EU");
    format!(
        r#"{{"id":{i},"customer":"Kunde {i} GmbH & Co. KG","region":"{region}","amount":{}.{:02},"currency":"EUR","paid":{},"ts":"2026-05-01T12:{:02}:{:02}Z","note":null}}"#,
        (i * 7919) % 100_000,
        i % 100,
        i.is_multiple_of(3),
        (i / 60) % 60,
        i % 60
    )
}

/// A stream whose data lines are about `line_bytes` long, about `STREAM_BYTES` in all.
fn stream(line_bytes: usize) -> Bytes {
    let mut out = String::with_capacity(STREAM_BYTES + 64 * 1024);
    out.push_str(&format!(
        "{{\"type\":\"thinking\",\"trace_id\":\"{TRACE}\",\"text\":\"Looking up revenue per region for Q1.\"}}\n"
    ));
    out.push_str(&format!(
        "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\",\"sql\":\"SELECT region, sum(amount) FROM orders GROUP BY region\"}}\n"
    ));
    let mut i = 0usize;
    while out.len() < STREAM_BYTES {
        let mut rows = String::new();
        loop {
            if !rows.is_empty() {
                rows.push(',');
            }
            rows.push_str(&row(i));
            i += 1;
            if rows.len() + 70 >= line_bytes {
                break;
            }
        }
        out.push_str(&format!(
            "{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"rows\":[{rows}]}}\n"
        ));
    }
    out.push_str(&format!(
        "{{\"type\":\"business_view\",\"trace_id\":\"{TRACE}\",\"summary\":\"Revenue grew 12 % in EU-West.\"}}\n"
    ));
    out.push_str(&format!("{{\"type\":\"end\",\"trace_id\":\"{TRACE}\"}}\n"));
    Bytes::from(out)
}

fn validate(rules: &Arc<StreamRules>, data: &Bytes) -> usize {
    let mut v = Validator::new(rules.clone(), Some(TRACE.to_owned()));
    let mut forwarded = 0usize;
    let mut at = 0usize;
    while at < data.len() {
        let end = (at + FRAME).min(data.len());
        match v.push(data.slice(at..end)) {
            Ok(lines) => forwarded += lines.len(),
            Err(e) => panic!("bench stream invalid: {e}"),
        }
        at = end;
    }
    if let Err(e) = v.finish() {
        panic!("bench stream invalid at EOF: {e}");
    }
    forwarded
}

fn parse_values(data: &[u8]) -> usize {
    let mut n = 0usize;
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) => n += usize::from(v.is_object()),
            Err(e) => panic!("bench line invalid: {e}"),
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let rules = Arc::new(StreamRules::default());
    let mut group = c.benchmark_group("ndjson");
    group.measurement_time(Duration::from_secs(5));
    for (label, line_bytes) in [("200B_lines", 200usize), ("8KiB_lines", 8 * 1024)] {
        let data = stream(line_bytes);
        assert_eq!(validate(&rules, &data), data.len(), "every line forwarded");
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::new("validator", label), &data, |b, data| {
            b.iter(|| validate(&rules, black_box(data)))
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", label),
            &data,
            |b, data| b.iter(|| parse_values(black_box(data))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
