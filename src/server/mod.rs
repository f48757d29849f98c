//! Listeners: accept loops with a connection cap, TLS handshake with a timeout, HTTP/1.1 and
//! HTTP/2 (ALPN) serving, idle timeout, and a two-step drain at shutdown.

pub mod h1_guard;
pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use crate::pipeline::conn::ConnInfo;
use crate::proxy::affinity::RELEASE_AFTER;
use crate::state::AppState;

/// Which service a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Client traffic (TLS when configured).
    Client,
    /// `/healthz`, `/readyz`, `/metrics`, `/admin/*` (plain HTTP/1.1).
    Admin,
    /// `server.probes`: `/livez`, `/healthz`, `/readyz`, `/metrics` only (plain HTTP/1.1).
    Probes,
}

/// Tells connection tasks to finish; dropped senders mean "all connections are done".
#[derive(Clone)]
pub struct Drain {
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

/// Creates the shutdown signal and the drain tracker.
pub fn drain_pair() -> (watch::Sender<bool>, Drain, mpsc::Receiver<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = mpsc::channel(1);
    (
        stop_tx,
        Drain {
            stop: stop_rx,
            _alive: alive_tx,
        },
        alive_rx,
    )
}

/// Accepts connections until `drain.stop` turns true, then drops the listener (new
/// connections are refused at once) and returns. Connection tasks keep `drain` alive.
pub async fn accept_loop(listener: TcpListener, kind: Listener, state: AppState, drain: Drain) {
    let cap = Arc::new(Semaphore::new(match kind {
        Listener::Probes => crate::admin::probes::MAX_CONNECTIONS,
        _ => state.config.snapshot().server.max_connections,
    }));
    let mut stop = drain.stop.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = if kind == Listener::Admin {
            None
        } else {
            match cap.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if kind == Listener::Client {
                        state.metrics.connections_rejected.inc();
                    }
                    drop(tcp);
                    continue;
                }
            }
        };
        let _ = tcp.set_nodelay(true); // best effort: latency only, never a decision
        let state = state.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match kind {
                Listener::Client => serve_client(tcp, peer, state, drain).await,
                Listener::Admin | Listener::Probes => {
                    let info = Arc::new(ConnInfo::new(peer, false));
                    Box::pin(serve_http(
                        TokioIo::new(tcp),
                        false,
                        info,
                        kind,
                        state,
                        drain,
                    ))
                    .await;
                }
            }
        });
    }
    drop(listener);
    debug!(?kind, "listener closed");
}

async fn serve_client(tcp: TcpStream, peer: std::net::SocketAddr, state: AppState, drain: Drain) {
    state.metrics.open_connections.inc();
    // Counted (and drained) as long as anything uses the connection: the handshake, hyper's
    // connection task, and any request context still alive after it (a WebSocket tunnel).
    let open = Arc::new(scopeguard(&state));
    let hold = (open.clone(), drain.clone());
    match state.tls.clone() {
        None => {
            let info = Arc::new(
                ConnInfo::new(peer, false)
                    .holding(hold)
                    .with_upstream_slot(),
            );
            Box::pin(serve_http(
                TokioIo::new(tcp),
                false,
                info,
                Listener::Client,
                state.clone(),
                drain,
            ))
            .await;
        }
        Some(store) => {
            let timeout = state.config.snapshot().server.timeouts.handshake;
            let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config());
            match tokio::time::timeout(timeout, Box::pin(acceptor.accept(tcp))).await {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let info = ConnInfo::new(peer, true).holding(hold);
                    // HTTP/2 multiplexes requests: they share the pool.
                    let info = Arc::new(if h2 { info } else { info.with_upstream_slot() });
                    Box::pin(serve_http(
                        TokioIo::new(tls),
                        h2,
                        info,
                        Listener::Client,
                        state.clone(),
                        drain,
                    ))
                    .await;
                }
                Ok(Err(e)) => {
                    state.metrics.tls_handshake_errors.inc();
                    debug!(client.ip = %peer.ip(), error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    state.metrics.tls_handshake_errors.inc();
                    debug!(client.ip = %peer.ip(), "TLS handshake timed out");
                }
            }
        }
    }
}

/// Decrements the open-connections gauge when the connection task ends.
struct OpenConn(AppState);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.metrics.open_connections.dec();
    }
}

fn scopeguard(state: &AppState) -> OpenConn {
    OpenConn(state.clone())
}

async fn serve_http<I>(
    io: TokioIo<I>,
    h2: bool,
    info: Arc<ConnInfo>,
    kind: Listener,
    state: AppState,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Only the timeouts and head limits stay with the connection, not a copy of the server
    // settings.
    let (header_read, idle, limits) = {
        let snapshot = state.config.snapshot();
        let t = &snapshot.server.timeouts;
        let limits = h1_guard::Limits {
            max_head_bytes: snapshot.server.max_header_bytes,
            max_headers: snapshot.server.max_headers,
        };
        (t.header_read, t.idle, limits)
    };
    // The probe listener is on the pod address: short timeouts, so its few connection slots
    // cannot be held by idle or slow clients (kubelet opens one connection per probe).
    let (header_read, idle) = match kind {
        Listener::Probes => (
            header_read.min(crate::admin::probes::MAX_WAIT),
            idle.min(crate::admin::probes::MAX_WAIT),
        ),
        _ => (header_read, idle),
    };
    let svc_info = info.clone();
    let svc = service_fn(move |req| {
        let state = state.clone();
        let info = svc_info.clone();
        async move {
            match kind {
                Listener::Client => crate::pipeline::handle(state, info, req).await,
                Listener::Admin => crate::admin::handle(state, info.peer, req).await,
                Listener::Probes => crate::admin::probes::handle(state, req).await,
            }
        }
    });
    let mut stop = drain.stop.clone();
    let mut closing = false;
    // Drives a connection to its end: graceful shutdown on drain or once idle for `idle`.
    macro_rules! drive {
        ($conn:expr) => {{
            // Boxed: the task holds a pointer, and the heap holds only the protocol in use.
            let mut conn = Box::pin($conn);
            loop {
                // Read once per pass, for both the delay and the wake-up: a slot armed
                // after this read wakes the loop (the notification is kept as a permit).
                let armed_now = info.upstream.as_ref().is_some_and(|s| s.is_armed());
                let idle_check = tokio::time::sleep(idle_check_delay(&info, idle, armed_now));
                // A request put an upstream connection in the slot: the idle check moves
                // to the (shorter) release delay.
                let armed = async {
                    match &info.upstream {
                        Some(slot) if !armed_now => slot.armed().await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            debug!(client.ip = %info.peer.ip(), error = %e, "connection ended with error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = idle_check, if !closing => {
                        let idle_for = info.activity.idle_for();
                        if idle_for.is_some_and(|d| d >= idle) {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        } else if idle_for.is_some_and(|d| d >= RELEASE_AFTER)
                            && let Some(slot) = &info.upstream
                        {
                            slot.release();
                        }
                    }
                    () = armed, if !closing => {}
                }
            }
        }};
    }
    // HTTP/2 only where ALPN chose it on TLS; everything else is HTTP/1.1 (plain listeners,
    // the admin listener, TLS without `h2`). hyper's own connection types, not the auto
    // builder: no version sniffing, no HTTP/2 state on HTTP/1.1 connections (less memory per
    // idle connection), and the exact HTTP/1.1 header size limit.
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
            // Rapid reset (CVE-2023-44487): streams the client resets before fortress
            // accepted them; beyond this, GOAWAY (ENHANCE_YOUR_CALM). hyper's default, made
            // explicit.
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            // Streams fortress reset because the client misbehaved (malformed or
            // connection-specific fields); beyond this, GOAWAY. hyper's default, explicit.
            // CONTINUATION floods are bounded in h2 itself, by frame count and header list
            // size (GOAWAY ENHANCE_YOUR_CALM).
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        drive!(b.serve_connection(io, svc));
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        // hyper's own head limits sit above the guard's, so the guard (on client
        // connections) answers first, with fortress's JSON 431; on the admin listener they
        // are the limits.
        let hyper_head = limits.max_head_bytes + HYPER_HEAD_SLACK;
        // hyper needs a timer for the header-read timeout (it panics without one).
        b.timer(TokioTimer::new())
            .header_read_timeout(header_read)
            .keep_alive(true)
            .max_header_size(hyper_head)
            .max_headers(limits.max_headers)
            // Bodies stream through in reads of at most this size (hyper's minimum is 8 KiB).
            .max_buf_size(hyper_head.max(MAX_HEADER_BYTES as usize));
        // With upgrades: a WebSocket handshake on a `websocket: true` route hands the
        // connection to the tunnel (`proxy::tunnel`) once the 101 is sent; other requests are
        // unaffected. Client connections read through the raw-byte guard (`h1_guard`): hyper
        // only ever parses heads and chunk lines that passed RFC 9112's strict syntax.
        if kind == Listener::Client {
            let guarded = h1_guard::GuardedIo::new(io.into_inner(), limits, info.clone());
            drive!(
                b.serve_connection(TokioIo::new(guarded), svc)
                    .with_upgrades()
            );
        } else {
            drive!(b.serve_connection(io, svc).with_upgrades());
        }
    }
    drop(drain);
}

/// Largest request head: HTTP/1.1 read buffer (head must fit) and HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE`. 96 KiB: room for a 64 KiB bearer token (refused by the
/// token size check with a proper 401, not cut off by the parser), well below hyper's
/// ~400 KiB default.
pub const MAX_HEADER_BYTES: u32 = 96 * 1024;
/// Most header fields in an HTTP/1.1 request head (hyper's default, explicit); the default
/// of `server.max_headers`.
pub const MAX_HEADER_FIELDS: usize = 100;
/// How far hyper's own head limit sits above `server.max_header_bytes` (the guard answers
/// first on client connections).
const HYPER_HEAD_SLACK: usize = 1024;
/// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 streams reset by the client before they were accepted, before GOAWAY.
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2 streams reset by fortress for client errors, before GOAWAY.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How long until the connection could first be idle for `idle`, or, while it holds an
/// upstream connection of its own, for [`RELEASE_AFTER`] (when that connection is parked).
fn idle_check_delay(info: &ConnInfo, idle: Duration, armed: bool) -> Duration {
    let until = if armed { idle.min(RELEASE_AFTER) } else { idle };
    match info.activity.idle_for() {
        Some(d) if d < until => until - d + Duration::from_millis(5),
        Some(_) => Duration::from_millis(5),
        None => until,
    }
}

/// Waits for all connection tasks to finish, up to `grace`. Returns whether they did.
pub async fn wait_drained(mut alive: mpsc::Receiver<()>, grace: Duration) -> bool {
    match tokio::time::timeout(grace, alive.recv()).await {
        Ok(_) => {
            info!("all connections drained");
            true
        }
        Err(_) => {
            warn!(
                grace_ms = grace.as_millis() as u64,
                "drain deadline reached; closing remaining connections"
            );
            false
        }
    }
}
