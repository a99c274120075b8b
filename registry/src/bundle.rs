//! The bundle: one cluster's nodes as its peer clusters need them, and the checks a received one
//! must pass before any of it is used.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use ipnet::IpNet;
use meshcrypt_keyexchange::PublicKey;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The most nodes a bundle may list (EKS's documented maximum is 5,000 nodes per cluster; this
/// leaves room and bounds what a hostile bundle can make a reader allocate).
pub const MAX_NODES: usize = 10_000;

/// One cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The cluster's id: a DNS label (1–63 of `a-z`, `0-9`, `-`), unique among the peered clusters;
    /// it names the cluster's secrets (`meshcrypt/<cluster>/...`).
    pub cluster: String,
    /// Grows with every change the cluster publishes; a reader refuses one lower than the last it
    /// accepted (a replay or a rollback).
    pub generation: u64,
    /// The nodes, sorted by name.
    pub nodes: Vec<BundleNode>,
}

/// One node of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleNode {
    /// The Node's name in its cluster.
    pub name: String,
    /// Its WireGuard public key.
    pub public_key: PublicKey,
    /// Its key epoch (how often its key was replaced).
    pub key_epoch: u64,
    /// Where peers in other clusters send to: an address they can reach (over VPC peering or a
    /// Transit Gateway, the node's InternalIP) and the mesh port.
    pub endpoint: SocketAddr,
    /// The prefixes routed to it: its pods' (pod CIDRs, or its pods' addresses aggregated), sorted,
    /// without host bits.
    pub allowed_ips: Vec<IpNet>,
}

/// The encoded form: short field names keep 5,000 nodes in about a dozen 64 KiB shards.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Wire {
    /// Format version: 1.
    pub v: u32,
    /// Cluster id.
    pub c: String,
    /// Generation.
    pub g: u64,
    /// Nodes.
    pub n: Vec<WireNode>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireNode {
    /// Name.
    n: String,
    /// Public key, WireGuard base64.
    k: String,
    /// Key epoch.
    e: u64,
    /// Endpoint.
    p: SocketAddr,
    /// Allowed IPs.
    a: Vec<IpNet>,
}

/// The format version [`Wire::v`] this crate writes and reads.
pub(crate) const VERSION: u32 = 1;

impl Bundle {
    /// Checks what a reader relies on: a valid cluster id, at most [`MAX_NODES`] nodes sorted by
    /// unique, valid names, no public key twice, allowed IPs sorted, unique and without host bits.
    /// Errors name the node and what is wrong ([`Error::Invalid`]).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: String| Err(Error::Invalid(what));
        if !is_dns_label(&self.cluster) {
            return invalid(format!("cluster id {:?} is not a DNS label", self.cluster));
        }
        if self.nodes.len() > MAX_NODES {
            return invalid(format!("{} nodes, at most {MAX_NODES}", self.nodes.len()));
        }
        let mut keys = BTreeSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !is_node_name(&node.name) {
                return invalid(format!("node name {:?} is not a DNS subdomain", node.name));
            }
            if i > 0 && self.nodes[i - 1].name >= node.name {
                return invalid(format!("node {:?}: names not sorted or not unique", node.name));
            }
            if !keys.insert(node.public_key) {
                return invalid(format!("node {:?}: public key listed twice", node.name));
            }
            if node.endpoint.port() == 0 || node.endpoint.ip().is_unspecified() {
                return invalid(format!("node {:?}: endpoint {} is not reachable", node.name, node.endpoint));
            }
            for pair in node.allowed_ips.windows(2) {
                if pair[0] >= pair[1] {
                    return invalid(format!("node {:?}: allowed IPs not sorted or not unique", node.name));
                }
            }
            if let Some(net) = node.allowed_ips.iter().find(|n| n.trunc() != **n) {
                return invalid(format!("node {:?}: allowed IP {net} has host bits", node.name));
            }
        }
        Ok(())
    }

    pub(crate) fn to_wire(&self) -> Wire {
        Wire {
            v: VERSION,
            c: self.cluster.clone(),
            g: self.generation,
            n: self
                .nodes
                .iter()
                .map(|n| WireNode {
                    n: n.name.clone(),
                    k: n.public_key.to_string(),
                    e: n.key_epoch,
                    p: n.endpoint,
                    a: n.allowed_ips.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn from_wire(wire: Wire) -> Result<Self, Error> {
        if wire.v != VERSION {
            return Err(Error::Version(wire.v));
        }
        let nodes = wire
            .n
            .into_iter()
            .map(|n| {
                let public_key =
                    n.k.parse().map_err(|source| Error::NodeKey { node: n.n.clone(), source })?;
                Ok(BundleNode { name: n.n, public_key, key_epoch: n.e, endpoint: n.p, allowed_ips: n.a })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let bundle = Self { cluster: wire.c, generation: wire.g, nodes };
        bundle.validate()?;
        Ok(bundle)
    }
}

/// RFC 1123 label: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes Node name: an RFC 1123 subdomain (dot-separated labels, 253 bytes at most).
fn is_node_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::PrivateKey;

    fn node(name: &str) -> BundleNode {
        BundleNode {
            name: name.into(),
            public_key: PrivateKey::generate().public_key(),
            key_epoch: 0,
            endpoint: "10.1.0.5:51820".parse().unwrap(),
            allowed_ips: vec!["10.245.1.0/24".parse().unwrap()],
        }
    }

    fn bundle(nodes: Vec<BundleNode>) -> Bundle {
        Bundle { cluster: "prod-a".into(), generation: 7, nodes }
    }

    #[test]
    fn validate_table() {
        type Change = fn(&mut Bundle);
        let rows: Vec<(&str, Change, Option<&str>)> = vec![
            ("valid", |_| {}, None),
            ("empty is valid", |b| b.nodes.clear(), None),
            ("cluster id with capitals", |b| b.cluster = "Prod".into(), Some("not a DNS label")),
            ("cluster id with a slash", |b| b.cluster = "a/b".into(), Some("not a DNS label")),
            ("empty cluster id", |b| b.cluster.clear(), Some("not a DNS label")),
            ("node name not a subdomain", |b| b.nodes[0].name = "Node_1".into(), Some("not a DNS subdomain")),
            ("unsorted", |b| b.nodes.swap(0, 1), Some("not sorted or not unique")),
            (
                "duplicate name",
                |b| b.nodes[1].name = b.nodes[0].name.clone(),
                Some("not sorted or not unique"),
            ),
            (
                "duplicate key",
                |b| b.nodes[1].public_key = b.nodes[0].public_key,
                Some("public key listed twice"),
            ),
            ("port 0", |b| b.nodes[0].endpoint.set_port(0), Some("not reachable")),
            (
                "unspecified address",
                |b| b.nodes[0].endpoint = "0.0.0.0:51820".parse().unwrap(),
                Some("not reachable"),
            ),
            (
                "host bits",
                |b| b.nodes[0].allowed_ips = vec!["10.245.1.1/24".parse().unwrap()],
                Some("host bits"),
            ),
            (
                "unsorted allowed IPs",
                |b| {
                    b.nodes[0].allowed_ips =
                        vec!["10.245.2.0/24".parse().unwrap(), "10.245.1.0/24".parse().unwrap()]
                },
                Some("not sorted or not unique"),
            ),
        ];
        for (name, change, want) in rows {
            let mut b = bundle(vec![node("ip-10-1-0-5.ec2.internal"), node("ip-10-1-0-6.ec2.internal")]);
            change(&mut b);
            match (b.validate(), want) {
                (Ok(()), None) => {}
                (Err(Error::Invalid(why)), Some(want)) => assert!(why.contains(want), "{name}: {why}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
