//! Who an address is: the pods, nodes and peers the agent knows, indexed for naming the two ends
//! of a flow. Built afresh from the stores at each export (pure: the stores' contents in, the
//! index out).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use meshcrypt_keyexchange::PublicKey;

use crate::agent::slim_node::SlimNode;
use crate::agent::slim_pod::SlimPod;

/// A pod as flow records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The node it is scheduled to.
    pub node: Option<String>,
    /// The labels asked for (`flow-labels`) that it carries.
    pub labels: BTreeMap<String, String>,
}

/// A peer as flow records name it: its node and, for a peer cluster's node, that cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node's name.
    pub node: String,
    /// The peer cluster's id (`None`: this cluster).
    pub cluster: Option<String>,
}

/// The index.
#[derive(Debug, Default)]
pub struct Directory {
    pods: HashMap<IpAddr, PodInfo>,
    node_addresses: HashMap<IpAddr, String>,
    /// Each Node's `spec.podCIDRs`, grouped by prefix length for exact-match lookups.
    pod_cidrs: BTreeMap<u8, HashMap<IpNet, String>>,
    peers: BTreeMap<PublicKey, PeerInfo>,
}

impl Directory {
    /// Indexes `pods` (a pod listed twice keeps its last entry: pass the cluster's store first and
    /// this node's, which carries labels, last), `nodes` (InternalIP and podCIDRs) and `peers`
    /// (each peer's name as the peer set gives it: `node`, or `cluster/node` for a peer cluster's
    /// node). Host-network pods share their node's address and are left out; of two pods holding
    /// one address (a finished pod's address given to a new one) a running one wins.
    pub fn build<'a>(
        pods: impl IntoIterator<Item = &'a SlimPod>,
        nodes: impl IntoIterator<Item = &'a SlimNode>,
        peers: &BTreeMap<PublicKey, String>,
        labels: &[String],
    ) -> Self {
        let mut dir = Directory::default();
        let mut finished: BTreeSet<IpAddr> = BTreeSet::new();
        for pod in pods {
            let spec = pod.spec.as_ref();
            if spec.and_then(|s| s.host_network).unwrap_or(false) {
                continue;
            }
            let status = pod.status.as_ref();
            let done =
                status.and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
            let all_labels = pod.metadata.labels.as_ref();
            let info = PodInfo {
                name: pod.metadata.name.clone().unwrap_or_default(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                node: spec.and_then(|s| s.node_name.clone()),
                labels: labels
                    .iter()
                    .filter_map(|k| all_labels.and_then(|l| l.get(k)).map(|v| (k.clone(), v.clone())))
                    .collect(),
            };
            let ips = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten();
            for ip in ips.filter_map(|a| a.ip.parse::<IpAddr>().ok()) {
                if done && dir.pods.contains_key(&ip) && !finished.contains(&ip) {
                    continue;
                }
                if done {
                    finished.insert(ip);
                } else {
                    finished.remove(&ip);
                }
                dir.pods.insert(ip, info.clone());
            }
        }
        for node in nodes {
            let Some(name) = node.metadata.name.clone() else { continue };
            let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref()).into_iter().flatten();
            for a in addresses.filter(|a| a.type_ == "InternalIP") {
                if let Ok(ip) = a.address.parse::<IpAddr>() {
                    dir.node_addresses.insert(ip, name.clone());
                }
            }
            let cidrs = node.spec.as_ref().and_then(|s| s.pod_cidrs.as_ref()).into_iter().flatten();
            for cidr in cidrs.filter_map(|c| c.parse::<IpNet>().ok()) {
                dir.pod_cidrs.entry(cidr.prefix_len()).or_default().insert(cidr.trunc(), name.clone());
            }
        }
        dir.peers = peers
            .iter()
            .map(|(key, name)| {
                let info = match name.split_once('/') {
                    Some((cluster, node)) => {
                        PeerInfo { node: node.to_owned(), cluster: Some(cluster.to_owned()) }
                    }
                    None => PeerInfo { node: name.clone(), cluster: None },
                };
                (*key, info)
            })
            .collect();
        dir
    }

    /// The pod holding `ip`, if the agent knows one.
    pub fn pod(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pods.get(&ip)
    }

    /// The node `ip` belongs to: a node's InternalIP, or an address in its podCIDRs.
    pub fn node(&self, ip: IpAddr) -> Option<&str> {
        if let Some(name) = self.node_addresses.get(&ip) {
            return Some(name);
        }
        self.pod_cidrs.iter().rev().find_map(|(len, nets)| {
            let net = IpNet::new(ip, *len).ok()?.trunc();
            nets.get(&net).map(String::as_str)
        })
    }

    /// The peer with `key`.
    pub fn peer(&self, key: &PublicKey) -> Option<&PeerInfo> {
        self.peers.get(key)
    }
}
