//! Hot reload: file changes (plain rewrite and Kubernetes ConfigMap symlink swap), `POST
//! /admin/reload`, SIGHUP; invalid configs are refused with positioned errors and the last good
//! config keeps serving; in-flight requests survive a reload.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fortress::Fortress;
use http::{Request, Response};
use support::*;
use tokio::sync::{mpsc, watch};

/// Routes only `/v1/**`.
const V1_ONLY: &str = "routes:\n  - name: v1\n    match: { path: \"/v1/**\" }\n    public: true\n";

/// Routes `/v1/**` and `/v2/**`.
fn v1_v2() -> String {
    format!("{V1_ONLY}  - name: v2\n    match: {{ path: \"/v2/**\" }}\n    public: true\n")
}

/// Replaces `path` atomically: write a temp file next to it, then rename over it.
fn replace_file(path: &Path, contents: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// The policy hash fortress reports for a file's bytes: SHA-256, first 8 bytes, hex.
fn sha8(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every `fortress_policy_info{hash="…"}` sample as (hash, value).
async fn policy_info(admin: SocketAddr) -> Vec<(String, String)> {
    let r = get(admin, "/metrics").await;
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter_map(|l| l.strip_prefix("fortress_policy_info{hash=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(h, v)| (h.to_owned(), v.to_owned()))
        .collect()
}

/// `fortress_policy_reload_total{result=…}`.
async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    metric(
        admin,
        &format!("fortress_policy_reload_total{{result=\"{result}\"}}"),
    )
    .await
    .unwrap_or_else(|| panic!("reload counter {result} exported"))
}

/// `POST /admin/reload`.
async fn admin_reload(admin: SocketAddr) -> RawResponse {
    raw(
        admin,
        b"POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// Asserts `target` is denied as unmatched (404, no_route).
async fn assert_no_route(addr: SocketAddr, target: &str) {
    let r = get(addr, target).await;
    assert_eq!(r.status, 404, "{target}: {}", r.text());
    let rid = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "not_found", "reason": "no_route", "request_id": rid, "trace_id": trace_id(&r)}),
        "{target}"
    );
}

/// Asserts `target` reaches the echo upstream.
async fn assert_routed(addr: SocketAddr, target: &str) {
    let r = get(addr, target).await;
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    assert_eq!(r.text(), format!("upstream saw GET {target}"));
    assert_eq!(r.header("x-upstream"), Some("yes"));
}

/// A config the file watcher cannot see change: `DIR/fortress.yaml` is a symlink to a file
/// in another (unwatched) directory, so only an explicit reload picks up edits to the target.
struct HiddenConfig {
    _root: tempfile::TempDir,
    /// The path fortress was started with (the symlink).
    link: PathBuf,
    /// The file actually edited.
    target: PathBuf,
}

impl HiddenConfig {
    fn new(yaml: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let (watched, hidden) = (root.path().join("watched"), root.path().join("hidden"));
        std::fs::create_dir(&watched).expect("mkdir");
        std::fs::create_dir(&hidden).expect("mkdir");
        let target = hidden.join("real.yaml");
        std::fs::write(&target, yaml).expect("write config");
        let link = watched.join("fortress.yaml");
        symlink(&target, &link).expect("symlink");
        Self {
            _root: root,
            link,
            target,
        }
    }

    /// Rewrites the target in place (same inode; no event in the watched directory).
    fn edit(&self, yaml: &str) {
        std::fs::write(&self.target, yaml).expect("rewrite config");
    }
}

#[tokio::test]
async fn file_change_reloads_routes() {
    let up = Upstream::echo().await;
    let old = config(up.addr, "", V1_ONLY);
    let fx = TestFortress::start(&old).await;
    let (addr, admin) = (fx.addr(), fx.admin());
    assert_routed(addr, "/v1/x").await;
    assert_no_route(addr, "/v2/x").await;
    assert_eq!(policy_info(admin).await, [(sha8(&old), "1".to_owned())]);
    assert_eq!(reloads(admin, "ok").await, 0.0);

    let new = config(up.addr, "", &v1_v2());
    replace_file(&fx.config_path, &new);
    assert_v2_reloaded(addr, admin, &new, "the config change").await;
    assert_ne!(sha8(&new), sha8(&old));
}

#[tokio::test]
async fn admin_reload_applies_and_reports_the_hash() {
    let up = Upstream::echo().await;
    let old = config(up.addr, "", V1_ONLY);
    let cfg = HiddenConfig::new(&old);
    let fx = Fortress::start(&cfg.link).await.expect("fortress starts");
    let (addr, admin) = (fx.client_addr, fx.admin_addr);
    assert_no_route(addr, "/v2/x").await;

    let new = config(up.addr, "", &v1_v2());
    cfg.edit(&new);
    // Not applied by itself: nothing watched changed.
    assert_no_route(addr, "/v2/x").await;

    let r = admin_reload(admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        r.json(),
        serde_json::json!({"result": "applied", "policy_hash": sha8(&new)})
    );
    // The response is sent after the swap: no polling needed.
    assert_routed(addr, "/v2/x").await;
    assert_routed(addr, "/v1/x").await;
    assert_eq!(reloads(admin, "ok").await, 1.0);
    assert_eq!(reloads(admin, "error").await, 0.0);
    assert_eq!(policy_info(admin).await, [(sha8(&new), "1".to_owned())]);

    // An explicit reload always reloads, even when nothing changed.
    let r = admin_reload(admin).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"result": "applied", "policy_hash": sha8(&new)})
    );
    assert_eq!(reloads(admin, "ok").await, 2.0);

    // Only POST reloads.
    let r = get(admin, "/admin/reload").await;
    assert_eq!(r.status, 405);
    assert_eq!(reloads(admin, "ok").await, 2.0);
}

/// A config with an unknown key under `server:` (line 8, col 3) and a bad duration
/// (line 10, col 11), followed by a `/v2/**` route that must not take effect.
fn invalid_config(upstream: SocketAddr) -> String {
    config(
        upstream,
        "bogus: true\ntimeouts:\n  idle: 5 parsecs",
        &v1_v2(),
    )
}

/// Both errors of [`invalid_config`], each `FILE:LINE:COL: message`, in file order. The
/// admin answer names the file without its directory (no file system layout in bodies).
fn assert_positioned_errors(path: &Path, errors: &[&str]) {
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let expected = [(8, 3, "`bogus`"), (10, 11, "`5 parsecs`")];
    let dir = path.parent().expect("dir").display().to_string();
    let name = path.file_name().expect("name").to_string_lossy();
    for (e, (line, col, mentions)) in errors.iter().zip(expected) {
        assert!(!e.contains(&dir), "{e:?} reveals the directory {dir}");
        let prefix = format!("{name}:{line}:{col}: ");
        assert!(
            e.starts_with(&prefix),
            "{e:?} does not start with {prefix:?}"
        );
        assert!(e.contains(mentions), "{e:?} does not mention {mentions}");
    }
}

#[tokio::test]
async fn invalid_config_is_refused_with_positions_via_admin() {
    let up = Upstream::echo().await;
    let old = config(up.addr, "", V1_ONLY);
    let cfg = HiddenConfig::new(&old);
    let fx = Fortress::start(&cfg.link).await.expect("fortress starts");
    let (addr, admin) = (fx.client_addr, fx.admin_addr);

    let bad = invalid_config(up.addr);
    assert_eq!(bad.lines().nth(7), Some("  bogus: true"));
    assert_eq!(bad.lines().nth(9), Some("    idle: 5 parsecs"));
    cfg.edit(&bad);
    let r = admin_reload(admin).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["result"], "refused", "{body}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e.as_str().expect("string"))
        .collect();
    assert_positioned_errors(&cfg.link, &errors);
    assert_eq!(reloads(admin, "error").await, 1.0);
    assert_eq!(reloads(admin, "ok").await, 0.0);
    // The last good config keeps serving.
    assert_routed(addr, "/v1/x").await;
    assert_no_route(addr, "/v2/x").await;
    assert_eq!(policy_info(admin).await, [(sha8(&old), "1".to_owned())]);
}

#[tokio::test]
async fn invalid_config_written_to_disk_is_refused_and_old_routes_stay() {
    let up = Upstream::echo().await;
    let old = config(up.addr, "", V1_ONLY);
    let fx = TestFortress::start(&old).await;
    let (addr, admin) = (fx.addr(), fx.admin());

    replace_file(&fx.config_path, &invalid_config(up.addr));
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(admin, "error").await >= 1.0
        })
        .await,
        "the watcher did not try the invalid file within 10s"
    );
    assert_eq!(reloads(admin, "ok").await, 0.0);
    assert_routed(addr, "/v1/x").await;
    assert_no_route(addr, "/v2/x").await;
    assert_eq!(policy_info(admin).await, [(sha8(&old), "1".to_owned())]);

    // The explicit reload reports the same positioned errors for the file on disk.
    let errors_before = reloads(admin, "error").await;
    let r = admin_reload(admin).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let body = r.json();
    assert_eq!(body["result"], "refused");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e.as_str().expect("string"))
        .collect();
    assert_positioned_errors(&fx.config_path, &errors);
    assert!(reloads(admin, "error").await > errors_before);

    // Fixing the file recovers without a restart.
    let fixed = config(up.addr, "", &v1_v2());
    replace_file(&fx.config_path, &fixed);
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(addr, "/v2/x").await.status == 200
        })
        .await,
        "the fixed config was not applied within 10s"
    );
    assert_routed(addr, "/v2/x").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(admin, "ok").await == 1.0
        })
        .await
    );
    assert_eq!(policy_info(admin).await, [(sha8(&fixed), "1".to_owned())]);
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let old = config(up.addr, "", V1_ONLY);
    // The layout kubelet writes for a mounted ConfigMap.
    std::fs::create_dir(root.join("..2026_01")).expect("mkdir");
    std::fs::write(root.join("..2026_01/fortress.yaml"), &old).expect("write");
    symlink("..2026_01", root.join("..data")).expect("symlink ..data");
    symlink("..data/fortress.yaml", root.join("fortress.yaml")).expect("symlink file");
    let path = root.join("fortress.yaml");
    let fx = Fortress::start(&path).await.expect("fortress starts");
    let (addr, admin) = (fx.client_addr, fx.admin_addr);
    assert_routed(addr, "/v1/x").await;
    assert_no_route(addr, "/v2/x").await;

    // kubelet's update: new timestamped dir, new `..data` link renamed over the old one.
    let new = config(up.addr, "", &v1_v2());
    std::fs::create_dir(root.join("..2026_02")).expect("mkdir");
    std::fs::write(root.join("..2026_02/fortress.yaml"), &new).expect("write");
    symlink("..2026_02", root.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..2026_01")).expect("remove old dir");

    assert_v2_reloaded(addr, admin, &new, "the swapped ConfigMap").await;
}

/// Whether process `pid` has a handler installed for SIGHUP (`SigCgt` bit 0).
fn catches_sighup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & 1 != 0)
}

#[tokio::test]
async fn sighup_reloads_even_an_unchanged_file() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    let yaml = config(up.addr, "", V1_ONLY);
    std::fs::write(&path, &yaml).expect("write config");
    let proc = FortressProcess::spawn(&path);
    let (addr, admin) = (proc.addr, proc.admin);
    assert_routed(addr, "/v1/x").await;
    assert_eq!(reloads(admin, "ok").await, 0.0);
    // The handler is installed just after the "listening" line; a SIGHUP before that would
    // kill the process (default action), so wait until the process catches it.
    let pid = proc.child.id();
    assert!(
        eventually(Duration::from_secs(10), || async { catches_sighup(pid) }).await,
        "fortress never installed a SIGHUP handler"
    );

    for n in [1.0, 2.0] {
        proc.signal("HUP");
        assert!(
            eventually(Duration::from_secs(10), || async {
                reloads(admin, "ok").await == n
            })
            .await,
            "SIGHUP #{n} did not reload: {:#?}",
            proc.logs()
        );
    }
    assert_eq!(reloads(admin, "error").await, 0.0);
    assert_eq!(policy_info(admin).await, [(sha8(&yaml), "1".to_owned())]);
    assert_routed(addr, "/v1/x").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            proc.logs()
                .iter()
                .filter(|l| l.contains("config reloaded"))
                .count()
                == 2
        })
        .await,
        "{:#?}",
        proc.logs()
    );
}

#[tokio::test]
async fn in_flight_request_survives_a_reload() {
    const BODY_LEN: usize = 256 * 1024;
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<String>();
    let (release_tx, release_rx) = watch::channel(false);
    let up = Upstream::spawn(move |req: Request<hyper::body::Incoming>| {
        let arrived = arrived_tx.clone();
        let mut release = release_rx.clone();
        async move {
            let path = req.uri().path().to_owned();
            if path == "/v1/slow" {
                let _ = arrived.send(path);
                let _ = release.wait_for(|r| *r).await;
                return Response::new(full(vec![b'z'; BODY_LEN]));
            }
            let mut r = Response::new(full(format!("upstream saw GET {path}")));
            r.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static("yes"));
            r
        }
    })
    .await;
    let old = config(up.addr, "", V1_ONLY);
    let fx = TestFortress::start(&old).await;
    let (addr, admin) = (fx.addr(), fx.admin());

    let mut client = h1(addr).await;
    let in_flight = tokio::spawn(async move {
        let req = Request::get("/v1/slow")
            .header("host", "app.test")
            .body(full(Bytes::new()))
            .expect("request");
        let resp = client.send_request(req).await.expect("response");
        let status = resp.status();
        (status, body_bytes(resp).await)
    });
    let arrived = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
        .await
        .expect("request reaches the upstream")
        .expect("path");
    assert_eq!(arrived, "/v1/slow");

    // Reload to a config that no longer routes /v1/** at all.
    let new = config(
        up.addr,
        "",
        "routes:\n  - name: v2\n    match: { path: \"/v2/**\" }\n    public: true\n",
    );
    replace_file(&fx.config_path, &new);
    let r = admin_reload(admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"result": "applied", "policy_hash": sha8(&new)})
    );
    assert_no_route(addr, "/v1/other").await;
    assert_routed(addr, "/v2/other").await;
    assert!(!in_flight.is_finished(), "the held request ended early");

    release_tx.send_replace(true);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request completes")
        .expect("task");
    assert_eq!(status, 200);
    assert_eq!(body.len(), BODY_LEN);
    assert!(body.iter().all(|b| *b == b'z'));
    assert_eq!(up.hits(), 2, "/v1/slow and /v2/other");
}

/// Waits until `/v2/x` is routed after `what`, then checks both routes, exactly one ok reload,
/// no error, and `new` as the only active policy.
async fn assert_v2_reloaded(addr: SocketAddr, admin: SocketAddr, new: &str, what: &str) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(addr, "/v2/x").await.status == 200
        })
        .await,
        "/v2/x not routed within 10s of {what}"
    );
    assert_routed(addr, "/v2/x").await;
    assert_routed(addr, "/v1/x").await;
    // The counter is bumped right after the swap; poll past that instant.
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(admin, "ok").await == 1.0
        })
        .await
    );
    assert_eq!(reloads(admin, "error").await, 0.0);
    assert_eq!(
        policy_info(admin).await,
        [(sha8(new), "1".to_owned())],
        "only the new policy"
    );
}

#[tokio::test]
async fn a_file_caught_half_written_is_not_applied() {
    // A writer that writes in place and pauses mid-file (150 ms: longer than the watcher's
    // debounce, shorter than the settle interval):
    // what is on disk during the pause is itself a valid config (routes v1 only). Fortress
    // must wait until the file stops changing and apply only the whole file (v1 and v2).
    let up = Upstream::echo().await;
    let start = config(
        up.addr,
        "",
        "routes:\n  - name: v0\n    match: { path: \"/v0/**\" }\n    public: true\n",
    );
    let fx = TestFortress::start(&start).await;
    let (addr, admin) = (fx.addr(), fx.admin());
    assert_routed(addr, "/v0/x").await;
    let full = config(up.addr, "", &v1_v2());
    let cut = full.find("  - name: v2").expect("v2 route");
    let (head, tail) = full.split_at(cut);
    assert!(fortress::config::load_str(head, &fx.config_path).is_ok());
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fx.config_path).expect("open");
        f.write_all(head.as_bytes()).expect("write head");
        f.flush().expect("flush");
        // The slow writer's pause (part of the scenario, not a wait for fortress; async, so
        // fortress's reload task runs meanwhile).
        tokio::time::sleep(Duration::from_millis(150)).await;
        f.write_all(tail.as_bytes()).expect("write tail");
    }
    assert_v2_reloaded(addr, admin, &full, "the whole file").await;
    assert_eq!(
        reloads(admin, "ok").await,
        1.0,
        "the half-written file went live before the whole one"
    );
    assert_eq!(reloads(admin, "error").await, 0.0);
}
