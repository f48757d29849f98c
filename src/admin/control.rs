//! Who may use the admin API, and the admin API's own state.
//!
//! * [`authorize`]: the loopback rule, then the bearer token verified exactly as the client
//!   path verifies it (the policy's `authentication`, revocations included), then the
//!   endpoint's permission against the token's roles with the policy's RBAC.
//! * [`AdminControl`]: where changes are persisted (`server.state_dir`), the lock that
//!   serializes them, and what `GET /admin/policy` reports about reloads.

use std::net::SocketAddr;

use http::HeaderMap;

use crate::auth::{AuthError, SharedPrincipal};
use crate::state::Snapshot;

pub use crate::state::admin::{AdminControl, ReloadInfo};

/// Why an admin request was refused before it did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The TCP peer is not a loopback address (403 `admin_requires_loopback`).
    NotLoopback,
    /// The policy has no `authentication`: nobody can be authenticated (403
    /// `admin_requires_authentication`).
    NoAuthentication,
    /// No token, or a token refused (401, `WWW-Authenticate`).
    Unauthenticated(AuthError),
    /// The token's roles do not grant the endpoint's permission (403 `missing_permission`).
    Forbidden,
    /// The shared store's copy of the revocations is stale (503 `state_unavailable`).
    StateUnavailable,
}

impl Denied {
    /// The detailed reason (audit, logs).
    pub fn reason(self) -> &'static str {
        match self {
            Denied::NotLoopback => "admin_requires_loopback",
            Denied::NoAuthentication => "admin_requires_authentication",
            Denied::Unauthenticated(e) => e.code(),
            Denied::Forbidden => "missing_permission",
            Denied::StateUnavailable => "state_unavailable",
        }
    }
}

/// Whether `peer` is a loopback address (IPv4-mapped IPv6 judged as IPv4).
pub fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// The caller, when it may use an endpoint requiring `permission`: a loopback peer with a
/// valid, unrevoked bearer token (the `Authorization` header only: no cookie, so a browser
/// cannot be made to send one) whose roles grant `permission`. `Err(Forbidden)` carries no
/// principal; [`authenticate`] gives it for the audit record.
pub async fn authenticate(
    snapshot: &Snapshot,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<SharedPrincipal, Denied> {
    // The mutating API is served to loopback peers only: the admin listener is plain HTTP,
    // and a bearer token must never travel over a network in clear (`kubectl port-forward`
    // and a shell in the pod reach loopback).
    if !is_loopback(peer) {
        return Err(Denied::NotLoopback);
    }
    let (Some(_), Some(verifier)) = (&snapshot.policy.auth, snapshot.verifier()) else {
        return Err(Denied::NoAuthentication);
    };
    let token = crate::pipeline::authn::extract(headers, None).map_err(Denied::Unauthenticated)?;
    let now = snapshot.clock.now_ms();
    let principal = verifier
        .verify(token, now / 1000)
        .await
        .map_err(Denied::Unauthenticated)?;
    if snapshot.store.is_stale() {
        return Err(Denied::StateUnavailable);
    }
    if snapshot.store.is_revoked(
        now,
        principal.jti.as_deref(),
        &principal.subject,
        principal.issued_at,
    ) {
        return Err(Denied::Unauthenticated(AuthError::TokenRevoked));
    }
    Ok(principal)
}

/// Whether `principal`'s roles grant `permission` under the policy's RBAC.
pub fn permitted(snapshot: &Snapshot, principal: &SharedPrincipal, permission: &str) -> bool {
    snapshot.policy.rbac.allows(&principal.roles, permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers() {
        for ok in [
            "127.0.0.1:1",
            "127.8.9.10:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_loopback(ok.parse().expect("addr")), "{ok}");
        }
        for bad in [
            "10.0.0.1:1",
            "192.168.1.2:1",
            "[::ffff:10.0.0.1]:1",
            "[fe80::1]:1",
            "0.0.0.0:1",
        ] {
            assert!(!is_loopback(bad.parse().expect("addr")), "{bad}");
        }
    }
}
