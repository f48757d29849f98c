//! Feeds arbitrary bytes to the NDJSON stream validator in three framings — one chunk, two
//! chunks split at a position taken from the first input byte, and small chunks of a size
//! taken from it too — and checks that none panics and all agree on the forwarded bytes
//! and the first violation.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use fortress::stream::sql_guard::SqlGuard;
use fortress::stream::validator::{StreamRules, Validator, Violation, error_line};
use libfuzzer_sys::fuzz_target;

fn rules() -> Arc<StreamRules> {
    Arc::new(StreamRules {
        repeatable: vec!["thinking".to_owned(), "data".to_owned()],
        // Small, so that the length limit is reachable.
        max_line_bytes: 512,
        sql_guard: Some(
            SqlGuard::new("sql", true, &["orders", "public.customers"]).expect("valid names"),
        ),
        ..StreamRules::default()
    })
}

/// Forwarded bytes (with the valid lines ahead of a violation) and the first violation.
fn run(rules: &Arc<StreamRules>, chunks: &[&[u8]]) -> (Vec<u8>, Result<(), Violation>) {
    let mut v = Validator::new(rules.clone(), Some("t".to_owned()));
    let mut out = Vec::new();
    for chunk in chunks {
        match v.push(Bytes::copy_from_slice(chunk)) {
            Ok(lines) => out.extend_from_slice(&lines),
            Err(e) => {
                out.extend_from_slice(&v.take_before_violation());
                assert_eq!(v.push(Bytes::from_static(b"{}\n")), Err(e), "violation is sticky");
                assert_eq!(v.finish(), Err(e), "violation is sticky at finish");
                let line = error_line(v.trace_id().unwrap_or(""), e);
                assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
                return (out, Err(e));
            }
        }
        assert!(v.buffered_len() <= rules.max_line_bytes + 1, "partial line over the limit");
    }
    let end = v.finish().map(|tail| out.extend_from_slice(&tail));
    (out, end)
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let rules = rules();
    let whole = run(&rules, &[data]);

    let cut = usize::from(first) * data.len() / 255;
    let (a, b) = data.split_at(cut.min(data.len()));
    let split = run(&rules, &[a, b]);
    assert_eq!(split, whole, "two chunks (cut at {cut}) differ from one");

    let size = usize::from(first % 7) + 1;
    let small: Vec<&[u8]> = data.chunks(size).collect();
    let chunked = run(&rules, &small);
    assert_eq!(chunked, whole, "chunks of {size} bytes differ from one");

    // Forwarded bytes are complete lines taken from the input; only a clean end may add a
    // last line without a newline (the input's own last line).
    assert!(whole.0.is_empty() || whole.0.ends_with(b"\n") || whole.1.is_ok());
});
