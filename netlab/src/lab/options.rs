//! The shape of a lab's nodes: pods per node, dual stack, link MTUs, the VPC-CNI-like variant.

use super::vpc_cni;

/// The shape every node of a lab gets (also nodes added later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Pods per node.
    pub pods_per_node: usize,
    /// Also give the underlay, nodes and pods IPv6 addresses (dual stack).
    pub ipv6: bool,
    /// MTU of the underlay links (bridge and node veths).
    pub underlay_mtu: u32,
    /// MTU of the pod veths (both ends).
    pub pod_mtu: u32,
    /// Model the AWS VPC CNI (see [`vpc_cni`]): pod addresses scattered over
    /// the nodes from one shared range, per-pod routes and policy rules, no per-node pod CIDRs.
    pub vpc_cni: bool,
    /// The seed of the VPC-CNI address pool (same seed, same addresses).
    pub vpc_cni_seed: u64,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            pods_per_node: 2,
            ipv6: false,
            underlay_mtu: 1500,
            pod_mtu: 1500,
            vpc_cni: false,
            vpc_cni_seed: vpc_cni::DEFAULT_SEED,
        }
    }
}
