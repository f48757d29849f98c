//! IP allowlists, compiled (top-level `allow_ips:` and a route's `allow_ips:`).
//!
//! Addresses are compared in canonical form: an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`)
//! is the IPv4 address it carries, on both sides (the client's address and the configured
//! networks), so a client cannot slip past an IPv4 rule by speaking IPv6 to a dual-stack
//! listener, and an IPv4 rule written in its mapped form still matches.

use std::net::IpAddr;

use ipnet::IpNet;

/// A list of networks; an address is allowed when one contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowList {
    nets: Vec<IpNet>,
}

impl IpAllowList {
    /// A list of networks (already canonical: see [`canonical_net`]).
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// The networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` (in any form) is in one of the networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// A network in canonical form: an IPv4-mapped IPv6 network (`::ffff:0:0/96` and longer
/// prefixes) becomes the IPv4 network it covers.
pub fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(nets: &[&str]) -> IpAllowList {
        IpAllowList::new(
            nets.iter()
                .map(|n| canonical_net(n.parse().expect("net")))
                .collect(),
        )
    }

    #[test]
    fn v4_v6_and_mapped_forms() {
        let l = list(&["10.0.0.0/8", "192.168.1.5/32", "2001:db8::/32"]);
        for ok in ["10.1.2.3", "192.168.1.5", "::ffff:10.1.2.3", "2001:db8::1"] {
            assert!(l.allows(ok.parse().expect("ip")), "{ok}");
        }
        for no in [
            "11.0.0.1",
            "192.168.1.6",
            "::ffff:11.0.0.1",
            "2001:db9::1",
            "::10.1.2.3",
            "::1",
        ] {
            assert!(!l.allows(no.parse().expect("ip")), "{no}");
        }
        // A rule written in the mapped form is the IPv4 rule.
        let l = list(&["::ffff:10.0.0.0/104"]);
        assert_eq!(l.nets(), &["10.0.0.0/8".parse::<IpNet>().expect("net")]);
        assert!(l.allows("10.9.9.9".parse().expect("ip")));
        assert!(l.allows("::ffff:10.9.9.9".parse().expect("ip")));
    }
}
