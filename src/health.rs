//! `fortress health URL`: one `GET` to a loopback `http://` URL (the image's `HEALTHCHECK`;
//! the distroless image has no curl or wget). Exit 0 on a 2xx answer within the timeout,
//! 1 otherwise. Loopback only: it is a probe of this container, never a way to fetch from
//! the network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use http::{Request, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: &str = "2s";

/// Checks `url`; prints one line (`ok 200` / the reason) and returns the exit code.
pub fn run(url: &str, timeout: &str) -> ExitCode {
    let Some(timeout) = crate::config::compile::parse_duration(timeout).filter(|d| !d.is_zero())
    else {
        eprintln!("fortress health: `{timeout}` is not a duration (e.g. 2s, 500ms)");
        return ExitCode::FAILURE;
    };
    let target = match target(url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fortress health: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fortress health: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(async { tokio::time::timeout(timeout, get(&target)).await }) {
        Ok(Ok(status)) if status.is_success() => {
            println!("ok {}", status.as_u16());
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!("fortress health: {url} answered {}", status.as_u16());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("fortress health: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "fortress health: {url}: no answer within {}ms",
                timeout.as_millis()
            );
            ExitCode::FAILURE
        }
    }
}

/// Where to connect and what to ask.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The loopback address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path and query.
    pub path: String,
}

/// Parses `http://LOOPBACK[:PORT]/PATH`: `127.0.0.0/8`, `[::1]` or `localhost` (as 127.0.0.1).
pub fn target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a URL: expected http://127.0.0.1:PORT/PATH"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{url}`: only http:// URLs are checked"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{url}`: no user info"));
    }
    let host = authority.host();
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!("`{host}` is not a loopback address (127.0.0.1, [::1], localhost)")
            })?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "`{host}` is not a loopback address: fortress health checks this container only"
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        host: authority.as_str().to_owned(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

async fn get(t: &Target) -> Result<http::StatusCode, String> {
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(t.path.as_str())
        .header(header::HOST, t.host.as_str())
        .header(header::USER_AGENT, "fortress-health")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_only() {
        let t = target("http://127.0.0.1:9902/livez").expect("ok");
        assert_eq!(t.addr, "127.0.0.1:9902".parse().expect("addr"));
        assert_eq!(t.path, "/livez");
        assert_eq!(t.host, "127.0.0.1:9902");
        let t = target("http://localhost/readyz?x=1").expect("ok");
        assert_eq!(t.addr, "127.0.0.1:80".parse().expect("addr"));
        assert_eq!(t.path, "/readyz?x=1");
        assert!(target("http://[::1]:9901/healthz").is_ok());
        assert!(target("http://127.3.4.5:1/").is_ok());
        for bad in [
            "http://10.0.0.1:9901/livez",
            "http://example.com/",
            "https://127.0.0.1:9901/livez",
            "http://user@127.0.0.1/",
            "127.0.0.1:9901",
            "http://0.0.0.0:9901/",
            "not a url",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }
}
