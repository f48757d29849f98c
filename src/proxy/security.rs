//! Security response headers, on every response fortress sends (forwarded, its own refusals,
//! CORS preflights, the admin listener). The values were built when the policy was compiled
//! ([`crate::policy::edge::SecurityHeaders`]): a response costs a few inserts of shared values.
//!
//! Fortress's value replaces the app's (`Set`), unless the route lists the header under
//! `keep` (`Default`: the app's value wins when it sent one); `false` removes the header, the
//! app's included. `Strict-Transport-Security` goes only on responses to HTTPS requests (TLS,
//! or vouched for by a trusted proxy): over plain HTTP it is meaningless and an app's is
//! removed. The app's `Server` and `X-Powered-By` are always removed.

use http::HeaderMap;

use crate::policy::edge::{HeaderAction, SecurityHeaders};

/// Applies the security headers to a response's headers; `https`: the request came over
/// HTTPS.
pub fn apply(headers: &mut HeaderMap, rules: &SecurityHeaders, https: bool) {
    for name in &rules.strip {
        headers.remove(name);
    }
    for (name, action) in &rules.always {
        act(headers, name, action);
    }
    let hsts = http::header::STRICT_TRANSPORT_SECURITY;
    if https {
        act(headers, &hsts, &rules.hsts);
    } else {
        headers.remove(hsts);
    }
}

fn act(headers: &mut HeaderMap, name: &http::HeaderName, action: &HeaderAction) {
    match action {
        HeaderAction::Set(v) => {
            headers.insert(name.clone(), v.clone());
        }
        HeaderAction::Default(v) => {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), v.clone());
            }
        }
        HeaderAction::Remove => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn defaults_win_over_the_app_and_hsts_needs_https() {
        let rules = SecurityHeaders::default();
        let mut h = HeaderMap::new();
        h.insert("x-frame-options", HeaderValue::from_static("ALLOWALL"));
        h.insert("server", HeaderValue::from_static("gunicorn/20.1"));
        h.insert("x-powered-by", HeaderValue::from_static("Express"));
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=0"),
        );
        apply(&mut h, &rules, false);
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
        assert!(h.get("server").is_none() && h.get("x-powered-by").is_none());
        assert!(h.get("strict-transport-security").is_none());
        apply(&mut h, &rules, true);
        assert_eq!(h["strict-transport-security"], "max-age=31536000");
        let mut keep = SecurityHeaders::default();
        keep.always[1].1 = HeaderAction::Default(HeaderValue::from_static("DENY"));
        let mut h = HeaderMap::new();
        h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        apply(&mut h, &keep, false);
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
    }
}
