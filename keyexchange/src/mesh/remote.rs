//! Peers from other clusters: each peer cluster's nodes (as the registry read them from the
//! cluster's verified bundle) join this node's peer set, never at the cost of a claim made in this
//! cluster, and never two clusters on one prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ipnet::IpNet;

use super::{LocalNode, NodeProblem, Peer, PeerSet, Problem};
use crate::PublicKey;

/// One peer cluster's nodes, as written in its `RemoteCluster` object: strings, parsed strictly
/// here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteView {
    /// The peer cluster's id.
    pub cluster: String,
    /// Its nodes.
    pub nodes: Vec<RemoteNodeView>,
}

/// One node of a peer cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNodeView {
    /// The node's name in its cluster.
    pub name: String,
    /// Its WireGuard public key (base64).
    pub public_key: String,
    /// Its key epoch.
    pub key_epoch: u64,
    /// `address:port` reachable from this cluster.
    pub endpoint: String,
    /// Its pod prefixes.
    pub allowed_ips: Vec<String>,
}

/// Adds the nodes of `remotes` to `peers` (this cluster's peer set for `local`), clusters in name
/// order. A remote node is refused when its key does not parse or is already a peer's, this node's,
/// or `local_keys`' (every key published in this cluster), or when its endpoint is not an
/// `address:port` in the local underlay's family. A prefix that does not parse, or overlaps a
/// prefix of this cluster (this node's, a peer's) or one an earlier remote node holds, is refused
/// and the node keeps the rest; its endpoint address joins its allowed IPs unless it overlaps too.
/// Remote peers are keyed `<cluster>/<node>`; every refusal is reported under that name.
pub fn add_remote_peers(
    peers: &mut PeerSet,
    remotes: &[RemoteView],
    local: &LocalNode,
    local_keys: &BTreeSet<PublicKey>,
) {
    let mut held: Vec<(IpNet, String)> = peers
        .local_prefixes
        .iter()
        .map(|p| (*p, local.name.clone()))
        .chain(std::iter::once((IpNet::from(local.underlay_ip), local.name.clone())))
        .chain(peers.peers.values().flat_map(|p| p.allowed_ips.iter().map(|a| (*a, p.node.clone()))))
        .collect();
    let mut keys: BTreeMap<PublicKey, String> =
        peers.peers.values().map(|p| (p.public_key, p.node.clone())).collect();
    keys.insert(local.public_key, local.name.clone());
    let mut clusters: Vec<&RemoteView> = remotes.iter().collect();
    clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    for cluster in clusters {
        for node in &cluster.nodes {
            let id = format!("{}/{}", cluster.cluster, node.name);
            let mut report = |problem| peers.problems.push(NodeProblem { node: id.clone(), problem });
            let public_key: PublicKey = match node.public_key.parse() {
                Ok(key) => key,
                Err(e) => {
                    report(Problem::InvalidRemoteNode(format!("public key: {e}")));
                    continue;
                }
            };
            if let Some(holder) = keys.get(&public_key) {
                report(Problem::DuplicateKey { with: vec![holder.clone()] });
                continue;
            }
            if local_keys.contains(&public_key) {
                report(Problem::DuplicateKey { with: vec!["a node of this cluster".into()] });
                continue;
            }
            let endpoint: SocketAddr = match node.endpoint.parse() {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    report(Problem::InvalidRemoteNode(format!("endpoint {:?}: {e}", node.endpoint)));
                    continue;
                }
            };
            if endpoint.is_ipv4() != local.underlay_ip.is_ipv4() || endpoint.port() == 0 {
                report(Problem::NoEndpoint);
                continue;
            }
            let mut allowed_ips = Vec::new();
            let claims = node.allowed_ips.iter().map(|a| (a.parse::<IpNet>(), a.as_str()));
            let address = std::iter::once((Ok(IpNet::from(endpoint.ip())), ""));
            for (parsed, text) in claims.chain(address) {
                let prefix = match parsed {
                    Ok(p) if p.trunc() == p => p,
                    _ => {
                        report(Problem::InvalidRemoteNode(format!("prefix {text:?} is not canonical")));
                        continue;
                    }
                };
                if let Some((_, holder)) =
                    held.iter().find(|(h, _)| h.contains(&prefix) || prefix.contains(h))
                {
                    report(Problem::RemoteOverlap { prefix, with: holder.clone() });
                    continue;
                }
                allowed_ips.push(prefix);
            }
            allowed_ips.sort();
            allowed_ips.dedup();
            held.extend(allowed_ips.iter().map(|p| (*p, id.clone())));
            keys.insert(public_key, id.clone());
            peers.peers.insert(
                id.clone(),
                Peer { node: id, public_key, key_epoch: node.key_epoch, endpoint, allowed_ips },
            );
        }
    }
    peers.problems.sort_by(|a, b| a.node.cmp(&b.node));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;
    use std::sync::OnceLock;

    fn key(n: usize) -> PublicKey {
        static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
        KEYS.get_or_init(|| (0..8).map(|_| PrivateKey::generate().public_key()).collect())[n]
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// This cluster: node-a (this node, key 0, 10.244.0.0/24 at 198.18.0.1) and its peer node-b
    /// (key 1, 10.244.1.0/24 at 198.18.0.2).
    fn local_set() -> (PeerSet, LocalNode) {
        let b = Peer {
            node: "node-b".into(),
            public_key: key(1),
            key_epoch: 0,
            endpoint: "198.18.0.2:51820".parse().unwrap(),
            allowed_ips: vec![net("10.244.1.0/24"), net("198.18.0.2/32")],
        };
        let set = PeerSet {
            peers: [("node-b".to_owned(), b)].into(),
            local_prefixes: vec![net("10.244.0.0/24")],
            problems: vec![],
        };
        (
            set,
            LocalNode {
                name: "node-a".into(),
                public_key: key(0),
                underlay_ip: "198.18.0.1".parse().unwrap(),
            },
        )
    }

    fn remote(cluster: &str, nodes: &[(&str, usize, &str, &[&str])]) -> RemoteView {
        RemoteView {
            cluster: cluster.into(),
            nodes: nodes
                .iter()
                .map(|(name, k, endpoint, prefixes)| RemoteNodeView {
                    name: (*name).into(),
                    public_key: key(*k).to_string(),
                    key_epoch: 1,
                    endpoint: (*endpoint).into(),
                    allowed_ips: prefixes.iter().map(|p| (*p).to_owned()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn add_remote_peers_table() {
        type Want = (Vec<(&'static str, Vec<&'static str>)>, Vec<(&'static str, &'static str)>);
        let rows: Vec<(&str, Vec<RemoteView>, Want)> = vec![
            (
                "a remote node joins with its prefixes and its address",
                vec![remote("prod-b", &[("n1", 3, "198.19.0.5:51820", &["10.245.1.0/24"])])],
                (vec![("prod-b/n1", vec!["10.245.1.0/24", "198.19.0.5/32"])], vec![]),
            ),
            (
                "a prefix overlapping this cluster's is refused, the rest kept",
                vec![remote("prod-b", &[("n1", 3, "198.19.0.5:51820", &["10.244.0.0/16", "10.245.1.0/24"])])],
                (
                    vec![("prod-b/n1", vec!["10.245.1.0/24", "198.19.0.5/32"])],
                    vec![("prod-b/n1", "RemotePrefixOverlap")],
                ),
            ),
            (
                "a prefix inside a local peer's is refused",
                vec![remote("prod-b", &[("n1", 3, "198.19.0.5:51820", &["10.244.1.128/25"])])],
                (vec![("prod-b/n1", vec!["198.19.0.5/32"])], vec![("prod-b/n1", "RemotePrefixOverlap")]),
            ),
            (
                "two clusters on one prefix: the first by name keeps it",
                vec![
                    remote("prod-c", &[("n9", 4, "198.19.1.5:51820", &["10.245.1.0/24"])]),
                    remote("prod-b", &[("n1", 3, "198.19.0.5:51820", &["10.245.1.0/24"])]),
                ],
                (
                    vec![
                        ("prod-b/n1", vec!["10.245.1.0/24", "198.19.0.5/32"]),
                        ("prod-c/n9", vec!["198.19.1.5/32"]),
                    ],
                    vec![("prod-c/n9", "RemotePrefixOverlap")],
                ),
            ),
            (
                "a remote node with this node's key is refused",
                vec![remote("prod-b", &[("n1", 0, "198.19.0.5:51820", &["10.245.1.0/24"])])],
                (vec![], vec![("prod-b/n1", "DuplicateKey")]),
            ),
            (
                "a remote node with a local peer's key is refused",
                vec![remote("prod-b", &[("n1", 1, "198.19.0.5:51820", &["10.245.1.0/24"])])],
                (vec![], vec![("prod-b/n1", "DuplicateKey")]),
            ),
            (
                "a remote node with a key some node of this cluster published (not a peer) is refused",
                vec![remote("prod-b", &[("n1", 7, "198.19.0.5:51820", &["10.245.1.0/24"])])],
                (vec![], vec![("prod-b/n1", "DuplicateKey")]),
            ),
            (
                "an endpoint in the other family is not reachable",
                vec![remote("prod-b", &[("n1", 3, "[fd00::5]:51820", &["10.245.1.0/24"])])],
                (vec![], vec![("prod-b/n1", "NoInternalIP")]),
            ),
            (
                "an endpoint that does not parse",
                vec![remote("prod-b", &[("n1", 3, "198.19.0.5", &["10.245.1.0/24"])])],
                (vec![], vec![("prod-b/n1", "InvalidRemoteNode")]),
            ),
            (
                "a prefix with host bits",
                vec![remote("prod-b", &[("n1", 3, "198.19.0.5:51820", &["10.245.1.1/24"])])],
                (vec![("prod-b/n1", vec!["198.19.0.5/32"])], vec![("prod-b/n1", "InvalidRemoteNode")]),
            ),
            (
                "a remote endpoint inside this cluster's node range is not routed to it",
                vec![remote("prod-b", &[("n1", 3, "198.18.0.2:51820", &["10.245.1.0/24"])])],
                (vec![("prod-b/n1", vec!["10.245.1.0/24"])], vec![("prod-b/n1", "RemotePrefixOverlap")]),
            ),
        ];
        for (name, remotes, (want_peers, want_problems)) in rows {
            let (mut set, local) = local_set();
            add_remote_peers(&mut set, &remotes, &local, &[key(7)].into());
            let got_peers: Vec<(String, Vec<String>)> = set
                .peers
                .values()
                .filter(|p| p.node.contains('/'))
                .map(|p| (p.node.clone(), p.allowed_ips.iter().map(ToString::to_string).collect()))
                .collect();
            let want: Vec<(String, Vec<String>)> = want_peers
                .iter()
                .map(|(n, a)| ((*n).to_owned(), a.iter().map(|s| (*s).to_owned()).collect()))
                .collect();
            assert_eq!(got_peers, want, "{name}: peers");
            let got_problems: Vec<(&str, &str)> =
                set.problems.iter().map(|p| (p.node.as_str(), p.problem.reason())).collect();
            assert_eq!(got_problems, want_problems, "{name}: problems");
            assert!(set.peers.contains_key("node-b"), "{name}: the local peer stays");
        }
    }
}
