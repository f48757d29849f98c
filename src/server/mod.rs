//! Listeners: accept loops with a connection cap, TLS handshake with a timeout, HTTP/1.1 and
//! HTTP/2 (ALPN) serving, idle timeout, and a two-step drain at shutdown.

pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use crate::pipeline::conn::ConnInfo;
use crate::state::AppState;

/// Which service a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Client traffic (TLS when configured).
    Client,
    /// `/healthz`, `/readyz`, `/metrics`, `/admin/*` (plain HTTP/1.1).
    Admin,
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
    let cap = Arc::new(Semaphore::new(
        state.config.snapshot().server.max_connections,
    ));
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
        let permit = if kind == Listener::Client {
            match cap.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    state.metrics.connections_rejected.inc();
                    drop(tcp);
                    continue;
                }
            }
        } else {
            None
        };
        let _ = tcp.set_nodelay(true); // best effort: latency only, never a decision
        let state = state.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match kind {
                Listener::Client => serve_client(tcp, peer, state, drain).await,
                Listener::Admin => {
                    let info = Arc::new(ConnInfo::new(peer, false));
                    serve_http(TokioIo::new(tcp), info, kind, state, drain).await;
                }
            }
        });
    }
    drop(listener);
    debug!(?kind, "listener closed");
}

async fn serve_client(tcp: TcpStream, peer: std::net::SocketAddr, state: AppState, drain: Drain) {
    state.metrics.open_connections.inc();
    let _open = scopeguard(&state);
    match state.tls.clone() {
        None => {
            let info = Arc::new(ConnInfo::new(peer, false));
            serve_http(
                TokioIo::new(tcp),
                info,
                Listener::Client,
                state.clone(),
                drain,
            )
            .await;
        }
        Some(store) => {
            let timeout = state.config.snapshot().server.timeouts.handshake;
            let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config());
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let info = Arc::new(ConnInfo::new(peer, true));
                    serve_http(
                        TokioIo::new(tls),
                        info,
                        Listener::Client,
                        state.clone(),
                        drain,
                    )
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
    info: Arc<ConnInfo>,
    kind: Listener,
    state: AppState,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = state.config.snapshot().server.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper needs a timer for the header-read timeout (it panics without one).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.timeouts.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    // Plain listeners speak HTTP/1.1 only; HTTP/2 is offered through ALPN on TLS.
    let builder = if kind == Listener::Admin || !info.tls {
        builder.http1_only()
    } else {
        builder
    };
    let svc_state = state.clone();
    let svc_info = info.clone();
    let svc = service_fn(move |req| {
        let state = svc_state.clone();
        let info = svc_info.clone();
        async move {
            match kind {
                Listener::Client => crate::pipeline::handle(state, info, req).await,
                Listener::Admin => crate::admin::handle(state, req).await,
            }
        }
    });
    // With upgrades: a WebSocket handshake on a `websocket: true` route hands the connection
    // to the tunnel (`proxy::tunnel`) once the 101 is sent; other requests are unaffected.
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut stop = drain.stop.clone();
    let idle = settings.timeouts.idle;
    let mut closing = false;
    loop {
        let idle_check = tokio::time::sleep(idle_check_delay(&info, idle));
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
                if info.activity.idle_for().is_some_and(|d| d >= idle) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    drop(drain);
}

/// How long until the connection could first be idle for `idle`.
fn idle_check_delay(info: &ConnInfo, idle: Duration) -> Duration {
    match info.activity.idle_for() {
        Some(d) if d < idle => idle - d + Duration::from_millis(5),
        Some(_) => Duration::from_millis(5),
        None => idle,
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
