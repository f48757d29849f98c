//! Compiles concurrency classes (`classes:`, a route's `class:`), IP allowlists
//! (`allow_ips:`, policy-wide and per route) and failed-authentication throttling
//! (`failed_auth_limit:`). The raw types are here too (`raw.rs` refers to them), so the
//! JSON Schema carries their documentation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;

use super::compile::duration_or;
use super::yaml::{ConfigError, Located};
use crate::policy::auth_throttle::FailedAuthLimit;
use crate::policy::classes::{ClassSpec, Classes};
use crate::policy::ip_allow::{IpAllowList, canonical_net};

/// One concurrency class under `classes:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    /// Requests of this class in flight at once, per fortress instance (N replicas allow
    /// N × this). Required, at least 1.
    pub max_in_flight: Located<u32>,
    /// Requests that may wait for a permit when all are taken (default 0: refused at once).
    /// A request arriving with the queue full is refused at once.
    #[serde(default)]
    pub queue: Option<Located<u32>>,
    /// How long a queued request waits for a permit before 503 `overloaded` (default 1s).
    #[serde(default)]
    pub queue_timeout: Option<Located<String>>,
    /// Requests of one tenant (the verified token's tenant claim) in flight at once in this
    /// class; a request over it is refused at once (it does not queue). Requests without a
    /// tenant share one bucket with the same cap. Default: no per-tenant cap.
    #[serde(default)]
    pub per_tenant_max_in_flight: Option<Located<u32>>,
}

/// `failed_auth_limit:` (top level).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFailedAuthLimit {
    /// `false` turns throttling off (default true).
    #[serde(default)]
    pub enabled: Option<Located<bool>>,
    /// Failed authentications tolerated per client IP and window (default 50); the next one
    /// trips the throttle.
    #[serde(default)]
    pub max: Option<Located<u32>>,
    /// The window, e.g. `1m` (default 1m); fixed windows aligned to the clock.
    #[serde(default)]
    pub per: Option<Located<String>>,
}

/// Compiles `classes:`.
pub fn classes(raw: &BTreeMap<String, RawClass>, errors: &mut Vec<ConfigError>) -> Classes {
    let mut list = Vec::with_capacity(raw.len());
    for (name, c) in raw {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !valid_name {
            errors.push(ConfigError::at(
                c.max_in_flight.pos,
                format!(
                    "class name `{name}`: expected 1-64 ASCII letters, digits, `_` or `-` \
                     (it is a metrics label)"
                ),
            ));
        }
        if c.max_in_flight.value == 0 {
            errors.push(ConfigError::at(
                c.max_in_flight.pos,
                format!("class `{name}`: `max_in_flight` must be at least 1"),
            ));
        }
        let queue_timeout = duration_or(&c.queue_timeout, Duration::from_secs(1), errors);
        if let Some(p) = &c.per_tenant_max_in_flight
            && (p.value == 0 || p.value > c.max_in_flight.value)
        {
            errors.push(ConfigError::at(
                p.pos,
                format!(
                    "class `{name}`: `per_tenant_max_in_flight` must be between 1 and \
                     `max_in_flight` ({})",
                    c.max_in_flight.value
                ),
            ));
        }
        list.push(Arc::new(ClassSpec {
            name: Arc::from(name.as_str()),
            max_in_flight: c.max_in_flight.value.max(1),
            queue: c.queue.as_ref().map_or(0, |q| q.value),
            queue_timeout,
            per_tenant_max_in_flight: c.per_tenant_max_in_flight.as_ref().map(|p| p.value),
        }));
    }
    Classes { list }
}

/// A route's class: the one it names (unknown → error), else `default` when defined.
pub fn route_class(
    class: Option<&Located<String>>,
    classes: &Classes,
    errors: &mut Vec<ConfigError>,
) -> Option<usize> {
    match class {
        Some(c) => {
            let found = classes.index_of(&c.value);
            if found.is_none() {
                let known: Vec<&str> = classes.list.iter().map(|c| &*c.name).collect();
                errors.push(ConfigError::at(
                    c.pos,
                    format!(
                        "unknown class `{}`: define it under `classes:` (defined: {})",
                        c.value,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            found
        }
        None => classes.index_of(crate::policy::classes::DEFAULT_CLASS),
    }
}

/// Compiles an `allow_ips:` list (CIDRs or single addresses, v4 or v6).
pub fn allow_ips(
    raw: Option<&Vec<Located<String>>>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<IpAllowList>> {
    let raw = raw?;
    if raw.is_empty() {
        errors.push(ConfigError::whole(
            "`allow_ips` is empty: it would refuse every request; list networks or leave it out",
        ));
        return None;
    }
    let mut nets = Vec::with_capacity(raw.len());
    for entry in raw {
        let s = entry.value.trim();
        let parsed = s
            .parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(net) if net.trunc() != net => errors.push(ConfigError::at(
                entry.pos,
                format!(
                    "`{s}` has host bits set after the prefix: write the network, `{}`",
                    net.trunc()
                ),
            )),
            Some(net) => nets.push(canonical_net(net)),
            None => errors.push(ConfigError::at(
                entry.pos,
                format!("`{s}` is not a CIDR or IP address: expected e.g. 10.0.0.0/8, 192.168.1.5 or 2001:db8::/32"),
            )),
        }
    }
    Some(Arc::new(IpAllowList::new(nets)))
}

/// Compiles `failed_auth_limit:`; absent → the default (on).
pub fn failed_auth(
    raw: Option<&RawFailedAuthLimit>,
    errors: &mut Vec<ConfigError>,
) -> Option<FailedAuthLimit> {
    let Some(raw) = raw else {
        return Some(FailedAuthLimit::DEFAULT);
    };
    if raw.enabled.as_ref().is_some_and(|e| !e.value) {
        return None;
    }
    let max = match &raw.max {
        Some(m) if m.value == 0 => {
            errors.push(ConfigError::at(
                m.pos,
                "`failed_auth_limit.max` must be at least 1 (use `enabled: false` to turn it off)",
            ));
            1
        }
        Some(m) => u64::from(m.value),
        None => FailedAuthLimit::DEFAULT.max,
    };
    let per = duration_or(&raw.per, FailedAuthLimit::DEFAULT.per, errors);
    if per > Duration::from_secs(86_400)
        && let Some(p) = &raw.per
    {
        errors.push(ConfigError::at(
            p.pos,
            "`failed_auth_limit.per` must be at most 24h",
        ));
    }
    Some(FailedAuthLimit { max, per })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(top: &str, route_extra: &str) -> Result<crate::policy::Policy, String> {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n\
             {top}routes:\n  - name: all\n    match: {{ path: \"/**\" }}\n    \
             public: true\n{route_extra}"
        );
        crate::config::load_str(&text, Path::new("/nowhere/fortress.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn classes_and_route_class() {
        let p = load(
            "classes:\n  bulk: { max_in_flight: 20, queue: 50, queue_timeout: 2s, per_tenant_max_in_flight: 5 }\n  realtime: { max_in_flight: 200 }\n",
            "    class: bulk\n",
        )
        .expect("valid");
        assert_eq!(p.classes.list.len(), 2);
        let bulk = &p.classes.list[0];
        assert_eq!(
            (
                &*bulk.name,
                bulk.max_in_flight,
                bulk.queue,
                bulk.per_tenant_max_in_flight
            ),
            ("bulk", 20, 50, Some(5))
        );
        assert_eq!(bulk.queue_timeout, std::time::Duration::from_secs(2));
        assert_eq!(p.router.routes()[0].access.class, Some(0));
        let rt = &p.classes.list[1];
        assert_eq!((rt.queue, rt.queue_timeout.as_secs()), (0, 1));

        // No class: unlimited, unless `default` exists.
        let p = load("classes:\n  realtime: { max_in_flight: 2 }\n", "").expect("valid");
        assert_eq!(p.router.routes()[0].access.class, None);
        let p = load("classes:\n  default: { max_in_flight: 2 }\n", "").expect("valid");
        assert_eq!(p.router.routes()[0].access.class, Some(0));

        let e = load(
            "classes:\n  bulk: { max_in_flight: 2 }\n",
            "    class: bluk\n",
        )
        .expect_err("unknown class");
        assert!(
            e.contains("fortress.yaml:11:12: unknown class `bluk`: define it under `classes:` (defined: bulk)"),
            "{e}"
        );
        let e = load(
            "classes:\n  bulk: { max_in_flight: 0, per_tenant_max_in_flight: 3, queue_timeout: soon }\n  \"a b\": { max_in_flight: 1 }\n",
            "",
        )
        .expect_err("bad classes");
        assert!(e.contains("`max_in_flight` must be at least 1"), "{e}");
        assert!(
            e.contains("`per_tenant_max_in_flight` must be between 1"),
            "{e}"
        );
        assert!(e.contains("`soon` is not a duration"), "{e}");
        assert!(e.contains("class name `a b`"), "{e}");
        let e = load("classes:\n  bulk: { max_in_flight: 1, queues: 3 }\n", "")
            .expect_err("unknown key");
        assert!(e.contains("queues"), "{e}");
    }

    #[test]
    fn allow_ips_lists() {
        let p = load(
            "allow_ips: [10.0.0.0/8, 192.168.1.5, \"2001:db8::/32\", \"::ffff:172.16.0.0/108\"]\n",
            "    allow_ips: [10.1.0.0/16]\n",
        )
        .expect("valid");
        let global = p.allow_ips.as_ref().expect("global");
        assert_eq!(global.nets().len(), 4);
        assert_eq!(global.nets()[3].to_string(), "172.16.0.0/12");
        assert!(p.router.routes()[0].access.allow_ips.is_some());
        let e = load("allow_ips: [10.0.0.1/8, nope, \"\"]\n", "").expect_err("bad");
        assert!(
            e.contains("fortress.yaml:5:13: `10.0.0.1/8` has host bits set after the prefix: write the network, `10.0.0.0/8`"),
            "{e}"
        );
        assert!(e.contains("`nope` is not a CIDR or IP address"), "{e}");
        let e = load("", "    allow_ips: []\n").expect_err("empty");
        assert!(e.contains("`allow_ips` is empty"), "{e}");
    }

    #[test]
    fn failed_auth_limit_defaults_on() {
        use crate::policy::auth_throttle::FailedAuthLimit;
        let p = load("", "").expect("valid");
        assert_eq!(p.failed_auth, Some(FailedAuthLimit::DEFAULT));
        let p = load("failed_auth_limit: { max: 5, per: 10m }\n", "").expect("valid");
        assert_eq!(
            p.failed_auth,
            Some(FailedAuthLimit {
                max: 5,
                per: std::time::Duration::from_secs(600)
            })
        );
        let p = load("failed_auth_limit: { enabled: false }\n", "").expect("valid");
        assert_eq!(p.failed_auth, None);
        let e = load("failed_auth_limit: { max: 0, per: 2d }\n", "").expect_err("bad");
        assert!(
            e.contains("`failed_auth_limit.max` must be at least 1"),
            "{e}"
        );
        assert!(e.contains("`2d` is not a duration"), "{e}");
    }
}
