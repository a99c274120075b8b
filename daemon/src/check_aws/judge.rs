//! Whether the security groups let the mesh through: every ordered pair of nodes (and every peer
//! cluster's range to every node) must be allowed UDP on the mesh port out of the source's groups
//! and into the destination's. Pure: what EC2 and the API server said in, findings out.
//!
//! The rule semantics are EC2's ("Security group rules", Amazon VPC User Guide): a rule allows a
//! protocol (`-1`: all; `udp` or `17`) over a port range (absent or -1 for all protocols: every
//! port) from CIDR ranges or from members of referenced groups; groups are stateful, so replies
//! need no rule, but either node may start a handshake, so both directions are checked. Prefix-list
//! rules are not resolved: a pair only they would allow is reported, with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// One security group rule, as far as the check reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// `-1` (all), `udp`, `17`, `tcp`, …
    pub protocol: String,
    /// The first port (`None`: every port).
    pub from_port: Option<i32>,
    /// The last port.
    pub to_port: Option<i32>,
    /// CIDR ranges it allows (IPv4 and IPv6).
    pub cidrs: Vec<IpNet>,
    /// Groups whose members it allows.
    pub groups: Vec<String>,
    /// Whether it names prefix lists (not resolved).
    pub prefix_lists: bool,
}

impl Rule {
    /// Whether it covers UDP on `port`.
    fn covers(&self, port: u16) -> bool {
        let udp = matches!(self.protocol.as_str(), "-1" | "udp" | "17");
        let all_ports = self.protocol == "-1" || self.from_port.is_none_or(|p| p == -1);
        let in_range = self
            .from_port
            .zip(self.to_port)
            .is_some_and(|(a, b)| a <= i32::from(port) && i32::from(port) <= b);
        udp && (all_ports || in_range)
    }
}

/// A security group: its rules each way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// `sg-…`
    pub id: String,
    /// Its name.
    pub name: String,
    /// Inbound rules.
    pub ingress: Vec<Rule>,
    /// Outbound rules.
    pub egress: Vec<Rule>,
}

/// A node as EC2 knows it: the groups of the network interface holding its InternalIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// The Node's name.
    pub node: String,
    /// Its instance.
    pub instance: String,
    /// Its InternalIP.
    pub ip: IpAddr,
    /// The groups of the interface with that address.
    pub groups: BTreeSet<String>,
}

/// A source outside the cluster: a peer cluster's node address or range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRange {
    /// Where it comes from (`cluster/node`, or the `--peer-cidr` flag).
    pub name: String,
    /// The range (a /32 or /128 for one node).
    pub range: IpNet,
}

/// Which way a rule was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// The source's groups allow no UDP on the port to the destination.
    Egress,
    /// The destination's groups allow no UDP on the port from the source.
    Ingress,
}

/// Pairs that are blocked the same way: from nodes with one set of groups to nodes with another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    /// The source's groups (or, for a peer range, its name).
    pub from_groups: Vec<String>,
    /// The destination's groups.
    pub to_groups: Vec<String>,
    /// Which side lacks the rule.
    pub side: Side,
    /// How many ordered pairs.
    pub pairs: usize,
    /// Up to [`EXAMPLES`] of them, `source → destination`.
    pub examples: Vec<String>,
    /// Whether a prefix-list rule, not resolved, might allow them.
    pub prefix_list_rules: bool,
}

/// How many example pairs a [`Blocked`] names.
pub const EXAMPLES: usize = 5;

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    /// The mesh port checked.
    pub port: u16,
    /// Nodes checked.
    pub nodes: usize,
    /// Peer-cluster sources checked.
    pub peer_ranges: usize,
    /// Ordered pairs checked (node to node, and peer range to node).
    pub pairs: usize,
    /// The blocked pairs, grouped.
    pub blocked: Vec<Blocked>,
    /// Nodes that could not be checked, with why (no `aws://` providerID, instance not found).
    pub unchecked: Vec<String>,
    /// Groups a node uses that EC2 did not return.
    pub missing_groups: Vec<String>,
    /// Each group's name, by id.
    pub group_names: BTreeMap<String, String>,
    /// Nodes that run no agent (Fargate, hybrid, Auto Mode, Windows), left out with why: not
    /// findings, exceptions.
    pub no_agent: Vec<String>,
}

impl Findings {
    /// Whether every pair is allowed and every node was checked.
    pub fn clean(&self) -> bool {
        self.blocked.is_empty() && self.unchecked.is_empty() && self.missing_groups.is_empty()
    }
}

/// Whether `rules` allow UDP `port` to or from `peer` (an address with its groups, or a range that
/// a rule's CIDR must contain whole), and whether a prefix-list rule was left unresolved.
fn allows(rules: &[&Rule], port: u16, peer: &Peer<'_>) -> (bool, bool) {
    let mut prefix_lists = false;
    for rule in rules.iter().filter(|r| r.covers(port)) {
        prefix_lists |= rule.prefix_lists;
        let by_cidr = rule.cidrs.iter().any(|c| match peer {
            Peer::Node(n) => c.contains(&n.ip),
            Peer::Range(r) => c.contains(&r.range),
        });
        let by_group = matches!(peer, Peer::Node(n) if rule.groups.iter().any(|g| n.groups.contains(g)));
        if by_cidr || by_group {
            return (true, false);
        }
    }
    (false, prefix_lists)
}

enum Peer<'a> {
    Node(&'a NodeNet),
    Range(&'a PeerRange),
}

/// Checks every ordered pair of `nodes`, and every `ranges` entry to every node, on UDP `port`.
pub fn judge(
    nodes: &[NodeNet],
    groups: &[Group],
    ranges: &[PeerRange],
    port: u16,
    unchecked: Vec<String>,
) -> Findings {
    let by_id: BTreeMap<&str, &Group> = groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let missing_groups: BTreeSet<String> =
        nodes.iter().flat_map(|n| &n.groups).filter(|g| !by_id.contains_key(g.as_str())).cloned().collect();
    let rules = |node: &NodeNet, side: Side| -> Vec<&Rule> {
        node.groups
            .iter()
            .filter_map(|g| by_id.get(g.as_str()))
            .flat_map(|g| if side == Side::Ingress { &g.ingress } else { &g.egress })
            .collect()
    };
    let mut blocked: BTreeMap<(Vec<String>, Vec<String>, Side), Blocked> = BTreeMap::new();
    let mut record = |from: Vec<String>, to: &NodeNet, side: Side, example: String, prefix_lists: bool| {
        let to_groups: Vec<String> = to.groups.iter().cloned().collect();
        let entry = blocked.entry((from.clone(), to_groups.clone(), side)).or_insert_with(|| Blocked {
            from_groups: from,
            to_groups,
            side,
            pairs: 0,
            examples: Vec::new(),
            prefix_list_rules: false,
        });
        entry.pairs += 1;
        entry.prefix_list_rules |= prefix_lists;
        if entry.examples.len() < EXAMPLES {
            entry.examples.push(example);
        }
    };
    // Each node's rules and group list once: the pairs are N², the nodes N.
    let ingress_of: Vec<Vec<&Rule>> = nodes.iter().map(|n| rules(n, Side::Ingress)).collect();
    let egress_of: Vec<Vec<&Rule>> = nodes.iter().map(|n| rules(n, Side::Egress)).collect();
    let mut pairs = 0;
    for (t, to) in nodes.iter().enumerate() {
        for (f, from) in nodes.iter().enumerate().filter(|(_, n)| n.node != to.node) {
            pairs += 1;
            let example = || format!("{} ({}) → {} ({})", from.node, from.ip, to.node, to.ip);
            let from_groups = || from.groups.iter().cloned().collect::<Vec<String>>();
            let (out_ok, out_pl) = allows(&egress_of[f], port, &Peer::Node(to));
            if !out_ok {
                record(from_groups(), to, Side::Egress, example(), out_pl);
            }
            let (in_ok, in_pl) = allows(&ingress_of[t], port, &Peer::Node(from));
            if !in_ok {
                record(from_groups(), to, Side::Ingress, example(), in_pl);
            }
        }
        for range in ranges {
            pairs += 1;
            let (ok, pl) = allows(&ingress_of[t], port, &Peer::Range(range));
            if !ok {
                let example = format!("{} ({}) → {} ({})", range.name, range.range, to.node, to.ip);
                record(vec![range.name.clone()], to, Side::Ingress, example, pl);
            }
        }
    }
    Findings {
        port,
        nodes: nodes.len(),
        peer_ranges: ranges.len(),
        pairs,
        blocked: blocked.into_values().collect(),
        unchecked,
        missing_groups: missing_groups.into_iter().collect(),
        group_names: groups.iter().map(|g| (g.id.clone(), g.name.clone())).collect(),
        no_agent: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
