//! Ambiguity: a request must mean to the app what it meant to fortress. Refused here, before
//! routing, in every mode (dry-run included):
//!
//! - a header name with `_` that folds (case, `_` → `-`) onto a header the policy reads or
//!   fortress sets (`Content_Length`, `X_Forwarded_For`, `X_Auth_Subject`, the tenant
//!   header…): CGI, WSGI and Rack apps read `X-Org-Id` and `X_Org_Id` as the same
//!   `HTTP_X_ORG_ID`, and may pick the one fortress did not check;
//! - a `_method` query parameter (any case, percent-encoded, `_method[]`, after `;`): Rails,
//!   Laravel, Symfony and method-override middlewares run that method instead.
//!
//! Other `_` names are dropped (or kept) on the way to the app (`proxy/request.rs`).

use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::error::{AmbiguityError, Rejection};

/// The ambiguity stage.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let rules = &ctx.snapshot.policy.headers;
    for name in req.headers.keys() {
        let n = name.as_str();
        if n.contains('_') && rules.is_protected(n) {
            return Err(Rejection::RejectAmbiguous(
                if rules.tenant_headers.contains(n) {
                    AmbiguityError::AmbiguousTenant
                } else {
                    AmbiguityError::ProtectedHeaderSpelling
                },
            ));
        }
    }
    if req.uri.query().is_some_and(has_method_override) {
        return Err(Rejection::RejectAmbiguous(AmbiguityError::MethodOverride));
    }
    Ok(Step::Pass)
}

/// Whether a query carries `_method` in any spelling a framework may read it in.
fn has_method_override(query: &str) -> bool {
    query
        .split(['&', ';'])
        .any(|pair| key_matches(query_key(pair), "_method"))
}

/// The key of a `key=value` query pair.
pub(super) fn query_key(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

/// Whether a raw query key is read as `name` by a lenient decoder: percent-decoded (bad
/// escapes kept as they are), `+` as a space, leading whitespace dropped, cut at the first
/// `[` (PHP's `org[]`), space and `.` as `_` (PHP), ASCII case ignored. No allocation.
pub(super) fn key_matches(raw_key: &str, name: &str) -> bool {
    fold(decoded(raw_key.as_bytes())).eq(fold(name.bytes()))
}

fn fold(bytes: impl Iterator<Item = u8>) -> impl Iterator<Item = u8> {
    bytes
        .skip_while(u8::is_ascii_whitespace)
        .take_while(|&b| b != b'[')
        .map(|b| match b {
            b' ' | b'.' => b'_',
            b => b.to_ascii_lowercase(),
        })
}

fn decoded(b: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let &c = b.get(i)?;
        if c == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            i += 3;
            return Some(v);
        }
        i += 1;
        Some(if c == b'+' { b' ' } else { c })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_override_in_every_spelling() {
        for q in [
            "_method=DELETE",
            "a=1&_METHOD=put",
            "_Method=PATCH",
            "%5Fmethod=DELETE",
            "%5fm%45thod=DELETE",
            "_method[]=DELETE",
            "a=1;_method=DELETE",
            "+_method=DELETE",
            ".method=DELETE",
            "_method",
        ] {
            assert!(has_method_override(q), "{q}");
        }
        for q in ["method=DELETE", "x_method=1", "a=_method", "_methods=1", ""] {
            assert!(!has_method_override(q), "{q}");
        }
    }

    #[test]
    fn keys_fold_like_lenient_decoders() {
        assert!(key_matches("org", "org"));
        assert!(key_matches("ORG", "org"));
        assert!(key_matches("org[]", "org"));
        assert!(key_matches("%4Frg", "org"));
        assert!(key_matches("o%zzg", "o%zzg"));
        assert!(!key_matches("orgs", "org"));
        assert!(key_matches("org.id", "org_id"));
    }
}
