//! The peer set kept between passes ([`PeerIndex`]): each update finds the Nodes and Pods that
//! changed and judges again only the nodes those changes can reach, for the same result as
//! [`desired_peers`] over everything (a property test holds it to that).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashSet, HashSetExt as _};
use ipnet::IpNet;
use smallvec::SmallVec;

use super::{
    AllowedIpsFrom, ClaimOrder, Conflict, LocalNode, MeshConfig, NodeProblem, NodeView, Peer, PeerSet,
    PodView, Problem, SeenBy, address_claim, cidr_claim, conflict_problem, earliest_claims, endpoint, finish,
    judge_keyed, key_claim, pod_claim, valid_cidr,
};
use crate::PublicKey;

/// One claim of a prefix: a Node's pod CIDR (podCIDR mode) or a Pod's address (pod-IP mode).
#[derive(Debug, Clone)]
enum Claim {
    /// A canonical entry of the Node's `spec.podCIDRs`.
    Cidr(Arc<NodeView>),
    /// One of the Pod's addresses, as a host prefix.
    Pod(Arc<PodView>),
}

impl Claim {
    /// The node claiming.
    fn node(&self) -> &str {
        match self {
            Self::Cidr(node) => &node.name,
            Self::Pod(pod) => &pod.node,
        }
    }

    /// When it was claimed ([`cidr_claim`], [`pod_claim`]).
    fn order(&self) -> ClaimOrder<'_> {
        match self {
            Self::Cidr(node) => cidr_claim(node),
            Self::Pod(pod) => pod_claim(pod),
        }
    }

    /// It is the claim of this very view.
    fn is(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Cidr(a), Self::Cidr(b)) => Arc::ptr_eq(a, b),
            (Self::Pod(a), Self::Pod(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The peer set of one observer, kept up to date by [`PeerIndex::desired_peers`].
///
/// It keeps the Nodes and Pods it was last given (shared with the caller's stores), indexed by
/// what nodes can contest: each key and endpoint address with the keyed nodes publishing it, and
/// each prefix with its claims. An update compares the given views with the kept ones (the same
/// `Arc`, or equal values, is no change), moves the changed ones in the indexes, and judges again
/// each node whose outcome they can move: the changed node; the nodes sharing its old or new key
/// or endpoint; the nodes whose prefixes overlap its old or new ones. Its cost is proportional to
/// the change (plus one hash lookup per given view), not to the cluster; a change of the observer
/// or the settings starts it over.
#[derive(Debug, Default)]
pub struct PeerIndex {
    /// The observer and the settings the index holds for (`None`: never updated).
    basis: Option<(LocalNode, MeshConfig)>,
    /// Every Node given, found by name, with the update that last gave it.
    nodes: HashMap<ByName, u32>,
    /// Every Pod given (pod-IP mode), found by where its view lies, with the update that last
    /// gave it.
    pods: HashMap<Ptr, (Arc<PodView>, u32)>,
    /// Updates of the node or Pod lists so far.
    updates: u32,
    /// The Pods of each node, by node name.
    pods_by_node: HashMap<String, Vec<Arc<PodView>>>,
    /// Each published key with the keyed nodes (all but the observer) publishing it.
    key_rivals: HashMap<PublicKey, Rivals>,
    /// Each endpoint address with the keyed nodes holding it.
    address_rivals: HashMap<IpAddr, Rivals>,
    /// Each claimed prefix with its claims.
    prefixes: BTreeMap<IpNet, SmallVec<[Claim; 1]>>,
    /// How many claims each prefix length has: the lengths a prefix's containers can have.
    lengths: Lengths,
    /// Each node's problems, in the peer set's order (nodes without any are absent).
    problems: BTreeMap<String, Vec<Problem>>,
    /// The peer set, as of the last update.
    set: PeerSet,
}

impl PeerIndex {
    /// The peers of `local` given every Node in `nodes` and, in pod-IP mode, every Pod in `pods`:
    /// what [`desired_peers`] gives for the same arguments, updated from the last call's.
    ///
    /// Node names, and Pod names, are unique in the lists (a store's keys).
    pub fn desired_peers(
        &mut self,
        nodes: &[Arc<NodeView>],
        pods: &[Arc<PodView>],
        local: &LocalNode,
        config: &MeshConfig,
    ) -> &PeerSet {
        let mut dirty = HashSet::new();
        if self.basis.as_ref().is_none_or(|(l, c)| l != local || c != config) {
            *self = Self { basis: Some((local.clone(), config.clone())), ..Self::default() };
            // The observer is judged at the start even if it is not listed: its prefixes are
            // the peer set's local ones.
            dirty.insert(local.name.clone());
        }
        self.update_nodes(nodes, &mut dirty);
        if config.allowed_ips == AllowedIpsFrom::PodIps {
            self.update_pods(pods, &mut dirty);
        }
        let mut problems_moved = false;
        for name in dirty {
            let judged = self.judge(&name);
            if let Some(prefixes) = judged.local_prefixes {
                self.set.local_prefixes = prefixes;
            }
            match judged.peer {
                Some(peer) => self.set.peers.insert(name.clone(), peer),
                None => self.set.peers.remove(&name),
            };
            // Compared in place; a node's problems are moved into the index only when they moved.
            if self.problems.get(&name).map_or(&[][..], Vec::as_slice) != judged.problems.as_slice() {
                problems_moved = true;
                match judged.problems.is_empty() {
                    true => self.problems.remove(&name),
                    false => self.problems.insert(name, judged.problems),
                };
            }
        }
        if problems_moved {
            self.set.problems = self
                .problems
                .iter()
                .flat_map(|(node, problems)| {
                    problems
                        .iter()
                        .map(|problem| NodeProblem { node: node.clone(), problem: problem.clone() })
                })
                .collect();
        }
        &self.set
    }

    /// Takes the Nodes as given now, marking the names whose outcome may move. A Node in the
    /// view it had is no change; one in a new view is taken out and put in again (an equal value
    /// then judges the same).
    fn update_nodes(&mut self, nodes: &[Arc<NodeView>], dirty: &mut HashSet<String>) {
        let update = self.next_update();
        for node in nodes {
            match self.nodes.get_key_value(node.name.as_str()) {
                Some((kept, _)) if Arc::ptr_eq(&kept.0, node) => {
                    self.nodes.insert(ByName(node.clone()), update);
                }
                Some((kept, _)) => {
                    let kept = kept.0.clone();
                    self.remove_node(&kept, dirty);
                    self.add_node(node, update, dirty);
                }
                None => self.add_node(node, update, dirty),
            }
        }
        if self.nodes.len() > nodes.len() {
            let gone: Vec<Arc<NodeView>> =
                self.nodes.iter().filter(|(_, seen)| **seen != update).map(|(n, _)| n.0.clone()).collect();
            for node in gone {
                self.remove_node(&node, dirty);
            }
        }
    }

    /// Takes the Pods as given now, marking the names whose outcome may move. Pods are found by
    /// their view (the `Arc`), not by name: a pass looks at every Pod, and at 150,000 hashing a
    /// pointer is what it can afford, not hashing a name. A Pod in a new view is a Pod gone and
    /// one new.
    fn update_pods(&mut self, pods: &[Arc<PodView>], dirty: &mut HashSet<String>) {
        let update = self.next_update();
        let mut added = Vec::new();
        for pod in pods {
            match self.pods.get_mut(&Ptr::of(pod)) {
                Some((_, seen)) => *seen = update,
                None => added.push(pod),
            }
        }
        if self.pods.len() > pods.len() - added.len() {
            let gone: Vec<Arc<PodView>> =
                self.pods.values().filter(|(_, seen)| *seen != update).map(|(p, _)| p.clone()).collect();
            for pod in gone {
                self.remove_pod(&pod, dirty);
            }
        }
        for pod in added {
            self.add_pod(pod, update, dirty);
        }
    }

    /// The number of the next update of the node or Pod lists: what each kept view is marked
    /// with when it is given again, so that those not given are found without a set of names.
    fn next_update(&mut self) -> u32 {
        self.updates = self.updates.wrapping_add(1);
        self.updates
    }

    /// The observer and the settings (set by the first update).
    fn basis(&self) -> (&LocalNode, &MeshConfig) {
        let (local, config) = self.basis.as_ref().expect("set before any node is indexed");
        (local, config)
    }

    /// The key and endpoint a node contests with others, if it is keyed (published a valid key)
    /// and not the observer.
    fn keyed(&self, node: &NodeView) -> Option<(PublicKey, Option<IpAddr>)> {
        let (local, _) = self.basis();
        let key = node.published_key().filter(|_| node.name != local.name)?;
        Some((key.public_key, endpoint(node, local.underlay_ip.is_ipv4())))
    }

    /// Indexes `node`, marking it and every node it now contests with.
    fn add_node(&mut self, node: &Arc<NodeView>, update: u32, dirty: &mut HashSet<String>) {
        dirty.insert(node.name.clone());
        if let Some((key, ip)) = self.keyed(node) {
            let rivals = self.key_rivals.entry(key).or_default();
            rivals.push(node.clone());
            dirty.extend(rivals.iter().map(|n| n.name.clone()));
            if let Some(ip) = ip {
                let rivals = self.address_rivals.entry(ip).or_default();
                rivals.push(node.clone());
                dirty.extend(rivals.iter().map(|n| n.name.clone()));
            }
        }
        if self.basis().1.allowed_ips == AllowedIpsFrom::PodCidrs {
            for net in node.pod_cidrs.iter().filter_map(|c| valid_cidr(c)) {
                self.add_claim(net, Claim::Cidr(node.clone()), dirty);
            }
        }
        self.nodes.insert(ByName(node.clone()), update);
    }

    /// Drops `node` from the indexes, marking it and every node it contested with.
    fn remove_node(&mut self, node: &Arc<NodeView>, dirty: &mut HashSet<String>) {
        dirty.insert(node.name.clone());
        if let Some((key, ip)) = self.keyed(node) {
            remove_rival(&mut self.key_rivals, key, node, dirty);
            if let Some(ip) = ip {
                remove_rival(&mut self.address_rivals, ip, node, dirty);
            }
        }
        if self.basis().1.allowed_ips == AllowedIpsFrom::PodCidrs {
            for net in node.pod_cidrs.iter().filter_map(|c| valid_cidr(c)) {
                self.remove_claim(net, &Claim::Cidr(node.clone()), dirty);
            }
        }
        self.nodes.remove(node.name.as_str());
    }

    /// Indexes `pod`, marking its node and every node whose addresses it now overlaps.
    fn add_pod(&mut self, pod: &Arc<PodView>, update: u32, dirty: &mut HashSet<String>) {
        dirty.insert(pod.node.clone());
        for ip in &pod.ips {
            self.add_claim(IpNet::from(*ip), Claim::Pod(pod.clone()), dirty);
        }
        self.pods_by_node.entry(pod.node.clone()).or_default().push(pod.clone());
        self.pods.insert(Ptr::of(pod), (pod.clone(), update));
    }

    /// Drops `pod` from the indexes, marking its node and every node whose addresses it overlapped.
    fn remove_pod(&mut self, pod: &Arc<PodView>, dirty: &mut HashSet<String>) {
        dirty.insert(pod.node.clone());
        for ip in &pod.ips {
            self.remove_claim(IpNet::from(*ip), &Claim::Pod(pod.clone()), dirty);
        }
        if let Some(kept) = self.pods_by_node.get_mut(&pod.node) {
            kept.retain(|p| !Arc::ptr_eq(p, pod));
            if kept.is_empty() {
                self.pods_by_node.remove(&pod.node);
            }
        }
        self.pods.remove(&Ptr::of(pod));
    }

    /// Adds one claim of `net`, marking the nodes of the claims it overlaps.
    fn add_claim(&mut self, net: IpNet, claim: Claim, dirty: &mut HashSet<String>) {
        dirty.extend(self.overlapping(net).map(|c| c.node().to_owned()));
        self.prefixes.entry(net).or_default().push(claim);
        self.lengths.0[family(net)][usize::from(net.prefix_len())] += 1;
    }

    /// Removes one claim of `net`, marking the nodes of the claims it overlapped.
    fn remove_claim(&mut self, net: IpNet, claim: &Claim, dirty: &mut HashSet<String>) {
        let Some(claims) = self.prefixes.get_mut(&net) else { return };
        let Some(at) = claims.iter().position(|c| c.is(claim)) else { return };
        claims.swap_remove(at);
        if claims.is_empty() {
            self.prefixes.remove(&net);
        }
        self.lengths.0[family(net)][usize::from(net.prefix_len())] -= 1;
        dirty.extend(self.overlapping(net).map(|c| c.node().to_owned()));
    }

    /// Every claim of a prefix overlapping `net`: containing it (one lookup per prefix length in
    /// use) or within it (a range of the ordered map), `net` itself included.
    fn overlapping(&self, net: IpNet) -> impl Iterator<Item = &Claim> {
        let lengths = &self.lengths.0[family(net)];
        let containing = (0..net.prefix_len())
            .filter(|len| lengths[usize::from(*len)] > 0)
            .filter_map(move |len| self.prefixes.get(&IpNet::new(net.addr(), len).ok()?.trunc()));
        let last = IpNet::new(net.broadcast(), net.max_prefix_len()).unwrap_or(net);
        let within = self.prefixes.range(net..=last).filter(move |(q, _)| net.contains(*q)).map(|(_, c)| c);
        containing.chain(within).flatten()
    }

    /// Judges the node called `name` (listed, or only named by Pods) from the indexes.
    fn judge(&self, name: &str) -> Judged {
        let (local, config) = self.basis();
        let node = self.nodes.get_key_value(name).map(|(n, _)| &n.0);
        let mut problems = Vec::new();
        let mut claims: Vec<(IpNet, ClaimOrder<'_>)> = Vec::new();
        match config.allowed_ips {
            AllowedIpsFrom::PodCidrs => {
                for cidr in node.iter().flat_map(|n| &n.pod_cidrs) {
                    match valid_cidr(cidr) {
                        Some(net) => claims.extend(node.map(|n| (net, cidr_claim(n)))),
                        None => problems.push(Problem::InvalidPodCidr(cidr.clone())),
                    }
                }
            }
            AllowedIpsFrom::PodIps => {
                for pod in self.pods_by_node.get(name).into_iter().flatten() {
                    claims.extend(pod.ips.iter().map(|ip| (IpNet::from(*ip), pod_claim(pod))));
                }
            }
        }
        earliest_claims(&mut claims);
        let conflicts: Vec<(IpNet, Conflict<'_>)> = claims
            .iter()
            .filter_map(|(net, order)| Some((*net, self.conflict(name, *net, *order)?)))
            .collect();
        let mut judged = Judged { peer: None, problems: Vec::new(), local_prefixes: None };
        if name == local.name {
            judged.local_prefixes = Some(finish(config.allowed_ips, claims.iter().map(|(net, _)| *net)));
        } else if let Some(node) = node {
            let seen_by = SeenBy::node(local, config);
            match &node.key {
                Ok(Some(key)) => {
                    let key_rivals = self.rivals(&self.key_rivals, &key.public_key, key_claim);
                    let routed = claims.iter().map(|(net, _)| *net).filter(|net| {
                        conflicts.iter().find(|(p, _)| p == net).is_none_or(|(_, c)| c.routed())
                    });
                    judged.peer = judge_keyed(
                        node,
                        key,
                        key_rivals.as_deref(),
                        |ip| self.rivals(&self.address_rivals, &ip, address_claim),
                        &seen_by,
                        || finish(config.allowed_ips, routed),
                        &mut |problem| problems.push(problem),
                    );
                }
                Ok(None) if node.no_agent.is_some() => {}
                Ok(None) => problems.push(Problem::NoKey),
                Err(why) => problems.push(Problem::InvalidAnnotation(why.clone())),
            }
        }
        problems.extend(conflicts.into_iter().map(|(prefix, conflict)| conflict_problem(prefix, conflict)));
        judged.problems = problems;
        judged
    }

    /// The keyed nodes contesting `item`, in the order `rank` gives, when there are several.
    fn rivals<'a, T: Hash + Eq, R: Ord>(
        &'a self,
        index: &'a HashMap<T, Rivals>,
        item: &T,
        rank: impl Fn(&'a NodeView) -> R,
    ) -> Option<Vec<&'a NodeView>> {
        let claimants = index.get(item).filter(|c| c.len() > 1)?;
        let mut sorted: Vec<&NodeView> = claimants.iter().map(|n| &**n).collect();
        sorted.sort_by_key(|n| rank(n));
        Some(sorted)
    }

    /// The conflict of `name`'s claim of `net` (made at `order`) with other nodes' claims, if any.
    fn conflict(&self, name: &str, net: IpNet, order: ClaimOrder<'_>) -> Option<Conflict<'_>> {
        let local = &self.basis().0.name;
        let mut conflict: Option<Conflict<'_>> = None;
        for claim in self.overlapping(net).filter(|c| c.node() != name) {
            let c = conflict.get_or_insert_with(|| Conflict {
                with: BTreeSet::new(),
                established: true,
                overlaps_local: false,
            });
            c.with.insert(claim.node());
            c.established &= order < claim.order();
            c.overlaps_local |= claim.node() == local;
        }
        conflict
    }
}

/// The keyed nodes claiming one key or one endpoint address (nearly always one).
type Rivals = SmallVec<[Arc<NodeView>; 1]>;

/// A Node's view kept in a map and found by its name (no copy of the name as a key).
#[derive(Debug)]
struct ByName(Arc<NodeView>);

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl Hash for ByName {
    /// As the name hashes, so that a lookup by `&str` finds it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

/// Where a view lies: a key that stays unique while the map holding it keeps the view's `Arc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ptr(usize);

impl Ptr {
    /// Where `view` lies.
    fn of<T>(view: &Arc<T>) -> Self {
        Self(Arc::as_ptr(view) as usize)
    }
}

/// One node judged.
struct Judged {
    /// Its peer, if it is one.
    peer: Option<Peer>,
    /// Its problems, in the peer set's order.
    problems: Vec<Problem>,
    /// The observer's own prefixes, when the node judged is the observer.
    local_prefixes: Option<Vec<IpNet>>,
}

/// Claims by prefix length, IPv4 then IPv6 (index 0 to 128).
#[derive(Debug)]
struct Lengths([[u32; 129]; 2]);

impl Default for Lengths {
    fn default() -> Self {
        Self([[0; 129]; 2])
    }
}

/// 0 for IPv4, 1 for IPv6.
fn family(net: IpNet) -> usize {
    usize::from(matches!(net, IpNet::V6(_)))
}

/// Removes `node` from the rivals of `item`, marking it and the rivals left.
fn remove_rival<T: Hash + Eq>(
    index: &mut HashMap<T, Rivals>,
    item: T,
    node: &Arc<NodeView>,
    dirty: &mut HashSet<String>,
) {
    let Some(rivals) = index.get_mut(&item) else { return };
    rivals.retain(|n| !Arc::ptr_eq(n, node));
    dirty.extend(rivals.iter().map(|n| n.name.clone()));
    if rivals.is_empty() {
        index.remove(&item);
    }
}

#[cfg(test)]
mod tests;
