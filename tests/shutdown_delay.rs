//! `server.timeouts.shutdown_delay` (issue 15): after SIGTERM fortress keeps accepting and
//! serving while `/readyz` answers 503 (Kubernetes takes the pod out of its endpoints), then
//! drains as before; a second SIGTERM ends the delay at once.

mod support;

use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use http::Request;
use support::*;

fn spawn(up: &Upstream, delay: &str) -> (FortressProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    let server = format!("probes: 127.0.0.1:0\ntimeouts:\n  shutdown_delay: {delay}");
    std::fs::write(&path, config(up.addr, &server, CATCH_ALL)).expect("write config");
    (FortressProcess::spawn(&path), dir)
}

/// The `probes=` address of the "fortress listening" line (the reader thread may hand the
/// line to `spawn` before it is in `logs()`: wait for it).
async fn probes_addr(fp: &FortressProcess) -> SocketAddr {
    let find = || {
        fp.logs()
            .iter()
            .find(|l| l.contains("fortress listening"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("probes="))
                    .and_then(|v| v.parse().ok())
            })
    };
    assert!(
        eventually(Duration::from_secs(10), || async { find().is_some() }).await,
        "{:?}",
        fp.logs()
    );
    find().expect("probes= in the listening line")
}

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

async fn log_appears(fp: &FortressProcess, needle: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        fp.logs().iter().any(|l| l.contains(needle))
    })
    .await
}

#[tokio::test]
async fn during_the_delay_readyz_is_503_and_requests_are_still_served() {
    let up = Upstream::echo().await;
    // Long enough that only the second SIGTERM can end it.
    let (mut fp, _dir) = spawn(&up, "5m");
    let probes = probes_addr(&fp).await;
    for addr in [fp.admin, probes] {
        let r = get(addr, "/readyz").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), serde_json::json!({"status": "ready"}));
    }
    // A keep-alive connection opened before the signal.
    let mut before = h1(fp.addr).await;
    let req = || {
        Request::get("/kept")
            .header("host", "app.test")
            .body(full(""))
            .expect("request")
    };
    let resp = before.send_request(req()).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "upstream saw GET /kept");

    fp.signal("TERM");
    assert!(
        log_appears(&fp, "shutdown delay: not ready, still serving").await,
        "{:?}",
        fp.logs()
    );
    for addr in [fp.admin, probes] {
        let r = get(addr, "/readyz").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json(), serde_json::json!({"status": "shutting_down"}));
        assert_eq!(get(addr, "/livez").await.status, 200);
    }
    // New connections are accepted and served, and so is the one opened before.
    let r = get(fp.addr, "/fresh").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream saw GET /fresh");
    let resp = before.send_request(req()).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "upstream saw GET /kept");
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/kept", "/fresh", "/kept"]);
    assert!(fp.child.try_wait().expect("try_wait").is_none());

    // The second SIGTERM drains now: the listener closes, the process exits 0.
    fp.signal("TERM");
    let status = wait_exit(&mut fp.child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{status:?} {:?}", fp.logs());
    assert!(
        log_appears(&fp, "all connections drained").await,
        "{:?}",
        fp.logs()
    );
    assert!(
        !fp.logs().iter().any(|l| l.contains("shutdown delay over")),
        "{:?}",
        fp.logs()
    );
    assert!(tokio::net::TcpStream::connect(fp.addr).await.is_err());
}

#[tokio::test]
async fn after_the_delay_fortress_drains_and_exits() {
    let up = Upstream::echo().await;
    let (mut fp, _dir) = spawn(&up, "300ms");
    fp.signal("TERM");
    let status = wait_exit(&mut fp.child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{status:?} {:?}", fp.logs());
    // The reader threads may still be behind the exited process: wait for the last line.
    assert!(
        log_appears(&fp, "all connections drained").await,
        "{:?}",
        fp.logs()
    );
    let logs = fp.logs();
    let at = |needle: &str| {
        logs.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {logs:?}"))
    };
    let (started, over, drained) = (
        at("shutdown delay: not ready, still serving"),
        at("shutdown delay over; draining"),
        at("all connections drained"),
    );
    assert!(started < over && over < drained, "{logs:?}");
}

#[tokio::test]
async fn without_a_delay_sigterm_drains_at_once() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, config(up.addr, "", CATCH_ALL)).expect("write config");
    let mut fp = FortressProcess::spawn(&path);
    fp.signal("TERM");
    let status = wait_exit(&mut fp.child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{status:?} {:?}", fp.logs());
    assert!(
        log_appears(&fp, "all connections drained").await,
        "{:?}",
        fp.logs()
    );
    assert!(
        !fp.logs().iter().any(|l| l.contains("shutdown delay")),
        "{:?}",
        fp.logs()
    );
}
