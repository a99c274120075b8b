//! The peer set: which nodes this node exchanges pod traffic with, at which endpoint, for which
//! prefixes. A pure function of the Nodes the API server holds; every node it leaves out is
//! reported with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::aggregate::aggregate;
use crate::{NodeKeyAnnotations, PublicKey};

/// What the peer set needs to know of one Node, read from fields the API server vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.annotations`: only the key annotations are read.
    pub annotations: BTreeMap<String, String>,
    /// The `InternalIP` entries of `status.addresses`, in order; unparsable entries are dropped.
    pub internal_ips: Vec<IpAddr>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`), as written.
    pub pod_cidrs: Vec<String>,
}

impl NodeView {
    /// Extracts the fields the mesh uses from a Node object.
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let mut pod_cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if pod_cidrs.is_empty() {
            pod_cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        let internal_ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            annotations: node.metadata.annotations.clone().unwrap_or_default(),
            internal_ips,
            pod_cidrs,
        }
    }
}

/// What pod-IP mode needs of one Pod: where it runs and the addresses it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// `namespace/name`, for reports.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
}

impl PodView {
    /// The view of a Pod that holds pod-network addresses on a node: `None` for host-network
    /// pods (their address is the node's), unscheduled pods, pods without an address yet, and
    /// pods that have finished (their address may already belong to another pod).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let node = spec.node_name.clone()?;
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<IpAddr> =
            status.pod_ips.iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
        if ips.is_empty() {
            ips.extend(status.pod_ip.as_ref().and_then(|ip| ip.parse::<IpAddr>().ok()));
        }
        if ips.is_empty() {
            return None;
        }
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        Some(Self { name, node, ips })
    }
}

/// Where a node's allowed IPs come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AllowedIpsFrom {
    /// `spec.podCIDRs` of each Node.
    #[default]
    PodCidrs,
    /// The addresses of the Pods on each node, aggregated into the fewest prefixes (AWS VPC CNI).
    PodIps,
}

/// This node, as the peer set needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// This node's name.
    pub name: String,
    /// The public half of the key this node's device runs with.
    pub public_key: PublicKey,
    /// The underlay address this node sends from; peers' endpoints are chosen in its family.
    pub underlay_ip: IpAddr,
}

/// The mesh settings the peer set depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// The UDP port every node's device listens on.
    pub port: u16,
    /// Where allowed IPs come from.
    pub allowed_ips: AllowedIpsFrom,
    /// Host encryption: each peer's node address (its endpoint) is among its allowed IPs.
    pub host_encryption: bool,
}

/// One remote node this node exchanges encrypted traffic with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The remote Node's name.
    pub node: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// Its key epoch, as published.
    pub key_epoch: u64,
    /// Where to send its packets: its InternalIP and the mesh port.
    pub endpoint: SocketAddr,
    /// The destinations routed to it (and sources accepted from it), sorted.
    pub allowed_ips: Vec<IpNet>,
}

/// Why a node, or part of what it claims, is left out of the peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The node has published no key yet.
    NoKey,
    /// The node's key annotations are malformed.
    InvalidAnnotation(String),
    /// The node publishes a key another node publishes too; neither gets traffic.
    DuplicateKey {
        /// The other nodes claiming the same key.
        with: Vec<String>,
    },
    /// The node publishes this node's own key.
    ClaimsLocalKey,
    /// The node has no InternalIP in this node's address family.
    NoEndpoint,
    /// An entry of `spec.podCIDRs` is not a canonical prefix.
    InvalidPodCidr(String),
    /// A prefix overlaps one claimed by other nodes; no node gets it.
    ContestedPrefix {
        /// The prefix this node claims.
        prefix: IpNet,
        /// The other nodes whose prefixes overlap it.
        with: Vec<String>,
    },
}

impl Problem {
    /// A stable, machine-readable reason, used as a Kubernetes Event reason and a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoKey => "NoKey",
            Self::InvalidAnnotation(_) => "InvalidKeyAnnotation",
            Self::DuplicateKey { .. } => "DuplicateKey",
            Self::ClaimsLocalKey => "DuplicateKey",
            Self::NoEndpoint => "NoInternalIP",
            Self::InvalidPodCidr(_) => "InvalidPodCIDR",
            Self::ContestedPrefix { .. } => "ContestedPrefix",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKey => f.write_str("no meshcrypt key published"),
            Self::InvalidAnnotation(why) => write!(f, "invalid key annotation: {why}"),
            Self::DuplicateKey { with } => write!(f, "public key also claimed by {}", with.join(", ")),
            Self::ClaimsLocalKey => f.write_str("publishes this node's public key"),
            Self::NoEndpoint => f.write_str("no InternalIP in the underlay's address family"),
            Self::InvalidPodCidr(cidr) => write!(f, "pod CIDR {cidr:?} is not a canonical prefix"),
            Self::ContestedPrefix { prefix, with } => {
                write!(f, "pod prefix {prefix} overlaps prefixes of {}", with.join(", "))
            }
        }
    }
}

/// A node left out of the peer set (wholly or in part) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProblem {
    /// The Node's name.
    pub node: String,
    /// What is wrong.
    pub problem: Problem,
}

/// The desired peers, keyed by node name, and the problems found on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    /// Peers by node name.
    pub peers: BTreeMap<String, Peer>,
    /// This node's own pod prefixes (all of them, contested or not: local delivery never leaves
    /// the node), aggregated in pod-IP mode.
    pub local_prefixes: Vec<IpNet>,
    /// Nodes (or prefixes) left out, in node-name order.
    pub problems: Vec<NodeProblem>,
}

/// Computes the peers of `local` from every Node in `nodes` (which includes the local Node) and,
/// in pod-IP mode, every Pod in `pods`.
///
/// A peer is another node with a valid key that no other node claims, and an InternalIP in the
/// local underlay's family. Its allowed IPs are its pod CIDRs (or its Pods' addresses), less any
/// prefix that overlaps a prefix of another node (the local node included): a contested prefix or
/// address goes to nobody, so no claim can redirect another node's traffic.
pub fn desired_peers(
    nodes: &[NodeView],
    pods: &[PodView],
    local: &LocalNode,
    config: &MeshConfig,
) -> PeerSet {
    let mut problems = Vec::new();
    let mut report =
        |node: &str, problem: Problem| problems.push(NodeProblem { node: node.to_owned(), problem });

    let prefixes = match config.allowed_ips {
        AllowedIpsFrom::PodCidrs => valid_prefixes(nodes, &mut report),
        AllowedIpsFrom::PodIps => pod_prefixes(pods),
    };
    let contested = contested_prefixes(&prefixes);
    let finish = |claimed: &mut dyn Iterator<Item = IpNet>| -> Vec<IpNet> {
        match config.allowed_ips {
            AllowedIpsFrom::PodCidrs => claimed.collect(),
            AllowedIpsFrom::PodIps => aggregate(&claimed.map(|n| n.addr()).collect()),
        }
    };
    let local_prefixes = finish(&mut prefixes.get(local.name.as_str()).into_iter().flatten().copied());

    let mut keyed: Vec<(&NodeView, NodeKeyAnnotations)> = Vec::new();
    for node in nodes.iter().filter(|n| n.name != local.name) {
        match NodeKeyAnnotations::parse(&node.annotations) {
            Ok(Some(key)) => keyed.push((node, key)),
            Ok(None) => report(&node.name, Problem::NoKey),
            Err(e) => report(&node.name, Problem::InvalidAnnotation(e.to_string())),
        }
    }
    let mut claimants: BTreeMap<PublicKey, Vec<&str>> = BTreeMap::new();
    for (node, key) in &keyed {
        claimants.entry(key.public_key).or_default().push(&node.name);
    }

    let mut peers = BTreeMap::new();
    for (node, key) in keyed {
        if key.public_key == local.public_key {
            report(&node.name, Problem::ClaimsLocalKey);
            continue;
        }
        let others: Vec<String> =
            claimants[&key.public_key].iter().filter(|n| **n != node.name).map(|n| (*n).to_owned()).collect();
        if !others.is_empty() {
            report(&node.name, Problem::DuplicateKey { with: others });
            continue;
        }
        let Some(ip) = node.internal_ips.iter().find(|ip| ip.is_ipv4() == local.underlay_ip.is_ipv4()) else {
            report(&node.name, Problem::NoEndpoint);
            continue;
        };
        let allowed_ips = finish(
            &mut prefixes
                .get(node.name.as_str())
                .into_iter()
                .flatten()
                .filter(|p| !contested.contains_key(&(node.name.as_str(), **p)))
                .copied(),
        );
        let mut allowed_ips = allowed_ips;
        if config.host_encryption {
            allowed_ips.push(IpNet::from(*ip));
            allowed_ips.sort();
        }
        peers.insert(
            node.name.clone(),
            Peer {
                node: node.name.clone(),
                public_key: key.public_key,
                key_epoch: key.epoch,
                endpoint: SocketAddr::new(*ip, config.port),
                allowed_ips,
            },
        );
    }
    for ((node, prefix), with) in contested {
        report(
            node,
            Problem::ContestedPrefix { prefix, with: with.into_iter().map(str::to_owned).collect() },
        );
    }
    problems.sort_by(|a, b| a.node.cmp(&b.node));
    PeerSet { peers, local_prefixes, problems }
}

/// Each node's canonical pod prefixes, deduplicated and sorted; invalid entries are reported.
fn valid_prefixes<'a>(
    nodes: &'a [NodeView],
    report: &mut impl FnMut(&str, Problem),
) -> BTreeMap<&'a str, BTreeSet<IpNet>> {
    let mut out: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
    for node in nodes {
        let entry = out.entry(node.name.as_str()).or_default();
        for cidr in &node.pod_cidrs {
            match cidr.parse::<IpNet>() {
                Ok(net) if net.trunc() == net => {
                    entry.insert(net);
                }
                _ => report(&node.name, Problem::InvalidPodCidr(cidr.clone())),
            }
        }
    }
    out
}

/// Each node's Pods' addresses as host prefixes (/32, /128).
fn pod_prefixes(pods: &[PodView]) -> BTreeMap<&str, BTreeSet<IpNet>> {
    let mut out: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
    for pod in pods {
        out.entry(pod.node.as_str()).or_default().extend(pod.ips.iter().map(|ip| IpNet::from(*ip)));
    }
    out
}

/// Every (node, prefix) that overlaps a prefix of a different node, with those nodes.
///
/// Two CIDR prefixes overlap only when one contains the other, so after sorting by start address
/// (shorter prefix first) the prefixes covering any point form a nested chain: a stack sweep finds
/// every overlap in O(n log n), which matters at thousands of nodes.
fn contested_prefixes<'a>(
    prefixes: &BTreeMap<&'a str, BTreeSet<IpNet>>,
) -> BTreeMap<(&'a str, IpNet), BTreeSet<&'a str>> {
    let mut claims: Vec<(IpNet, &str)> =
        prefixes.iter().flat_map(|(node, nets)| nets.iter().map(move |net| (*net, *node))).collect();
    claims.sort();
    let mut contested: BTreeMap<(&str, IpNet), BTreeSet<&str>> = BTreeMap::new();
    let mut chain: Vec<(IpNet, &str)> = Vec::new();
    for (net, node) in claims {
        while chain.last().is_some_and(|(outer, _)| !outer.contains(&net.network())) {
            chain.pop();
        }
        for (outer, owner) in &chain {
            if *owner != node {
                contested.entry((node, net)).or_default().insert(owner);
                contested.entry((owner, *outer)).or_default().insert(node);
            }
        }
        chain.push((net, node));
    }
    contested
}

#[cfg(test)]
mod tests;
