//! Arbitrary request heads through `pipeline::framing::check_head`: the first byte picks the
//! version, the rest is `name:value` lines (only names and values `http` accepts become
//! fields, as after hyper's parser). No panic; an accepted head has at most one framing
//! field, `Transfer-Encoding` only on HTTP/1.1 and exactly `chunked`, `Content-Length` only
//! plain digits (1–19).
#![no_main]

use fortress::pipeline::framing::{MAX_CONTENT_LENGTH_DIGITS, check_head};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let version = match first % 4 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        2 => Version::HTTP_2,
        _ => Version::HTTP_09,
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    if check_head(version, &headers).is_err() {
        return;
    }
    let te: Vec<&HeaderValue> = headers.get_all(TRANSFER_ENCODING).iter().collect();
    let cl: Vec<&HeaderValue> = headers.get_all(CONTENT_LENGTH).iter().collect();
    assert!(te.len() + cl.len() <= 1, "{headers:?}");
    assert!(te.iter().all(|v| v.as_bytes() == b"chunked"), "{headers:?}");
    assert!(te.is_empty() || version == Version::HTTP_11, "{headers:?}");
    assert!(
        cl.iter().all(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= MAX_CONTENT_LENGTH_DIGITS && b.iter().all(u8::is_ascii_digit)
        }),
        "{headers:?}"
    );
});
