//! The lab's address plan (IPv4): underlay `198.18.0.0/15`, pods `10.244.0.0/16`.
//!
//! | what | address |
//! |---|---|
//! | the underlay bridge `br0` in the underlay namespace ("services": the test API server) | `198.18.0.1/15` |
//! | node *i*'s `eth0` | `198.18.0.(10+i)/15` |
//! | node *i*'s pod CIDR | `10.244.i.0/24` |
//! | node *i*'s side of every pod veth (`pod<j>`), the pods' gateway | `10.244.i.1/32` |
//! | pod *j* on node *i* (`eth0`) | `10.244.i.(10+j)/32` |
//!
//! Pods use /32 addresses, no shared subnet and no bridge on the node: each pod has an on-link
//! route to `10.244.i.1` and a default route via it; the node owns `10.244.i.1/32` on every pod
//! veth (so it answers the pods' ARP for it) and has one `/32 dev pod<j>` route per pod. Between
//! nodes, every node has a host-gateway route `10.244.k.0/24 via 198.18.0.(10+k)` to every other
//! node *k*, so before meshcrypt runs pod traffic crosses the underlay in plaintext.
//!
//! With IPv6 (dual stack, [`LabBuilder::ipv6`](super::LabBuilder::ipv6)) the same shape, written so
//! the numbers match the IPv4 plan (hex digits that read like the decimal ones):
//!
//! | what | address |
//! |---|---|
//! | `br0` ("services") | `fd00:198:18::1/64` |
//! | node *i*'s `eth0` | `fd00:198:18::(10+i)/64` (node 0: `fd00:198:18::10`) |
//! | node *i*'s pod CIDR | `fd00:10:244:<i in hex>::/64` (inside `fd00:10:244::/56`) |
//! | node *i*'s side of every pod veth, the pods' gateway | `fe80::1` (link-local) |
//! | pod *j* on node *i* | `fd00:10:244:<i in hex>::(10+j)/128` |
//!
//! IPv6 addresses are added with `nodad` so they are usable at once.
//!
//! The VPC-CNI-like variant ([`LabBuilder::vpc_cni`](super::LabBuilder::vpc_cni)) keeps the
//! underlay, node and gateway addresses but takes pod addresses from one shared range and routes
//! them per pod: see [`vpc_cni`](super::vpc_cni).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The underlay bridge in the underlay namespace.
pub const BRIDGE: &str = "br0";

/// The largest number of nodes (and of pods per node) the plan has addresses for.
pub const MAX_INDEX: usize = 245;

/// The underlay subnet every node (and the services address) lives in.
pub fn underlay_cidr() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(198, 18, 0, 0), 15).expect("constant prefix"))
}

/// The prefix length of underlay addresses.
pub const UNDERLAY_PREFIX_LEN: u8 = 15;

/// The services address on the underlay bridge (where the test API server listens).
pub fn services_addr() -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 1)
}

/// All pod addresses of the lab (the cluster CIDR).
pub fn cluster_pod_cidr() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).expect("constant prefix"))
}

/// Node `i`'s underlay address.
pub fn node_underlay_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i)
}

/// Node `i`'s pod CIDR.
pub fn node_pod_cidr(i: u8) -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, i, 0), 24).expect("constant prefix"))
}

/// Node `i`'s gateway address towards its pods.
pub fn pod_gateway(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, i, 1)
}

/// The address of pod `j` on node `i`.
pub fn pod_addr(i: u8, j: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, i, 10 + j)
}

/// True if `ip` is a lab pod address (IPv4 or IPv6).
pub fn is_pod_addr(ip: IpAddr) -> bool {
    cluster_pod_cidr().contains(&ip) || cluster_pod_cidr6().contains(&ip)
}

/// The IPv6 underlay subnet.
pub fn underlay_cidr6() -> IpNet {
    "fd00:198:18::/64".parse().expect("constant prefix")
}

/// The IPv6 underlay prefix length.
pub const UNDERLAY_PREFIX_LEN6: u8 = 64;

/// The IPv6 services address on the underlay bridge.
pub fn services_addr6() -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1)
}

/// All IPv6 pod addresses of the lab.
pub fn cluster_pod_cidr6() -> IpNet {
    "fd00:10:244::/56".parse().expect("constant prefix")
}

/// Reads a small decimal number as hex digits, so that `10` becomes `0x10` (`::10`).
fn decimal_looking(n: u8) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).expect("decimal digits are hex digits")
}

/// Node `i`'s IPv6 underlay address (`fd00:198:18::(10+i)`).
pub fn node_underlay_addr6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, decimal_looking(10 + i))
}

/// Node `i`'s IPv6 pod CIDR (`fd00:10:244:<i hex>::/64`).
pub fn node_pod_cidr6(i: u8) -> IpNet {
    let a = Ipv6Addr::new(0xfd00, 0x10, 0x244, u16::from(i), 0, 0, 0, 0);
    IpNet::V6(ipnet::Ipv6Net::new(a, 64).expect("valid length"))
}

/// The pods' IPv6 gateway on every pod veth (link-local).
pub fn pod_gateway6() -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)
}

/// The IPv6 address of pod `j` on node `i`.
pub fn pod_addr6(i: u8, j: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, u16::from(i), 0, 0, 0, decimal_looking(10 + j))
}
