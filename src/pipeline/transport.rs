//! Transport rules: HTTPS (directly, or vouched for by a trusted proxy), no credentials over
//! plain HTTP, and no `Connection` header that would make a proxy drop protected headers.

use http::HeaderMap;
use http::header::{AUTHORIZATION, CONNECTION, COOKIE};
use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::error::Rejection;
pub use crate::error::TransportError;
use crate::policy::Environment;
use crate::policy::identity::IdentityHeaders;

/// The transport stage: sets whether the request counts as HTTPS, or refuses it.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let policy = &ctx.snapshot.policy;
    let cookie = policy.auth.as_ref().and_then(|a| a.cookie.as_deref());
    // HTTP/2 extended CONNECT (RFC 8441, WebSocket over HTTP/2) is not supported.
    if req.extensions.get::<hyper::ext::Protocol>().is_some() {
        return Err(Rejection::RejectTransport(TransportError::ExtendedConnect));
    }
    let verdict = rules(
        ctx.conn.tls,
        ctx.trusted,
        &req.headers,
        &Settings {
            require_https: policy.server.require_https,
            relaxed: policy.server.environment == Environment::Local
                && policy.server.allow_insecure_local,
            cookie,
            identity: policy.identity_headers(),
        },
    );
    ctx.https = verdict.map_err(Rejection::RejectTransport)?;
    Ok(Step::Pass)
}

/// What the transport rules read from the policy.
struct Settings<'a> {
    require_https: bool,
    /// Local relaxation: credentials accepted over plain, unvouched HTTP.
    relaxed: bool,
    cookie: Option<&'a str>,
    identity: &'a IdentityHeaders,
}

/// Checks the transport. Returns whether the request counts as HTTPS.
fn rules(
    tls: bool,
    trusted: bool,
    headers: &HeaderMap,
    settings: &Settings<'_>,
) -> Result<bool, TransportError> {
    if connection_names_protected(headers, settings.identity) {
        return Err(TransportError::ConnectionNamesProtectedHeader);
    }
    if tls {
        return Ok(true);
    }
    let mut protos = headers.get_all(X_FORWARDED_PROTO).iter();
    let proto = match (protos.next(), protos.next()) {
        (None, _) => None,
        (Some(v), None) => match v.to_str().map(|s| s.trim().to_ascii_lowercase()) {
            Ok(s) if s == "https" => Some(true),
            Ok(s) if s == "http" => Some(false),
            _ if trusted => return Err(TransportError::MalformedForwardedProto),
            _ => return Err(TransportError::UntrustedForwardedProto),
        },
        (Some(_), Some(_)) if trusted => return Err(TransportError::MalformedForwardedProto),
        (Some(_), Some(_)) => return Err(TransportError::UntrustedForwardedProto),
    };
    let vouched = trusted && proto == Some(true);
    if settings.require_https && !vouched {
        return Err(match (trusted, proto) {
            (false, Some(_)) => TransportError::UntrustedForwardedProto,
            _ => TransportError::HttpsRequired,
        });
    }
    // No credentials over plain HTTP, even with `require_https: false`.
    if !vouched && !settings.relaxed && carries_credentials(headers, settings.cookie) {
        return Err(TransportError::CredentialsOverHttp);
    }
    Ok(vouched)
}

fn carries_credentials(headers: &HeaderMap, cookie: Option<&str>) -> bool {
    if headers.contains_key(AUTHORIZATION) {
        return true;
    }
    let Some(cookie) = cookie else {
        return false;
    };
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| pair.trim().split('=').next() == Some(cookie))
}

fn connection_names_protected(headers: &HeaderMap, identity: &IdentityHeaders) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|name| name.eq_ignore_ascii_case("authorization") || identity.contains(name))
}

const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
