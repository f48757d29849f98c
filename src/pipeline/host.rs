//! The host stage: the request names exactly one well-formed host (RFC 9112 §3.2, RFC 9110
//! §7.2), HTTP/2 `:authority` and `host` agree (RFC 9113 §8.3.1), and, when the policy lists
//! `server.hosts`, the host is one this listener serves (421 otherwise).

use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, Uri, Version};

use super::context::RequestContext;
use super::decide::Step;
use crate::error::{HostError, Rejection};
use crate::policy::host::{self, HostPattern, HostPort};

/// Checks `Host` / `:authority`, then the allowlist; from a trusted proxy, its
/// `X-Forwarded-Host` too.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let allow = ctx.snapshot.policy.server.hosts.as_deref();
    rules(req.version, &req.uri, &req.headers, allow)?;
    if ctx.trusted {
        forwarded_host(&req.headers, allow)?;
    }
    Ok(Step::Pass)
}

/// A trusted proxy's `X-Forwarded-Host` is kept for the app (which builds links, redirects
/// and cache keys from it), so it obeys the same rules as `Host`: one field, one well-formed
/// `host[:port]` (no list), and in `server.hosts` when that is set (421 otherwise). Many load
/// balancers pass a client's own `X-Forwarded-Host` through unchanged.
fn forwarded_host(headers: &HeaderMap, allow: Option<&[HostPattern]>) -> Result<(), Rejection> {
    let bad = Rejection::RejectHost(HostError::InvalidForwardedHost);
    let mut values = headers.get_all(X_FORWARDED_HOST).iter();
    let v = match (values.next(), values.next()) {
        (None, _) => return Ok(()),
        (Some(v), None) => v,
        (Some(_), Some(_)) => return Err(bad),
    };
    let s = v.to_str().map_err(|_| bad)?;
    let hp = host::parse(s.trim()).ok_or(bad)?;
    if let Some(list) = allow
        && !host::allowed(list, &hp)
    {
        return Err(Rejection::MisdirectedHost);
    }
    Ok(())
}

const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// The host rules, on the request's parts. Returns the host the request names, if any.
pub fn rules<'a>(
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    allow: Option<&[HostPattern]>,
) -> Result<Option<HostPort<'a>>, Rejection> {
    let bad = |e| Rejection::RejectHost(e);
    let mut values = headers.get_all(HOST).iter();
    let header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(v), None) => {
            let s = v.to_str().map_err(|_| bad(HostError::InvalidHost))?;
            Some(host::parse(s).ok_or(bad(HostError::InvalidHost))?)
        }
        (Some(_), Some(_)) => return Err(bad(HostError::DuplicateHost)),
    };
    let named = if version >= Version::HTTP_2 {
        // `:authority` (hyper puts it in the URI); it must be a plain host[:port] too.
        let authority = match uri.authority() {
            Some(a) => Some(host::parse(a.as_str()).ok_or(bad(HostError::InvalidHost))?),
            None => None,
        };
        match (authority, header) {
            (Some(a), Some(h)) if !same(&a, &h) => return Err(bad(HostError::AuthorityMismatch)),
            (Some(a), _) => Some(a),
            (None, h) => h,
        }
    } else {
        // HTTP/1.x: absolute-form targets are refused by the normalize stage; only `Host`
        // names the host here.
        header
    };
    match named {
        None if version == Version::HTTP_10 || version == Version::HTTP_09 => {}
        None => return Err(bad(HostError::MissingHost)),
        Some(_) => {}
    }
    if let Some(list) = allow {
        match &named {
            Some(hp) if host::allowed(list, hp) => {}
            _ => return Err(Rejection::MisdirectedHost),
        }
    }
    Ok(named)
}

/// Whether two `host[:port]` name the same thing (host case-insensitive).
fn same(a: &HostPort<'_>, b: &HostPort<'_>) -> bool {
    a.port == b.port
        && match (a.ipv6, b.ipv6) {
            (Some(x), Some(y)) => x == y,
            (None, None) => a.host.eq_ignore_ascii_case(b.host),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn run(
        version: Version,
        uri: &str,
        hosts: &[&str],
        allow: Option<&[&str]>,
    ) -> Result<(), Rejection> {
        let uri: Uri = uri.parse().expect("uri");
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_bytes(v.as_bytes()).expect("hv"));
        }
        let list: Option<Vec<HostPattern>> = allow.map(|l| {
            l.iter()
                .map(|e| HostPattern::parse(e).expect("entry"))
                .collect()
        });
        rules(version, &uri, &h, list.as_deref()).map(|_| ())
    }

    #[test]
    fn host_rules() {
        use HostError::*;
        let e = |x| Err(Rejection::RejectHost(x));
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        assert_eq!(run(h1, "/", &["a.test"], None), Ok(()));
        assert_eq!(run(h1, "/", &[], None), e(MissingHost));
        assert_eq!(run(Version::HTTP_10, "/", &[], None), Ok(()));
        assert_eq!(run(h1, "/", &["a.test", "a.test"], None), e(DuplicateHost));
        assert_eq!(run(h1, "/", &["a.test", "b.test"], None), e(DuplicateHost));
        for bad in [
            "",
            "a.test:99999",
            "u@a.test",
            "a.test/x",
            "a b",
            "a.test:",
            "[::1",
        ] {
            assert_eq!(run(h1, "/", &[bad], None), e(InvalidHost), "{bad:?}");
        }
        assert_eq!(run(h2, "https://a.test/", &[], None), Ok(()));
        assert_eq!(run(h2, "https://a.test/", &["A.TEST"], None), Ok(()));
        assert_eq!(run(h2, "https://a.test:1/", &["a.test:1"], None), Ok(()));
        assert_eq!(
            run(h2, "https://a.test/", &["b.test"], None),
            e(AuthorityMismatch)
        );
        assert_eq!(
            run(h2, "https://a.test/", &["a.test:443"], None),
            e(AuthorityMismatch)
        );
        assert_eq!(run(h2, "https://u@a.test/", &[], None), e(InvalidHost));
        assert_eq!(run(h2, "/", &["a.test"], None), Ok(()));
        assert_eq!(run(h2, "/", &[], None), e(MissingHost));
        let allow = Some(&["api.example.com", "*.example.com"][..]);
        assert_eq!(run(h1, "/", &["API.example.com:8443"], allow), Ok(()));
        assert_eq!(run(h1, "/", &["x.example.com"], allow), Ok(()));
        for other in ["example.com", "evil.test", "127.0.0.1", "a.b.example.com"] {
            assert_eq!(
                run(h1, "/", &[other], allow),
                Err(Rejection::MisdirectedHost),
                "{other}"
            );
        }
        assert_eq!(
            run(Version::HTTP_10, "/", &[], allow),
            Err(Rejection::MisdirectedHost)
        );
        assert_eq!(
            run(h2, "https://evil.test/", &[], allow),
            Err(Rejection::MisdirectedHost)
        );
    }

    #[test]
    fn trusted_forwarded_host() {
        let allow: Vec<HostPattern> = ["app.example.com"]
            .iter()
            .map(|e| HostPattern::parse(e).expect("entry"))
            .collect();
        let run = |values: &[&str], allow: Option<&[HostPattern]>| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    "x-forwarded-host",
                    HeaderValue::from_bytes(v.as_bytes()).expect("hv"),
                );
            }
            forwarded_host(&h, allow)
        };
        let bad = Err(Rejection::RejectHost(HostError::InvalidForwardedHost));
        assert_eq!(run(&[], Some(&allow)), Ok(()));
        assert_eq!(run(&["app.example.com"], Some(&allow)), Ok(()));
        assert_eq!(run(&["APP.example.com:443"], Some(&allow)), Ok(()));
        assert_eq!(run(&["evil.com"], None), Ok(()));
        assert_eq!(
            run(&["evil.com"], Some(&allow)),
            Err(Rejection::MisdirectedHost)
        );
        for v in ["evil.com/x?y", "a@evil.com:1", "a.com, b.com", "", "a b"] {
            assert_eq!(run(&[v], None), bad, "{v:?}");
        }
        assert_eq!(run(&["app.example.com", "app.example.com"], None), bad);
    }
}
