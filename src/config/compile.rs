//! Raw config → [`Policy`]: every value checked, every error collected with its position.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::{Authority, Uri};
use ipnet::IpNet;

use super::raw::{RawConfig, RawRoute, RawServer, RawTimeouts};
use super::yaml::{ConfigError, Located};
use super::{Env, ServerSettings, Timeouts, TlsFiles};
use crate::pipeline::normalize::normalize_path;
use crate::policy::auth::AuthSettings;
use crate::policy::headers::{
    ALWAYS_PROTECTED, DEFAULT_STRIP_CLIENT_HEADERS, HeaderRules, NameSet,
};
use crate::policy::host::HostPattern;
use crate::policy::identity::IdentityHeaders;
use crate::policy::route::{Access, Route, Router, TenantRule, TenantSource};
use crate::policy::stream::StreamRules;
use crate::policy::{DefaultAction, Environment, Mode, PathSettings, Policy};

/// Compiles a parsed config. `base` is the config file's directory (for relative paths).
pub fn compile(
    raw: RawConfig,
    base: &Path,
    hash: String,
    env: &dyn Env,
) -> Result<Policy, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if let Some(v) = &raw.version
        && v.value != 1
    {
        errors.push(ConfigError::at(v.pos, "unsupported `version`: expected 1"));
    }
    let server = compile_server(&raw.server, base, &mut errors);
    let auth = raw
        .authentication
        .as_ref()
        .and_then(|a| super::auth::compile(a, base, server.environment, env, &mut errors));
    let audit = raw
        .audit
        .as_ref()
        .and_then(|a| super::audit::compile(a, base, server.environment, env, &mut errors));
    let telemetry = super::telemetry::compile(raw.telemetry.as_ref(), env, &mut errors);
    let store = super::store::compile(
        raw.store.as_ref(),
        base,
        server.environment,
        env,
        &mut errors,
    );
    let assertion = raw
        .identity_assertion
        .as_ref()
        .and_then(|a| super::assertion::compile(a, base, server.environment, env, &mut errors));
    let rbac = super::rbac::compile(&raw.roles, &mut errors);
    super::lint::lint(&raw, &rbac, &mut errors);
    let streams = super::streams::compile(&raw.streams, &mut errors);
    let edge = super::edge::compile_top(
        &super::edge::TopLevel {
            max_body: raw.server.max_body.as_ref(),
            security_headers: raw.security_headers.as_ref(),
            cors: raw.cors.as_ref(),
            scrub_errors: raw.scrub_errors.as_ref(),
            environment: server.environment,
        },
        &mut errors,
    );
    let limits = crate::policy::limits::Limits {
        default_rate: super::limits::rate_limits(
            raw.rate_limit.as_ref(),
            super::limits::Scope::Default,
            &mut errors,
        ),
        tenant_budget: super::limits::budgets(
            raw.budgets.as_ref(),
            // Budgets kept in a shared store survive restarts there.
            server.state_dir.is_some() || super::store::is_redis(raw.store.as_ref()),
            server.environment == Environment::Local,
            &mut errors,
        ),
    };
    let classes = super::traffic_guards::classes(&raw.classes, &mut errors);
    let allow_ips = super::traffic_guards::allow_ips(raw.allow_ips.as_ref(), &mut errors);
    let failed_auth =
        super::traffic_guards::failed_auth(raw.failed_auth_limit.as_ref(), &mut errors);
    let mut routes = compile_routes(&raw, &server, &streams, &limits, &classes, &mut errors);
    let toggles = super::toggles::toggles(&raw.toggles, &mut errors);
    let admin = super::toggles::admin(raw.admin.as_ref(), &mut errors);
    for (route, r) in routes.routes.iter_mut().zip(&raw.routes) {
        route.access.requires_toggle =
            super::toggles::route_toggle(r.requires_toggle.as_ref(), &toggles, &mut errors);
    }
    for (route, r) in routes.routes.iter_mut().zip(&raw.routes) {
        route.edge = super::edge::compile_route(
            &edge,
            raw.security_headers.as_ref(),
            &super::edge::RouteKeys {
                max_body: r.max_body.as_ref(),
                content_types: r.content_types.as_ref(),
                security_headers: r.security_headers.as_ref(),
                cors: r.cors.as_ref(),
                scrub_errors: r.scrub_errors.as_ref(),
            },
            &mut errors,
        );
    }
    let mut headers = header_rules(&raw, auth.as_ref(), &routes.routes, &mut errors);
    // Headers a rate limit is keyed by are read by the policy: their `_` spellings are refused.
    let limit_headers = limits
        .default_rate
        .iter()
        .chain(routes.routes.iter().flat_map(|r| r.limits.rate.iter()));
    for l in limit_headers {
        for k in &l.key {
            if let crate::policy::limits::KeyPart::Header(h) = k {
                headers.protected.add(h.as_str());
            }
        }
    }
    let paths = PathSettings {
        matrix_parameters: raw
            .paths
            .as_ref()
            .and_then(|p| p.matrix_parameters)
            .unwrap_or_default(),
        case_insensitive: raw
            .paths
            .as_ref()
            .and_then(|p| p.case_insensitive.as_ref())
            .is_some_and(|c| c.value),
        route_variants: raw
            .paths
            .as_ref()
            .and_then(|p| p.route_variants)
            .unwrap_or_default(),
    };
    if paths.case_insensitive {
        // Requests are lower-cased before matching: an upper-case literal could never match.
        for r in &raw.routes {
            let path = &r.matcher.path;
            let literal_upper = path
                .value
                .split('/')
                .filter(|seg| !seg.starts_with('{'))
                .any(|seg| seg.bytes().any(|b| b.is_ascii_uppercase()));
            if literal_upper {
                errors.push(ConfigError::at(
                    path.pos,
                    format!(
                        "path pattern `{}` has upper-case letters but `paths.case_insensitive` \
                         lower-cases every request path: write it in lower case",
                        path.value
                    ),
                ));
            }
        }
    }
    let readiness = super::readiness::compile(
        &raw.readiness,
        &raw.routes
            .iter()
            .map(|r| r.guard.as_ref())
            .collect::<Vec<_>>(),
        routes
            .routes
            .iter()
            .map(|r| r.stream.as_ref().is_some_and(|s| s.sql_guard.is_some()))
            .collect(),
        &toggles,
        &mut errors,
    );
    let positions = routes.positions.clone();
    let router = match Router::build(routes.routes) {
        Ok(router) => Some(router),
        Err(route_errors) => {
            for (idx, msg) in route_errors {
                if let Some(pos) = routes.positions.get(idx) {
                    errors.push(ConfigError::at(*pos, msg));
                }
            }
            None
        }
    };
    match router {
        Some(router) if errors.is_empty() => Ok(Policy {
            warnings: super::lint::shadowed_routes(
                &router,
                &positions,
                raw.default.unwrap_or(DefaultAction::Deny),
                paths,
            ),
            server,
            default: raw.default.unwrap_or(DefaultAction::Deny),
            dry_run: raw.mode == Some(Mode::DryRun),
            router,
            rbac,
            auth,
            headers,
            hash,
            input_files: super::auth::input_files(&raw, base),
            paths,
            audit,
            assertion,
            edge,
            limits,
            classes,
            allow_ips,
            failed_auth,
            telemetry,
            readiness,
            toggles,
            admin,
            store,
        }),
        _ => {
            errors.sort_by_key(|e| e.pos.map(|p| (p.line, p.col)));
            Err(errors)
        }
    }
}

fn compile_server(raw: &RawServer, base: &Path, errors: &mut Vec<ConfigError>) -> ServerSettings {
    let listen = socket_addr(&raw.listen, errors);
    let admin = raw
        .admin
        .as_ref()
        .map(|a| socket_addr(a, errors))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    if let Some(a) = &raw.admin
        && listen == admin
        && listen.port() != 0
    {
        errors.push(ConfigError::at(
            a.pos,
            "`server.admin` must differ from `server.listen`",
        ));
    }
    let probes = super::lifecycle::probes(raw.probes.as_ref(), listen, admin, errors);
    let upstream = upstream(&raw.upstream, errors);
    let tls = raw.tls.as_ref().map(|t| TlsFiles {
        cert: resolve(base, &t.cert.value),
        key: resolve(base, &t.key.value),
    });
    let mut trusted_proxies = Vec::new();
    for cidr in &raw.trusted_proxies {
        match parse_cidr(&cidr.value) {
            Some(net) => trusted_proxies.push(net),
            None => errors.push(ConfigError::at(
                cidr.pos,
                format!(
                    "`{}` is not a CIDR or IP address: expected e.g. 10.0.0.0/8 or 127.0.0.1",
                    cidr.value
                ),
            )),
        }
    }
    let default_timeouts = RawTimeouts::default();
    let t = raw.timeouts.as_ref().unwrap_or(&default_timeouts);
    let timeouts = Timeouts {
        handshake: duration_or(&t.handshake, Duration::from_secs(10), errors),
        header_read: duration_or(&t.header_read, Duration::from_secs(10), errors),
        idle: duration_or(&t.idle, Duration::from_secs(60), errors),
        upstream_connect: duration_or(&t.upstream_connect, Duration::from_secs(2), errors),
        upstream_response: duration_or(&t.upstream_response, Duration::from_secs(30), errors),
        shutdown_grace: duration_or(&t.shutdown_grace, Duration::from_secs(30), errors),
        shutdown_delay: super::lifecycle::shutdown_delay(t.shutdown_delay.as_ref(), errors),
        websocket_idle: duration_or(&t.websocket_idle, Duration::from_secs(60), errors),
        body_read: duration_or(&t.body_read, Duration::from_secs(30), errors),
    };
    let max_connections = match &raw.max_connections {
        Some(m) if m.value == 0 => {
            errors.push(ConfigError::at(
                m.pos,
                "`max_connections` must be at least 1",
            ));
            1
        }
        Some(m) => m.value as usize,
        None => 10_000,
    };
    let max_header_bytes = bounded(
        &raw.max_header_bytes,
        "max_header_bytes",
        (1024, 1024 * 1024),
        DEFAULT_MAX_HEADER_BYTES,
        errors,
    );
    let max_headers = bounded(
        &raw.max_headers,
        "max_headers",
        (1, 10_000),
        DEFAULT_MAX_HEADERS,
        errors,
    );
    let environment = raw.environment.unwrap_or(Environment::Production);
    let allow_insecure_local = match &raw.allow_insecure_local {
        Some(a) if a.value && environment != Environment::Local => {
            errors.push(ConfigError::at(
                a.pos,
                "`allow_insecure_local` is only allowed with `environment: local`",
            ));
            false
        }
        Some(a) => a.value,
        None => false,
    };
    let hosts = raw.hosts.as_ref().map(|list| {
        if list.is_empty() {
            errors.push(ConfigError::whole(
                "`server.hosts` is empty: list at least one host or leave it out",
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for h in list {
            match HostPattern::parse(&h.value) {
                Some(p) => out.push(p),
                None => errors.push(ConfigError::at(
                    h.pos,
                    format!(
                        "`{}` is not a host: expected HOST, HOST:PORT or *.DOMAIN (no scheme, \
                         user info or path)",
                        h.value
                    ),
                )),
            }
        }
        out
    });
    ServerSettings {
        hosts,
        listen,
        admin,
        probes,
        upstream,
        tls,
        environment,
        trusted_proxies,
        require_https: raw.require_https.unwrap_or(true),
        allow_insecure_local,
        timeouts,
        max_connections,
        upstream_affinity: raw.upstream_affinity.unwrap_or(true),
        admin_hosts: admin_hosts(&raw.admin_hosts, errors),
        state_dir: raw.state_dir.as_ref().map(|d| resolve(base, &d.value)),
        max_header_bytes,
        max_headers,
    }
}

/// Default `server.max_header_bytes`: 96 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 96 * 1024;
/// Default `server.max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// A count or size limit within `(min, max)`; a precise error outside it.
fn bounded(
    raw: &Option<Located<u32>>,
    key: &str,
    (min, max): (u32, u32),
    default: usize,
    errors: &mut Vec<ConfigError>,
) -> usize {
    match raw {
        None => default,
        Some(v) if v.value < min || v.value > max => {
            errors.push(ConfigError::at(
                v.pos,
                format!("`{key}` must be between {min} and {max} (got {})", v.value),
            ));
            default
        }
        Some(v) => v.value as usize,
    }
}

/// `server.admin_hosts`: host names (no port, no scheme), lower-cased.
fn admin_hosts(raw: &[Located<String>], errors: &mut Vec<ConfigError>) -> Vec<String> {
    let mut out = Vec::with_capacity(raw.len());
    for h in raw {
        let name = h.value.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if valid {
            out.push(name);
        } else {
            errors.push(ConfigError::at(
                h.pos,
                format!(
                    "`{}` is not a host name: expected e.g. fortress-admin.svc (no port, no scheme)",
                    h.value
                ),
            ));
        }
    }
    out
}

struct CompiledRoutes {
    routes: Vec<Route>,
    positions: Vec<super::yaml::Pos>,
}

/// The request header rules: `_` names, client headers stripped from untrusted peers, and
/// the headers whose `_` spelling is refused (fixed ones, identity headers, tenant headers).
fn header_rules(
    raw: &RawConfig,
    auth: Option<&AuthSettings>,
    routes: &[Route],
    errors: &mut Vec<ConfigError>,
) -> HeaderRules {
    let mut strip_untrusted = NameSet::default();
    match &raw.server.strip_client_headers {
        None => DEFAULT_STRIP_CLIENT_HEADERS
            .iter()
            .for_each(|n| strip_untrusted.add(n)),
        Some(list) => {
            for n in list {
                if http::HeaderName::from_bytes(n.value.as_bytes()).is_ok() {
                    strip_untrusted.add(&n.value);
                } else {
                    errors.push(ConfigError::at(
                        n.pos,
                        format!("`{}` is not a header name", n.value),
                    ));
                }
            }
        }
    }
    let mut protected = NameSet::new(ALWAYS_PROTECTED);
    let identity: &IdentityHeaders = match auth {
        Some(a) => &a.identity_headers,
        None => IdentityHeaders::builtin(),
    };
    identity.names().for_each(|n| protected.add(n));
    let mut tenant_headers = NameSet::default();
    for r in routes {
        if let Some(TenantSource::Header(h)) = r.access.tenant.as_ref().map(|t| &t.source) {
            tenant_headers.add(h.as_str());
            protected.add(h.as_str());
        }
    }
    HeaderRules {
        underscore: raw.server.underscore_headers.unwrap_or_default(),
        strip_untrusted,
        protected,
        tenant_headers,
    }
}

fn compile_routes(
    raw: &RawConfig,
    server: &ServerSettings,
    streams: &HashMap<String, Arc<StreamRules>>,
    policy_limits: &crate::policy::limits::Limits,
    classes: &crate::policy::classes::Classes,
    errors: &mut Vec<ConfigError>,
) -> CompiledRoutes {
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut positions = Vec::with_capacity(raw.routes.len());
    let mut names: HashMap<&str, ()> = HashMap::new();
    for r in &raw.routes {
        let name = &r.name.value;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(ConfigError::at(
                r.name.pos,
                "route `name` must be non-empty printable ASCII without spaces",
            ));
        } else if names.insert(name.as_str(), ()).is_some() {
            errors.push(ConfigError::at(
                r.name.pos,
                format!("duplicate route name `{name}`: names must be unique"),
            ));
        }
        let path = &r.matcher.path;
        check_pattern_canonical(path, errors);
        let methods = r.matcher.methods.as_ref().map(|list| {
            let mut out = Vec::with_capacity(list.len());
            for m in list {
                match parse_method(&m.value) {
                    Some(method) => out.push(method),
                    None => errors.push(ConfigError::at(
                        m.pos,
                        format!(
                            "`{}` is not a method: expected GET, HEAD, POST, PUT, DELETE, PATCH, \
                             OPTIONS or TRACE",
                            m.value
                        ),
                    )),
                }
            }
            out
        });
        if let Some(m) = &methods
            && m.is_empty()
            && r.matcher.methods.as_ref().is_some_and(|l| l.is_empty())
        {
            errors.push(ConfigError::at(
                path.pos,
                "`methods` is empty: list at least one method or leave it out",
            ));
        }
        let upstream_timeout = duration_or(&r.timeout, server.timeouts.upstream_response, errors);
        let public = r.public.unwrap_or(false);
        if !public && raw.authentication.is_none() {
            errors.push(ConfigError::at(
                r.name.pos,
                format!(
                    "route `{name}` is not `public: true` but no `authentication` is configured: \
                     its requests could never be authenticated"
                ),
            ));
        }
        let mut access = access(r, errors);
        access.class = super::traffic_guards::route_class(r.class.as_ref(), classes, errors);
        access.allow_ips = super::traffic_guards::allow_ips(r.allow_ips.as_ref(), errors);
        access.upstream_401_counts = r.upstream_401_counts.as_ref().is_some_and(|u| u.value);
        // The path parameters checks read (at most `MAX_PARAMS_USED`; today only the tenant's).
        let mut params_used = match access.tenant.as_ref().map(|t| &t.source) {
            Some(TenantSource::PathParam(p)) => vec![p.clone()],
            _ => Vec::new(),
        };
        let limits = super::limits::route_limits(r, policy_limits.tenant_budget.as_ref(), errors);
        for p in super::limits::params_used(&limits) {
            if !params_used.iter().any(|u| u == p) {
                params_used.push(p.to_owned());
            }
        }
        if params_used.len() > crate::policy::route::MAX_PARAMS_USED {
            errors.push(ConfigError::at(
                r.name.pos,
                format!(
                    "route `{name}` reads more than {} path parameters",
                    crate::policy::route::MAX_PARAMS_USED
                ),
            ));
            params_used.truncate(crate::policy::route::MAX_PARAMS_USED);
        }
        debug_assert!(params_used.len() <= crate::policy::route::MAX_PARAMS_USED);
        let websocket = r.websocket.as_ref().is_some_and(|w| w.value);
        if let (Some(w), Some(_)) = (&r.websocket, &r.stream)
            && w.value
        {
            errors.push(ConfigError::at(
                w.pos,
                "a route cannot be both `websocket: true` and a `stream:` route",
            ));
        }
        routes.push(Route {
            name: Arc::from(name.as_str()),
            websocket,
            pattern: path.value.clone(),
            methods,
            public,
            upstream_timeout,
            access,
            stream: r.stream.as_ref().and_then(|s| match streams.get(&s.value) {
                Some(rules) => Some(rules.clone()),
                None => {
                    if !raw.streams.contains_key(&s.value) {
                        errors.push(ConfigError::at(
                            s.pos,
                            format!("unknown stream `{}`: define it under `streams:`", s.value),
                        ));
                    }
                    None
                }
            }),
            params_used,
            index: 0,
            edge: Default::default(),
            limits,
        });
        positions.push(path.pos);
    }
    CompiledRoutes { routes, positions }
}

fn access(r: &RawRoute, errors: &mut Vec<ConfigError>) -> Access {
    let list = |l: &Option<Vec<Located<String>>>| -> Vec<String> {
        l.iter().flatten().map(|p| p.value.clone()).collect()
    };
    let tenant = r.tenant.as_ref().and_then(|t| {
        let source = match (&t.path_param, &t.header, &t.query) {
            (Some(p), None, None) => {
                let param = format!("{{{}}}", p.value);
                if !r.matcher.path.value.split('/').any(|seg| seg == param) {
                    errors.push(ConfigError::at(
                        p.pos,
                        format!(
                            "`{}` is not a parameter of the path pattern `{}`",
                            p.value, r.matcher.path.value
                        ),
                    ));
                    return None;
                }
                TenantSource::PathParam(p.value.clone())
            }
            (None, Some(h), None) if h.value.contains('_') => {
                errors.push(ConfigError::at(
                    h.pos,
                    format!(
                        "tenant header `{}` contains `_`: apps read it as the `-` spelling, \
                         which fortress refuses from clients; use `-`",
                        h.value
                    ),
                ));
                return None;
            }
            (None, Some(h), None) => match http::HeaderName::from_bytes(h.value.as_bytes()) {
                Ok(name) => TenantSource::Header(name),
                Err(_) => {
                    errors.push(ConfigError::at(h.pos, format!("`{}` is not a header name", h.value)));
                    return None;
                }
            },
            (None, None, Some(q)) if !q.value.is_empty() => TenantSource::Query(q.value.clone()),
            _ => {
                errors.push(ConfigError::at(
                    r.name.pos,
                    format!(
                        "route `{}`: `tenant` needs exactly one of `path_param`, `header` or `query`",
                        r.name.value
                    ),
                ));
                return None;
            }
        };
        Some(TenantRule {
            source,
            cross_tenant_permission: t.cross_tenant_permission.as_ref().map(|p| p.value.clone()),
        })
    });
    Access {
        require_all: list(&r.require),
        require_any: list(&r.require_any),
        tenant,
        dry_run: r.mode.map(|m| m == Mode::DryRun),
        privileged: r.privileged.unwrap_or(false),
        ..Access::default()
    }
}

/// A pattern's literal segments must already be in canonical form, or no request could match.
fn check_pattern_canonical(path: &Located<String>, errors: &mut Vec<ConfigError>) {
    let probe: String = path
        .value
        .split('/')
        .map(|seg| {
            if seg == "**" || (seg.starts_with('{') && seg.ends_with('}')) {
                "p"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    match normalize_path(&probe) {
        Ok(canonical) if canonical == probe => {}
        Ok(canonical) => errors.push(ConfigError::at(
            path.pos,
            format!(
                "path pattern `{}` is not in canonical form (requests are matched as `{}`)",
                path.value, canonical
            ),
        )),
        Err(e) if path.value.starts_with('/') => errors.push(ConfigError::at(
            path.pos,
            format!("path pattern `{}` can never match: {e}", path.value),
        )),
        Err(_) => {} // reported by the router ("must start with `/`")
    }
}

fn socket_addr(v: &Located<String>, errors: &mut Vec<ConfigError>) -> SocketAddr {
    match v.value.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            errors.push(ConfigError::at(
                v.pos,
                format!(
                    "`{}` is not a socket address: expected IP:PORT, e.g. 127.0.0.1:8443",
                    v.value
                ),
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

fn upstream(v: &Located<String>, errors: &mut Vec<ConfigError>) -> Authority {
    let fallback = Authority::from_static("127.0.0.1:1");
    let uri: Uri = match v.value.parse() {
        Ok(u) => u,
        Err(_) => {
            errors.push(ConfigError::at(
                v.pos,
                format!("`{}` is not a URL: expected http://HOST:PORT", v.value),
            ));
            return fallback;
        }
    };
    let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if path_ok && !a.as_str().contains('@') => a.clone(),
        _ => {
            errors.push(ConfigError::at(
                v.pos,
                format!(
                    "`{}`: expected http://HOST:PORT with no path, query or user info \
                     (fortress talks plain HTTP/1.1 to the app beside it)",
                    v.value
                ),
            ));
            fallback
        }
    }
}

pub(crate) fn duration_or(
    v: &Option<Located<String>>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match v {
        None => default,
        Some(v) => match parse_duration(&v.value) {
            Some(d) if !d.is_zero() => d,
            _ => {
                errors.push(ConfigError::at(
                    v.pos,
                    format!(
                        "`{}` is not a duration: expected a positive number with a unit \
                         (ms, s, m, h), e.g. 500ms or 30s",
                        v.value
                    ),
                ));
                default
            }
        },
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

pub(crate) fn parse_method(s: &str) -> Option<Method> {
    const ALLOWED: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
    ];
    ALLOWED
        .contains(&s)
        .then(|| Method::from_bytes(s.as_bytes()).ok())
        .flatten()
}

pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 sec", "1d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn load(server_extra: &str, top: &str) -> Result<Policy, String> {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n\
             {server_extra}{top}routes:\n  - name: all\n    match: {{ path: \"/**\" }}\n    \
             public: true\n"
        );
        crate::config::load_str(&text, Path::new("/nowhere/fortress.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn paths_and_hosts_settings() {
        use crate::policy::MatrixParameters;
        let p = load("", "").expect("valid");
        assert_eq!(p.paths.matrix_parameters, MatrixParameters::Reject);
        assert!(p.server.hosts.is_none());
        let p = load("", "paths: { matrix_parameters: strip }\n").expect("valid");
        assert_eq!(p.paths.matrix_parameters, MatrixParameters::Strip);
        let p = load("", "paths: { matrix_parameters: reject }\n").expect("valid");
        assert_eq!(p.paths.matrix_parameters, MatrixParameters::Reject);
        let p = load(
            "  hosts: [\"API.example.com\", \"*.example.com:8443\", \"[::1]\"]\n",
            "",
        )
        .expect("valid");
        let hosts = p.server.hosts.expect("hosts");
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0].host, "api.example.com");
        assert!(hosts[1].wildcard && hosts[1].port == Some(8443));

        let e = load("", "paths: { matrix_parameters: keep }\n").expect_err("bad value");
        assert!(e.contains("expected one of: reject, strip"), "{e}");
        let e = load(
            "  hosts: [\"http://a.test\", \"u@a.test\", \"*.\", \"a.test:99999\", \"a.test/x\"]\n",
            "",
        )
        .expect_err("bad hosts");
        assert_eq!(e.matches("is not a host").count(), 5, "{e}");
        let e = load("  hosts: []\n", "").expect_err("empty");
        assert!(e.contains("`server.hosts` is empty"), "{e}");
    }

    #[test]
    fn patterns_with_path_parameters_can_never_match() {
        let text = "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n\
                    routes:\n  - name: a\n    match: { path: \"/a;x/b\" }\n    public: true\n";
        let e = crate::config::load_str(text, Path::new("/nowhere/f.yaml"))
            .map(|_| ())
            .expect_err("refused");
        assert!(
            e.to_string().contains("can never match: path_parameter"),
            "{e}"
        );
    }
}
