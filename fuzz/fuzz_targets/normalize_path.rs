//! Arbitrary paths through `pipeline::normalize::normalize_path_with`, in both
//! `matrix_parameters` modes: no panic, and every accepted path's canonical form is a fixed
//! point (normalized again it comes back unchanged and borrowed, in both modes), starts with
//! `/`, and holds no `;`, `%3B`, `//`, raw non-ASCII or control bytes.
#![no_main]

use std::borrow::Cow;

use fortress::pipeline::normalize::{MatrixParameters, normalize_path_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(path) = std::str::from_utf8(input) else {
        return;
    };
    for mode in [MatrixParameters::Reject, MatrixParameters::Strip] {
        let Ok(out) = normalize_path_with(path, mode) else {
            continue;
        };
        assert!(out.starts_with('/'), "{path:?} -> {out:?}");
        assert!(!out.contains(';') && !out.contains("%3B"), "{path:?} -> {out:?}");
        assert!(!out.contains("//"), "{path:?} -> {out:?}");
        assert!(
            out.bytes().all(|b| b.is_ascii_graphic()),
            "{path:?} -> {out:?}"
        );
        for again_mode in [MatrixParameters::Reject, MatrixParameters::Strip] {
            match normalize_path_with(&out, again_mode) {
                Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out),
                other => panic!("not a fixed point: {path:?} -> {out:?} -> {other:?}"),
            }
        }
    }
});
