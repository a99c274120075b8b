//! The end of a scale run: what every real agent should have programmed for the simulated nodes
//! (from the API's truth), against what its device and its routing table hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// One simulated node as a real agent should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPeer {
    /// Its endpoint.
    pub endpoint: SocketAddr,
    /// Its allowed IPs.
    pub allowed_ips: BTreeSet<IpNet>,
}

/// A peer as the device reports it (`wg show IFNAME dump`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePeer {
    /// Its endpoint, if set.
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs.
    pub allowed_ips: BTreeSet<IpNet>,
}

/// The peers of `wg show IFNAME dump`, by public key (the first line is the interface's).
pub fn parse_dump(dump: &str) -> BTreeMap<String, DevicePeer> {
    dump.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let key = (*fields.first()?).to_owned();
            let endpoint = fields.get(2).and_then(|e| e.parse().ok());
            let allowed_ips = fields
                .get(3)?
                .split(',')
                .filter(|s| !s.is_empty() && *s != "(none)")
                .filter_map(|s| s.parse().ok())
                .collect();
            Some((key, DevicePeer { endpoint, allowed_ips }))
        })
        .collect()
}

/// The destinations of `ip route show` lines (`10.0.0.0/30 dev …`, `fd00::1 dev …`).
pub fn parse_routes(text: &str) -> BTreeSet<IpNet> {
    text.lines()
        .filter_map(|l| {
            let word = l.split_whitespace().next()?;
            word.parse::<IpNet>().ok().or_else(|| word.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// How far what an agent programmed is from the truth, counting only what `ours` says belongs to
/// the simulated nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Device peers no live simulated node has (a left node, an old key).
    pub stale_peers: usize,
    /// Live simulated nodes without a device peer.
    pub missing_peers: usize,
    /// Peers whose endpoint or allowed IPs differ from the truth.
    pub wrong_peers: usize,
    /// Routes to simulated prefixes no live simulated node holds.
    pub stale_routes: usize,
    /// Simulated prefixes without a route.
    pub missing_routes: usize,
}

impl Drift {
    /// Nothing stale, missing or wrong.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Compares `device` and `routes` with `expected` (by public key), over the peers and routes for
/// which `ours` holds (the simulated nodes' keys and prefixes: the real nodes are not counted).
pub fn drift(
    expected: &BTreeMap<String, ExpectedPeer>,
    device: &BTreeMap<String, DevicePeer>,
    routes: &BTreeSet<IpNet>,
    ours: impl Fn(&IpNet) -> bool,
) -> Drift {
    let sim_peers: BTreeMap<&String, &DevicePeer> = device
        .iter()
        .filter(|(key, peer)| expected.contains_key(*key) || peer.allowed_ips.iter().any(&ours))
        .collect();
    let want_routes: BTreeSet<IpNet> =
        expected.values().flat_map(|p| p.allowed_ips.iter().copied()).filter(|n| ours(n)).collect();
    let have_routes: BTreeSet<IpNet> = routes.iter().copied().filter(|n| ours(n)).collect();
    Drift {
        stale_peers: sim_peers.keys().filter(|k| !expected.contains_key(**k)).count(),
        missing_peers: expected.keys().filter(|k| !device.contains_key(*k)).count(),
        wrong_peers: expected
            .iter()
            .filter(|(k, want)| {
                device.get(*k).is_some_and(|have| {
                    have.endpoint != Some(want.endpoint) || have.allowed_ips != want.allowed_ips
                })
            })
            .count(),
        stale_routes: have_routes.difference(&want_routes).count(),
        missing_routes: want_routes.difference(&have_routes).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const DUMP: &str = "priv\tpub\t51820\toff\n\
K1=\t(none)\t198.19.0.1:51820\t10.244.128.0/30,198.19.0.1/32\t0\t0\t0\toff\n\
K2=\t(none)\t198.19.0.2:51820\t10.244.128.4/30,198.19.0.2/32\t0\t0\t0\toff\n\
R1=\t(none)\t198.18.0.11:51820\t10.244.1.0/24,198.18.0.11/32\t0\t0\t0\toff\n";

    fn sim(n: &IpNet) -> bool {
        "10.244.128.0/17".parse::<IpNet>().unwrap().contains(n)
    }

    fn expected(entries: &[(&str, &str, &[&str])]) -> BTreeMap<String, ExpectedPeer> {
        entries
            .iter()
            .map(|(k, e, a)| {
                ((*k).to_owned(), ExpectedPeer { endpoint: e.parse().unwrap(), allowed_ips: nets(a) })
            })
            .collect()
    }

    #[test]
    fn drift_counts_what_is_stale_missing_and_wrong() {
        let device = parse_dump(DUMP);
        assert_eq!(device.len(), 3);
        let routes = nets(&["10.244.128.0/30", "10.244.128.4/30", "10.244.1.0/24"]);
        let cases: [(&str, BTreeMap<String, ExpectedPeer>, Drift); 4] = [
            (
                "in step",
                expected(&[
                    ("K1=", "198.19.0.1:51820", &["10.244.128.0/30", "198.19.0.1/32"]),
                    ("K2=", "198.19.0.2:51820", &["10.244.128.4/30", "198.19.0.2/32"]),
                ]),
                Drift::default(),
            ),
            (
                "K2 left",
                expected(&[("K1=", "198.19.0.1:51820", &["10.244.128.0/30", "198.19.0.1/32"])]),
                Drift { stale_peers: 1, stale_routes: 1, ..Drift::default() },
            ),
            (
                "K3 joined, K2 rotated to K4",
                expected(&[
                    ("K1=", "198.19.0.1:51820", &["10.244.128.0/30", "198.19.0.1/32"]),
                    ("K4=", "198.19.0.2:51820", &["10.244.128.4/30", "198.19.0.2/32"]),
                    ("K3=", "198.19.0.3:51820", &["10.244.128.8/30", "198.19.0.3/32"]),
                ]),
                Drift { stale_peers: 1, missing_peers: 2, missing_routes: 1, ..Drift::default() },
            ),
            (
                "K1 moved",
                expected(&[
                    ("K1=", "198.19.0.9:51820", &["10.244.128.0/30", "198.19.0.9/32"]),
                    ("K2=", "198.19.0.2:51820", &["10.244.128.4/30", "198.19.0.2/32"]),
                ]),
                Drift { wrong_peers: 1, ..Drift::default() },
            ),
        ];
        for (name, want, expected_drift) in cases {
            assert_eq!(drift(&want, &device, &routes, sim), expected_drift, "{name}");
        }
    }

    #[test]
    fn routes_are_read_off_ip_route_show() {
        let text = "10.244.128.0/30 dev meshcrypt0 proto static scope link \nfd00:10:244:ff::1 dev meshcrypt0 metric 1024 pref medium\nunreachable 10.244.0.0/16 proto static\n";
        assert_eq!(parse_routes(text), nets(&["10.244.128.0/30", "fd00:10:244:ff::1/128"]));
    }
}
