//! From the peer set and this node to the routing crate's input: which prefixes go into the mesh,
//! which stay local. Pure.

use std::net::IpAddr;

use ipnet::IpNet;
use meshcrypt_keyexchange::mesh::PeerSet;
use meshcrypt_routing::{HostRoute, RoutingInput};

/// The routing settings that do not change between passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    /// The WireGuard interface.
    pub ifname: String,
    /// meshcrypt's table.
    pub table: u32,
    /// meshcrypt's rule priority.
    pub rule_priority: u32,
    /// The cluster's pod networks.
    pub pod_networks: Vec<IpNet>,
    /// Fail closed.
    pub strict: bool,
    /// Steer traffic to peers' node addresses into the mesh too.
    pub host_encryption: bool,
    /// The mark on the mesh's own UDP packets, which every rule lets pass.
    pub fwmark: u32,
}

/// The routing input for one pass: every peer's allowed IPs (its pods and its node address) into
/// the device; this node's own pod prefixes, and node addresses that fall inside a pod network
/// (as on EKS, where the VPC holds both) but are not peers', delivered without the mesh. Traffic
/// between pods and peers' node addresses always goes through the mesh; with host encryption,
/// the host's own traffic to them too.
pub fn routing_input(
    settings: &RoutingSettings,
    mtu: u32,
    node_ips: &[IpAddr],
    peers: &PeerSet,
) -> RoutingInput {
    let mut peer_prefixes: Vec<IpNet> =
        peers.peers.values().flat_map(|p| p.allowed_ips.iter().copied()).collect();
    peer_prefixes.sort();
    peer_prefixes.dedup();
    let mut peer_hosts: Vec<IpNet> = peers.peers.values().map(|p| IpNet::from(p.endpoint.ip())).collect();
    peer_hosts.sort();
    peer_hosts.dedup();
    let mut local_prefixes = peers.local_prefixes.clone();
    local_prefixes.extend(
        node_ips
            .iter()
            .filter(|ip| settings.pod_networks.iter().any(|n| n.contains(*ip)))
            .map(|ip| IpNet::from(*ip))
            .filter(|net| !peer_hosts.contains(net)),
    );
    local_prefixes.sort();
    local_prefixes.dedup();
    RoutingInput {
        ifname: settings.ifname.clone(),
        mtu,
        addresses: Vec::new(),
        table: settings.table,
        rule_priority: settings.rule_priority,
        pod_networks: settings.pod_networks.clone(),
        local_prefixes,
        peer_prefixes,
        strict: settings.strict,
        peer_hosts,
        host_encryption: settings.host_encryption,
        fwmark: Some(settings.fwmark),
    }
}

/// The main routing table's id (`RT_TABLE_MAIN`, rtnetlink(7)).
pub const MAIN_TABLE: u32 = 254;

/// The pods the CNI has wired on this node, read from the kernel rather than the API: host routes
/// of the main table inside a pod network that go straight onto an interface (a pod's veth), not
/// through a gateway and not onto `not_local` (the underlay's interface, the mesh device), less
/// those `known` already covers. Local delivery to them then never waits for the API server.
pub fn wired_local_pods(
    routes: &[HostRoute],
    pod_networks: &[IpNet],
    known: &[IpNet],
    not_local: &[u32],
) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = routes
        .iter()
        .filter(|r| !r.via_gateway && r.oif.is_some_and(|oif| !not_local.contains(&oif)))
        .filter(|r| pod_networks.iter().any(|n| n.contains(&r.dst)))
        .filter(|r| !known.iter().any(|k| k.contains(&r.dst)))
        .map(|r| r.dst)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::PrivateKey;
    use meshcrypt_keyexchange::mesh::Peer;

    #[test]
    fn peers_prefixes_are_collected_once_and_local_ones_kept_apart() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let peer = |node: &str, endpoint: &str, nets: &[&str]| Peer {
            node: node.into(),
            public_key: PrivateKey::generate().public_key(),
            key_epoch: 0,
            endpoint: endpoint.parse().unwrap(),
            allowed_ips: nets.iter().map(|n| net(n)).collect(),
        };
        let peers = PeerSet {
            peers: [
                ("b".to_owned(), peer("b", "198.18.0.11:51820", &["10.244.2.0/24", "fd00:10:244:2::/64"])),
                // A peer whose node address lies inside the pod network, as on EKS.
                ("c".to_owned(), peer("c", "10.244.200.8:51820", &["10.244.1.0/24"])),
            ]
            .into(),
            local_prefixes: vec![net("10.244.0.0/24")],
            problems: vec![],
        };
        let settings = RoutingSettings {
            ifname: "meshcrypt0".into(),
            table: 51820,
            rule_priority: 100,
            pod_networks: vec![net("10.244.0.0/16")],
            strict: true,
            host_encryption: false,
            fwmark: 0x20_0000,
        };
        let node_ips = ["198.18.0.10", "10.244.200.7", "10.244.200.8"].map(|ip| ip.parse().unwrap());
        let input = routing_input(&settings, 1440, &node_ips, &peers);
        assert_eq!(
            input.peer_prefixes,
            vec![net("10.244.1.0/24"), net("10.244.2.0/24"), net("fd00:10:244:2::/64")]
        );
        assert_eq!(input.peer_hosts, vec![net("10.244.200.8/32"), net("198.18.0.11/32")]);
        // A node address inside the pod network bypasses the mesh, unless it is a peer's; one
        // outside needs nothing.
        assert_eq!(input.local_prefixes, vec![net("10.244.0.0/24"), net("10.244.200.7/32")]);
        assert!(input.strict);
        assert_eq!(input.mtu, 1440);
    }

    #[test]
    fn wired_local_pods_table() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let route =
            |dst: &str, oif: Option<u32>, via_gateway: bool| HostRoute { dst: net(dst), oif, via_gateway };
        let pod_networks = [net("10.244.128.0/17"), net("fd00:10:244::/56")];
        let known = [net("10.244.128.8/32")];
        // 2: the underlay's interface, 9: the mesh device; 11, 12: pod veths.
        let not_local = [2, 9];
        let cases: Vec<(&str, HostRoute, bool)> = vec![
            ("a pod on a veth", route("10.244.128.13/32", Some(11), false), true),
            ("an IPv6 pod on a veth", route("fd00:10:244::d/128", Some(12), false), true),
            ("already known from the API", route("10.244.128.8/32", Some(11), false), false),
            (
                "a remote pod over the underlay (host-gateway route)",
                route("10.244.128.9/32", Some(2), true),
                false,
            ),
            (
                "a remote pod onto the underlay without a gateway",
                route("10.244.128.10/32", Some(2), false),
                false,
            ),
            ("through the mesh device", route("10.244.128.11/32", Some(9), false), false),
            ("through a gateway on another link", route("10.244.128.12/32", Some(11), true), false),
            ("outside the pod networks", route("192.0.2.7/32", Some(11), false), false),
            ("no output interface", route("10.244.128.14/32", None, false), false),
        ];
        for (name, r, local) in cases {
            let got = wired_local_pods(&[r], &pod_networks, &known, &not_local);
            assert_eq!(got == vec![r.dst], local, "{name}: {got:?}");
        }
    }
}
