//! The settings for running under an orchestrator: `server.probes` (a listener that serves
//! only the probes and `/metrics`, allowed on the pod address in production) and
//! `server.timeouts.shutdown_delay` (serve on, not ready, before the drain). See
//! `docs/kubernetes.md`.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;
use super::compile::parse_duration;
use super::yaml::Located;

/// The longest `shutdown_delay`: a pod is out of its endpoints within seconds; anything
/// longer only holds rollouts.
pub const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(300);

/// `server.probes`: an `IP:PORT` other than `server.listen` and `server.admin`.
pub fn probes(
    raw: Option<&Located<String>>,
    listen: SocketAddr,
    admin: SocketAddr,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    let raw = raw?;
    let Ok(addr) = raw.value.trim().parse::<SocketAddr>() else {
        errors.push(ConfigError::at(
            raw.pos,
            format!(
                "`{}` is not a socket address: expected IP:PORT, e.g. 0.0.0.0:9902",
                raw.value
            ),
        ));
        return None;
    };
    if addr.port() != 0 && (addr == listen || addr == admin) {
        errors.push(ConfigError::at(
            raw.pos,
            "`server.probes` must differ from `server.listen` and `server.admin`",
        ));
    }
    Some(addr)
}

/// `server.timeouts.shutdown_delay`: `0s` (the default) to [`MAX_SHUTDOWN_DELAY`].
pub fn shutdown_delay(raw: Option<&Located<String>>, errors: &mut Vec<ConfigError>) -> Duration {
    let Some(raw) = raw else {
        return Duration::ZERO;
    };
    match parse_duration(&raw.value) {
        Some(d) if d <= MAX_SHUTDOWN_DELAY => d,
        Some(_) => {
            errors.push(ConfigError::at(
                raw.pos,
                format!(
                    "`shutdown_delay` must be at most {}s (got {})",
                    MAX_SHUTDOWN_DELAY.as_secs(),
                    raw.value
                ),
            ));
            Duration::ZERO
        }
        None => {
            errors.push(ConfigError::at(
                raw.pos,
                format!(
                    "`{}` is not a duration: expected a number with a unit (ms, s, m), e.g. 5s \
                     or 0s",
                    raw.value
                ),
            ));
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pos;

    fn at(v: &str) -> Located<String> {
        Located {
            value: v.to_owned(),
            pos: Pos { line: 3, col: 11 },
        }
    }

    #[test]
    fn probes_address() {
        let listen: SocketAddr = "0.0.0.0:8443".parse().expect("addr");
        let admin: SocketAddr = "127.0.0.1:9901".parse().expect("addr");
        let mut e = Vec::new();
        assert_eq!(probes(None, listen, admin, &mut e), None);
        assert_eq!(
            probes(Some(&at("0.0.0.0:9902")), listen, admin, &mut e),
            Some("0.0.0.0:9902".parse().expect("addr"))
        );
        assert!(e.is_empty());
        probes(Some(&at("0.0.0.0:8443")), listen, admin, &mut e);
        probes(Some(&at("127.0.0.1:9901")), listen, admin, &mut e);
        probes(Some(&at("localhost:9902")), listen, admin, &mut e);
        let msgs: Vec<String> = e.iter().map(|e| e.message.clone()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("must differ"), "{msgs:?}");
        assert!(msgs[1].contains("must differ"), "{msgs:?}");
        assert!(msgs[2].contains("is not a socket address"), "{msgs:?}");
    }

    #[test]
    fn delay() {
        let mut e = Vec::new();
        assert_eq!(shutdown_delay(None, &mut e), Duration::ZERO);
        assert_eq!(shutdown_delay(Some(&at("0s")), &mut e), Duration::ZERO);
        assert_eq!(
            shutdown_delay(Some(&at("5s")), &mut e),
            Duration::from_secs(5)
        );
        assert!(e.is_empty());
        shutdown_delay(Some(&at("6m")), &mut e);
        shutdown_delay(Some(&at("soon")), &mut e);
        let msgs: Vec<String> = e.iter().map(|e| e.message.clone()).collect();
        assert!(msgs[0].contains("at most 300s"), "{msgs:?}");
        assert!(msgs[1].contains("is not a duration"), "{msgs:?}");
    }
}
