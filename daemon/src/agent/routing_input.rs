//! From the peer set and this node to the routing crate's input: which prefixes go into the mesh,
//! which stay local. Pure.

use std::net::IpAddr;

use ipnet::IpNet;
use meshcrypt_keyexchange::mesh::PeerSet;
use meshcrypt_routing::RoutingInput;

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

/// The routing input for one pass: every peer's allowed IPs into the device; this node's own pod
/// prefixes, and node addresses that fall inside a pod network (as on EKS, where the VPC holds
/// both), delivered without the mesh — unless host encryption sends peers' node addresses through
/// it.
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
    let host_prefixes: Vec<IpNet> = if settings.host_encryption {
        peers.peers.values().map(|p| IpNet::from(p.endpoint.ip())).collect()
    } else {
        Vec::new()
    };
    let mut local_prefixes = peers.local_prefixes.clone();
    local_prefixes.extend(
        node_ips
            .iter()
            .filter(|ip| settings.pod_networks.iter().any(|n| n.contains(*ip)))
            .map(|ip| IpNet::from(*ip))
            .filter(|net| !host_prefixes.contains(net)),
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
        host_prefixes,
        fwmark: Some(settings.fwmark),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::PrivateKey;
    use meshcrypt_keyexchange::mesh::Peer;

    #[test]
    fn peers_prefixes_are_collected_once_and_local_ones_kept_apart() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let peer = |node: &str, nets: &[&str]| Peer {
            node: node.into(),
            public_key: PrivateKey::generate().public_key(),
            key_epoch: 0,
            endpoint: "198.18.0.11:51820".parse().unwrap(),
            allowed_ips: nets.iter().map(|n| net(n)).collect(),
        };
        let peers = PeerSet {
            peers: [
                ("b".to_owned(), peer("b", &["10.244.2.0/24", "fd00:10:244:2::/64"])),
                ("c".to_owned(), peer("c", &["10.244.1.0/24"])),
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
        let node_ips = ["198.18.0.10".parse().unwrap(), "10.244.200.7".parse().unwrap()];
        let input = routing_input(&settings, 1440, &node_ips, &peers);
        assert_eq!(
            input.peer_prefixes,
            vec![net("10.244.1.0/24"), net("10.244.2.0/24"), net("fd00:10:244:2::/64")]
        );
        // A node address inside the pod network bypasses the mesh; one outside needs nothing.
        assert_eq!(input.local_prefixes, vec![net("10.244.0.0/24"), net("10.244.200.7/32")]);
        assert!(input.strict);
        assert_eq!(input.mtu, 1440);
    }
}
