//! A real `redis-server` on an ephemeral 127.0.0.1 port for the shared-state tests. The
//! binary must be installed (`.ci/run` installs Debian's `redis-server` when it is missing):
//! without it the tests fail, they do not skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` (killed when dropped).
pub struct RedisServer {
    /// Its port on 127.0.0.1 (kept across [`restart`](Self::restart)).
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// TLS only (`rediss://`): the directory with `server.crt`, `server.key`, `ca.pem`.
    tls: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers `PING`.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut s = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            tls: None,
        };
        s.spawn();
        s
    }

    /// Like [`start`](Self::start), TLS only: `certs` holds `server.crt`, `server.key` and
    /// `ca.pem` (no plain port; clients are not asked for certificates).
    pub fn start_tls(certs: &std::path::Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut s = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            tls: Some(certs.to_path_buf()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(d) => cmd.args(["--port", "0", "--tls-port", &port]).args([
                "--tls-cert-file".as_ref(),
                d.join("server.crt").as_os_str(),
                "--tls-key-file".as_ref(),
                d.join("server.key").as_os_str(),
                "--tls-ca-cert-file".as_ref(),
                d.join("ca.pem").as_os_str(),
                "--tls-auth-clients".as_ref(),
                "no".as_ref(),
            ]),
        };
        let child = cmd
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (Debian: apt-get install redis-server); .ci/run does"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// `redis://127.0.0.1:PORT` (`rediss://localhost:PORT` with TLS).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    /// Whether the server answers `PING` (through `redis-cli --tls` for a TLS server).
    fn ping(&self) -> bool {
        match &self.tls {
            None => self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG")),
            Some(d) => Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(d.join("ca.pem"))
                .args(["-h", "localhost", "-p", &self.port.to_string(), "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")),
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops (`STOP`) or continues (`CONT`) the process: a server that accepts connections
    /// and never answers.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Sends one command (RESP) and returns the raw first reply line(s), `None` when the
    /// server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().ok()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process must continue to die cleanly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
    }
}
