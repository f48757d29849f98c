//! What fortress knows about a client connection, shared by every request on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Facts about one client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Requests in flight and the last time the connection was busy (for the idle timeout).
    pub activity: ConnActivity,
    /// What the server keeps alive while anything still uses this connection (its place in
    /// the open-connections gauge and in the shutdown drain). Every request context holds the
    /// `ConnInfo`, so a WebSocket tunnel, which outlives hyper's connection task, keeps the
    /// connection counted and shutdown waits for it (up to the grace period).
    _hold: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// What the HTTP/1 guard found on this connection (`server::h1_guard`).
    pub h1: super::h1_verdict::H1Verdict,
    /// This connection's own upstream connection (HTTP/1.1 client connections only;
    /// `proxy/affinity.rs`). Dropped with the connection.
    pub upstream: Option<crate::proxy::affinity::Slot>,
}

impl ConnInfo {
    /// A new connection, busy as of now.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            activity: ConnActivity::new(),
            _hold: None,
            h1: super::h1_verdict::H1Verdict::default(),
            upstream: None,
        }
    }

    /// The same connection, sending its requests on an upstream connection of its own (an
    /// HTTP/1.1 client connection: one request at a time).
    pub fn with_upstream_slot(mut self) -> Self {
        self.upstream = Some(crate::proxy::affinity::Slot::default());
        self
    }

    /// The same connection, keeping `hold` alive until the last user of this `ConnInfo` is
    /// gone.
    pub fn holding(mut self, hold: impl std::any::Any + Send + Sync) -> Self {
        self._hold = Some(Box::new(hold));
        self
    }
}

/// Tracks whether a connection is idle, without locks.
#[derive(Debug)]
pub struct ConnActivity {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_active_ms: AtomicU64,
}

impl ConnActivity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
        }
    }

    /// A request started on this connection.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A request's response finished (or was dropped).
    pub fn request_finished(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long the connection has been idle, or `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(last))
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(now, Ordering::Release);
    }
}
