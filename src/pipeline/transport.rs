//! Transport rules: HTTPS (directly, or vouched for by a trusted proxy), no credentials over
//! plain HTTP, and no `Connection` header that would make a proxy drop protected headers.

use http::HeaderMap;
use http::header::{AUTHORIZATION, CONNECTION, COOKIE};

use crate::config::auth::AuthSettings;
use crate::config::{Environment, ServerSettings};
use crate::proxy::identity::IdentityHeaders;

/// Why the transport was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// Plain HTTP where HTTPS is required (no `X-Forwarded-Proto`, or `http`).
    HttpsRequired,
    /// An untrusted peer sent `X-Forwarded-Proto` (spoofing attempt).
    UntrustedForwardedProto,
    /// `X-Forwarded-Proto` duplicated or not `http`/`https`.
    MalformedForwardedProto,
    /// Credentials (Authorization header or auth cookie) over plain, unvouched HTTP.
    CredentialsOverHttp,
    /// `Connection` names `Authorization` or an identity header.
    ConnectionNamesProtectedHeader,
}

impl TransportError {
    /// The public reason code.
    pub fn code(self) -> &'static str {
        match self {
            TransportError::HttpsRequired => "https_required",
            TransportError::UntrustedForwardedProto => "untrusted_forwarded_proto",
            TransportError::MalformedForwardedProto => "malformed_forwarded_proto",
            TransportError::CredentialsOverHttp => "credentials_over_http",
            TransportError::ConnectionNamesProtectedHeader => "connection_names_protected_header",
        }
    }

    /// Every variant (for pre-registering metrics).
    pub const ALL: [TransportError; 5] = [
        TransportError::HttpsRequired,
        TransportError::UntrustedForwardedProto,
        TransportError::MalformedForwardedProto,
        TransportError::CredentialsOverHttp,
        TransportError::ConnectionNamesProtectedHeader,
    ];
}

/// Checks the transport. Returns whether the request counts as HTTPS.
pub fn check(
    tls: bool,
    trusted: bool,
    headers: &HeaderMap,
    server: &ServerSettings,
    auth: Option<&AuthSettings>,
) -> Result<bool, TransportError> {
    let identity = auth.map(|a| &a.identity_headers);
    if connection_names_protected(headers, identity) {
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
    if server.require_https && !vouched {
        return Err(match (trusted, proto) {
            (false, Some(_)) => TransportError::UntrustedForwardedProto,
            _ => TransportError::HttpsRequired,
        });
    }
    // No credentials over plain HTTP, even with `require_https: false`.
    let relaxed = server.environment == Environment::Local && server.allow_insecure_local;
    if !vouched && !relaxed && carries_credentials(headers, auth) {
        return Err(TransportError::CredentialsOverHttp);
    }
    Ok(vouched)
}

fn carries_credentials(headers: &HeaderMap, auth: Option<&AuthSettings>) -> bool {
    if headers.contains_key(AUTHORIZATION) {
        return true;
    }
    let Some(cookie) = auth.and_then(|a| a.cookie.as_deref()) else {
        return false;
    };
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| pair.trim().split('=').next() == Some(cookie))
}

fn connection_names_protected(headers: &HeaderMap, identity: Option<&IdentityHeaders>) -> bool {
    let identity = identity.unwrap_or(IdentityHeaders::builtin());
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|name| name.eq_ignore_ascii_case("authorization") || identity.contains(name))
}

const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
