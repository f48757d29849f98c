//! Failed-authentication throttling, per client IP: more than `failed_auth_limit.max`
//! failed authentications in one window of `failed_auth_limit.per` → 429
//! `too_many_failed_authentications` until the window ends, for every request from that IP
//! that would be authenticated (valid tokens included: a throttled client costs no
//! verification, and an attacker cannot learn that a guess was right).
//!
//! What counts as a failure: a token that could have been a successful forgery or is an
//! artifact of forging one — a well-formed token whose signature does not verify with a
//! known key, a disallowed algorithm (`none`, HS/RS confusion), `crit` or `b64` header
//! tricks, repeated members, wrong claim types. Not counted, because legitimate clients send
//! them and they can never succeed anyway: a missing token (a browser probing a protected
//! page without a session), a malformed one (`Bearer undefined` from a buggy app), an unknown
//! key id (a key rotation the JWKS has not caught up with), a token fortress's issuer signed
//! but refused for another reason (expired, not yet valid, wrong issuer or audience, missing
//! claim, revoked, unusable identity: stale sessions, not guesses), and fortress's own
//! failure (no keys available). So the throttle cannot lock out a network of normal users,
//! and is on by default.
//!
//! State: a fixed-window counter in the [`StateStore`](crate::store::StateStore) (a budget of
//! `max` units per window, charged one unit per failure; the check before authentication is
//! an admission that writes nothing, skipped while this process charged no failure in the
//! current window). Kept across reloads (the key carries the
//! limit's numbers, so a changed limit starts fresh), bounded by the store's entry bound,
//! timed by the process clock. IPv6 clients are counted per /64 (one host usually owns a
//! whole /64, so counting single addresses would let it rotate through them).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::error::{AuthError, Rejection};
use crate::policy::auth_throttle::FailedAuthLimit;
use crate::store::{LimitCheck, LimitKind, Window};

/// The throttle stage, before authentication: refuses a throttled client's request to a
/// route that authenticates.
pub async fn check(ctx: &mut RequestContext, _req: &Parts) -> Result<Step, Rejection> {
    let Some(limit) = applies(ctx) else {
        return Ok(Step::Skip("no authentication here, or throttling off"));
    };
    let now = ctx.now.saturating_mul(1000);
    // No failure charged by this process since before the current window began: every count
    // is zero, so nothing is read (the common case costs one atomic load). Failures are
    // charged only by this process (the in-memory store); a store shared between instances
    // must not take this shortcut.
    let last = ctx
        .snapshot
        .last_auth_failure
        .load(std::sync::atomic::Ordering::Acquire);
    if !ctx.snapshot.store.is_shared() && last.saturating_add(limit.per_ms()) <= now {
        return Ok(Step::Pass);
    }
    let key = Key::new(&limit, ctx.client_ip);
    // A shared store: failures are counted in it, and a client over the limit is blocked on
    // every instance through the store's local mirror (no round trip before authentication).
    if ctx.snapshot.store.is_shared() {
        if ctx.snapshot.store.is_stale() {
            return Err(Rejection::StateUnavailable);
        }
        return match ctx.snapshot.store.blocked(now, key.as_str()) {
            Some(ms) => Err(Rejection::TooManyFailedAuthentications(ceil_secs(ms))),
            None => Ok(Step::Pass),
        };
    }
    let checks = [LimitCheck {
        key: key.as_str(),
        kind: LimitKind::Budget {
            limit: limit.max,
            window: window(&limit),
            cost: 0,
        },
    }];
    match ctx.snapshot.store.admit(now, &checks).await {
        Ok(a) if a.allowed => Ok(Step::Pass),
        Ok(a) => {
            let ms = a
                .states
                .first()
                .and_then(|s| s.retry_after_ms)
                .unwrap_or_else(|| limit.per_ms());
            Err(Rejection::TooManyFailedAuthentications(ceil_secs(ms)))
        }
        // Fail closed: the throttle cannot be read, so the request is not judged at all.
        Err(e) => {
            tracing::warn!(error = %e, "failed-authentication throttle unavailable; refusing");
            Err(Rejection::StateUnavailable)
        }
    }
}

/// Counts the authentication stage's result: a failure that counts (see the module doc) is
/// charged to the client IP. `live` is false for `fortress explain`, which counts nothing.
pub async fn count(
    ctx: &RequestContext,
    result: Result<Step, Rejection>,
    live: bool,
) -> Result<Step, Rejection> {
    if let Err(Rejection::Unauthenticated(e)) = result
        && live
        && counts(e)
    {
        charge(ctx).await;
    }
    result
}

/// Charges one failed authentication to the client IP, when throttling applies here.
async fn charge(ctx: &RequestContext) {
    if let Some(limit) = applies(ctx) {
        let key = Key::new(&limit, ctx.client_ip);
        let now = ctx.now.saturating_mul(1000);
        ctx.snapshot
            .last_auth_failure
            .fetch_max(now, std::sync::atomic::Ordering::AcqRel);
        let charged = ctx
            .snapshot
            .store
            .charge(now, key.as_str(), limit.max, window(&limit), 1)
            .await;
        if let Ok(state) = &charged
            && !state.allowed
            && ctx.snapshot.store.is_shared()
        {
            let until = now.saturating_add(state.reset_after_ms);
            if let Err(e) = ctx.snapshot.store.block(key.as_str(), until).await {
                tracing::warn!(error = %e, "throttled client not shared with other instances");
            }
        }
        match charged {
            Ok(state) if !state.allowed && state.used == limit.max.saturating_add(1) => {
                tracing::warn!(
                    request.id = %ctx.ids.request_id(),
                    trace.id = %ctx.ids.trace_id(),
                    client.ip = %ctx.client_ip,
                    failures = state.used,
                    "client throttled: too many failed authentications"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "failed authentication not counted"),
        }
    }
}

/// The app answered 401 on a route with `upstream_401_counts: true` (a login or token
/// endpoint it authenticates itself): a failed authentication of the client IP.
pub async fn upstream_refused(ctx: &RequestContext) {
    if !ctx.route().is_some_and(|r| r.access.upstream_401_counts) {
        return;
    }
    charge(ctx).await;
}

/// Whether an authentication failure counts against the client.
pub fn counts(e: AuthError) -> bool {
    match e {
        AuthError::InvalidSignature
        | AuthError::DisallowedAlgorithm
        | AuthError::CriticalHeader
        | AuthError::UnencodedPayload
        | AuthError::InvalidClaimType
        | AuthError::DuplicateMember => true,
        AuthError::MissingToken
        | AuthError::MalformedToken
        | AuthError::UnknownKid
        | AuthError::TokenExpired
        | AuthError::TokenNotYetValid
        | AuthError::InvalidIssuer
        | AuthError::InvalidAudience
        | AuthError::MissingClaim
        | AuthError::TokenRevoked
        | AuthError::KeysUnavailable
        | AuthError::InvalidIdentity => false,
    }
}

/// The limit, when it applies to this request: throttling on, and the request would be
/// authenticated (the same rule as the authentication stage) or its route counts the app's
/// 401s.
fn applies(ctx: &RequestContext) -> Option<FailedAuthLimit> {
    let limit = ctx.snapshot.policy.failed_auth?;
    let authenticates = match ctx.route() {
        Some(r) => !r.public || r.access.upstream_401_counts,
        None => ctx.snapshot.policy.auth.is_some(),
    };
    authenticates.then_some(limit)
}

fn window(limit: &FailedAuthLimit) -> Window {
    Window::Fixed {
        period_ms: limit.per_ms(),
    }
}

fn ceil_secs(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1)
}

/// The store key, built on the stack: `fa:MAX:PER_MS:IP` (IPv6 as its /64).
struct Key {
    buf: [u8; 96],
    len: usize,
}

impl Key {
    fn new(limit: &FailedAuthLimit, ip: IpAddr) -> Self {
        let mut k = Self {
            buf: [0; 96],
            len: 0,
        };
        let ip = match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        // At most 3 + 20 + 1 + 20 + 1 + 39 bytes: always fits.
        let _fits = write!(k, "fa:{}:{}:{}", limit.max, limit.per_ms(), ip).is_ok();
        k
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or("fa:?")
    }
}

impl std::fmt::Write for Key {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(std::fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_canonical_and_v6_per_64() {
        let l = FailedAuthLimit {
            max: 20,
            per: Duration::from_secs(60),
        };
        let k = |ip: &str| Key::new(&l, ip.parse().expect("ip")).as_str().to_owned();
        assert_eq!(k("10.1.2.3"), "fa:20:60000:10.1.2.3");
        assert_eq!(k("::ffff:10.1.2.3"), "fa:20:60000:10.1.2.3");
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "fa:20:60000:2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff::1"), k("2001:db8:1:2::9"));
        let long = k("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert!(long.ends_with("ffff:ffff:ffff:ffff::"), "{long}");
        let big = FailedAuthLimit {
            max: u64::MAX,
            per: Duration::from_secs(86_400),
        };
        let s = Key::new(&big, "1111:2222:3333:4444::".parse().expect("ip"))
            .as_str()
            .to_owned();
        assert_eq!(s, "fa:18446744073709551615:86400000:1111:2222:3333:4444::");
    }

    #[test]
    fn what_counts() {
        assert!(counts(AuthError::InvalidSignature));
        assert!(counts(AuthError::DisallowedAlgorithm));
        assert!(!counts(AuthError::MalformedToken));
        assert!(!counts(AuthError::UnknownKid));
        assert!(!counts(AuthError::MissingToken));
        assert!(!counts(AuthError::TokenExpired));
        assert!(!counts(AuthError::KeysUnavailable));
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1001), 2);
        assert_eq!(ceil_secs(0), 1);
    }
}
