//! Why fortress refused or failed a request, and the one table that turns it into a response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::pipeline::normalize::PathError;
use crate::pipeline::transport::TransportError;
use crate::proxy::body::ProxyBody;

/// A refusal or failure on the request path. Checks return these; only [`Rejection::status`]
/// and [`Rejection::into_response`] decide what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request target is not origin-form (absolute-form, `*`, authority-form).
    RejectTargetForm,
    /// The transport rules refused the request (HTTPS, forwarded proto, credentials).
    RejectTransport(TransportError),
    /// No valid token.
    Unauthenticated(AuthError),
    /// The principal lacks a required permission.
    DenyPermission,
    /// The token's tenant is not the tenant the request names.
    DenyTenant,
    /// The path cannot be canonicalized safely.
    RejectPath(PathError),
    /// No route matches and the default is deny.
    DenyUnmatched,
    /// A route matches the path but not the method.
    DenyMethod,
    /// The upstream refused or dropped the connection.
    UpstreamUnavailable,
    /// The upstream failed in another way (bad response, reset mid-headers).
    UpstreamFailed,
    /// The upstream did not answer in time.
    UpstreamTimeout,
}

impl Rejection {
    /// Status, public error code and public reason: the only status table. No catch-all arm,
    /// so a new variant cannot be added without its row.
    pub fn status(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Rejection::RejectTargetForm => (StatusCode::BAD_REQUEST, "bad_request", "target_form"),
            Rejection::RejectTransport(e) => match e {
                TransportError::MalformedForwardedProto
                | TransportError::ConnectionNamesProtectedHeader => {
                    (StatusCode::BAD_REQUEST, "bad_request", e.code())
                }
                TransportError::HttpsRequired
                | TransportError::UntrustedForwardedProto
                | TransportError::CredentialsOverHttp => {
                    (StatusCode::FORBIDDEN, "forbidden", e.code())
                }
            },
            Rejection::Unauthenticated(e) => (StatusCode::UNAUTHORIZED, "unauthorized", e.code()),
            Rejection::DenyPermission => (StatusCode::FORBIDDEN, "forbidden", "missing_permission"),
            Rejection::DenyTenant => (StatusCode::FORBIDDEN, "forbidden", "tenant_mismatch"),
            Rejection::RejectPath(e) => (StatusCode::BAD_REQUEST, "bad_request", e.code()),
            Rejection::DenyUnmatched => (StatusCode::NOT_FOUND, "not_found", "no_route"),
            Rejection::DenyMethod => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method_not_allowed",
            ),
            Rejection::UpstreamUnavailable => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "upstream_unavailable",
            ),
            Rejection::UpstreamFailed => {
                (StatusCode::BAD_GATEWAY, "bad_gateway", "upstream_failed")
            }
            Rejection::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "upstream_timeout",
            ),
        }
    }

    /// The public reason code (for logs and metrics).
    pub fn reason(self) -> &'static str {
        self.status().2
    }

    /// The short JSON response: `{"error":"…","reason":"…","request_id":"…"}`.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let (status, error, reason) = self.status();
        let mut resp = json_error(status, error, reason, request_id);
        if let Rejection::Unauthenticated(e) = self {
            // RFC 6750: no `error` attribute when the request simply had no credentials.
            let challenge = match e {
                AuthError::MissingToken => r#"Bearer realm="fortress""#,
                _ => r#"Bearer realm="fortress", error="invalid_token""#,
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

/// A short JSON error response. `request_id` must be a safe token (see `pipeline::ids`).
pub fn json_error(
    status: StatusCode,
    error: &str,
    reason: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let body = format!(r#"{{"error":"{error}","reason":"{reason}","request_id":"{request_id}"}}"#);
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let rows = [
            (
                Rejection::RejectTargetForm,
                400,
                "bad_request",
                "target_form",
            ),
            (
                Rejection::RejectPath(PathError::EncodedSlash),
                400,
                "bad_request",
                "encoded_slash",
            ),
            (Rejection::DenyUnmatched, 404, "not_found", "no_route"),
            (
                Rejection::DenyPermission,
                403,
                "forbidden",
                "missing_permission",
            ),
            (Rejection::DenyTenant, 403, "forbidden", "tenant_mismatch"),
            (
                Rejection::DenyMethod,
                405,
                "method_not_allowed",
                "method_not_allowed",
            ),
            (
                Rejection::UpstreamUnavailable,
                502,
                "bad_gateway",
                "upstream_unavailable",
            ),
            (
                Rejection::UpstreamFailed,
                502,
                "bad_gateway",
                "upstream_failed",
            ),
            (
                Rejection::UpstreamTimeout,
                504,
                "gateway_timeout",
                "upstream_timeout",
            ),
        ];
        for (rejection, status, error, reason) in rows {
            let (s, e, r) = rejection.status();
            assert_eq!((s.as_u16(), e, r), (status, error, reason), "{rejection:?}");
        }
    }

    #[test]
    fn unauthenticated_carries_the_bearer_challenge() {
        let r = Rejection::Unauthenticated(AuthError::MissingToken).into_response("rid");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="fortress""#
        );
        let r = Rejection::Unauthenticated(AuthError::InvalidSignature).into_response("rid");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="fortress", error="invalid_token""#
        );
    }
}
