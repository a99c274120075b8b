//! The peer set: which nodes this node exchanges pod traffic with, at which endpoint, for which
//! prefixes. A pure function of the Nodes the API server holds; every node it leaves out is
//! reported with the reason.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use foldhash::{HashMap, HashMapExt as _};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, NodeAddress, PodIP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use jiff::Timestamp;

use crate::aggregate::aggregate;
use crate::annotations::{AGENT_FIELD_MANAGER, PUBLIC_KEY, annotation_writers};
use crate::{NodeKeyAnnotations, PublicKey};

mod exception;
mod index;
mod remote;
pub use exception::{COMPUTE_TYPE_LABEL, NoAgentExpected, OS_LABEL};
pub use index::PeerIndex;
pub use remote::{RemoteNodeView, RemoteView, add_remote_peers};

/// What the peer set needs to know of one Node, read from fields the API server vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// `metadata.name`.
    pub name: String,
    /// Its published key, parsed from `metadata.annotations` ([`NodeView::parse_key`]): `Ok(None)`
    /// when it publishes none, `Err(why)` when its key annotations are malformed. Parsed once, when
    /// the view is made: checking a public key costs about 5 µs, 25 ms a pass at 5,000 nodes.
    pub key: Result<Option<NodeKeyAnnotations>, String>,
    /// The `InternalIP` entries of `status.addresses`, in order; unparsable entries are dropped.
    pub internal_ips: Vec<IpAddr>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`), as written.
    pub pod_cidrs: Vec<String>,
    /// `metadata.creationTimestamp`, set by the API server (a node cannot change it): a pod CIDR
    /// claimed by two Nodes stays with the older.
    pub created: Option<Timestamp>,
    /// When the API server recorded the latest write of the public-key annotation: the `time` of
    /// the `managedFields` entry that owns it (a node cannot backdate it). A key claimed by two
    /// Nodes stays with the one that claimed it first.
    pub key_claimed: Option<Timestamp>,
    /// Why the node is expected to run no agent (from its labels), if it is.
    pub no_agent: Option<NoAgentExpected>,
    /// The field managers owning its `meshcrypt.dev/` annotations, sorted, each once
    /// ([`crate::annotations::annotation_writers`]).
    pub annotation_writers: Vec<String>,
}

/// What a view is made from: a Node's metadata (its name, creation time, labels and
/// annotations), pod CIDRs and addresses, and the two facts its `managedFields` give.
#[derive(Debug, Clone, Copy)]
pub struct NodeFields<'a> {
    /// `metadata`.
    pub metadata: &'a ObjectMeta,
    /// `spec.podCIDR`.
    pub pod_cidr: Option<&'a String>,
    /// `spec.podCIDRs`.
    pub pod_cidrs: Option<&'a [String]>,
    /// `status.addresses`.
    pub addresses: Option<&'a [NodeAddress]>,
    /// When the public-key annotation was last written ([`key_claimed`]).
    pub key_claimed: Option<Timestamp>,
}

impl NodeView {
    /// Extracts the fields the mesh uses from a Node object.
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        Self::from_fields(
            NodeFields {
                metadata: &node.metadata,
                pod_cidr: spec.and_then(|s| s.pod_cidr.as_ref()),
                pod_cidrs: spec.and_then(|s| s.pod_cidrs.as_deref()),
                addresses: node.status.as_ref().and_then(|s| s.addresses.as_deref()),
                key_claimed: key_claimed(&node.metadata),
            },
            annotation_writers(&node.metadata),
        )
    }

    /// The view of a Node given by its fields, and the field managers owning its `meshcrypt.dev/`
    /// annotations.
    pub fn from_fields(node: NodeFields<'_>, annotation_writers: Vec<String>) -> Self {
        let mut pod_cidrs = node.pod_cidrs.map(<[String]>::to_vec).unwrap_or_default();
        if pod_cidrs.is_empty() {
            pod_cidrs.extend(node.pod_cidr.cloned());
        }
        let internal_ips = node
            .addresses
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let meta = node.metadata;
        Self {
            name: meta.name.clone().unwrap_or_default(),
            key: meta.annotations.as_ref().map_or(Ok(None), Self::parse_key),
            internal_ips,
            pod_cidrs,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            key_claimed: node.key_claimed,
            no_agent: meta.labels.as_ref().and_then(NoAgentExpected::from_labels),
            annotation_writers,
        }
    }
}

impl NodeView {
    /// The key a Node's annotations publish ([`NodeKeyAnnotations::parse`]), the error as text.
    pub fn parse_key(annotations: &BTreeMap<String, String>) -> Result<Option<NodeKeyAnnotations>, String> {
        NodeKeyAnnotations::parse(annotations).map_err(|e| e.to_string())
    }

    /// The valid key it publishes, if any.
    pub fn published_key(&self) -> Option<&NodeKeyAnnotations> {
        self.key.as_ref().ok().and_then(Option::as_ref)
    }

    /// The problem of a node whose `meshcrypt.dev/` annotations other field managers than the
    /// agent's own ([`AGENT_FIELD_MANAGER`]) own, if they do.
    pub fn foreign_writers(&self) -> Option<Problem> {
        let managers: Vec<String> =
            self.annotation_writers.iter().filter(|m| *m != AGENT_FIELD_MANAGER).cloned().collect();
        (!managers.is_empty()).then_some(Problem::ForeignAnnotationWriter { managers })
    }
}

/// When the API server recorded the latest write of a Node's public-key annotation: the latest
/// `time` among the `managedFields` entries of `meta` that own it.
pub fn key_claimed(meta: &ObjectMeta) -> Option<Timestamp> {
    let field = format!("f:{PUBLIC_KEY}");
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.fields_v1.as_ref().is_some_and(|f| f.0["f:metadata"]["f:annotations"].get(&field).is_some())
        })
        .filter_map(|entry| entry.time.as_ref().map(|t| t.0))
        .max()
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
    /// `metadata.creationTimestamp`: an address claimed by Pods on two nodes stays with the older.
    pub created: Option<Timestamp>,
}

/// What a Pod's view is made from: its identity, creation time, node, host-network flag, phase
/// and addresses, as the API server gives them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodFields<'a> {
    /// `metadata.namespace`.
    pub namespace: Option<&'a str>,
    /// `metadata.name`.
    pub name: Option<&'a str>,
    /// `metadata.creationTimestamp`.
    pub created: Option<&'a Time>,
    /// `spec.nodeName`.
    pub node_name: Option<&'a str>,
    /// `spec.hostNetwork`.
    pub host_network: Option<bool>,
    /// `status.phase`.
    pub phase: Option<&'a str>,
    /// `status.podIP`.
    pub pod_ip: Option<&'a str>,
    /// `status.podIPs`.
    pub pod_ips: Option<&'a [PodIP]>,
}

impl PodView {
    /// The view of a Pod that holds pod-network addresses on a node: `None` for host-network
    /// pods (their address is the node's), unscheduled pods, pods without an address yet, and
    /// pods that have finished (their address may already belong to another pod). Addresses that
    /// do not parse are dropped; `status.podIP` counts only when `status.podIPs` gives none.
    pub fn from_fields(pod: PodFields<'_>) -> Option<Self> {
        if pod.host_network == Some(true) || matches!(pod.phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let node = pod.node_name?.to_owned();
        let mut ips: Vec<IpAddr> =
            pod.pod_ips.into_iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
        if ips.is_empty() {
            ips.extend(pod.pod_ip.and_then(|ip| ip.parse::<IpAddr>().ok()));
        }
        if ips.is_empty() {
            return None;
        }
        let name = format!("{}/{}", pod.namespace.unwrap_or_default(), pod.name.unwrap_or_default());
        Some(Self { name, node, ips, created: pod.created.map(|t| t.0) })
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
    /// The node publishes a key another node claimed first (see [`key_claim`]): it is refused
    /// as a peer; the first claimant keeps the key.
    DuplicateKey {
        /// The other nodes claiming the same key, the holder first.
        with: Vec<String>,
    },
    /// Other nodes publish this node's key after it did: they are refused, this node keeps it.
    KeyClaimedByOthers {
        /// The nodes that copied the key.
        by: Vec<String>,
    },
    /// The node publishes this node's own key.
    ClaimsLocalKey,
    /// The node has no InternalIP in this node's address family.
    NoEndpoint,
    /// An entry of `spec.podCIDRs` is not a canonical prefix.
    InvalidPodCidr(String),
    /// A prefix overlaps one that other nodes claimed first (or one of this node's own): this
    /// node does not get it.
    ContestedPrefix {
        /// The prefix this node claims.
        prefix: IpNet,
        /// The other nodes whose prefixes overlap it.
        with: Vec<String>,
    },
    /// Other nodes claim prefixes overlapping this node's, after it: this node keeps its prefix.
    PrefixClaimedByOthers {
        /// The prefix this node holds.
        prefix: IpNet,
        /// The nodes whose later claims overlap it.
        by: Vec<String>,
    },
    /// The node's InternalIP (its endpoint) is another node's too. The Node created first keeps
    /// it (`refused: false`); the others are refused as peers, and so is any node claiming this
    /// node's own address (`with` names this node then).
    SharedInternalIp {
        /// The address.
        ip: IpAddr,
        /// The other nodes claiming it, the holder first.
        with: Vec<String>,
        /// This node is refused as a peer (else it keeps the address).
        refused: bool,
    },
    /// A peer cluster's node is malformed (its key, endpoint or a prefix does not parse).
    InvalidRemoteNode(String),
    /// A peer cluster's node claims a prefix overlapping one of this cluster's, or one an earlier
    /// peer cluster's node holds: never routed to it.
    RemoteOverlap {
        /// The prefix the remote node claims.
        prefix: IpNet,
        /// Who holds the overlapping prefix (a node of this cluster, or `<cluster>/<node>`).
        with: String,
    },
    /// Field managers other than the agent's own own some of the node's `meshcrypt.dev/`
    /// annotations (a `kubectl annotate`, another controller): reported by the node's own agent,
    /// which publishes its key again.
    ForeignAnnotationWriter {
        /// The other field managers.
        managers: Vec<String>,
    },
    /// A peer cluster's pre-shared key file is unusable.
    InvalidPresharedKey {
        /// Why (never a part of the value).
        reason: String,
        /// The last good key stays in use (else the cluster's nodes are left out).
        kept: bool,
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
            Self::KeyClaimedByOthers { .. } => "KeyClaimedByOthers",
            Self::NoEndpoint => "NoInternalIP",
            Self::InvalidPodCidr(_) => "InvalidPodCIDR",
            Self::ContestedPrefix { .. } => "ContestedPrefix",
            Self::PrefixClaimedByOthers { .. } => "PrefixClaimedByOthers",
            Self::InvalidRemoteNode(_) => "InvalidRemoteNode",
            Self::RemoteOverlap { .. } => "RemotePrefixOverlap",
            Self::InvalidPresharedKey { .. } => "InvalidPresharedKey",
            Self::ForeignAnnotationWriter { .. } => "ForeignKeyWriter",
            Self::SharedInternalIp { .. } => "SharedInternalIP",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKey => f.write_str("no meshcrypt key published"),
            Self::InvalidAnnotation(why) => write!(f, "invalid key annotation: {why}"),
            Self::DuplicateKey { with } => {
                write!(f, "public key already claimed by {}: refused", with.join(", "))
            }
            Self::KeyClaimedByOthers { by } => {
                write!(f, "public key copied later by {} (refused); kept by this node", by.join(", "))
            }
            Self::ClaimsLocalKey => f.write_str("publishes this node's public key"),
            Self::NoEndpoint => f.write_str("no InternalIP in the underlay's address family"),
            Self::InvalidPodCidr(cidr) => write!(f, "pod CIDR {cidr:?} is not a canonical prefix"),
            Self::ContestedPrefix { prefix, with } => {
                write!(
                    f,
                    "pod prefix {prefix} overlaps prefixes of {} claimed first: refused",
                    with.join(", ")
                )
            }
            Self::PrefixClaimedByOthers { prefix, by } => {
                write!(
                    f,
                    "pod prefix {prefix} overlapped later by {} (refused); kept by this node",
                    by.join(", ")
                )
            }
            Self::InvalidRemoteNode(why) => write!(f, "invalid remote node: {why}"),
            Self::RemoteOverlap { prefix, with } => {
                write!(f, "prefix {prefix} overlaps {with}'s: refused, never routed to this remote node")
            }
            Self::SharedInternalIp { ip, with, refused: true } => {
                write!(f, "InternalIP {ip} is also claimed by {} (first): refused as a peer", with.join(", "))
            }
            Self::SharedInternalIp { ip, with, refused: false } => {
                write!(f, "InternalIP {ip} claimed later by {} (refused); kept by this node", with.join(", "))
            }
            Self::ForeignAnnotationWriter { managers } => write!(
                f,
                "meshcrypt.dev/ annotations written by field manager {} (only the node's agent may write them): the agent publishes its own key again; the API server's audit log names the principal",
                managers.join(", ")
            ),
            Self::InvalidPresharedKey { reason, kept: true } => {
                write!(f, "pre-shared key file: {reason}; the last good key stays in use")
            }
            Self::InvalidPresharedKey { reason, kept: false } => {
                write!(
                    f,
                    "pre-shared key file: {reason}; this cluster's nodes are not peered until it is fixed"
                )
            }
        }
    }
}

/// A node left out of the peer set (wholly or in part), or holding a claim others contest, and
/// why.
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
    /// Nodes (or prefixes) left out, in node-name order. A node expected to run no agent
    /// ([`NodeView::no_agent`]) and without a key is no problem: it is simply no peer.
    pub problems: Vec<NodeProblem>,
}

/// Computes the peers of `local` from every Node in `nodes` (which includes the local Node) and,
/// in pod-IP mode, every Pod in `pods`.
///
/// A peer is another node with a valid key and an InternalIP in the local underlay's family. A key
/// published by several Nodes stays with the one that claimed it first ([`key_claim`]); the
/// others are refused, so copying a public key (which is public) cannot cut its holder off. A
/// node's allowed IPs are its pod CIDRs (or its Pods' addresses), less any prefix that overlaps one
/// claimed earlier by another node, or one of the local node's own: an overlapping claim never
/// redirects traffic, and the established claim keeps working; its node address (its endpoint) is
/// among them too, so that its host network can talk to pods here. Both sides of every conflict
/// are reported.
///
/// `nodes` holds the views themselves or anything that lends them (`Arc<NodeView>`, `&NodeView`).
pub fn desired_peers<N: Borrow<NodeView>>(
    nodes: &[N],
    pods: &[&PodView],
    local: &LocalNode,
    config: &MeshConfig,
) -> PeerSet {
    peers_seen_by(&lent(nodes), pods, &SeenBy::node(local, config), config)
}

/// Every node of the cluster that is a peer to the others, as a node outside it would see them
/// (no local name, no local key; endpoints in the IPv4 family if `ipv4`, else IPv6), with the same
/// rules as [`desired_peers`]: what a cluster publishes about itself to its peer clusters.
pub fn cluster_members<N: Borrow<NodeView>>(
    nodes: &[N],
    pods: &[&PodView],
    ipv4: bool,
    config: &MeshConfig,
) -> PeerSet {
    let outside = SeenBy { name: "", key: None, ip: None, ipv4, port: config.port };
    peers_seen_by(&lent(nodes), pods, &outside, config)
}

/// The views `nodes` lend.
fn lent<N: Borrow<NodeView>>(nodes: &[N]) -> Vec<&NodeView> {
    nodes.iter().map(Borrow::borrow).collect()
}

/// Who the peers are seen by: a node's name (`""`: none of the cluster's), key and underlay
/// address, and how it reaches them: endpoints in the IPv4 family if `ipv4` (else IPv6), on UDP
/// `port`.
struct SeenBy<'a> {
    name: &'a str,
    key: Option<PublicKey>,
    ip: Option<IpAddr>,
    ipv4: bool,
    port: u16,
}

impl<'a> SeenBy<'a> {
    /// The peers as the cluster's node `local` sees them, in its underlay's family.
    fn node(local: &'a LocalNode, config: &MeshConfig) -> Self {
        SeenBy {
            name: &local.name,
            key: Some(local.public_key),
            ip: Some(local.underlay_ip),
            ipv4: local.underlay_ip.is_ipv4(),
            port: config.port,
        }
    }
}

/// The peers as seen by `local`.
fn peers_seen_by(nodes: &[&NodeView], pods: &[&PodView], local: &SeenBy<'_>, config: &MeshConfig) -> PeerSet {
    let local_name = local.name;
    let mut problems = Vec::new();
    let mut report =
        |node: &str, problem: Problem| problems.push(NodeProblem { node: node.to_owned(), problem });

    let prefixes = match config.allowed_ips {
        AllowedIpsFrom::PodCidrs => valid_prefixes(nodes, &mut report),
        AllowedIpsFrom::PodIps => pod_prefixes(pods),
    };
    let conflicts = contested_prefixes(&prefixes, local_name);
    let local_prefixes =
        finish(config.allowed_ips, prefixes.get(local_name).into_iter().flatten().map(|(net, _)| *net));

    let mut keyed: Vec<(&NodeView, &NodeKeyAnnotations)> = Vec::with_capacity(nodes.len());
    for node in nodes.iter().copied().filter(|n| n.name != local_name) {
        match &node.key {
            Ok(Some(key)) => keyed.push((node, key)),
            Ok(None) if node.no_agent.is_some() => {}
            Ok(None) => report(&node.name, Problem::NoKey),
            Err(why) => report(&node.name, Problem::InvalidAnnotation(why.clone())),
        }
    }
    // Each key and each endpoint address claimed by more than one keyed node, with the claimants
    // in the order their claims are honoured: keys by `key_claim`, addresses by the Node's age.
    // Hash maps of the first claimant, not ordered maps of every claim: a pass at 5,000 nodes
    // must not spend its time comparing keys.
    let key_claims = shared(keyed.iter().map(|(node, key)| (key.public_key, *node)), key_claim);
    let address_claims = shared(
        keyed.iter().filter_map(|(node, _)| Some((endpoint(node, local.ipv4)?, *node))),
        address_claim,
    );

    let mut peers = Vec::with_capacity(keyed.len());
    for (node, key) in keyed {
        let allowed = || {
            finish(
                config.allowed_ips,
                prefixes
                    .get(node.name.as_str())
                    .into_iter()
                    .flatten()
                    .map(|(net, _)| *net)
                    .filter(|p| conflicts.get(&(node.name.as_str(), *p)).is_none_or(Conflict::routed)),
            )
        };
        let peer = judge_keyed(
            node,
            key,
            key_claims.get(&key.public_key).map(Vec::as_slice),
            |ip| address_claims.get(&ip).cloned(),
            local,
            allowed,
            &mut |problem| report(&node.name, problem),
        );
        peers.extend(peer.map(|p| (node.name.clone(), p)));
    }
    for ((node, prefix), conflict) in conflicts {
        report(node, conflict_problem(prefix, conflict));
    }
    problems.sort_by(|a, b| a.node.cmp(&b.node));
    // Sorted, then built in bulk, not inserted one by one.
    peers.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let peers = peers.into_iter().collect();
    PeerSet { peers, local_prefixes, problems }
}

/// The address of `node` its peers send to: its first InternalIP in the underlay's family
/// (IPv4 if `ipv4`).
fn endpoint(node: &NodeView, ipv4: bool) -> Option<IpAddr> {
    node.internal_ips.iter().copied().find(|ip| ip.is_ipv4() == ipv4)
}

/// The order in which claims of one endpoint address are honoured: the older Node first, then
/// the name.
fn address_claim(node: &NodeView) -> (Timestamp, &str) {
    (node.created.unwrap_or(Timestamp::MAX), node.name.as_str())
}

/// The order of a Node's claim of its pod CIDRs: its creation, then its name.
fn cidr_claim(node: &NodeView) -> ClaimOrder<'_> {
    (node.created.unwrap_or(Timestamp::MAX), Timestamp::MAX, node.name.as_str())
}

/// The order of a Pod's claim of its addresses: its creation, then its name.
fn pod_claim(pod: &PodView) -> ClaimOrder<'_> {
    (pod.created.unwrap_or(Timestamp::MAX), Timestamp::MAX, pod.name.as_str())
}

/// Judges one keyed node other than the observer: its peer, or `None` when it is refused.
///
/// `key_rivals` lists every keyed node publishing its key, itself included, in [`key_claim`]
/// order (`None`: no other node publishes it); `address_rivals` gives the same for an endpoint
/// address, in [`address_claim`] order. `allowed` gives its routed pod prefixes. Each problem
/// found goes to `report`, in the order the peer set lists them.
fn judge_keyed<'v>(
    node: &NodeView,
    key: &NodeKeyAnnotations,
    key_rivals: Option<&[&'v NodeView]>,
    address_rivals: impl FnOnce(IpAddr) -> Option<Vec<&'v NodeView>>,
    local: &SeenBy<'_>,
    allowed: impl FnOnce() -> Vec<IpNet>,
    report: &mut impl FnMut(Problem),
) -> Option<Peer> {
    if Some(key.public_key) == local.key {
        report(Problem::ClaimsLocalKey);
        return None;
    }
    // The first claimant holds the key.
    if let Some(claims) = key_rivals {
        let others: Vec<String> =
            claims.iter().filter(|n| n.name != node.name).map(|n| n.name.clone()).collect();
        if claims[0].name != node.name {
            report(Problem::DuplicateKey { with: others });
            return None;
        }
        report(Problem::KeyClaimedByOthers { by: others });
    }
    let Some(ip) = endpoint(node, local.ipv4) else {
        report(Problem::NoEndpoint);
        return None;
    };
    if Some(ip) == local.ip {
        report(Problem::SharedInternalIp { ip, with: vec![local.name.to_owned()], refused: true });
        return None;
    }
    if let Some(holders) = address_rivals(ip) {
        let with = holders.iter().filter(|n| n.name != node.name).map(|n| n.name.clone()).collect();
        let refused = holders[0].name != node.name;
        report(Problem::SharedInternalIp { ip, with, refused });
        if refused {
            return None;
        }
    }
    // The node's own address too: traffic between its host network and pods here is pod
    // traffic, encrypted both ways (the routing step decides what is steered to it).
    let mut allowed_ips = allowed();
    allowed_ips.push(IpNet::from(ip));
    allowed_ips.sort();
    allowed_ips.dedup();
    Some(Peer {
        node: node.name.clone(),
        public_key: key.public_key,
        key_epoch: key.epoch,
        endpoint: SocketAddr::new(ip, local.port),
        allowed_ips,
    })
}

/// The order in which claims are honoured: the earliest first. A claim of unknown age counts as
/// the newest; equal times fall to the next field, and the name last, so every node decides the
/// same way, and the same after a restart (the inputs are the API server's, not the agent's).
pub type ClaimOrder<'a> = (Timestamp, Timestamp, &'a str);

/// How senior `node`'s claim of its published key is: when the API server recorded the key's
/// annotation, then when the Node was created, then its name.
pub fn key_claim(node: &NodeView) -> ClaimOrder<'_> {
    (node.key_claimed.unwrap_or(Timestamp::MAX), node.created.unwrap_or(Timestamp::MAX), &node.name)
}

/// Each node's claimed prefixes, sorted, each once, with the order of its claim.
type Claims<'a> = HashMap<&'a str, Vec<(IpNet, ClaimOrder<'a>)>>;

/// Each node's canonical pod prefixes with the order of their claims (the Node's creation);
/// invalid entries are reported.
fn valid_prefixes<'a>(nodes: &[&'a NodeView], report: &mut impl FnMut(&str, Problem)) -> Claims<'a> {
    let mut out: Claims<'a> = HashMap::with_capacity(nodes.len());
    for &node in nodes {
        let order = cidr_claim(node);
        let entry = out.entry(node.name.as_str()).or_default();
        for cidr in &node.pod_cidrs {
            match valid_cidr(cidr) {
                Some(net) => entry.push((net, order)),
                None => report(&node.name, Problem::InvalidPodCidr(cidr.clone())),
            }
        }
    }
    out.values_mut().for_each(earliest_claims);
    out
}

/// A pod CIDR as written, if it is a canonical prefix.
fn valid_cidr(cidr: &str) -> Option<IpNet> {
    cidr.parse::<IpNet>().ok().filter(|net| net.trunc() == *net)
}

/// A node's allowed pod prefixes from its claimed ones, sorted: as claimed in podCIDR mode; in
/// pod-IP mode its addresses aggregated into the fewest prefixes ([`aggregate`]).
fn finish(mode: AllowedIpsFrom, claimed: impl Iterator<Item = IpNet>) -> Vec<IpNet> {
    match mode {
        AllowedIpsFrom::PodCidrs => claimed.collect(),
        AllowedIpsFrom::PodIps => aggregate(&claimed.map(|n| n.addr()).collect()),
    }
}

/// The problem a conflict over `prefix` is reported as, to its claimant.
fn conflict_problem(prefix: IpNet, conflict: Conflict<'_>) -> Problem {
    let others = conflict.with.into_iter().map(str::to_owned).collect();
    if conflict.established {
        Problem::PrefixClaimedByOthers { prefix, by: others }
    } else {
        Problem::ContestedPrefix { prefix, with: others }
    }
}

/// Each node's Pods' addresses as host prefixes (/32, /128), ordered by the Pod's creation (then
/// its name).
fn pod_prefixes<'a>(pods: &[&'a PodView]) -> Claims<'a> {
    let mut out: Claims<'a> = HashMap::new();
    for &pod in pods {
        let order = pod_claim(pod);
        out.entry(pod.node.as_str()).or_default().extend(pod.ips.iter().map(|ip| (IpNet::from(*ip), order)));
    }
    out.values_mut().for_each(earliest_claims);
    out
}

/// Sorts one node's claims by prefix and keeps each prefix's earliest claim.
fn earliest_claims(claims: &mut Vec<(IpNet, ClaimOrder<'_>)>) {
    claims.sort_unstable();
    claims.dedup_by_key(|(net, _)| *net);
}

/// The items of `claims` (what is claimed, by whom) claimed more than once, each with its
/// claimants in the order `rank` gives (the first holds it).
fn shared<'a, T: Eq + Hash + Copy, R: Ord>(
    claims: impl Iterator<Item = (T, &'a NodeView)>,
    rank: impl Fn(&'a NodeView) -> R,
) -> HashMap<T, Vec<&'a NodeView>> {
    let mut first: HashMap<T, &NodeView> = HashMap::new();
    let mut shared: HashMap<T, Vec<&NodeView>> = HashMap::new();
    for (item, node) in claims {
        match first.entry(item) {
            Entry::Vacant(vacant) => {
                vacant.insert(node);
            }
            Entry::Occupied(holder) => shared.entry(item).or_insert_with(|| vec![*holder.get()]).push(node),
        }
    }
    for claimants in shared.values_mut() {
        claimants.sort_by_key(|n| rank(n));
    }
    shared
}

/// One claimed prefix that overlaps prefixes of other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conflict<'a> {
    /// The other nodes whose prefixes overlap it.
    with: BTreeSet<&'a str>,
    /// It was claimed before every claim it overlaps (see [`ClaimOrder`]).
    established: bool,
    /// It overlaps a prefix of the local node, whose own pods it would take.
    overlaps_local: bool,
}

impl Conflict<'_> {
    /// Whether the prefix is routed to its claimant: established, and not over local pods.
    fn routed(&self) -> bool {
        self.established && !self.overlaps_local
    }
}

/// Every (node, prefix) that overlaps a prefix of a different node, with those nodes and whether
/// it is the established claim.
///
/// Two CIDR prefixes overlap only when one contains the other, so after sorting by start address
/// (shorter prefix first) the prefixes covering any point form a nested chain: a stack sweep finds
/// every overlap in O(n log n), which matters at thousands of nodes.
fn contested_prefixes<'a>(prefixes: &Claims<'a>, local: &str) -> BTreeMap<(&'a str, IpNet), Conflict<'a>> {
    let mut claims: Vec<(IpNet, &str, ClaimOrder<'a>)> = prefixes
        .iter()
        .flat_map(|(node, nets)| nets.iter().map(move |(net, order)| (*net, *node, *order)))
        .collect();
    claims.sort_unstable();
    let mut conflicts: BTreeMap<(&str, IpNet), Conflict<'a>> = BTreeMap::new();
    let mut chain: Vec<(IpNet, &str, ClaimOrder<'a>)> = Vec::new();
    for (net, node, order) in claims {
        while chain.last().is_some_and(|(outer, _, _)| !outer.contains(&net.network())) {
            chain.pop();
        }
        for (outer, owner, outer_order) in &chain {
            if *owner == node {
                continue;
            }
            for (claim, other, mine, theirs) in
                [((node, net), *owner, order, *outer_order), ((*owner, *outer), node, *outer_order, order)]
            {
                let c = conflicts.entry(claim).or_insert_with(|| Conflict {
                    with: BTreeSet::new(),
                    established: true,
                    overlaps_local: false,
                });
                c.with.insert(other);
                c.established &= mine < theirs;
                c.overlaps_local |= other == local;
            }
        }
        chain.push((net, node, order));
    }
    conflicts
}

#[cfg(test)]
mod tests;
