//! `Host` values and the `server.hosts` allowlist: parsing `host[:port]` (RFC 9110 §7.2,
//! RFC 3986 §3.2.2 without user info) and matching. Pure functions; the check that uses them
//! is `pipeline/host.rs`, and `config/` parses the allowlist entries with the same parser.

use std::net::Ipv6Addr;

/// A parsed `host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The host as sent (a reg-name, an IPv4 address, or `[IPv6]` with its brackets), without
    /// one trailing dot.
    pub host: &'a str,
    /// The address, when the host is a bracketed IPv6 literal.
    pub ipv6: Option<Ipv6Addr>,
    /// The port, when one is given.
    pub port: Option<u16>,
}

/// Parses `host[:port]`: a reg-name of letters, digits, `-`, `.`, `_`, `~` (which covers IPv4
/// addresses), or a bracketed IPv6 address (no zone, no IPvFuture); an optional port of one
/// to five digits, at most 65535. Anything else (user info, a path, spaces, percent escapes,
/// an empty host or port, a list) is `None`.
pub fn parse(s: &str) -> Option<HostPort<'_>> {
    let (host, ipv6, rest) = if let Some(inner) = s.strip_prefix('[') {
        let end = inner.find(']')?;
        let addr: Ipv6Addr = inner.get(..end)?.parse().ok()?;
        let host = s.get(..end + 2)?;
        (host, Some(addr), inner.get(end + 1..)?)
    } else {
        let end = s.find(':').unwrap_or(s.len());
        let host = s.get(..end)?;
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !ok {
            return None;
        }
        (host, None, s.get(end..)?)
    };
    let port = match rest {
        "" => None,
        _ => {
            let digits = rest.strip_prefix(':')?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    // `example.com.` is the same DNS name as `example.com`; `.` alone is not a host.
    let host = match host.strip_suffix('.') {
        Some(h) if ipv6.is_none() && !h.is_empty() && !h.ends_with('.') => h,
        Some(_) if ipv6.is_none() => return None,
        _ => host,
    };
    Some(HostPort { host, ipv6, port })
}

/// One `server.hosts` entry: `api.example.com`, `*.example.com` (exactly one more label),
/// `[::1]`, optionally with `:port` (then only that port matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// `*.` prefix: any single label before `host`.
    pub wildcard: bool,
    /// The host, lower-cased (without `*.`).
    pub host: String,
    /// The address of an IPv6 entry.
    pub ipv6: Option<Ipv6Addr>,
    /// The port, if the entry names one.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Parses an allowlist entry; `None` if it is not `[*.]host[:port]`.
    pub fn parse(entry: &str) -> Option<Self> {
        let (wildcard, rest) = match entry.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, entry),
        };
        let hp = parse(rest)?;
        if wildcard && hp.ipv6.is_some() {
            return None;
        }
        Some(Self {
            wildcard,
            host: hp.host.to_ascii_lowercase(),
            ipv6: hp.ipv6,
            port: hp.port,
        })
    }

    /// Whether a request's host matches: host case-insensitive, port only if the entry has one.
    pub fn matches(&self, hp: &HostPort<'_>) -> bool {
        if self.port.is_some() && self.port != hp.port {
            return false;
        }
        if let Some(addr) = self.ipv6 {
            return hp.ipv6 == Some(addr);
        }
        if hp.ipv6.is_some() {
            return false;
        }
        if !self.wildcard {
            return hp.host.eq_ignore_ascii_case(&self.host);
        }
        let (h, suffix) = (hp.host.as_bytes(), self.host.as_bytes());
        // `label.` + suffix, with a non-empty label that has no dot.
        let Some(split) = h.len().checked_sub(suffix.len() + 1) else {
            return false;
        };
        split > 0
            && h.get(split) == Some(&b'.')
            && h.get(split + 1..)
                .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
            && h.get(..split).is_some_and(|label| !label.contains(&b'.'))
    }
}

/// Whether any entry of the allowlist matches.
pub fn allowed(list: &[HostPattern], hp: &HostPort<'_>) -> bool {
    list.iter().any(|p| p.matches(hp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts() {
        for (s, host, port) in [
            ("example.com", "example.com", None),
            ("Example.COM:8443", "Example.COM", Some(8443)),
            ("localhost:0", "localhost", Some(0)),
            ("127.0.0.1:65535", "127.0.0.1", Some(65535)),
            ("[::1]", "[::1]", None),
            ("[2001:db8::1]:443", "[2001:db8::1]", Some(443)),
            ("example.com.", "example.com", None),
            ("example.com.:80", "example.com", Some(80)),
            ("my_host-1~x", "my_host-1~x", None),
        ] {
            let hp = parse(s).unwrap_or_else(|| panic!("{s:?} refused"));
            assert_eq!((hp.host, hp.port), (host, port), "{s:?}");
        }
    }

    #[test]
    fn invalid_hosts() {
        for s in [
            "",
            ":80",
            "example.com:",
            "example.com:65536",
            "example.com:123456",
            "example.com:-1",
            "example.com:8a",
            "example.com:80:80",
            "user@example.com",
            "user:pw@example.com",
            "example.com/path",
            "example.com?x",
            "example.com#x",
            "exa mple.com",
            " example.com",
            "example.com ",
            "a,b",
            "ex%41mple.com",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[fe80::1%25eth0]",
            "[v1.fe]",
            "[127.0.0.1]",
            "::1",
            ".",
            "example.com..",
            "*.example.com",
            "ex\\ample.com",
            "exämple.com",
        ] {
            assert_eq!(parse(s), None, "{s:?} accepted");
        }
    }

    #[test]
    fn allowlist_matching() {
        let list: Vec<HostPattern> = [
            "api.example.com",
            "*.example.com",
            "admin.test:8443",
            "[::1]",
        ]
        .iter()
        .map(|e| HostPattern::parse(e).expect("entry"))
        .collect();
        let ok = |s: &str| allowed(&list, &parse(s).expect("valid"));
        for s in [
            "api.example.com",
            "API.Example.Com:443",
            "api.example.com.",
            "a.example.com",
            "X-1.EXAMPLE.com:1",
            "admin.test:8443",
            "[::1]:9",
            "[0:0::1]",
        ] {
            assert!(ok(s), "{s} should be allowed");
        }
        for s in [
            "example.com",
            "a.b.example.com",
            "evilexample.com",
            "api.example.com.evil",
            "admin.test",
            "admin.test:8444",
            "[::2]",
            "127.0.0.1",
        ] {
            assert!(!ok(s), "{s} should be misdirected");
        }
        for bad in ["*.", "*.*.x", "a@b", "*.[::1]", "x:99999", ""] {
            assert_eq!(HostPattern::parse(bad), None, "{bad}");
        }
    }
}
