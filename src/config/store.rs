//! `store:` → [`StoreSettings`]: where live state is kept (docs/shared-state.md).

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Env;
use super::compile::{parse_duration, resolve};
use super::yaml::{ConfigError, Located};
use crate::policy::Environment;
use crate::policy::store::{Backend, OnStoreError, RedisSettings, StoreSettings};

/// `store:` settings: where rate limits, budgets, concurrency leases, revocations and toggle
/// overrides live. Restart to change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory` (default: per instance, nothing else to run) or `redis` (shared by every
    /// instance using the same server and `key_prefix`).
    #[serde(default)]
    pub backend: Option<Located<RawBackend>>,
    /// Redis connection (with `backend: redis`).
    #[serde(default)]
    pub redis: Option<RawRedis>,
    /// When Redis is down or slower than `timeout`: `deny` (503 `state_unavailable`; the
    /// default outside `environment: local`) or `allow_local` (each instance enforces its share
    /// of every limit, the limit divided by `expected_replicas`, until Redis answers again).
    #[serde(default)]
    pub on_store_error: Option<Located<OnStoreError>>,
    /// Instances sharing the limits (for `allow_local`; default 1).
    #[serde(default)]
    pub expected_replicas: Option<Located<u32>>,
    /// How long the local copy of revocations and toggle overrides may go without a
    /// successful sync with Redis before requests that depend on it get 503
    /// `state_unavailable` (default 5s).
    #[serde(default)]
    pub max_staleness: Option<Located<String>>,
    /// Lease of a per-tenant concurrency slot in Redis: an instance that dies holding slots
    /// gives them back after this long (default 5m; longer than your longest request).
    #[serde(default)]
    pub lease: Option<Located<String>>,
}

/// The store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawBackend {
    /// In process.
    Memory,
    /// Redis.
    Redis,
}

/// `store.redis`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS). A URL with a password
    /// is only allowed inline with `environment: local`; otherwise use `url_env`.
    #[serde(default)]
    pub url: Option<Located<String>>,
    /// The environment variable holding the URL (e.g. `REDIS_URL`).
    #[serde(default)]
    pub url_env: Option<Located<String>>,
    /// Prefix of every key (default `fortress:`); the key format version (`v1:`) follows it.
    /// Instances that must share limits use the same prefix.
    #[serde(default)]
    pub key_prefix: Option<Located<String>>,
    /// Longest a request waits for Redis (default 50ms, 1ms to 5s).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
    /// Connections to Redis (default 16, 1 to 256); each carries many requests at once.
    #[serde(default)]
    pub pool_size: Option<Located<u32>>,
    /// How often the local copy of revocations and toggle overrides is compared with Redis,
    /// besides the change notifications (default 1s).
    #[serde(default)]
    pub resync: Option<Located<String>>,
    /// CA certificates (PEM) for `rediss://` (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<Located<String>>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_STALENESS: Duration = Duration::from_secs(5);
const DEFAULT_RESYNC: Duration = Duration::from_secs(1);
const DEFAULT_LEASE: Duration = Duration::from_secs(300);
const DEFAULT_POOL: u32 = 16;
/// Longest key prefix.
const MAX_PREFIX: usize = 64;

fn duration(
    v: Option<&Located<String>>,
    name: &str,
    default: Duration,
    range: (Duration, Duration),
    errors: &mut Vec<ConfigError>,
) -> Duration {
    let Some(v) = v else { return default };
    match parse_duration(&v.value) {
        Some(d) if d >= range.0 && d <= range.1 => d,
        Some(_) => {
            errors.push(ConfigError::at(
                v.pos,
                format!("`{name}` must be between {:?} and {:?}", range.0, range.1),
            ));
            default
        }
        None => {
            errors.push(ConfigError::at(
                v.pos,
                format!("`{name}`: expected a duration such as `50ms`, `5s` or `5m`"),
            ));
            default
        }
    }
}

/// Compiles `store:` (absent: the in-memory store).
pub fn compile(
    raw: Option<&RawStore>,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> StoreSettings {
    let Some(raw) = raw else {
        return StoreSettings {
            expected_replicas: 1,
            max_staleness: DEFAULT_STALENESS,
            lease: DEFAULT_LEASE,
            on_store_error: default_on_error(environment),
            ..StoreSettings::default()
        };
    };
    let expected_replicas = match &raw.expected_replicas {
        Some(r) if (1..=10_000).contains(&r.value) => r.value,
        Some(r) => {
            errors.push(ConfigError::at(
                r.pos,
                "`expected_replicas` must be between 1 and 10000",
            ));
            1
        }
        None => 1,
    };
    let max_staleness = duration(
        raw.max_staleness.as_ref(),
        "max_staleness",
        DEFAULT_STALENESS,
        (Duration::from_secs(1), Duration::from_secs(86_400)),
        errors,
    );
    let lease = duration(
        raw.lease.as_ref(),
        "lease",
        DEFAULT_LEASE,
        (Duration::from_secs(1), Duration::from_secs(86_400)),
        errors,
    );
    let on_store_error = raw
        .on_store_error
        .as_ref()
        .map_or(default_on_error(environment), |o| o.value);
    let backend = match raw.backend.as_ref().map(|b| b.value) {
        None | Some(RawBackend::Memory) => {
            if let Some(r) = &raw.redis
                && let Some(pos) = r
                    .url
                    .as_ref()
                    .map(|u| u.pos)
                    .or(r.url_env.as_ref().map(|u| u.pos))
            {
                errors.push(ConfigError::at(
                    pos,
                    "`store.redis` is set but `store.backend` is not `redis`",
                ));
            }
            Backend::Memory
        }
        Some(RawBackend::Redis) => match &raw.redis {
            Some(r) => compile_redis(r, base, environment, env, errors)
                .map_or(Backend::Memory, Backend::Redis),
            None => {
                let pos = raw.backend.as_ref().map(|b| b.pos).unwrap_or_default();
                errors.push(ConfigError::at(
                    pos,
                    "`backend: redis` needs `store.redis` with `url` or `url_env`",
                ));
                Backend::Memory
            }
        },
    };
    if let Backend::Redis(r) = &backend
        && max_staleness <= r.resync * 2
    {
        let pos = raw
            .max_staleness
            .as_ref()
            .map(|m| m.pos)
            .or(raw
                .redis
                .as_ref()
                .and_then(|r| r.resync.as_ref())
                .map(|r| r.pos))
            .unwrap_or_default();
        errors.push(ConfigError::at(
            pos,
            format!(
                "`max_staleness` ({max_staleness:?}) must be more than twice `store.redis.resync` ({:?}): otherwise the local copy is stale between two syncs",
                r.resync
            ),
        ));
    }
    if let (Backend::Memory, Some(o)) = (&backend, &raw.on_store_error)
        && o.value == OnStoreError::AllowLocal
    {
        errors.push(ConfigError::at(
            o.pos,
            "`on_store_error` only applies to `backend: redis` (the in-memory store never fails)",
        ));
    }
    StoreSettings {
        backend,
        on_store_error,
        expected_replicas,
        max_staleness,
        lease,
    }
}

/// Whether `store:` selects Redis (budgets and admin state then live there, not in
/// `server.state_dir`).
pub fn is_redis(raw: Option<&RawStore>) -> bool {
    raw.and_then(|s| s.backend.as_ref())
        .is_some_and(|b| b.value == RawBackend::Redis)
}

fn default_on_error(environment: Environment) -> OnStoreError {
    if environment == Environment::Local {
        OnStoreError::AllowLocal
    } else {
        OnStoreError::Deny
    }
}

fn compile_redis(
    r: &RawRedis,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<RedisSettings> {
    let url = match (&r.url, &r.url_env) {
        (Some(u), None) => {
            if environment != Environment::Local && has_password(&u.value) {
                errors.push(ConfigError::at(
                    u.pos,
                    "a Redis URL with a password is only allowed inline with `environment: local`; use `url_env`",
                ));
                return None;
            }
            (u.value.clone(), u.pos)
        }
        (None, Some(name)) => match env.var(&name.value) {
            // `fortress check --offline`: the URL is unknown; any valid one stands in.
            Some(v) if v == super::production::OFFLINE_PLACEHOLDER => {
                ("redis://offline.invalid:6379".to_owned(), name.pos)
            }
            Some(v) if !v.trim().is_empty() => (v.trim().to_owned(), name.pos),
            _ => {
                errors.push(ConfigError::at(
                    name.pos,
                    format!("environment variable `{}` is not set", name.value),
                ));
                return None;
            }
        },
        (Some(u), Some(_)) => {
            errors.push(ConfigError::at(
                u.pos,
                "`store.redis` needs exactly one of `url` or `url_env`",
            ));
            return None;
        }
        (None, None) => {
            errors.push(ConfigError::whole(
                "`store.redis` needs `url` or `url_env`".to_owned(),
            ));
            return None;
        }
    };
    let (url, pos) = url;
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok || ::redis::Client::open(url.as_str()).is_err() {
        errors.push(ConfigError::at(
            pos,
            format!(
                "`{}` is not a Redis URL (`redis://host:port[/db]` or `rediss://…`; Sentinel and Cluster URLs are not supported, see docs/shared-state.md)",
                crate::policy::store::redact_url(&url)
            ),
        ));
        return None;
    }
    let key_prefix = match &r.key_prefix {
        Some(p)
            if !p.value.is_empty()
                && p.value.len() <= MAX_PREFIX
                && p.value.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            p.value.clone()
        }
        Some(p) => {
            errors.push(ConfigError::at(
                p.pos,
                format!("`key_prefix` must be 1 to {MAX_PREFIX} printable ASCII characters without spaces"),
            ));
            return None;
        }
        None => "fortress:".to_owned(),
    };
    let timeout = duration(
        r.timeout.as_ref(),
        "timeout",
        DEFAULT_TIMEOUT,
        (Duration::from_millis(1), Duration::from_secs(5)),
        errors,
    );
    let resync = duration(
        r.resync.as_ref(),
        "resync",
        DEFAULT_RESYNC,
        (Duration::from_millis(100), Duration::from_secs(60)),
        errors,
    );
    let pool_size = match &r.pool_size {
        Some(p) if (1..=256).contains(&p.value) => p.value,
        Some(p) => {
            errors.push(ConfigError::at(
                p.pos,
                "`pool_size` must be between 1 and 256",
            ));
            DEFAULT_POOL
        }
        None => DEFAULT_POOL,
    };
    let ca_file = match &r.ca_file {
        Some(f) if url.starts_with("rediss://") => {
            let path = resolve(base, &f.value);
            if !path.is_file() {
                errors.push(ConfigError::at(
                    f.pos,
                    format!("{}: no such file", path.display()),
                ));
            }
            Some(path)
        }
        Some(f) => {
            errors.push(ConfigError::at(f.pos, "`ca_file` needs a `rediss://` URL"));
            None
        }
        None => None,
    };
    Some(RedisSettings {
        url,
        key_prefix,
        timeout,
        pool_size: pool_size as usize,
        resync,
        ca_file,
    })
}

/// Whether a Redis URL carries a password (`user:password@` or `:password@`).
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| !userinfo.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::Duration;

    use crate::policy::store::{Backend, OnStoreError};

    struct Vars(HashMap<&'static str, &'static str>);

    impl crate::config::Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn load(environment: &str, store: &str) -> Result<crate::policy::Policy, String> {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
             environment: {environment}\n{store}routes:\n  - name: all\n    match: {{ path: \"/**\" }}\n    \
             public: true\n"
        );
        let env = Vars(HashMap::from([(
            "REDIS_URL",
            "redis://:pw@redis.svc:6379/2",
        )]));
        crate::config::load_str_with_env(&text, Path::new("/nowhere/fortress.yaml"), &env)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn memory_by_default_and_defaults_per_environment() {
        let p = load("local", "").expect("valid");
        assert_eq!(p.store.backend, Backend::Memory);
        assert_eq!(p.store.on_store_error, OnStoreError::AllowLocal);
        let p = load("production", "").expect("valid");
        assert_eq!(p.store.on_store_error, OnStoreError::Deny);
        assert_eq!(p.store.max_staleness, Duration::from_secs(5));
        assert_eq!(p.store.lease, Duration::from_secs(300));
    }

    #[test]
    fn redis_from_env_with_every_setting() {
        let p = load(
            "production",
            "store:\n  backend: redis\n  redis: { url_env: REDIS_URL, key_prefix: \"app1:\", timeout: 20ms, pool_size: 4, resync: 500ms }\n  \
             on_store_error: allow_local\n  expected_replicas: 3\n  max_staleness: 10s\n  lease: 1m\n",
        )
        .expect("valid");
        let Backend::Redis(r) = &p.store.backend else {
            panic!("redis expected")
        };
        assert_eq!(r.url, "redis://:pw@redis.svc:6379/2");
        assert_eq!(r.key_prefix, "app1:");
        assert_eq!(r.timeout, Duration::from_millis(20));
        assert_eq!((r.pool_size, r.resync), (4, Duration::from_millis(500)));
        assert_eq!(p.store.on_store_error, OnStoreError::AllowLocal);
        assert_eq!(p.store.expected_replicas, 3);
        assert_eq!(p.store.max_staleness, Duration::from_secs(10));
        assert_eq!(p.store.lease, Duration::from_secs(60));
        // The password never shows in debug output.
        assert!(!format!("{:?}", p.store).contains("pw"));
    }

    #[test]
    fn offline_check_accepts_a_url_from_the_environment() {
        let text = "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n\
                    store:\n  backend: redis\n  redis: { url_env: REDIS_URL }\nroutes:\n  \
                    - name: all\n    match: { path: \"/**\" }\n    public: true\n";
        let p = crate::config::load_str_with_env(
            text,
            Path::new("/nowhere/fortress.yaml"),
            &crate::config::production::OfflineEnv,
        )
        .expect("valid offline");
        assert!(matches!(p.store.backend, Backend::Redis(_)));
    }

    #[test]
    fn precise_errors() {
        let cases = [
            (
                "store:\n  backend: redis\n",
                "7:12: `backend: redis` needs `store.redis` with `url` or `url_env`",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"http://x\" }\n",
                "8:17: `http://x` is not a Redis URL",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"redis://u:secret@h:1\" }\n",
                "8:17: a Redis URL with a password is only allowed inline with `environment: local`",
            ),
            (
                "store:\n  backend: redis\n  redis: { url_env: NOPE }\n",
                "8:21: environment variable `NOPE` is not set",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"redis://h:1\", timeout: 10s }\n",
                "`timeout` must be between",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"redis://h:1\", pool_size: 0 }\n",
                "`pool_size` must be between 1 and 256",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"redis://h:1\", resync: 5s }\n",
                "`max_staleness` (5s) must be more than twice `store.redis.resync` (5s)",
            ),
            (
                "store:\n  on_store_error: allow_local\n",
                "`on_store_error` only applies to `backend: redis`",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"redis://h:1\", key_prefix: \"a b\" }\n",
                "`key_prefix` must be 1 to 64 printable ASCII characters",
            ),
            (
                "store:\n  backend: redis\n  redis: { url: \"redis://h:1\" }\n  bogus: 1\n",
                "bogus",
            ),
        ];
        for (store, want) in cases {
            let e = load("production", store).expect_err(store);
            assert!(e.contains(want), "{store}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
