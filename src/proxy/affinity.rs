//! Upstream connection affinity: an HTTP/1.1 client connection keeps its own upstream
//! HTTP/1.1 connection, so its requests go out without the pooled client's checkout and
//! channel hop (hyper's `client::conn::http1`, handshaken once, then `send_request`).
//!
//! HTTP/1.1 requests on one client connection are sequential (hyper reads the next request
//! only once the previous response was written to its end), so the connection is put back in
//! its slot as soon as the response head arrives; by the next request its previous exchange
//! is over. One still busy then (an upload the upstream stopped reading) is never waited on:
//! it is left to finish and a new connection is made. What does not fit falls back
//! to the shared pool: HTTP/2 clients (many streams on one connection), WebSocket handshakes
//! (the connection is upgraded, not kept), and connections beyond [`MAX_OWNED`].
//!
//! When the client connection ends, or has been idle for [`RELEASE_AFTER`], its upstream
//! connection is parked in a small idle list
//! (newest first, at most [`MAX_IDLE`], dropped after [`IDLE_FOR`]), where the next client
//! connection's first request finds it: clients that send one request per connection do not
//! pay a TCP connect to the upstream each. One short lock per client connection, not per
//! request.
//!
//! The owned connection is dropped, and a new one made, when the upstream closed it (its
//! `Connection: close`, an idle timeout on its side, an error), when a stream violation
//! poisoned it, and when a reload changed the upstream. A request the upstream connection
//! never started to send (closed between two requests) is sent once more on a new
//! connection, as the pool does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use http::uri::{Authority, Uri};
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;
use tracing::debug;

use super::client_body::ClientBody;

/// Most upstream connections owned by client connections at once, process-wide; past it,
/// requests use the pool. Bounds what idle keep-alive clients hold open on the upstream (the
/// pool itself keeps idle connections for 60 s).
pub const MAX_OWNED: usize = 1024;

/// Most upstream connections parked between client connections.
pub const MAX_IDLE: usize = 64;

/// How long a client connection may sit idle before its upstream connection is parked.
pub const RELEASE_AFTER: Duration = Duration::from_secs(2);

/// How long a parked upstream connection may wait for a client connection.
pub const IDLE_FOR: Duration = Duration::from_secs(60);

/// A client connection's slot for its own upstream connection (HTTP/1.1 clients only).
#[derive(Debug, Default)]
pub struct Slot {
    /// Taken for the duration of one request, put back with the response head. Never
    /// contended: one request at a time per HTTP/1.1 connection.
    conn: Mutex<Option<Owned>>,
    /// Set when a connection is put in the slot after it was empty since the last release;
    /// tells the client connection's task (once, not per request) to watch for idleness.
    armed: AtomicBool,
    held: tokio::sync::Notify,
}

impl Slot {
    fn take(&self) -> Option<Owned> {
        self.conn.lock().ok().and_then(|mut g| g.take())
    }

    fn put(&self, owned: Owned) {
        if let Ok(mut g) = self.conn.lock() {
            *g = Some(owned);
        }
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.held.notify_one();
        }
    }

    /// Whether the slot may hold an upstream connection that the client connection's
    /// idleness should release.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// Resolves when the slot was armed (a connection put in it after a release).
    pub async fn armed(&self) {
        self.held.notified().await;
    }

    /// Parks the slot's upstream connection in the idle list (the client connection has been
    /// idle for [`RELEASE_AFTER`]): idle keep-alive clients do not each hold an upstream
    /// connection open.
    pub fn release(&self) {
        self.armed.store(false, Ordering::Release);
        if let Some(owned) = self.take()
            && let Some(idle) = owned.idle.upgrade()
        {
            idle.park(owned);
        }
    }
}

impl Drop for Slot {
    /// The client connection is gone: its upstream connection goes to the idle list.
    fn drop(&mut self) {
        self.release();
    }
}

/// Upstream connections whose client connection ended, newest last.
#[derive(Debug, Default)]
struct Idle {
    parked: Mutex<Vec<(Owned, Instant)>>,
    /// How many are parked (for the metrics).
    count: Arc<AtomicUsize>,
}

/// Drops parked connections past [`IDLE_FOR`] or closed by the upstream.
fn prune(parked: &mut Vec<(Owned, Instant)>) {
    parked.retain(|(o, at)| at.elapsed() < IDLE_FOR && !o.sender.is_closed());
}

impl Idle {
    fn park(&self, owned: Owned) {
        if owned.poison.is_poisoned() || owned.sender.is_closed() {
            return;
        }
        if let Ok(mut parked) = self.parked.lock() {
            prune(&mut parked);
            if parked.len() >= MAX_IDLE {
                parked.remove(0);
            }
            parked.push((owned, Instant::now()));
            self.count.store(parked.len(), Ordering::Release);
        }
    }

    /// The newest parked connection to `authority` that is open and ready (one still
    /// finishing its last exchange stays parked); expired and closed ones are dropped.
    fn unpark(&self, authority: &Authority) -> Option<Owned> {
        let mut parked = self.parked.lock().ok()?;
        prune(&mut parked);
        let found = parked
            .iter()
            .rposition(|(o, _)| o.authority == *authority && o.sender.is_ready())
            .map(|i| parked.remove(i).0);
        self.count.store(parked.len(), Ordering::Release);
        found
    }

    /// [`prune`], also when no traffic parks or takes a connection.
    fn sweep(&self) {
        if let Ok(mut parked) = self.parked.lock() {
            prune(&mut parked);
            self.count.store(parked.len(), Ordering::Release);
        }
    }
}

/// One owned upstream connection.
#[derive(Debug)]
struct Owned {
    sender: http1::SendRequest<ClientBody>,
    /// The upstream it goes to (a reload may change the policy's upstream).
    authority: Authority,
    poison: Poison,
    /// Where it goes when its client connection ends (weak: the list holds connections).
    idle: Weak<Idle>,
}

/// Marks an owned upstream connection as not to be used again (a stream violation found
/// after the response was read to its end).
#[derive(Debug, Clone, Default)]
pub struct Poison(Arc<AtomicBool>);

impl Poison {
    /// The connection is dropped instead of being used for the next request.
    pub fn poison(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_poisoned(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why an owned connection could not carry the request.
pub enum Failure {
    /// The upstream could not be reached.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or the response read.
    Protocol(hyper::Error),
}

/// What [`Owner::send`] did.
pub enum Sent {
    /// The upstream's response head, and the handle that poisons the connection it came on.
    Response(Response<Incoming>, Poison),
    /// Over [`MAX_OWNED`]: the request, unsent, for the pool.
    Full(Box<Request<ClientBody>>),
}

/// Makes and counts owned upstream connections (one per process, shared by every
/// connection).
#[derive(Debug, Clone)]
pub struct Owner {
    connector: HttpConnector,
    owned: Arc<AtomicUsize>,
    idle: Arc<Idle>,
    max_buf: usize,
}

impl Owner {
    /// An owner connecting with `connector` (its connect timeout and `TCP_NODELAY`), capping
    /// each connection's read buffer (and so the upstream's response head) at `max_buf`.
    pub fn new(connector: HttpConnector, max_buf: usize) -> Self {
        let idle: Arc<Idle> = Arc::default();
        // Parked connections expire even when no traffic parks or takes one; the task ends
        // with the owner.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&idle);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(IDLE_FOR / 4);
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(idle) => idle.sweep(),
                        None => break,
                    }
                }
            });
        }
        Self {
            connector,
            owned: Arc::new(AtomicUsize::new(0)),
            idle,
            max_buf,
        }
    }

    /// The number of upstream connections owned right now, parked ones included, and the
    /// number parked (for the metrics).
    pub fn counters(&self) -> (Counter, Counter) {
        (self.owned.clone(), self.idle.count.clone())
    }

    /// Sends `req` (absolute URI to the upstream) on the slot's connection, making one when
    /// the slot is empty or its connection unusable.
    pub async fn send(&self, slot: &Slot, mut req: Request<ClientBody>) -> Result<Sent, Failure> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Ok(Sent::Full(Box::new(req)));
        };
        // As hyper's pooled client does for HTTP/1.1: a Host header when the client sent
        // none (HTTP/2 clients send `:authority`), and the request target in origin form.
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        *req.uri_mut() = origin_form(req.uri());
        let mut current = slot
            .take()
            .filter(|c| c.authority == authority && !c.poison.is_poisoned())
            .or_else(|| self.idle.unpark(&authority));
        // At most two tries: a kept connection the upstream closed between two requests
        // (the request not sent), then a new one.
        loop {
            let reused = current.is_some();
            let mut conn = match current.take() {
                Some(c) => c,
                None => match self.connect(&authority).await? {
                    Some(c) => c,
                    None => return Ok(Sent::Full(Box::new(absolute_again(req, authority)))),
                },
            };
            let ready = if reused {
                // A kept connection is ready at once (its last response was read to the end
                // before this request could be read), or after one turn of its task. One
                // that is still busy (say, still sending a body the upstream stopped
                // reading) is let go to finish on its own: this request never waits on it.
                match poll_ready(&mut conn.sender).await {
                    Poll::Pending => {
                        tokio::task::yield_now().await;
                        poll_ready(&mut conn.sender).await
                    }
                    done => done,
                }
            } else {
                Poll::Ready(conn.sender.ready().await)
            };
            match ready {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) | Poll::Pending if reused => continue,
                _ => {
                    return Err(Failure::Connect(
                        "upstream closed the new connection".into(),
                    ));
                }
            }
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    let poison = conn.poison.clone();
                    slot.put(conn);
                    return Ok(Sent::Response(resp, poison));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        debug!(error = %e.error(), "kept upstream connection closed; reconnecting");
                        req = unsent;
                    }
                    // A new connection that closed before taking the request: unavailable,
                    // as when it closes before it is ready.
                    Some(_) => return Err(Failure::Connect(Box::new(e.into_error()))),
                    None => return Err(Failure::Protocol(e.into_error())),
                },
            }
        }
    }

    /// A new owned connection, or `None` when [`MAX_OWNED`] are open.
    async fn connect(&self, authority: &Authority) -> Result<Option<Owned>, Failure> {
        if self.owned.fetch_add(1, Ordering::AcqRel) >= MAX_OWNED {
            self.owned.fetch_sub(1, Ordering::AcqRel);
            return Ok(None);
        }
        // Counted until the connection task ends (the upstream closed it, or its slot was
        // dropped with the client connection).
        let counted = Counted(self.owned.clone());
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Failure::Connect(Box::new(e)))?;
        let mut connector = self.connector.clone();
        let io = connector
            .call(uri)
            .await
            .map_err(|e| Failure::Connect(Box::new(e)))?;
        let mut builder = http1::Builder::new();
        builder.max_buf_size(self.max_buf);
        let (sender, connection) = builder
            .handshake(io)
            .await
            .map_err(|e| Failure::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            let _counted = counted;
            if let Err(e) = connection.await {
                debug!(error = %e, "owned upstream connection ended with an error");
            }
        });
        Ok(Some(Owned {
            sender,
            authority: authority.clone(),
            poison: Poison::default(),
            idle: Arc::downgrade(&self.idle),
        }))
    }
}

/// A count published to the metrics.
pub type Counter = Arc<AtomicUsize>;

/// Polls the connection's readiness once, without waiting.
async fn poll_ready(sender: &mut http1::SendRequest<ClientBody>) -> Poll<hyper::Result<()>> {
    std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await
}

/// Drops one from the owned-connection count.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request target as an HTTP/1.1 origin server expects it: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    }
}

/// The absolute URI back, for the pool.
fn absolute_again(mut req: Request<ClientBody>, authority: Authority) -> Request<ClientBody> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}
