//! SIGTERM on the fortress binary: the listener closes at once, in-flight responses finish
//! within `shutdown_grace`, the process exits 0; past the grace period in-flight responses are
//! cut and the process still exits 0.

mod support;

use std::pin::Pin;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;
use tokio::sync::{mpsc, oneshot};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const LINES: [&str; 6] = [
    "{\"n\":1}\n",
    "{\"n\":2}\n",
    "{\"n\":3}\n",
    "{\"n\":4}\n",
    "{\"n\":5}\n",
    "{\"n\":6}\n",
];

/// A response body fed through a channel; ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// An upstream whose one streaming response sends `LINES[..first]`, then waits for the
/// returned sender to fire (or be dropped) before sending the rest. If `finish` is false it
/// never sends the rest (the body stays open for as long as the test holds the sender).
async fn ndjson_upstream(first: usize, finish: bool) -> (Upstream, oneshot::Sender<()>) {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let up = Upstream::spawn(move |_req: Request<Incoming>| {
        let release = release.clone();
        async move {
            let release = release.lock().expect("lock").take().expect("one stream");
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            tokio::spawn(async move {
                for line in &LINES[..first] {
                    if tx.send(Bytes::from_static(line.as_bytes())).await.is_err() {
                        return;
                    }
                }
                let released = release.await.is_ok();
                if !finish || !released {
                    // Keep the body open until the test ends.
                    std::future::pending::<()>().await;
                }
                for line in &LINES[first..] {
                    if tx.send(Bytes::from_static(line.as_bytes())).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = Response::new(ChannelBody(rx).boxed());
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/x-ndjson"),
            );
            r
        }
    })
    .await;
    (up, release_tx)
}

fn spawn_fortress(up: &Upstream, grace: &str) -> (FortressProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    let server = format!("timeouts:\n  shutdown_grace: {grace}");
    std::fs::write(&path, config(up.addr, &server, CATCH_ALL)).expect("write config");
    (FortressProcess::spawn(&path), dir)
}

/// Polls `child` until it exits or `limit` passes.
async fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fortress did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Reads frames until at least one full line arrived; returns everything read so far.
async fn read_first_line(body: &mut Incoming) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("first line within 10s")
            .expect("body not ended")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    got
}

async fn start_stream(fp: &FortressProcess) -> Incoming {
    let mut client = h1(fp.addr).await;
    let req = Request::get("/events")
        .header("host", "app.test")
        .body(full(""))
        .expect("request");
    let resp = client.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    resp.into_body()
}

async fn log_appears(fp: &FortressProcess, needle: &str) -> bool {
    eventually(Duration::from_secs(5), || async {
        fp.logs().iter().any(|l| l.contains(needle))
    })
    .await
}

#[tokio::test]
async fn sigterm_refuses_new_connections_and_finishes_in_flight_stream() {
    let (up, release) = ndjson_upstream(3, true).await;
    let (mut fp, _dir) = spawn_fortress(&up, "10s");
    let mut body = start_stream(&fp).await;
    let mut got = read_first_line(&mut body).await;
    assert!(got.starts_with(LINES[0].as_bytes()), "{got:?}");

    fp.signal("TERM");
    let addr = fp.addr;
    let refused = eventually(Duration::from_secs(5), || async move {
        matches!(
            tokio::net::TcpStream::connect(addr).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    assert!(refused, "new connections still accepted after SIGTERM");
    // Still draining: the process waits for the in-flight response.
    assert!(
        fp.child.try_wait().expect("try_wait").is_none(),
        "fortress exited with a response in flight"
    );

    release.send(()).expect("upstream waiting");
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("rest of the body within 10s")
    {
        if let Ok(data) = frame.expect("body completes without error").into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(String::from_utf8(got).expect("utf8"), LINES.concat());

    let status = wait_exit(&mut fp.child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?} {:?}", fp.logs());
    assert!(
        log_appears(&fp, "all connections drained").await,
        "{:?}",
        fp.logs()
    );
}

#[tokio::test]
async fn sigterm_cuts_in_flight_stream_after_shutdown_grace_and_exits_zero() {
    // The sender is held (never fired) until the test ends: the upstream never finishes.
    let (up, _never) = ndjson_upstream(1, false).await;
    let (mut fp, _dir) = spawn_fortress(&up, "300ms");
    let mut body = start_stream(&fp).await;
    let mut got = read_first_line(&mut body).await;
    assert_eq!(got, LINES[0].as_bytes());

    fp.signal("TERM");
    let status = wait_exit(&mut fp.child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?} {:?}", fp.logs());
    assert!(
        log_appears(&fp, "drain deadline reached").await,
        "{:?}",
        fp.logs()
    );

    // The client sees the response cut short: an error, not a clean end of body.
    let mut cut = false;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("connection closes within 10s")
    {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Err(e) => {
                // hyper reports the missing chunks as an unexpected EOF in the body.
                let io = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .map(std::io::Error::kind);
                assert_eq!(io, Some(std::io::ErrorKind::UnexpectedEof), "{e:?}");
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut,
        "the body ended cleanly although the upstream never finished"
    );
    assert_eq!(got, LINES[0].as_bytes());
}

#[test]
fn sigterm_right_after_readiness_drains_and_exits_zero() {
    // A supervisor may signal as soon as fortress says it is listening: the SIGTERM handler
    // must already be installed then, or the default action kills the process (status
    // "signal 15", no drain). The window is narrow, so the readiness line is read on this
    // thread, the signal sent without delay, and the whole repeated.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
    std::fs::write(&path, config(upstream, "", CATCH_ALL)).expect("write config");
    for attempt in 0..20 {
        let mut child = KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
                .args(["run", "--config"])
                .arg(&path)
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn fortress"),
        );
        let stdout = child.0.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut seen = Vec::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("fortress did not start: {seen:?}"))
                .expect("read");
            let ready = line.contains("fortress listening");
            seen.push(line);
            if ready {
                break;
            }
        }
        sigterm_now(&child.0);
        // Keep reading stdout so the process never blocks on a full pipe while it drains.
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.0.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {attempt}: no exit within 10s: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        seen.extend(rest.join().expect("stdout reader"));
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status:?} {seen:?}"
        );
    }
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM at once. `FortressProcess::signal` runs the `kill` command, whose fork and
/// exec give fortress time to install its handler and would mostly hide the race.
fn sigterm_now(child: &Child) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) has no memory effects; the pid is our own running child.
    let rc = unsafe { kill(pid, SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
}
