//! `Lab::builder()`: how many nodes and pods per node, IPv6 or not, and link MTUs.

use super::addressing::MAX_INDEX;
use super::error::LabError;
use super::instance::Lab;

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
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { pods_per_node: 2, ipv6: false, underlay_mtu: 1500, pod_mtu: 1500 }
    }
}

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
