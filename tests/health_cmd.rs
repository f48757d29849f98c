//! `fortress health URL` (the image's HEALTHCHECK; issue 15): exit 0 on a 2xx answer, 1 on
//! any other status, no answer within `--timeout`, a refused connection or a URL that is not
//! loopback `http://`.

mod support;

use std::process::Output;

use support::*;

async fn health(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
            .arg("health")
            .args(&args)
            .output()
            .expect("run fortress health")
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn ready_is_exit_0_and_not_ready_is_exit_1() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "probes: 127.0.0.1:0", CATCH_ALL)).await;
    let probes = fx.fx.probes_addr.expect("probes");
    for url in [
        format!("http://{}/readyz", fx.admin()),
        format!("http://{probes}/livez"),
        format!("http://localhost:{}/healthz", fx.admin().port()),
    ] {
        let out = health(&[&url]).await;
        assert_eq!(out.status.code(), Some(0), "{url}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok 200\n");
    }
    let out = health(&[&format!("http://{probes}/admin/policy")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("answered 404"), "{}", text(&out));

    // The app is down: /readyz is 503.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let down = TestFortress::start(&config(closed, "", CATCH_ALL)).await;
    let out = health(&[&format!("http://{}/readyz", down.admin())]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("answered 503"), "{}", text(&out));
    // Nothing listens there.
    let out = health(&[&format!("http://{closed}/readyz")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot connect"), "{}", text(&out));
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_exit_1() {
    // Accepts (the kernel's backlog) but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let out = health(&["--timeout", "300ms", &format!("http://{addr}/readyz")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no answer within 300ms"),
        "{}",
        text(&out)
    );
    drop(silent);
}

#[tokio::test]
async fn only_loopback_http_urls() {
    for url in [
        "http://10.1.2.3:9901/readyz",
        "http://example.com/readyz",
        "https://127.0.0.1:9901/readyz",
        "127.0.0.1:9901/readyz",
    ] {
        let out = health(&[url]).await;
        assert_eq!(out.status.code(), Some(1), "{url}: {}", text(&out));
        assert!(
            text(&out).starts_with("fortress health: "),
            "{}",
            text(&out)
        );
    }
    let out = health(&["--timeout", "soon", "http://127.0.0.1:1/"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("`soon` is not a duration"),
        "{}",
        text(&out)
    );
}
