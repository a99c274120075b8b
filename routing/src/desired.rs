//! From prefixes to kernel state: which routes and rules steer pod traffic into the mesh.
//!
//! Two rules per pod network send its traffic to meshcrypt's table: everything to it, and
//! everything from it (a pod talking to another node's address). There, each peer's prefixes and
//! its node addresses go into the device, this node's own pods are thrown back to the next rule
//! (the main table), and in strict mode the whole pod network and every peer's node address go
//! into the device (which drops and counts what no peer covers) over a blackhole floor that stays
//! when the device is gone: a packet with no encrypted path is dropped, never sent in plaintext.
//! Anything else a pod sends (the internet, a node without a key) finds no route here and goes
//! on to the main table. With host encryption, traffic to peers' node addresses from anywhere
//! (the host itself) is steered in too.

use ipnet::IpNet;

use crate::model::{DesiredState, LinkSpec, Route, RouteKind, Rule};

/// The metric of the routes meshcrypt uses day to day: the kernel's default for IPv6 (which turns
/// a metric of 0 into 1024), used for IPv4 too so that both families read back as written.
pub const ROUTE_METRIC: u32 = 1024;
/// The metric of the blackhole floor under the pod network in strict mode.
pub const FLOOR_METRIC: u32 = 1_000_000;

/// What the routing plan is computed from; free of any Kubernetes type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingInput {
    /// The device's name.
    pub ifname: String,
    /// The tunnel MTU (see [`crate::mtu::tunnel_mtu`]).
    pub mtu: u32,
    /// Addresses to put on the device.
    pub addresses: Vec<IpNet>,
    /// meshcrypt's routing table.
    pub table: u32,
    /// meshcrypt's rule priority (below the VPC CNI's 512).
    pub rule_priority: u32,
    /// The cluster's pod networks: all traffic to them is steered into meshcrypt's table.
    pub pod_networks: Vec<IpNet>,
    /// This node's own pod prefixes: delivered locally, never through the mesh.
    pub local_prefixes: Vec<IpNet>,
    /// Every prefix some peer is allowed to receive.
    pub peer_prefixes: Vec<IpNet>,
    /// Fail closed: pod traffic without a peer is dropped rather than sent on the underlay.
    pub strict: bool,
    /// Peers' node addresses: traffic between them and pods goes through the mesh (their routes
    /// are among `peer_prefixes`); in strict mode a blackhole floor holds each.
    pub peer_hosts: Vec<IpNet>,
    /// Host encryption: traffic to peers' node addresses from anywhere, not just from pods, is
    /// steered into the mesh.
    pub host_encryption: bool,
    /// The firewall mark on the mesh's own UDP packets: every rule skips packets carrying it.
    pub fwmark: Option<u32>,
}

/// The kernel state for `input`.
pub fn build(input: &RoutingInput) -> DesiredState {
    // Strict mode: the pod networks into the device over a floor, and a floor under each peer's
    // node address.
    let (strict_networks, floored_hosts): (&[IpNet], &[IpNet]) = match input.strict {
        true => (&input.pod_networks, &input.peer_hosts),
        false => (&[], &[]),
    };
    let routes = (input.peer_prefixes.iter().map(|dst| (dst, ROUTE_METRIC, RouteKind::Device)))
        .chain(input.local_prefixes.iter().map(|dst| (dst, ROUTE_METRIC, RouteKind::Throw)))
        .chain(strict_networks.iter().flat_map(|network| {
            [(network, ROUTE_METRIC, RouteKind::Device), (network, FLOOR_METRIC, RouteKind::Blackhole)]
        }))
        .chain(floored_hosts.iter().map(|host| (host, FLOOR_METRIC, RouteKind::Blackhole)))
        .map(|(dst, metric, kind)| Route { dst: dst.trunc(), metric, kind })
        // Collected whole: the standard library sorts the routes and builds the tree from the
        // sorted run in one go, not a search and an insert per route (15,000 at 5,000 peers).
        .collect();
    let (priority, mark, table) = (input.rule_priority, input.fwmark, input.table);
    let hosts: &[IpNet] = if input.host_encryption { &input.peer_hosts } else { &[] };
    let rules = input
        .pod_networks
        .iter()
        .chain(hosts)
        .map(|dst| Rule::to(priority, dst.trunc(), mark, table))
        .chain(input.pod_networks.iter().map(|src| Rule::from(priority, src.trunc(), mark, table)))
        .collect();
    DesiredState {
        link: LinkSpec {
            name: input.ifname.clone(),
            mtu: input.mtu,
            addresses: input.addresses.iter().copied().collect(),
        },
        table: input.table,
        routes,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn input(strict: bool) -> RoutingInput {
        RoutingInput {
            ifname: "meshcrypt0".into(),
            mtu: 1440,
            addresses: vec![],
            table: 2_000,
            rule_priority: 100,
            pod_networks: vec![net("10.244.0.0/16")],
            local_prefixes: vec![net("10.244.0.0/24")],
            peer_prefixes: vec![net("10.244.1.0/24"), net("10.244.2.0/24"), net("198.18.0.11/32")],
            strict,
            peer_hosts: vec![net("198.18.0.11/32")],
            host_encryption: false,
            fwmark: Some(0x20_0000),
        }
    }

    fn route(dst: &str, metric: u32, kind: RouteKind) -> Route {
        Route { dst: net(dst), metric, kind }
    }

    #[test]
    fn build_table() {
        let common = [
            route("10.244.0.0/24", ROUTE_METRIC, RouteKind::Throw),
            route("10.244.1.0/24", ROUTE_METRIC, RouteKind::Device),
            route("10.244.2.0/24", ROUTE_METRIC, RouteKind::Device),
            route("198.18.0.11/32", ROUTE_METRIC, RouteKind::Device),
        ];
        let strict_extra = [
            route("10.244.0.0/16", ROUTE_METRIC, RouteKind::Device),
            route("10.244.0.0/16", FLOOR_METRIC, RouteKind::Blackhole),
            route("198.18.0.11/32", FLOOR_METRIC, RouteKind::Blackhole),
        ];
        for (strict, want_extra) in [(true, &strict_extra[..]), (false, &[][..])] {
            let got = build(&input(strict));
            let want: BTreeSet<Route> = common.iter().chain(want_extra).copied().collect();
            assert_eq!(got.routes, want, "strict={strict}");
            // Pod traffic in both directions; the host's own traffic to peers stays out.
            assert_eq!(
                got.rules,
                BTreeSet::from([
                    Rule::to(100, net("10.244.0.0/16"), Some(0x20_0000), 2_000),
                    Rule::from(100, net("10.244.0.0/16"), Some(0x20_0000), 2_000),
                ])
            );
            assert_eq!(got.link.mtu, 1440);
        }
    }

    #[test]
    fn host_encryption_steers_peers_node_addresses_but_never_marked_packets() {
        let mut host = input(true);
        host.host_encryption = true;
        let got = build(&host);
        assert!(got.rules.contains(&Rule::to(100, net("198.18.0.11/32"), Some(0x20_0000), 2_000)));
        assert!(got.routes.contains(&route("198.18.0.11/32", ROUTE_METRIC, RouteKind::Device)));
        assert!(got.rules.iter().all(|r| r.unmarked == Some(0x20_0000)));
    }

    #[test]
    fn dual_stack_gets_a_rule_and_a_floor_per_family() {
        let mut dual = input(true);
        dual.pod_networks.push(net("fd00:10:244::/56"));
        dual.peer_prefixes.push(net("fd00:10:244:1::/64"));
        let got = build(&dual);
        assert_eq!(got.rules.len(), 4, "to and from each pod network");
        assert!(got.routes.contains(&route("fd00:10:244::/56", FLOOR_METRIC, RouteKind::Blackhole)));
        assert!(got.routes.contains(&route("fd00:10:244:1::/64", ROUTE_METRIC, RouteKind::Device)));
    }
}
