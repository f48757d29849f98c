//! Tests of the [`Validator`](super::Validator): framing, memory, one test per violation.

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

use crate::stream::sql_guard::SqlGuard;
use crate::testutil::Rng;

fn rules() -> StreamRules {
    StreamRules {
        max_line_bytes: 64 * 1024,
        ..StreamRules::default()
    }
}

fn guarded_rules() -> StreamRules {
    StreamRules {
        sql_guard: SqlGuard::new("sql", true, &["orders", "customers"]).ok(),
        ..rules()
    }
}

/// One line of the given type with a payload of about `payload` bytes: nested objects,
/// arrays, numbers, escapes and multi-byte UTF-8 (so splits fall inside characters).
fn line(ty: &str, trace: &str, payload: usize, seed: u64, eol: &str) -> String {
    let mut rng = Rng(seed | 1);
    let mut rows = String::new();
    let mut i = 0u64;
    while rows.len() < payload {
        if !rows.is_empty() {
            rows.push(',');
        }
        let n = rng.next() % 100_000;
        rows.push_str(&format!(
            r#"{{"id":{i},"name":"caf\u00e9 \"Zoë\" ✓ {n}","amount":-{n}.25e-2,"ok":{},"tags":["a\\b","\t",null],"sub":{{"k":[1,2,{{"x":"y"}}]}}}}"#,
            n.is_multiple_of(2)
        ));
        i += 1;
    }
    format!(r#"{{"type":"{ty}","trace_id":"{trace}","rows":[{rows}],"n":{i}}}{eol}"#)
}

fn stream(types: &[&str], payload: usize, eol: &str, empties: bool) -> Vec<u8> {
    let sized: Vec<(&str, usize)> = types.iter().map(|t| (*t, payload)).collect();
    stream_sized(&sized, eol, empties)
}

fn stream_sized(types: &[(&str, usize)], eol: &str, empties: bool) -> Vec<u8> {
    let mut out = String::new();
    if empties {
        out.push_str(eol);
    }
    for (i, (ty, payload)) in types.iter().enumerate() {
        out.push_str(&line(ty, TRACE, *payload, i as u64 + 7, eol));
        if empties && i % 3 == 1 {
            out.push_str("\n\r\n");
        }
    }
    if empties {
        out.push_str("\r\n\n");
    }
    out.into_bytes()
}

fn full_types(data: usize) -> Vec<&'static str> {
    let mut t = vec!["thinking", "technical_view"];
    t.extend(std::iter::repeat_n("data", data));
    t.extend(["business_view", "end"]);
    t
}

/// Runs the chunks through a validator: forwarded bytes (including the valid lines ahead
/// of a violation) and the first violation, from `push` or `finish`.
fn run_with(
    rules: &Arc<StreamRules>,
    request: Option<&str>,
    chunks: &[&[u8]],
) -> (Vec<u8>, Result<(), Violation>) {
    let mut v = Validator::new(rules.clone(), request.map(str::to_owned));
    let mut out = Vec::new();
    for c in chunks {
        match v.push(Bytes::copy_from_slice(c)) {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => {
                out.extend_from_slice(&v.take_before_violation());
                assert_eq!(v.push(Bytes::from_static(b"x")), Err(e), "sticky");
                assert_eq!(v.finish(), Err(e), "sticky finish");
                return (out, Err(e));
            }
        }
        assert!(v.buffered_len() <= rules.max_line_bytes + 1);
    }
    let end = v.finish().map(|tail| out.extend_from_slice(&tail));
    (out, end)
}

fn run(data: &[u8]) -> (Vec<u8>, Result<(), Violation>) {
    run_with(&Arc::new(rules()), Some(TRACE), &[data])
}

fn first_violation(rules: StreamRules, request: Option<&str>, data: &[u8]) -> Option<Violation> {
    run_with(&Arc::new(rules), request, &[data]).1.err()
}

/// Splits at every byte into two chunks, and into random multi-chunk splits, and checks
/// that output and result never change.
fn assert_split_invariant(
    rules: &Arc<StreamRules>,
    request: Option<&str>,
    data: &[u8],
    random_splits: usize,
) -> (Vec<u8>, Result<(), Violation>) {
    let whole = run_with(rules, request, &[data]);
    for cut in 0..=data.len() {
        let (a, b) = data.split_at(cut);
        let split = run_with(rules, request, &[a, b]);
        assert_eq!(split.1, whole.1, "result differs at cut {cut}");
        assert!(split.0 == whole.0, "output differs at cut {cut}");
    }
    let mut rng = Rng(data.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    for round in 0..random_splits {
        let pieces = 2 + rng.below(12);
        let mut cuts: Vec<usize> = (0..pieces).map(|_| rng.below(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&data[prev..c]);
            prev = c;
        }
        chunks.push(&data[prev..]);
        let split = run_with(rules, request, &chunks);
        assert_eq!(split.1, whole.1, "result differs in random round {round}");
        assert!(split.0 == whole.0, "output differs in random round {round}");
    }
    whole
}

// ---- framing ----

#[test]
fn valid_streams_are_split_invariant() {
    let rules = Arc::new(rules());
    let cases = [
        stream(&full_types(6), 200, "\n", false),
        stream(&full_types(6), 200, "\r\n", true),
        stream(&["thinking", "data", "data", "end"], 200, "\n", true),
        stream_sized(&[("data", 8 * 1024), ("end", 200)], "\n", false),
        stream_sized(
            &[("thinking", 100), ("data", 8 * 1024), ("end", 100)],
            "\r\n",
            true,
        ),
    ];
    for data in &cases {
        let (out, end) = assert_split_invariant(&rules, Some(TRACE), data, 200);
        assert_eq!(end, Ok(()));
        // Output is the input minus the empty lines.
        let text = std::str::from_utf8(data).unwrap_or_default();
        let expected: String = text
            .split_inclusive('\n')
            .filter(|l| !matches!(*l, "\n" | "\r\n"))
            .collect();
        assert!(out == expected.as_bytes());
    }
}

#[test]
fn byte_at_a_time_equals_one_chunk() {
    let rules = Arc::new(rules());
    let data = stream(&full_types(3), 200, "\r\n", true);
    let chunks: Vec<&[u8]> = data.chunks(1).collect();
    let (out, end) = run_with(&rules, Some(TRACE), &chunks);
    assert_eq!(end, Ok(()));
    assert!(out == run(&data).0);
}

#[test]
fn longer_stream_random_splits() {
    let rules = Arc::new(rules());
    let data = stream(&full_types(40), 8 * 1024, "\n", true);
    let whole = run_with(&rules, Some(TRACE), &[&data]);
    assert_eq!(whole.1, Ok(()));
    let mut rng = Rng(42);
    for _ in 0..100 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = 1 + rng.below(20_000);
            let end = (at + n).min(data.len());
            chunks.push(&data[at..end]);
            at = end;
        }
        assert!(run_with(&rules, Some(TRACE), &chunks) == whole);
    }
}

/// Each invalid stream: a valid prefix, then the offending line, then more lines. The
/// first violation and the forwarded prefix must not depend on the split.
#[test]
fn invalid_streams_are_split_invariant() {
    let ok = |ty: &str| line(ty, TRACE, 150, 3, "\n");
    let cases: Vec<(Vec<u8>, Violation)> = vec![
        (
            [
                ok("thinking").as_bytes(),
                b"{\"type\":\"data\",\"trace_id\":\"x\xff\"}\n",
                ok("end").as_bytes(),
            ]
            .concat(),
            Violation::InvalidUtf8,
        ),
        (
            format!("{}{{\"type\":\"data\"\n{}", ok("thinking"), ok("end")).into_bytes(),
            Violation::InvalidJson,
        ),
        (
            format!("{}[1,2]\r\n{}", ok("thinking"), ok("end")).into_bytes(),
            Violation::NotAnObject,
        ),
        (
            format!(
                "{}{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"type\":\"end\"}}\n",
                ok("thinking")
            )
            .into_bytes(),
            Violation::DuplicateType,
        ),
        (
            format!("{}{}", ok("data"), ok("thinking")).into_bytes(),
            Violation::OutOfOrder,
        ),
        (
            format!("{}{}", ok("thinking"), ok("thinking")).into_bytes(),
            Violation::RepeatedType,
        ),
        (
            format!("{}{}\n", ok("end"), ok("data")).into_bytes(),
            Violation::AfterTerminal,
        ),
        (
            format!("{}junk", ok("end")).into_bytes(),
            Violation::AfterTerminal,
        ),
        (
            format!("{}{}", ok("data"), line("end", "other", 10, 1, "\n")).into_bytes(),
            Violation::TraceIdMismatch,
        ),
        (
            format!("{}{}", ok("data"), &ok("data")[..10]).into_bytes(),
            Violation::InvalidJson,
        ),
        (
            format!("{}{}", ok("thinking"), ok("data")).into_bytes(),
            Violation::MissingRequired,
        ),
        (
            format!(
                "{}{}{}",
                ok("data"),
                line("data", TRACE, 5000, 9, "\n"),
                ok("end")
            )
            .into_bytes(),
            Violation::LineTooLong,
        ),
        (
            format!("{}{}", ok("data"), line("data", TRACE, 5000, 9, "")).into_bytes(),
            Violation::LineTooLong,
        ),
    ];
    let small = Arc::new(StreamRules {
        max_line_bytes: 4096,
        ..rules()
    });
    for (data, want) in &cases {
        let (_, got) = assert_split_invariant(&small, Some(TRACE), data, 50);
        assert_eq!(got, Err(*want), "{}", String::from_utf8_lossy(data));
    }
}

#[test]
fn valid_lines_ahead_of_a_violation_are_forwarded() {
    let first = line("thinking", TRACE, 50, 1, "\n");
    let data = format!("{first}{{oops}}\n");
    let rules = Arc::new(rules());
    let mut v = Validator::new(rules, Some(TRACE.to_owned()));
    assert_eq!(v.push(Bytes::from(data)), Err(Violation::InvalidJson));
    assert!(v.take_before_violation() == first.as_bytes());
    assert!(v.take_before_violation().is_empty());
    assert_eq!(v.violation(), Some(Violation::InvalidJson));
}

#[test]
fn complete_lines_are_zero_copy_slices() {
    let rules = Arc::new(rules());
    let mut v = Validator::new(rules, Some(TRACE.to_owned()));
    let chunk = Bytes::from(stream(&["thinking", "data", "data"], 200, "\n", false));
    let out = v.push(chunk.clone()).unwrap_or_default();
    assert_eq!(out.len(), chunk.len());
    assert_eq!(
        out.as_ptr(),
        chunk.as_ptr(),
        "returned a slice of the chunk"
    );
}

#[test]
fn empty_lines_are_dropped_even_after_end() {
    let data = format!("\n\r\n{}\r\n\n\r", line("end", TRACE, 10, 1, "\r\n"));
    let (out, end) = run(data.as_bytes());
    assert_eq!(end, Ok(()));
    assert!(out == line("end", TRACE, 10, 1, "\r\n").as_bytes());
}

// ---- memory ----

#[test]
fn memory_stays_bounded_for_a_huge_line() {
    const MIB: usize = 1024 * 1024;
    let rules = Arc::new(StreamRules {
        max_line_bytes: MIB,
        ..rules()
    });
    // Fed in 64 KiB frames: fails before buffering more than the limit.
    let mut v = Validator::new(rules.clone(), Some(TRACE.to_owned()));
    let frame = Bytes::from(vec![b'a'; 64 * 1024]);
    let mut fed = 0usize;
    let mut result = Ok(Bytes::new());
    while fed < 10 * MIB {
        result = v.push(frame.clone());
        fed += frame.len();
        assert!(v.buffered_len() <= MIB + 1);
        assert!(
            v.partial.capacity() <= MIB + 1,
            "capacity {}",
            v.partial.capacity()
        );
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(Violation::LineTooLong));
    assert!(fed <= MIB + 64 * 1024, "fed {fed}");
    // One 10 MiB chunk: refused without copying any of it.
    let mut v = Validator::new(rules.clone(), None);
    assert_eq!(
        v.push(Bytes::from(vec![b'a'; 10 * MIB])),
        Err(Violation::LineTooLong)
    );
    assert_eq!(v.buffered_len(), 0);
    // A valid line ahead of the huge one is still forwarded.
    let mut v = Validator::new(rules, None);
    let head = line("data", TRACE, 10, 1, "\n");
    let mut chunk = head.clone().into_bytes();
    chunk.extend(std::iter::repeat_n(b'a', 2 * MIB));
    assert_eq!(v.push(Bytes::from(chunk)), Err(Violation::LineTooLong));
    assert!(v.take_before_violation() == head.as_bytes());
}

#[test]
fn line_length_limit_excludes_the_terminator() {
    let body = line("end", TRACE, 100, 1, "");
    let exact = StreamRules {
        max_line_bytes: body.len(),
        ..rules()
    };
    for eol in ["\n", "\r\n"] {
        let data = format!("{body}{eol}");
        assert_eq!(
            run_with(&Arc::new(exact.clone()), Some(TRACE), &[data.as_bytes()]).1,
            Ok(())
        );
        let short = StreamRules {
            max_line_bytes: body.len() - 1,
            ..exact.clone()
        };
        let (_, got) = assert_split_invariant(&Arc::new(short), Some(TRACE), data.as_bytes(), 0);
        assert_eq!(got, Err(Violation::LineTooLong));
        assert_eq!(
            first_violation(
                StreamRules {
                    max_line_bytes: body.len() - 1,
                    ..rules()
                },
                Some(TRACE),
                data.as_bytes()
            ),
            Some(Violation::LineTooLong)
        );
    }
    // A line that is one byte over only because of a stray '\r' mid-stream.
    let data = format!("{body}\r\r\n");
    assert_eq!(
        first_violation(exact, Some(TRACE), data.as_bytes()),
        Some(Violation::LineTooLong)
    );
}

// ---- one test per violation ----

fn lines(ls: &[String]) -> Vec<u8> {
    ls.concat().into_bytes()
}

fn l(ty: &str) -> String {
    line(ty, TRACE, 20, 5, "\n")
}

fn raw(json: &str) -> String {
    format!("{json}\n")
}

fn check(ls: &[String]) -> Option<Violation> {
    first_violation(rules(), Some(TRACE), &lines(ls))
}

#[test]
fn invalid_utf8() {
    let mut data = l("thinking").into_bytes();
    data.extend_from_slice(b"{\"type\":\"data\",\"trace_id\":\"a\xc3\x28\"}\n");
    assert_eq!(
        first_violation(rules(), Some(TRACE), &data),
        Some(Violation::InvalidUtf8)
    );
    // Overlong encoding / surrogate half in raw bytes.
    let data = b"{\"type\":\"end\",\"trace_id\":\"\xed\xa0\x80\"}\n";
    assert_eq!(
        first_violation(rules(), None, data),
        Some(Violation::InvalidUtf8)
    );
}

#[test]
fn invalid_json() {
    let t = TRACE;
    for bad in [
        "{",
        "{\"type\":\"end\",\"trace_id\":\"T\"",
        "{\"type\":\"end\",\"trace_id\":\"T\"} x",
        "{\"type\":\"end\",\"trace_id\":\"T\"}{}",
        "{\"type\":\"end\",\"trace_id\":\"T\",}",
        "{'type':'end'}",
        "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":[1,2,}",
        "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":01}",
        "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":\"\\q\"}",
        "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":\"a\tb\"}",
        "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":NaN}",
        "   ",
        "\u{feff}{\"type\":\"end\",\"trace_id\":\"T\"}",
    ] {
        let bad = bad.replace('T', t);
        assert_eq!(check(&[raw(&bad)]), Some(Violation::InvalidJson), "{bad}");
    }
    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        "{{\"type\":\"end\",\"trace_id\":\"{t}\",\"x\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        first_violation(
            StreamRules {
                max_line_bytes: 1 << 20,
                ..rules()
            },
            Some(t),
            raw(&deep).as_bytes()
        ),
        None,
        "ignored values are skipped iteratively"
    );
    let deep = format!(
        "{{\"type\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        first_violation(
            StreamRules {
                max_line_bytes: 1 << 20,
                ..rules()
            },
            Some(t),
            raw(&deep).as_bytes()
        ),
        Some(Violation::TypeNotString)
    );
}

#[test]
fn not_an_object() {
    for bad in ["[1,2]", "\"end\"", "42", "null", "true", "[]", "-1.5e3"] {
        assert_eq!(check(&[raw(bad)]), Some(Violation::NotAnObject), "{bad}");
    }
    assert_eq!(check(&[raw("[1,")]), Some(Violation::InvalidJson));
}

#[test]
fn missing_type() {
    assert_eq!(
        check(&[raw(&format!("{{\"trace_id\":\"{TRACE}\"}}"))]),
        Some(Violation::MissingType)
    );
    assert_eq!(check(&[raw("{}")]), Some(Violation::MissingType));
    // Nested `type` does not count.
    assert_eq!(
        check(&[raw(&format!(
            "{{\"x\":{{\"type\":\"end\"}},\"trace_id\":\"{TRACE}\"}}"
        ))]),
        Some(Violation::MissingType)
    );
}

#[test]
fn duplicate_type() {
    let dup = format!("{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"type\":\"data\"}}");
    assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateType));
    // An escaped spelling of the same key is the same key.
    let dup = format!("{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"typ\\u0065\":\"end\"}}");
    assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateType));
    // Even when the second one is not a string.
    let dup = format!("{{\"type\":\"data\",\"type\":null,\"trace_id\":\"{TRACE}\"}}");
    assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateType));
}

#[test]
fn type_not_string() {
    for v in ["5", "null", "{\"a\":\"end\"}", "[\"end\"]", "true"] {
        let bad = format!("{{\"type\":{v},\"trace_id\":\"{TRACE}\"}}");
        assert_eq!(check(&[raw(&bad)]), Some(Violation::TypeNotString), "{bad}");
    }
}

#[test]
fn missing_trace_id() {
    assert_eq!(
        check(&[raw("{\"type\":\"end\"}")]),
        Some(Violation::MissingTraceId)
    );
    // Also on an upstream error line.
    assert_eq!(
        check(&[raw("{\"type\":\"error\"}")]),
        Some(Violation::MissingTraceId)
    );
}

#[test]
fn duplicate_trace_id() {
    let dup = format!("{{\"type\":\"end\",\"trace_id\":\"{TRACE}\",\"trace_id\":\"{TRACE}\"}}");
    assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateTraceId));
}

#[test]
fn trace_id_not_string() {
    assert_eq!(
        check(&[raw("{\"type\":\"end\",\"trace_id\":7}")]),
        Some(Violation::TraceIdNotString)
    );
}

#[test]
fn unknown_type() {
    assert_eq!(
        check(&[l("thinking"), l("debug")]),
        Some(Violation::UnknownType)
    );
    assert_eq!(
        check(&[l("Data")]),
        Some(Violation::UnknownType),
        "case-sensitive"
    );
}

#[test]
fn out_of_order() {
    assert_eq!(
        check(&[l("data"), l("technical_view")]),
        Some(Violation::OutOfOrder)
    );
    assert_eq!(
        check(&[l("thinking"), l("business_view"), l("data")]),
        Some(Violation::OutOfOrder)
    );
    // Skipping ahead is fine.
    assert_eq!(check(&[l("thinking"), l("end")]), None);
}

#[test]
fn repeated_type() {
    assert_eq!(
        check(&[l("thinking"), l("thinking")]),
        Some(Violation::RepeatedType)
    );
    assert_eq!(check(&[l("data"), l("data"), l("data"), l("end")]), None);
    assert_eq!(
        check(&[l("data"), l("business_view"), l("data")]),
        Some(Violation::OutOfOrder)
    );
}

#[test]
fn trace_id_changed() {
    let other = line("end", "other-trace", 10, 1, "\n");
    // Not bound to the request: the first line's trace id is the stream's.
    let free = StreamRules {
        trace_must_match_request: false,
        ..rules()
    };
    let data = lines(&[l("data"), other.clone()]);
    assert_eq!(
        first_violation(free.clone(), Some("request-trace"), &data),
        Some(Violation::TraceIdChanged)
    );
    assert_eq!(
        first_violation(rules(), None, &data),
        Some(Violation::TraceIdChanged)
    );
    let mut v = Validator::new(Arc::new(free), Some("request-trace".to_owned()));
    assert!(v.push(Bytes::from(l("data"))).is_ok());
    assert_eq!(
        v.trace_id(),
        Some("request-trace"),
        "the request's trace id wins"
    );
    let mut v = Validator::new(Arc::new(rules()), None);
    assert_eq!(v.trace_id(), None);
    assert!(v.push(Bytes::from(l("data"))).is_ok());
    assert_eq!(v.trace_id(), Some(TRACE));
}

#[test]
fn trace_id_mismatch() {
    let data = lines(&[l("thinking"), l("end")]);
    assert_eq!(
        first_violation(rules(), Some("request-trace"), &data),
        Some(Violation::TraceIdMismatch)
    );
    // A later line that differs from the (matching) first is a mismatch too.
    let data = lines(&[l("data"), line("end", "zzz", 10, 1, "\n")]);
    assert_eq!(
        first_violation(rules(), Some(TRACE), &data),
        Some(Violation::TraceIdMismatch)
    );
}

#[test]
fn after_terminal() {
    assert_eq!(check(&[l("end"), l("end")]), Some(Violation::AfterTerminal));
    assert_eq!(
        check(&[l("end"), raw("garbage")]),
        Some(Violation::AfterTerminal)
    );
    assert_eq!(
        check(&[l("error"), l("data")]),
        Some(Violation::AfterTerminal)
    );
    assert_eq!(
        check(&[l("end"), l("error")]),
        Some(Violation::AfterTerminal)
    );
    // Reported as soon as the next line starts, not at its newline.
    let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
    assert!(v.push(Bytes::from(l("end"))).is_ok());
    assert!(v.push(Bytes::from_static(b"\r")).is_ok());
    assert_eq!(
        v.push(Bytes::from_static(b"{")),
        Err(Violation::AfterTerminal)
    );
    // Pushing after a successful finish.
    let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
    assert!(v.push(Bytes::from(l("end"))).is_ok());
    assert_eq!(v.finish(), Ok(Bytes::new()));
    assert_eq!(v.finish(), Ok(Bytes::new()));
    assert_eq!(v.push(Bytes::from(l("end"))), Err(Violation::AfterTerminal));
}

#[test]
fn line_too_long() {
    let r = StreamRules {
        max_line_bytes: 100,
        ..rules()
    };
    assert_eq!(
        first_violation(
            r.clone(),
            Some(TRACE),
            line("end", TRACE, 200, 1, "\n").as_bytes()
        ),
        Some(Violation::LineTooLong)
    );
    // Without a newline, as soon as the partial is over the limit.
    let mut v = Validator::new(Arc::new(r), Some(TRACE.to_owned()));
    assert!(v.push(Bytes::from(vec![b' '; 100])).is_ok());
    assert!(
        v.push(Bytes::from_static(b"\r")).is_ok(),
        "could still be a CRLF"
    );
    assert_eq!(
        v.push(Bytes::from_static(b"x")),
        Err(Violation::LineTooLong)
    );
}

#[test]
fn last_line_without_newline_is_a_complete_line() {
    // Checked like any line and forwarded as received (no newline added).
    let data = format!("{}{}", l("data"), l("end").trim_end());
    assert_eq!(check(std::slice::from_ref(&data)), None);
    let (out, end) = run_with(&Arc::new(rules()), None, &[data.as_bytes()]);
    assert_eq!(end, Ok(()));
    assert_eq!(out, data.as_bytes());
    // Its violations are reported like any line's: cut mid-JSON, out of order, too long.
    let cut = format!("{}{}", l("data"), &l("end")[..12]);
    assert_eq!(check(&[cut]), Some(Violation::InvalidJson));
    let back = format!("{}{}", l("end"), l("data").trim_end());
    assert_eq!(check(&[back]), Some(Violation::AfterTerminal));
    // A lone trailing '\r' is an empty line, not a partial one.
    assert_eq!(check(&[l("end"), "\r".to_owned()]), None);
}

#[test]
fn escapes_that_are_not_unicode_text_are_violations() {
    let r = Arc::new(rules());
    let with =
        |extra: &str| format!("{{\"type\":\"end\",\"trace_id\":\"{TRACE}\",\"v\":\"{extra}\"}}\n");
    for bad in [
        r"\ud800",
        r"\uDBFF",
        r"\udc00",
        r"\uDFFF x",
        r"\ud800\u0041",
        r"\ud800\ud800",
        r"a\\\ud800",
        r"\udc00\ud800",
    ] {
        let (_, end) = run_with(&r, Some(TRACE), &[with(bad).as_bytes()]);
        assert_eq!(end, Err(Violation::InvalidEscape), "{bad}");
    }
    for good in [
        r"\ud83d\ude00",
        r"\u00e9",
        r"\\ud800",
        r"\\\\ud800",
        r"\n\t\u0000",
        r"\uD83D\uDE00",
        r"\ufffd",
    ] {
        let (_, end) = run_with(&r, Some(TRACE), &[with(good).as_bytes()]);
        assert_eq!(end, Ok(()), "{good}");
    }
}

#[test]
fn missing_required() {
    assert_eq!(
        check(&[l("thinking"), l("data")]),
        Some(Violation::MissingRequired)
    );
    assert_eq!(
        check(&[]),
        Some(Violation::MissingRequired),
        "an empty body is truncated"
    );
    let none = StreamRules {
        required: Vec::new(),
        ..rules()
    };
    assert_eq!(
        first_violation(none, Some(TRACE), &lines(&[l("data")])),
        None
    );
    let two = StreamRules {
        required: vec!["data".to_owned(), "end".to_owned()],
        ..rules()
    };
    assert_eq!(
        first_violation(two, Some(TRACE), &lines(&[l("thinking"), l("end")])),
        Some(Violation::MissingRequired)
    );
}

#[test]
fn upstream_error_line_is_a_clean_terminal_end() {
    let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
    let err = raw(&format!(
        "{{\"type\":\"error\",\"trace_id\":\"{TRACE}\",\"error\":\"boom\"}}"
    ));
    let data = lines(&[l("thinking"), l("data"), err]);
    assert!(v.push(Bytes::from(data.clone())).unwrap_or_default() == data);
    assert!(v.ended_with_upstream_error());
    assert!(v.terminated());
    assert_eq!(v.finish(), Ok(Bytes::new()));
    // `error` as the very first line is fine too.
    assert_eq!(check(&[l("error")]), None);
    // UpstreamError is the caller's reason for a broken upstream.
    assert_eq!(Violation::UpstreamError.code(), "upstream_error");
}

#[test]
fn sql_not_allowed() {
    let tv = |sql: serde_json::Value| {
        let head = serde_json::json!({"type": "technical_view", "trace_id": TRACE, "sql": sql});
        raw(&head.to_string())
    };
    let run_g = |ls: &[String]| first_violation(guarded_rules(), Some(TRACE), &lines(ls));
    assert_eq!(
        run_g(&[
            tv("SELECT o.id FROM orders o JOIN customers c ON c.id = o.cid".into()),
            l("end")
        ]),
        None
    );
    for bad in [
        serde_json::json!("DELETE FROM orders"),
        serde_json::json!("SELECT * FROM secrets"),
        serde_json::json!("SELECT 1; SELECT 2"),
        serde_json::json!("SELEKT"),
        serde_json::json!(42),
        serde_json::json!(null),
    ] {
        assert_eq!(
            run_g(&[tv(bad.clone()), l("end")]),
            Some(Violation::SqlNotAllowed),
            "{bad}"
        );
    }
    let no_field = raw(&format!(
        "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\"}}"
    ));
    assert_eq!(run_g(&[no_field, l("end")]), Some(Violation::SqlNotAllowed));
    let twice = raw(&format!(
        "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\",\"sql\":\"SELECT 1\",\"sql\":\"DROP TABLE orders\"}}"
    ));
    assert_eq!(run_g(&[twice, l("end")]), Some(Violation::SqlNotAllowed));
    // Escaped SQL text is unescaped before parsing.
    let escaped = raw(&format!(
        "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\",\"sql\":\"SELECT \\\"id\\\"\\nFROM orders\"}}"
    ));
    assert_eq!(run_g(&[escaped, l("end")]), None);
    // Other types' SQL is not looked at; without the guard nothing is.
    assert_eq!(
        run_g(&[
            raw(&format!(
                "{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"sql\":\"DROP TABLE x\"}}"
            )),
            l("end")
        ]),
        None
    );
    assert_eq!(check(&[tv("DROP TABLE orders".into()), l("end")]), None);
    // The detail is kept for the audit record.
    let mut v = Validator::new(Arc::new(guarded_rules()), Some(TRACE.to_owned()));
    assert_eq!(
        v.push(Bytes::from(tv("SELECT * FROM secrets".into()))),
        Err(Violation::SqlNotAllowed)
    );
    assert_eq!(
        v.sql_rejection(),
        Some(&SqlRejection::TableNotAllowed("secrets".to_owned()))
    );
}

// ---- the rest of the API ----

#[test]
fn error_line_passes_the_validator() {
    // The error line passes the validator itself (as a terminal line).
    assert_eq!(
        first_violation(rules(), Some("t"), &error_line("t", Violation::InvalidJson)),
        None
    );
}

#[test]
fn debug_does_not_print_stream_bytes() {
    let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
    assert!(
        v.push(Bytes::from_static(b"{\"type\":\"secret-payload"))
            .is_ok()
    );
    let text = format!("{v:?}");
    assert!(!text.contains("secret-payload"), "{text}");
    assert!(text.contains("buffered: 23"), "{text}");
}

#[test]
fn custom_field_names() {
    let r = StreamRules {
        type_field: "kind".to_owned(),
        trace_field: "tid".to_owned(),
        ..rules()
    };
    let ok = "{\"kind\":\"data\",\"tid\":\"t1\",\"type\":5}\n{\"tid\":\"t1\",\"kind\":\"end\"}\n";
    assert_eq!(first_violation(r.clone(), None, ok.as_bytes()), None);
    assert_eq!(
        first_violation(r, None, b"{\"type\":\"end\",\"tid\":\"t1\"}\n"),
        Some(Violation::MissingType)
    );
}
