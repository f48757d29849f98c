//! A WebSocket tunnel: after the upstream answered a checked handshake with `101`, the
//! client's and the upstream's upgraded connections are spliced, bytes copied both ways
//! (`tokio::io::copy_bidirectional`), until either side closes or nothing moved either way for
//! the idle timeout; then both sides are closed. The request's completion record (`done`) is
//! dropped when the tunnel ends, so the request is recorded then.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

/// Splices `client` and `upstream` once both upgrades completed; closes both after `idle`
/// without traffic. `done` is dropped at the end (it records the request).
pub async fn splice<D: Send + 'static>(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    request_id: String,
    done: D,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(request.id = %request_id, error = %e, "websocket upgrade failed");
            drop(done);
            return;
        }
    };
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Watched {
        inner: TokioIo::new(client),
        last: last.clone(),
        epoch,
    };
    let mut upstream = Watched {
        inner: TokioIo::new(upstream),
        last: last.clone(),
        epoch,
    };
    {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            let quiet = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Acquire)));
            if quiet >= idle {
                debug!(request.id = %request_id, "websocket idle timeout; closing both sides");
                break;
            }
            tokio::select! {
                res = copy.as_mut() => {
                    if let Err(e) = res {
                        debug!(request.id = %request_id, error = %e, "websocket tunnel ended with error");
                    }
                    break;
                }
                () = tokio::time::sleep(idle - quiet) => {}
            }
        }
    }
    // Both upgraded connections close here.
    drop(client);
    drop(upstream);
    drop(done);
}

/// An I/O object that notes when bytes last moved through it.
struct Watched<T> {
    inner: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::AcqRel);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
