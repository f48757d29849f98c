//! Every reason fortress refuses or fails a request, and the one table that turns a
//! [`Rejection`] into a response.
//!
//! Reason codes come from here only: each reason enum derives its `snake_case` code and the
//! list of its variants (`strum`), so metrics pre-register every code and a new variant cannot
//! be left out. Two codes exist per refusal: the *detailed* reason ([`Rejection::reason`],
//! e.g. `unknown_kid`) for logs, metrics, audit and `fortress explain`, and the *public*
//! reason ([`Row::public_reason`], e.g. `invalid_token`) sent to clients, which never tells an
//! attacker which check a forged token failed.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use strum::{EnumCount, EnumIter, IntoStaticStr};

/// Why a token was refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr, strum::FromRepr,
)]
#[strum(serialize_all = "snake_case")]
pub enum AuthError {
    /// No token was presented.
    MissingToken,
    /// Not a well-formed JWT, two `Authorization` headers, wrong scheme, or too large.
    MalformedToken,
    /// The signature does not verify with any configured key.
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    TokenNotYetValid,
    /// `iss` is not the configured issuer.
    InvalidIssuer,
    /// `aud` names none of the configured audiences.
    InvalidAudience,
    /// A required claim is missing (or the subject is not a non-empty string).
    MissingClaim,
    /// The header's `alg` is not in the allowlist (`none` never is).
    DisallowedAlgorithm,
    /// The header's `kid` names no known key, even after a JWKS refresh.
    UnknownKid,
    /// The token (its `jti`, or its subject before a time) has been revoked.
    TokenRevoked,
    /// No key material is available (e.g. JWKS never fetched).
    KeysUnavailable,
    /// The JOSE header has a `crit` parameter (RFC 7515 §4.1.11). Fortress understands no
    /// extension, so any `crit`, even an empty list, refuses the token.
    CriticalHeader,
    /// The JOSE header has the RFC 7797 `b64` parameter (unencoded payload), `true` or `false`.
    UnencodedPayload,
    /// A registered claim has the wrong JSON type (RFC 7519 §4.1): `iss`, `sub`, `jti` not a
    /// string, `aud` not a string or a list of strings, `exp`, `nbf`, `iat` not a
    /// non-negative integer.
    InvalidClaimType,
    /// A member name is repeated in the JOSE header or the payload, at any depth (RFC 7519
    /// §4, RFC 8725 §3.6), escaped spellings included.
    DuplicateMember,
    /// The subject, a role or the tenant cannot travel upstream as an identity header:
    /// control characters, non-ASCII, a separator (`,` `;`), too long, or too many roles.
    InvalidIdentity,
}

impl AuthError {
    /// The detailed reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why the transport was refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr, strum::FromRepr,
)]
#[strum(serialize_all = "snake_case")]
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
    /// `Upgrade: websocket` on a `websocket: true` route, but not a valid WebSocket handshake
    /// (HTTP/1.1 `GET`, `Connection: upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`).
    InvalidUpgrade,
    /// HTTP/2 extended CONNECT (RFC 8441, `:protocol`): not supported.
    ExtendedConnect,
}

impl TransportError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why a request would mean one thing to fortress and another to the app behind it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr, strum::FromRepr,
)]
#[strum(serialize_all = "snake_case")]
pub enum AmbiguityError {
    /// A header name with `_` that folds (case, `_` → `-`) onto a header the policy reads
    /// or fortress sets (`Content_Length`, `X_Forwarded_For`, `X_Auth_Subject`, …).
    ProtectedHeaderSpelling,
    /// The route's tenant header or query key is given twice, as a list, in another spelling,
    /// after a `;`, or is named in `Connection`.
    AmbiguousTenant,
    /// A `_method` query parameter (any case or encoding): a method override the app may obey.
    MethodOverride,
    /// A header a rate limit is keyed by (`header:NAME`) is given more than once.
    AmbiguousLimitKey,
    /// The path, as an app that routes case- or trailing-slash-insensitively reads it (lower
    /// case, with or without the trailing `/`), is routed by fortress to a different route
    /// than the one this spelling matched (`paths.route_variants: refuse`).
    AmbiguousPath,
}

impl AmbiguityError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why a request path cannot be canonicalized safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PathError {
    /// The path is empty or does not start with `/`.
    NotOriginForm,
    /// A `%` is not followed by two hex digits.
    BadPercentEncoding,
    /// An encoded slash (`%2F` / `%2f`).
    EncodedSlash,
    /// An encoded backslash (`%5C` / `%5c`).
    EncodedBackslash,
    /// A raw `\`.
    Backslash,
    /// A raw or percent-encoded ASCII control character (`0x00`-`0x1F`, `0x7F`),
    /// including NUL.
    Nul,
    /// An encoded `%` (`%25`) followed by two hex digits, e.g. `%252F`, which a
    /// backend decoding twice would turn into a different path.
    DoubleEncoding,
    /// A segment that is `.` or `..` only after percent-decoding (e.g. `%2e`,
    /// `.%2E`, `%2e%2e`).
    EncodedDotSegment,
    /// A `..` segment that would climb above `/`.
    EscapesRoot,
    /// A segment whose part before the first `;` (raw or `%3B`) is `.` or `..`
    /// (e.g. `..;foo`, `.;x`), a Tomcat-style path-parameter trick.
    DotSemicolon,
    /// A raw byte `>= 0x80`; non-ASCII characters must be percent-encoded.
    NonAscii,
    /// A path parameter: `;` (raw or `%3B`) in a segment, e.g. `/admin;x=1/users`, which
    /// Tomcat/Spring strip before routing (refused unless `paths.matrix_parameters: strip`).
    PathParameter,
    /// A raw character RFC 3986 does not allow in a path: `"`, `<`, `>`, `^`, `` ` ``, `{`,
    /// `|`, `}`, `[`, `]`, `#`, space.
    DisallowedCharacter,
    /// Percent-encoded bytes that are not valid UTF-8: overlong forms (`%C0%AE`,
    /// `%E0%80%AF`), lone continuation bytes, surrogates (`%ED%A0%80`), truncated sequences.
    InvalidUtf8,
    /// An encoded character that Unicode compatibility normalization (NFKC) or common
    /// lookalike folding turns into `.`, `/` or `\` (e.g. `%EF%BC%8F` U+FF0F, `%E2%80%A4`
    /// U+2024, division slash U+2215).
    UnicodeLookalike,
}

impl PathError {
    /// Short, stable `snake_case` code for logs, metrics and error responses.
    #[must_use]
    pub fn code(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for PathError {
    /// Writes the same short code as [`PathError::code`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for PathError {}

/// Why the `Host` (or HTTP/2 `:authority`) of a request was refused (RFC 9112 §3.2,
/// RFC 9110 §7.2, RFC 9113 §8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum HostError {
    /// An HTTP/1.1 request (or an HTTP/2 one without `:authority`) without `Host`.
    MissingHost,
    /// More than one `Host` header.
    DuplicateHost,
    /// Not `host[:port]`: reg-name, IPv4 or bracketed IPv6, port 0-65535; no user info,
    /// path, spaces or other characters.
    InvalidHost,
    /// HTTP/2 `:authority` and a `host` header that name different hosts.
    AuthorityMismatch,
    /// A trusted proxy's `X-Forwarded-Host` is repeated, a list, or not `host[:port]` (apps
    /// that trust the proxy build links and redirects from it).
    InvalidForwardedHost,
}

impl HostError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why a request method was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum MethodError {
    /// The method token has a lower-case letter (`get`, `Delete`): methods are
    /// case-sensitive (RFC 9110 §9.1), but many frameworks upper-case them.
    MethodNotUppercase,
}

impl MethodError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why the framing of a request (its length: `Transfer-Encoding`, `Content-Length`) was
/// refused (RFC 9112 §6–7, RFC 9113 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum FramingError {
    /// `Transfer-Encoding` on a request that is not HTTP/1.1 (HTTP/1.0, HTTP/2).
    TransferEncodingNotAllowed,
    /// More than one `Transfer-Encoding` field.
    RepeatedTransferEncoding,
    /// A `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked`, `Chunked`, …).
    UnsupportedTransferCoding,
    /// Both `Transfer-Encoding` and `Content-Length`.
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` field.
    RepeatedContentLength,
    /// A `Content-Length` that is not 1–19 plain digits (`5, 5`, `+5`, `0x10`, …).
    InvalidContentLength,
    /// An HTTP/1 request head that breaks RFC 9112's syntax where hyper is lenient (bare LF,
    /// obs-fold, whitespace before a colon, control bytes, request-line spacing, version):
    /// found by the raw-byte guard (`server::h1_guard`).
    MalformedHead,
}

/// Which request-head limit a request went over (431).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum HeadLimit {
    /// More bytes than `server.max_header_bytes`.
    HeaderBytes,
    /// More field lines than `server.max_headers`.
    HeaderCount,
}

impl HeadLimit {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

impl FramingError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why a request body was refused as too large (413).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum LimitError {
    /// `Content-Length` is over the route's `max_body`: refused before anything is forwarded.
    ContentLengthTooLarge,
    /// A streamed body (chunked, HTTP/2 without `Content-Length`) passed `max_body` while it
    /// was being forwarded: the upstream request was aborted.
    BodyTooLarge,
}

impl LimitError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why a request's media type was refused (415).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum MediaTypeError {
    /// A body without `Content-Type` on a route with `content_types`.
    MissingContentType,
    /// A media type the route does not list.
    ContentTypeNotAllowed,
    /// Two `Content-Type` fields, or a list (`application/json, text/html`): the app could
    /// read either.
    AmbiguousContentType,
    /// Not `type/subtype` followed by well-formed parameters.
    MalformedContentType,
}

impl MediaTypeError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why fortress refused a CORS preflight (403, no CORS headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, EnumCount, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CorsError {
    /// The `Origin` is not allowed (or malformed, `null`, repeated).
    CorsOriginNotAllowed,
    /// `Access-Control-Request-Method` is not in the route's `cors.methods`.
    CorsMethodNotAllowed,
    /// A header in `Access-Control-Request-Headers` is not in `cors.headers` (or the list
    /// is malformed).
    CorsHeaderNotAllowed,
}

impl CorsError {
    /// The reason code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// A set of the common methods (for the `Allow` header of a 405). Copy, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Methods(u16);

impl Methods {
    /// The methods a set can hold, in `Allow` order.
    pub const LIST: [Method; 8] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
    ];

    /// The set with the method at `index` of [`Methods::LIST`] added.
    pub fn with_index(self, index: usize) -> Self {
        if index < Self::LIST.len() {
            Self(self.0 | 1 << index)
        } else {
            self
        }
    }

    /// Every method of [`Methods::LIST`].
    pub const ALL: Self = Self((1 << Self::LIST.len()) - 1);

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `GET, HEAD, …`: the value of an `Allow` header.
    pub fn to_header_value(self) -> String {
        let mut out = String::new();
        for (i, m) in Self::LIST.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push_str(m.as_str());
            }
        }
        out
    }
}

/// A refusal or failure on the request path. Checks return these; only [`Rejection::row`]
/// and [`Rejection::to_response`] decide what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request target is not origin-form (absolute-form, `*`, authority-form).
    RejectTargetForm,
    /// The request's framing headers are ambiguous or unsupported.
    RejectFraming(FramingError),
    /// The request head is over `server.max_header_bytes` or `server.max_headers`.
    HeadTooLarge(HeadLimit),
    /// The client's request body broke its framing while it was being forwarded (a bad chunk
    /// size or line ending, chunk data longer or shorter than its size, a body cut short).
    MalformedBody,
    /// The client's request body stalled: no next chunk within `server.timeouts.body_read`.
    BodyTimeout,
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
    /// A header or query parameter the policy reads is ambiguous.
    RejectAmbiguous(AmbiguityError),
    /// No route matches and the default is deny.
    DenyUnmatched,
    /// A route matches the path but not the method; the methods that would be accepted.
    DenyMethod(Methods),
    /// A method none of the routes can list (not one of [`Methods::LIST`]); the methods the
    /// path accepts.
    UnknownMethod(Methods),
    /// The method token is malformed for fortress (e.g. not upper-case).
    RejectMethod(MethodError),
    /// `Host` / `:authority` missing, repeated, malformed or inconsistent.
    RejectHost(HostError),
    /// The host is not in `server.hosts`.
    MisdirectedHost,
    /// The upstream refused or dropped the connection.
    UpstreamUnavailable,
    /// The upstream failed in another way (bad response, reset mid-headers).
    UpstreamFailed,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The request body is larger than the route's `max_body` (413).
    PayloadTooLarge(LimitError),
    /// The request's media type is not one the route accepts (415).
    UnsupportedMediaType(MediaTypeError),
    /// A CORS preflight for an origin, method or header the route does not allow (403).
    CorsRefused(CorsError),
    /// A rate limit refused the request; seconds until it would pass.
    RateLimited {
        /// `Retry-After`, whole seconds rounded up (at least 1).
        retry_after_secs: u32,
    },
    /// The tenant's budget is used up; seconds until the period resets.
    BudgetExhausted {
        /// `Retry-After`, whole seconds rounded up to the next reset.
        retry_after_secs: u32,
    },
    /// A budget route, but the verified token names no tenant to charge.
    MissingTenant,
    /// The state store could not answer (limits fail closed).
    LimitsUnavailable,
    /// The shared state store (Redis) could not answer within its timeout, or the local copy
    /// of revocations and toggle overrides is older than `store.max_staleness` (fail closed).
    StateUnavailable,
    /// The client IP is not in the policy's or the route's `allow_ips`.
    IpNotAllowed,
    /// The client IP failed authentication too often in the current window; the seconds to
    /// the window's end (`Retry-After`).
    TooManyFailedAuthentications(u32),
    /// The route's concurrency class is full (and its queue full, or the wait timed out, or
    /// the tenant is at its per-tenant cap).
    Overloaded,
    /// The request needs an audit record and the audit trail cannot take it (queue full or
    /// sink failing): fail closed.
    AuditUnavailable,
    /// The route's readiness guard (`guard:`) has a condition that does not hold (audit sink
    /// failing, JWKS not loaded, no SQL guard): the route is not served yet.
    NotReady,
    /// The route's `requires_toggle` toggle is off (its override, or else its default).
    FeatureDisabled,
}

/// Whether a rejection is a policy decision or a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The policy refused the request (`decision = deny`).
    Deny,
    /// Fortress or the upstream failed (`decision = error`).
    Error,
}

/// One row of the status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Response status.
    pub status: StatusCode,
    /// Public error code (`error` field).
    pub error: &'static str,
    /// Public reason (`reason` field): what an untrusted client may know.
    pub public_reason: &'static str,
    /// Deny or error.
    pub kind: Kind,
    /// `Retry-After` in seconds, where a retry makes sense.
    pub retry_after: Option<u32>,
}

/// `Retry-After` (seconds) of a 503 `keys_unavailable`: the key-set task retries with backoff
/// from its minimum refresh interval.
const KEYS_RETRY_AFTER: u32 = 5;

/// `Retry-After` (seconds) of a 503 `overloaded`: shed load comes back soon.
pub const OVERLOADED_RETRY_AFTER: u32 = 1;

const fn row(status: StatusCode, error: &'static str, public_reason: &'static str) -> Row {
    Row {
        status,
        error,
        public_reason,
        kind: Kind::Deny,
        retry_after: None,
    }
}

const fn failure(status: StatusCode, error: &'static str, public_reason: &'static str) -> Row {
    Row {
        kind: Kind::Error,
        ..row(status, error, public_reason)
    }
}

impl Rejection {
    /// The status table. No catch-all arm, so a new variant cannot be added without its row.
    pub fn row(self) -> Row {
        use StatusCode as S;
        match self {
            Rejection::RejectTargetForm => row(S::BAD_REQUEST, "bad_request", "target_form"),
            Rejection::RejectFraming(e) => row(S::BAD_REQUEST, "bad_request", e.code()),
            Rejection::HeadTooLarge(e) => row(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                e.code(),
            ),
            // The client's fault, not the upstream's: a denial, never counted as an
            // upstream error.
            Rejection::MalformedBody => row(S::BAD_REQUEST, "bad_request", "malformed_body"),
            // The client's fault too (a stalled upload), never an upstream error.
            Rejection::BodyTimeout => row(S::REQUEST_TIMEOUT, "request_timeout", "body_timeout"),
            Rejection::RejectTransport(e) => match e {
                TransportError::MalformedForwardedProto
                | TransportError::ConnectionNamesProtectedHeader
                | TransportError::InvalidUpgrade
                | TransportError::ExtendedConnect => row(S::BAD_REQUEST, "bad_request", e.code()),
                TransportError::HttpsRequired
                | TransportError::UntrustedForwardedProto
                | TransportError::CredentialsOverHttp => row(S::FORBIDDEN, "forbidden", e.code()),
            },
            // RFC 6750: a missing token is not an error; every other failure is the same
            // `invalid_token` to the client, so a forger learns nothing about which check
            // failed (the detailed reason goes to logs, metrics and explain).
            Rejection::Unauthenticated(AuthError::MissingToken) => {
                row(S::UNAUTHORIZED, "unauthorized", "missing_token")
            }
            // Not the client's fault: no key set was ever fetched, or the token's key is
            // unknown while the key-set endpoint cannot be reached. 503 with `Retry-After`
            // (a client with a good token retries; it is not told its token is bad).
            Rejection::Unauthenticated(AuthError::KeysUnavailable) => Row {
                retry_after: Some(KEYS_RETRY_AFTER),
                ..failure(
                    S::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "keys_unavailable",
                )
            },
            Rejection::Unauthenticated(_) => row(S::UNAUTHORIZED, "unauthorized", "invalid_token"),
            Rejection::DenyPermission => row(S::FORBIDDEN, "forbidden", "missing_permission"),
            Rejection::DenyTenant => row(S::FORBIDDEN, "forbidden", "tenant_mismatch"),
            Rejection::RejectPath(e) => row(S::BAD_REQUEST, "bad_request", e.code()),
            Rejection::RejectAmbiguous(e) => row(S::BAD_REQUEST, "bad_request", e.code()),
            Rejection::DenyUnmatched => row(S::NOT_FOUND, "not_found", "no_route"),
            Rejection::DenyMethod(_) => row(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method_not_allowed",
            ),
            // 405, like any method the target does not accept (RFC 9110 §15.5.6), with the
            // methods it does accept; the detailed reason says the method is unknown.
            Rejection::UnknownMethod(_) => row(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method_not_allowed",
            ),
            Rejection::RejectMethod(e) => row(S::BAD_REQUEST, "bad_request", e.code()),
            Rejection::RejectHost(e) => row(S::BAD_REQUEST, "bad_request", e.code()),
            Rejection::MisdirectedHost => row(
                S::MISDIRECTED_REQUEST,
                "misdirected_request",
                "host_not_allowed",
            ),
            Rejection::UpstreamUnavailable => {
                failure(S::BAD_GATEWAY, "bad_gateway", "upstream_unavailable")
            }
            Rejection::UpstreamFailed => failure(S::BAD_GATEWAY, "bad_gateway", "upstream_failed"),
            Rejection::UpstreamTimeout => {
                failure(S::GATEWAY_TIMEOUT, "gateway_timeout", "upstream_timeout")
            }
            Rejection::PayloadTooLarge(e) => {
                row(S::PAYLOAD_TOO_LARGE, "payload_too_large", e.code())
            }
            Rejection::UnsupportedMediaType(e) => row(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.code(),
            ),
            Rejection::CorsRefused(e) => row(S::FORBIDDEN, "forbidden", e.code()),
            Rejection::RateLimited { retry_after_secs } => Row {
                retry_after: Some(retry_after_secs),
                ..row(S::TOO_MANY_REQUESTS, "too_many_requests", "rate_limited")
            },
            Rejection::BudgetExhausted { retry_after_secs } => Row {
                retry_after: Some(retry_after_secs),
                ..row(
                    S::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "budget_exhausted",
                )
            },
            Rejection::MissingTenant => row(S::FORBIDDEN, "forbidden", "missing_tenant"),
            // Fail closed: a limit that cannot be checked refuses (503, try again shortly).
            Rejection::LimitsUnavailable => Row {
                retry_after: Some(1),
                ..failure(
                    S::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "limits_unavailable",
                )
            },
            Rejection::StateUnavailable => Row {
                retry_after: Some(1),
                ..failure(
                    S::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "state_unavailable",
                )
            },
            Rejection::IpNotAllowed => row(S::FORBIDDEN, "forbidden", "ip_not_allowed"),
            Rejection::TooManyFailedAuthentications(secs) => Row {
                retry_after: Some(secs.max(1)),
                ..row(
                    S::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too_many_failed_authentications",
                )
            },
            // Load shedding is a policy decision (the class's limits), not a failure.
            Rejection::Overloaded => Row {
                retry_after: Some(OVERLOADED_RETRY_AFTER),
                ..row(S::SERVICE_UNAVAILABLE, "service_unavailable", "overloaded")
            },
            // Fail closed: no record, no response (comes back when the sink recovers).
            Rejection::AuditUnavailable => Row {
                retry_after: Some(1),
                ..failure(
                    S::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "audit_unavailable",
                )
            },
            // The route waits for a condition fortress checks itself; it comes back on its own.
            Rejection::NotReady => Row {
                retry_after: Some(5),
                ..failure(S::SERVICE_UNAVAILABLE, "service_unavailable", "not_ready")
            },
            // An operator's switch, not a failure: no `Retry-After` (nobody knows when it
            // comes back on).
            Rejection::FeatureDisabled => row(
                S::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "feature_disabled",
            ),
        }
    }

    /// The detailed reason code (logs, metrics, audit, explain). Never sent to clients.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Unauthenticated(e) => e.code(),
            Rejection::RejectTransport(e) => e.code(),
            Rejection::RejectPath(e) => e.code(),
            Rejection::RejectFraming(e) => e.code(),
            Rejection::UnknownMethod(_) => "unknown_method",
            Rejection::RejectAmbiguous(e) => e.code(),
            other => other.row().public_reason,
        }
    }

    /// Status, public error code and public reason.
    pub fn status(self) -> (StatusCode, &'static str, &'static str) {
        let r = self.row();
        (r.status, r.error, r.public_reason)
    }

    /// Deny or error.
    pub fn kind(self) -> Kind {
        self.row().kind
    }

    /// Whether a dry-run route may record this refusal and forward the request anyway. Only
    /// policy decisions (token, permission, tenant) can be tried out in dry-run; a request
    /// that is ambiguous is refused in every mode.
    pub fn dry_run_may_forward(self) -> bool {
        match self {
            Rejection::Unauthenticated(_) | Rejection::DenyPermission | Rejection::DenyTenant => {
                true
            }
            // A limit or budget on a dry-run route is tried out like any policy decision
            // (a refused admission consumed nothing).
            Rejection::RateLimited { .. }
            | Rejection::BudgetExhausted { .. }
            | Rejection::MissingTenant => true,
            // Access and traffic rules are policy too: a dry-run route records them.
            Rejection::IpNotAllowed
            | Rejection::TooManyFailedAuthentications(_)
            | Rejection::Overloaded => true,
            // 404/405: there is no route whose mode could apply.
            Rejection::DenyUnmatched
            | Rejection::DenyMethod(_)
            | Rejection::RejectTargetForm
            | Rejection::RejectFraming(_)
            | Rejection::HeadTooLarge(_)
            | Rejection::MalformedBody
            | Rejection::BodyTimeout
            | Rejection::RejectTransport(_)
            | Rejection::RejectPath(_)
            | Rejection::RejectAmbiguous(_)
            | Rejection::UnknownMethod(_)
            | Rejection::RejectMethod(_)
            | Rejection::RejectHost(_)
            | Rejection::MisdirectedHost
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamFailed
            | Rejection::UpstreamTimeout
            // Size and media type are the request's shape, not a policy to try out; a
            // refused preflight is answered, not forwarded.
            | Rejection::PayloadTooLarge(_)
            | Rejection::UnsupportedMediaType(_)
            | Rejection::CorsRefused(_)
            | Rejection::LimitsUnavailable
            | Rejection::StateUnavailable
            | Rejection::AuditUnavailable
            | Rejection::NotReady => false,
            // A disabled feature is off in every mode: dry-run tries out policy, not switches.
            | Rejection::FeatureDisabled => false,
        }
    }

    /// The short JSON response with the headers this refusal needs: `Allow` on 405,
    /// `WWW-Authenticate` on 401, `Retry-After` where the row has one.
    pub fn to_response(self, request_id: &str) -> Response<Bytes> {
        self.to_traced_response(request_id, None)
    }

    /// [`Rejection::to_response`] with the request's trace id in the body (`trace_id`).
    pub fn to_traced_response(self, request_id: &str, trace_id: Option<&str>) -> Response<Bytes> {
        let row = self.row();
        let mut resp = json_error_traced(
            row.status,
            row.error,
            row.public_reason,
            request_id,
            trace_id,
        );
        let h = resp.headers_mut();
        match self {
            Rejection::Unauthenticated(AuthError::KeysUnavailable) => {}
            Rejection::Unauthenticated(e) => {
                // RFC 6750: no `error` attribute when the request simply had no credentials.
                let challenge = match e {
                    AuthError::MissingToken => r#"Bearer realm="fortress""#,
                    _ => r#"Bearer realm="fortress", error="invalid_token""#,
                };
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            // RFC 9110 §15.5.6: a 405 lists the methods the target accepts.
            Rejection::DenyMethod(allowed) | Rejection::UnknownMethod(allowed) => {
                if let Ok(v) = HeaderValue::from_str(&allowed.to_header_value()) {
                    h.insert(header::ALLOW, v);
                }
            }
            // The connection's framing can no longer be trusted: the answer ends it.
            Rejection::RejectFraming(_)
            | Rejection::HeadTooLarge(_)
            | Rejection::MalformedBody
            | Rejection::BodyTimeout
            | Rejection::PayloadTooLarge(_) => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        if let Some(secs) = row.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The short JSON error that replaces the body of an upstream 5xx when `scrub_errors` is on:
/// same status, `error` from the status (`internal_server_error`, `service_unavailable`, …),
/// reason `upstream_error`, the request id and the trace id.
pub fn scrubbed_upstream_error(
    status: StatusCode,
    request_id: &str,
    trace_id: &str,
) -> Response<Bytes> {
    let error = match status.as_u16() {
        500 => "internal_server_error",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        _ => "server_error",
    };
    json_error_traced(status, error, "upstream_error", request_id, Some(trace_id))
}

/// A short JSON error response. `request_id` must be a safe token (see `pipeline::ids`).
pub fn json_error(
    status: StatusCode,
    error: &str,
    reason: &str,
    request_id: &str,
) -> Response<Bytes> {
    json_error_traced(status, error, reason, request_id, None)
}

/// [`json_error`] with a `trace_id` after the request id. Both must be safe tokens (see
/// `pipeline::ids`).
pub fn json_error_traced(
    status: StatusCode,
    error: &str,
    reason: &str,
    request_id: &str,
    trace_id: Option<&str>,
) -> Response<Bytes> {
    let body = match trace_id {
        Some(trace_id) => format!(
            r#"{{"error":"{error}","reason":"{reason}","request_id":"{request_id}","trace_id":"{trace_id}"}}"#
        ),
        None => {
            format!(r#"{{"error":"{error}","reason":"{reason}","request_id":"{request_id}"}}"#)
        }
    };
    let mut resp = Response::new(Bytes::from(body));
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
    use strum::IntoEnumIterator;

    #[test]
    fn status_table() {
        let get_post = Methods::default().with_index(0).with_index(2);
        let rows = [
            (
                Rejection::RejectTargetForm,
                400,
                "bad_request",
                "target_form",
                "target_form",
            ),
            (
                Rejection::RejectPath(PathError::EncodedSlash),
                400,
                "bad_request",
                "encoded_slash",
                "encoded_slash",
            ),
            (
                Rejection::RejectAmbiguous(AmbiguityError::AmbiguousTenant),
                400,
                "bad_request",
                "ambiguous_tenant",
                "ambiguous_tenant",
            ),
            (
                Rejection::RejectAmbiguous(AmbiguityError::ProtectedHeaderSpelling),
                400,
                "bad_request",
                "protected_header_spelling",
                "protected_header_spelling",
            ),
            (
                Rejection::RejectAmbiguous(AmbiguityError::MethodOverride),
                400,
                "bad_request",
                "method_override",
                "method_override",
            ),
            (
                Rejection::RejectAmbiguous(AmbiguityError::AmbiguousPath),
                400,
                "bad_request",
                "ambiguous_path",
                "ambiguous_path",
            ),
            (
                Rejection::DenyUnmatched,
                404,
                "not_found",
                "no_route",
                "no_route",
            ),
            (
                Rejection::DenyPermission,
                403,
                "forbidden",
                "missing_permission",
                "missing_permission",
            ),
            (
                Rejection::DenyTenant,
                403,
                "forbidden",
                "tenant_mismatch",
                "tenant_mismatch",
            ),
            (
                Rejection::DenyMethod(get_post),
                405,
                "method_not_allowed",
                "method_not_allowed",
                "method_not_allowed",
            ),
            (
                Rejection::Unauthenticated(AuthError::MissingToken),
                401,
                "unauthorized",
                "missing_token",
                "missing_token",
            ),
            (
                Rejection::Unauthenticated(AuthError::UnknownKid),
                401,
                "unauthorized",
                "invalid_token",
                "unknown_kid",
            ),
            (
                Rejection::RejectTransport(TransportError::CredentialsOverHttp),
                403,
                "forbidden",
                "credentials_over_http",
                "credentials_over_http",
            ),
            (
                Rejection::UnknownMethod(get_post),
                405,
                "method_not_allowed",
                "method_not_allowed",
                "unknown_method",
            ),
            (
                Rejection::RejectMethod(MethodError::MethodNotUppercase),
                400,
                "bad_request",
                "method_not_uppercase",
                "method_not_uppercase",
            ),
            (
                Rejection::RejectHost(HostError::AuthorityMismatch),
                400,
                "bad_request",
                "authority_mismatch",
                "authority_mismatch",
            ),
            (
                Rejection::RejectHost(HostError::MissingHost),
                400,
                "bad_request",
                "missing_host",
                "missing_host",
            ),
            (
                Rejection::MisdirectedHost,
                421,
                "misdirected_request",
                "host_not_allowed",
                "host_not_allowed",
            ),
            (
                Rejection::RejectPath(PathError::PathParameter),
                400,
                "bad_request",
                "path_parameter",
                "path_parameter",
            ),
            (
                Rejection::RejectFraming(FramingError::UnsupportedTransferCoding),
                400,
                "bad_request",
                "unsupported_transfer_coding",
                "unsupported_transfer_coding",
            ),
            (
                Rejection::MalformedBody,
                400,
                "bad_request",
                "malformed_body",
                "malformed_body",
            ),
            (
                Rejection::BodyTimeout,
                408,
                "request_timeout",
                "body_timeout",
                "body_timeout",
            ),
            (
                Rejection::UpstreamUnavailable,
                502,
                "bad_gateway",
                "upstream_unavailable",
                "upstream_unavailable",
            ),
            (
                Rejection::UpstreamFailed,
                502,
                "bad_gateway",
                "upstream_failed",
                "upstream_failed",
            ),
            (
                Rejection::PayloadTooLarge(LimitError::BodyTooLarge),
                413,
                "payload_too_large",
                "body_too_large",
                "body_too_large",
            ),
            (
                Rejection::UnsupportedMediaType(MediaTypeError::AmbiguousContentType),
                415,
                "unsupported_media_type",
                "ambiguous_content_type",
                "ambiguous_content_type",
            ),
            (
                Rejection::CorsRefused(CorsError::CorsOriginNotAllowed),
                403,
                "forbidden",
                "cors_origin_not_allowed",
                "cors_origin_not_allowed",
            ),
            (
                Rejection::UpstreamTimeout,
                504,
                "gateway_timeout",
                "upstream_timeout",
                "upstream_timeout",
            ),
            (
                Rejection::IpNotAllowed,
                403,
                "forbidden",
                "ip_not_allowed",
                "ip_not_allowed",
            ),
            (
                Rejection::TooManyFailedAuthentications(7),
                429,
                "too_many_requests",
                "too_many_failed_authentications",
                "too_many_failed_authentications",
            ),
            (
                Rejection::Overloaded,
                503,
                "service_unavailable",
                "overloaded",
                "overloaded",
            ),
        ];
        for (rejection, status, error, public, detailed) in rows {
            let (s, e, r) = rejection.status();
            assert_eq!((s.as_u16(), e, r), (status, error, public), "{rejection:?}");
            assert_eq!(rejection.reason(), detailed, "{rejection:?}");
        }
    }

    #[test]
    fn every_auth_failure_but_a_missing_token_is_public_invalid_token() {
        for e in AuthError::iter() {
            let r = Rejection::Unauthenticated(e);
            if e == AuthError::KeysUnavailable {
                // A key-set outage is fortress's failure, not the token's: 503.
                assert_eq!(r.status().0.as_u16(), 503);
                assert_eq!(r.row().public_reason, "keys_unavailable");
                assert_eq!(r.kind(), Kind::Error);
                assert_eq!(r.row().retry_after, Some(KEYS_RETRY_AFTER));
                continue;
            }
            let want = if e == AuthError::MissingToken {
                "missing_token"
            } else {
                "invalid_token"
            };
            assert_eq!(r.row().public_reason, want, "{e:?}");
            assert_eq!(r.status().0.as_u16(), 401);
            assert_eq!(r.reason(), e.code());
            assert_eq!(r.kind(), Kind::Deny);
        }
        assert_eq!(AuthError::iter().count(), AuthError::COUNT);
        assert_eq!(AuthError::UnknownKid.code(), "unknown_kid");
        assert_eq!(
            TransportError::ConnectionNamesProtectedHeader.code(),
            "connection_names_protected_header"
        );
        assert_eq!(PathError::EncodedDotSegment.code(), "encoded_dot_segment");
    }

    #[test]
    fn upstream_failures_are_errors_not_denials() {
        for r in [
            Rejection::UpstreamUnavailable,
            Rejection::UpstreamFailed,
            Rejection::UpstreamTimeout,
        ] {
            assert_eq!(r.kind(), Kind::Error);
        }
        assert_eq!(Rejection::DenyUnmatched.kind(), Kind::Deny);
        assert_eq!(Rejection::MalformedBody.kind(), Kind::Deny);
        let r = Rejection::MalformedBody.to_response("rid");
        assert_eq!(r.headers()["connection"], "close");
    }

    #[test]
    fn refusals_carry_their_headers() {
        let r = Rejection::Unauthenticated(AuthError::MissingToken).to_response("rid");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="fortress""#
        );
        let r = Rejection::Unauthenticated(AuthError::InvalidSignature).to_response("rid");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="fortress", error="invalid_token""#
        );
        assert_eq!(
            r.body().as_ref(),
            br#"{"error":"unauthorized","reason":"invalid_token","request_id":"rid"}"#
        );
        let allowed = Methods::default().with_index(0).with_index(1).with_index(4);
        let r = Rejection::DenyMethod(allowed).to_response("rid");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET, HEAD, DELETE");
        assert!(r.headers().get("retry-after").is_none());
        let r = Rejection::Overloaded.to_response("rid");
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(Rejection::Overloaded.kind(), Kind::Deny);
        let r = Rejection::TooManyFailedAuthentications(42).to_response("rid");
        assert_eq!(r.headers()["retry-after"], "42");
        let r = Rejection::TooManyFailedAuthentications(0).to_response("rid");
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(
            Rejection::IpNotAllowed
                .to_response("rid")
                .headers()
                .get("retry-after")
                .is_none()
        );
        let r = Rejection::UnknownMethod(Methods::ALL).to_response("rid");
        assert_eq!(r.status(), 405);
        assert_eq!(
            r.headers()["allow"],
            "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"
        );
    }

    #[test]
    fn limit_refusals_carry_retry_after() {
        let r = Rejection::RateLimited {
            retry_after_secs: 7,
        };
        assert_eq!(r.status().0, 429);
        assert_eq!(r.reason(), "rate_limited");
        assert_eq!(r.kind(), Kind::Deny);
        let resp = r.to_response("rid");
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(
            resp.body().as_ref(),
            br#"{"error":"too_many_requests","reason":"rate_limited","request_id":"rid"}"#
        );
        let r = Rejection::BudgetExhausted {
            retry_after_secs: 86_400,
        };
        assert_eq!(
            (r.status().0.as_u16(), r.reason()),
            (429, "budget_exhausted")
        );
        assert_eq!(r.to_response("rid").headers()["retry-after"], "86400");
        assert_eq!(Rejection::MissingTenant.status().0, 403);
        assert_eq!(Rejection::MissingTenant.reason(), "missing_tenant");
        assert_eq!(Rejection::LimitsUnavailable.kind(), Kind::Error);
        assert!(!Rejection::LimitsUnavailable.dry_run_may_forward());
        assert!(Rejection::MissingTenant.dry_run_may_forward());
        assert_eq!(
            Rejection::RejectAmbiguous(AmbiguityError::AmbiguousLimitKey).reason(),
            "ambiguous_limit_key"
        );
    }
}
