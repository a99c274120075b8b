//! What a lab is made of: nodes and pods, with their namespaces and addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One lab node: a network namespace on the underlay bridge that routes for its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name, e.g. `node-0` (what a Kubernetes Node object would be called).
    pub name: String,
    /// The node's index (its underlay and pod addresses derive from it).
    pub index: u8,
    /// The network namespace that is this node.
    pub namespace: String,
    /// The node's underlay interface inside its namespace (`eth0`).
    pub underlay_iface: String,
    /// The node's underlay address (`198.18.0.<10+index>`).
    pub underlay_addr: Ipv4Addr,
    /// The underlay prefix length (15).
    pub underlay_prefix_len: u8,
    /// The node's pod CIDR (`10.244.<index>.0/24`). In a VPC-CNI lab
    /// ([`LabBuilder::vpc_cni`](super::LabBuilder::vpc_cni)) it is nominal only, what a Node
    /// object's `spec.podCIDR` might say: no pod's address lies in it and no route points at it
    /// (see [`vpc_cni`](super::vpc_cni)).
    pub pod_cidr: IpNet,
    /// The address the node answers on, on every pod veth, as its pods' gateway (`10.244.<index>.1`).
    pub pod_gateway: Ipv4Addr,
    /// The node's IPv6 underlay address, in a dual-stack lab.
    pub underlay_addr6: Option<Ipv6Addr>,
    /// The node's IPv6 pod CIDR, in a dual-stack lab.
    pub pod_cidr6: Option<IpNet>,
    /// The MTU of the node's underlay link.
    pub underlay_mtu: u32,
}

/// One lab pod: a network namespace with a veth to its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The pod's name, e.g. `pod-0-1` (pod 1 on node 0).
    pub name: String,
    /// The network namespace that is this pod.
    pub namespace: String,
    /// The name of the node the pod runs on.
    pub node: String,
    /// The pod's address (`10.244.<node>.<10+j>`, a /32 on its `eth0`); in a VPC-CNI lab, one
    /// from the shared range `10.244.128.0/17`, unrelated to the node.
    pub address: Ipv4Addr,
    /// The pod's IPv6 address, in a dual-stack lab.
    pub address6: Option<Ipv6Addr>,
    /// The pod's interface name inside its namespace (`eth0`).
    pub iface: String,
    /// The name of the pod's veth on the node side, inside the node namespace (`pod<j>`).
    pub node_iface: String,
}
