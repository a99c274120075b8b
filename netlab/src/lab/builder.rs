//! `Lab::builder()`: how many nodes and pods per node, IPv6 or not, link MTUs, and the VPC-CNI-like
//! variant.

use super::addressing::MAX_INDEX;
use super::error::LabError;
use super::instance::Lab;
use super::options::LabOptions;
use super::vpc_cni::MAX_VPC_CNI_NODES;

/// Describes a lab to build. Defaults: 3 nodes, 2 pods per node, IPv4 only, MTU 1500.
#[derive(Clone, Debug)]
pub struct LabBuilder {
    nodes: usize,
    options: LabOptions,
    pod_mtu_set: bool,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder { nodes: 3, options: LabOptions::default(), pod_mtu_set: false }
    }
}

impl LabBuilder {
    /// Sets the number of nodes.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Sets the number of pods on every node (also used by [`Lab::add_node`]).
    pub fn pods_per_node(mut self, n: usize) -> Self {
        self.options.pods_per_node = n;
        self
    }

    /// Adds IPv6 (dual stack): underlay `fd00:198:18::/64`, pods `fd00:10:244::/56`.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.options.ipv6 = on;
        self
    }

    /// Sets the underlay MTU (e.g. 9001 as inside an AWS VPC). Pod veths follow it unless
    /// [`LabBuilder::pod_mtu`] is set.
    pub fn underlay_mtu(mut self, mtu: u32) -> Self {
        self.options.underlay_mtu = mtu;
        if !self.pod_mtu_set {
            self.options.pod_mtu = mtu;
        }
        self
    }

    /// Sets the pod veths' MTU.
    pub fn pod_mtu(mut self, mtu: u32) -> Self {
        self.options.pod_mtu = mtu;
        self.pod_mtu_set = true;
        self
    }

    /// Turns the VPC-CNI-like variant on or off (see [`vpc_cni`](super::vpc_cni)): pods get
    /// addresses from one shared range ([`vpc_cni::pod_range`](super::vpc_cni::pod_range), `10.244.128.0/17`), scattered over
    /// the nodes; each node gets per-pod `/32` routes, the CNI's policy rules at priorities 512 and
    /// 1536 and an ENI table 2; nodes reach remote pods by per-pod host-gateway routes. At most
    /// [`MAX_VPC_CNI_NODES`] nodes; IPv4 only.
    pub fn vpc_cni(mut self, on: bool) -> Self {
        self.options.vpc_cni = on;
        self
    }

    /// Sets the seed of the VPC-CNI address pool (default [`vpc_cni::DEFAULT_SEED`](super::vpc_cni::DEFAULT_SEED)).
    pub fn vpc_cni_seed(mut self, seed: u64) -> Self {
        self.options.vpc_cni_seed = seed;
        self
    }

    /// Creates the namespaces, links, addresses and routes. On error, whatever was created is
    /// removed again before returning.
    pub fn build(self) -> Result<Lab, LabError> {
        let o = &self.options;
        if self.nodes > MAX_INDEX || o.pods_per_node > MAX_INDEX {
            return Err(LabError::Invalid(format!(
                "at most {MAX_INDEX} nodes and {MAX_INDEX} pods per node (asked {} and {})",
                self.nodes, o.pods_per_node
            )));
        }
        if o.vpc_cni && o.ipv6 {
            return Err(LabError::Invalid("the VPC-CNI variant is IPv4 only".into()));
        }
        if o.vpc_cni && self.nodes > MAX_VPC_CNI_NODES {
            return Err(LabError::Invalid(format!(
                "at most {MAX_VPC_CNI_NODES} nodes in a VPC-CNI lab (asked {})",
                self.nodes
            )));
        }
        let min = if o.ipv6 { 1280 } else { 576 };
        if !(min..=65535).contains(&o.underlay_mtu) || !(min..=65535).contains(&o.pod_mtu) {
            return Err(LabError::Invalid(format!(
                "MTUs must lie in {min}..=65535 (underlay {}, pods {})",
                o.underlay_mtu, o.pod_mtu
            )));
        }
        let mut lab = Lab::create_empty(self.options)?;
        for _ in 0..self.nodes {
            lab.add_node()?;
        }
        Ok(lab)
    }
}

impl Lab {
    /// Starts describing a lab (3 nodes × 2 pods unless changed).
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }
}
