//! Arbitrary client bytes through the HTTP/1 raw-byte guard (`server::h1_guard::Guard`).
//! No panic; the verdict and the released bytes do not depend on how the bytes are split
//! across reads (whole, and split at a position taken from the first byte); and
//! (differential) whenever the guard accepts the first head, `httparse` parses it to the same
//! method, target, version and fields.
#![no_main]

use fortress::server::h1_guard::{Guard, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_head_bytes: 4096,
    max_headers: 64,
};

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let mut whole = Guard::new(LIMITS);
    let out = whole.scan(data);
    assert!(out.released <= data.len());

    // Split invariance, with the unreleased tail scanned again as `GuardedIo` does.
    if !data.is_empty() {
        let split = usize::from(first) % data.len();
        let mut g = Guard::new(LIMITS);
        let a = g.scan(&data[..split]);
        let (released, violation) = if a.violation.is_some() {
            (a.released, a.violation)
        } else {
            let b = g.scan(&data[a.released..]);
            (a.released + b.released, b.violation)
        };
        assert_eq!((released, violation), (out.released, out.violation), "split {split}");
        assert_eq!(g.heads(), whole.heads());
    }

    if whole.heads() == 0 {
        return;
    }
    // The guard accepted the first head: httparse must agree on every part of it.
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("guard accepted a head httparse reads as {other:?}"),
    };
    let mut head = &data[..n];
    while let [b'\r', b'\n', rest @ ..] = head {
        head = rest;
    }
    let mut lines = head.split(|&b| b == b'\n').map(|l| &l[..l.len().saturating_sub(1)]);
    let request_line = lines.next().expect("request line");
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, target, version) = (
        parts.next().expect("method"),
        parts.next().expect("target"),
        parts.next().expect("version"),
    );
    assert!(parts.next().is_none());
    assert_eq!(req.method.map(str::as_bytes), Some(method));
    assert_eq!(req.path.map(str::as_bytes), Some(target));
    assert_eq!(
        req.version,
        Some(if version == b"HTTP/1.0" { 0 } else { 1 })
    );
    let mine: Vec<(&[u8], &[u8])> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let colon = l.iter().position(|&b| b == b':').expect("colon");
            (&l[..colon], trim(&l[colon + 1..]))
        })
        .collect();
    assert_eq!(mine.len(), req.headers.len());
    for ((name, value), h) in mine.iter().zip(req.headers.iter()) {
        assert_eq!(*name, h.name.as_bytes());
        assert_eq!(*value, trim(h.value));
    }
});
