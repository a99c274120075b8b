//! The VPC-CNI-like variant of the lab ([`LabBuilder::vpc_cni`](super::LabBuilder::vpc_cni)): what
//! the AWS VPC CNI does on an EKS node, modelled inside the lab's namespaces.
//!
//! On EKS with the VPC CNI, pods get VPC addresses from the nodes' ENIs. A node's pods do not come
//! from a per-node block: addresses from one shared range end up scattered over the nodes, and the
//! nodes' pod CIDRs do not describe them (meshcrypt's "pod-IP mode" exists for this).
//!
//! ## Addresses
//!
//! | what | address |
//! |---|---|
//! | the shared pod range ([`Lab::cluster_pod_cidr`](super::Lab::cluster_pod_cidr) in this mode) | `10.244.128.0/17` ([`pod_range`]) |
//! | a pod | the next address from a [`PodPool`]: dense from `10.244.128.4` up, interleaved across nodes |
//! | node *i*'s [`Node::pod_cidr`](super::Node::pod_cidr) | `10.244.i.0/24`, nominal only: no pod lies in it, no route points at it |
//! | node *i*'s side of every pod veth, the pods' gateway | `10.244.i.1/32` (as in the default lab) |
//!
//! Node indices stay below [`MAX_VPC_CNI_NODES`] (128), so the nominal per-node CIDRs and the
//! gateways (`10.244.0.0/17`) never overlap the shared range (`10.244.128.0/17`).
//!
//! The pool hands out, for every new pod, a pseudo-random pick among the [`PICK_WINDOW`] lowest
//! free addresses (a splitmix64 generator seeded by [`LabBuilder::vpc_cni_seed`](super::LabBuilder::vpc_cni_seed),
//! [`DEFAULT_SEED`] unless set), so the same seed and the same sequence of calls give the same
//! addresses. Addresses stay dense (as an ENI's secondary IPs are) but the nodes' sets interleave:
//! node-0 may hold `10.244.128.7` and `.9` while node-1 holds `.8`. As in AWS subnets, the first
//! four addresses and the last one of the range are never handed out. A removed pod's address goes
//! back to the pool and may be handed out again at once (the CNI reuses IPs too, after a cooldown).
//!
//! ## Routing on each node (what the CNI installs)
//!
//! - `<pod>/32 dev pod<j> scope link` (main table) for every local pod;
//! - `ip rule` priority [`TO_POD_PRIORITY`] (512): `to <pod>/32 lookup main`, per local pod;
//! - `ip rule` priority [`FROM_POD_PRIORITY`] (1536): `from <pod>/32 lookup 2`, per local pod (every
//!   lab pod is on the node's one secondary ENI, whose table is [`ENI_TABLE`] = 2);
//! - table 2: `198.18.0.0/15 dev eth0 scope link` and `default via 198.18.0.1 dev eth0` (the ENI's
//!   subnet and its way out of the node; `198.18.0.1` is the services address on the bridge, whose
//!   namespace does not forward, so anything without a better route ends there and stays inside the
//!   lab).
//!
//! ## Routing between nodes (what the VPC fabric does)
//!
//! There is no VPC router in the lab: the fabric's knowledge of which ENI holds which address is
//! folded into every node as host-gateway routes per remote pod, `<pod>/32 via <its node's underlay
//! address> dev eth0`, in the main table *and* in table 2. So before meshcrypt runs, cross-node pod
//! traffic crosses the underlay in plaintext (the leak detector sees it), whichever table a packet
//! is routed by: a pod's own packets go by table 2 (rule 1536), the node's own packets and
//! forwarded replies by the main table. Anything that wants to catch pod traffic (meshcrypt's rule)
//! must sit before priority 512/1536, as on EKS.
//!
//! Dual stack is not modelled in this mode (EKS's IPv6 mode works differently).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::command::ip_in;
use super::error::LabError;
use super::model::{Node, Pod};

/// The priority of the CNI's per-pod `to <pod> lookup main` rules.
pub const TO_POD_PRIORITY: u32 = 512;

/// The priority of the CNI's per-pod `from <pod> lookup <ENI table>` rules.
pub const FROM_POD_PRIORITY: u32 = 1536;

/// The routing table of every lab node's (one) secondary ENI.
pub const ENI_TABLE: u32 = 2;

/// Nodes a VPC-CNI lab can have (indices `0..128`), so that the nominal per-node CIDRs
/// `10.244.<i>.0/24` stay outside the shared pod range.
pub const MAX_VPC_CNI_NODES: usize = 128;

/// How many of the lowest free addresses each allocation picks among.
pub const PICK_WINDOW: usize = 8;

/// The pool's seed unless [`LabBuilder::vpc_cni_seed`](super::LabBuilder::vpc_cni_seed) sets one.
pub const DEFAULT_SEED: u64 = 0x6d65_7368_6372_7970;

/// Addresses reserved at the start of the range (as in an AWS subnet).
const RESERVED_LOW: u32 = 4;

/// The shared range every pod address comes from in a VPC-CNI lab: `10.244.128.0/17`.
pub fn pod_range() -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 244, 128, 0), 17).expect("constant prefix"))
}

/// Hands out pod addresses from [`pod_range`]: dense, interleaved, deterministic for a seed.
#[derive(Clone, Debug)]
pub struct PodPool {
    state: u64,
    /// Addresses released (below `next`) and free again.
    released: BTreeSet<u32>,
    /// The lowest address never handed out.
    next: u32,
    /// One past the last address that may be handed out.
    end: u32,
}

impl PodPool {
    /// A pool over [`pod_range`] whose choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        let IpNet::V4(range) = pod_range() else { unreachable!("the pod range is IPv4") };
        let first = u32::from(range.network());
        let last = u32::from(range.broadcast());
        PodPool { state: seed, released: BTreeSet::new(), next: first + RESERVED_LOW, end: last }
    }

    /// Takes a free address, or `None` if the range is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let mut window: Vec<u32> = self.released.iter().copied().take(PICK_WINDOW).collect();
        let mut fresh = self.next;
        while window.len() < PICK_WINDOW && fresh < self.end {
            window.push(fresh);
            fresh += 1;
        }
        window.sort_unstable();
        window.truncate(PICK_WINDOW);
        if window.is_empty() {
            return None;
        }
        let pick = window[(self.next_random() % window.len() as u64) as usize];
        if !self.released.remove(&pick) {
            // A fresh address: everything between `next` and it becomes released-but-free.
            for a in self.next..pick {
                self.released.insert(a);
            }
            self.next = pick + 1;
        }
        Some(Ipv4Addr::from(pick))
    }

    /// Returns `addr` to the pool (it may be handed out by the next allocation).
    pub fn release(&mut self, addr: Ipv4Addr) {
        let a = u32::from(addr);
        if a < self.next {
            self.released.insert(a);
        }
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Table 2's own routes on a new node: the ENI's subnet and its default route.
pub(crate) fn install_eni_table(node: &Node) -> Result<(), LabError> {
    let table = ENI_TABLE.to_string();
    let ns = &node.namespace;
    let dev = node.underlay_iface.as_str();
    let underlay = super::addressing::underlay_cidr().to_string();
    let src = node.underlay_addr.to_string();
    ip_in(ns, &["route", "replace", &underlay, "dev", dev, "scope", "link", "src", &src, "table", &table])?;
    let gw = super::addressing::services_addr().to_string();
    ip_in(ns, &["route", "replace", "default", "via", &gw, "dev", dev, "table", &table])?;
    Ok(())
}

/// The CNI's two rules for a pod on its node.
pub(crate) fn add_pod_rules(node_ns: &str, pod: &Pod) -> Result<(), LabError> {
    let host = format!("{}/32", pod.address);
    let (to, from, table) =
        (TO_POD_PRIORITY.to_string(), FROM_POD_PRIORITY.to_string(), ENI_TABLE.to_string());
    ip_in(node_ns, &["rule", "add", "priority", &to, "to", &host, "lookup", "main"])?;
    ip_in(node_ns, &["rule", "add", "priority", &from, "from", &host, "lookup", &table])?;
    Ok(())
}

/// Deletes the CNI's two rules for a pod on its node; returns the failures.
pub(crate) fn del_pod_rules(node_ns: &str, pod: &Pod) -> Vec<String> {
    let host = format!("{}/32", pod.address);
    let (to, from, table) =
        (TO_POD_PRIORITY.to_string(), FROM_POD_PRIORITY.to_string(), ENI_TABLE.to_string());
    [
        ip_in(node_ns, &["rule", "del", "priority", &to, "to", &host, "lookup", "main"]),
        ip_in(node_ns, &["rule", "del", "priority", &from, "from", &host, "lookup", &table]),
    ]
    .into_iter()
    .filter_map(|r| r.err().map(|e| e.to_string()))
    .collect()
}

/// On node namespace `ns`: `<pod>/32 via <its node> dev eth0` in the main table and table 2.
pub(crate) fn add_remote_pod_routes(ns: &str, pod: &Pod, pod_node: &Node) -> Result<(), LabError> {
    let host = format!("{}/32", pod.address);
    let via = pod_node.underlay_addr.to_string();
    let table = ENI_TABLE.to_string();
    ip_in(ns, &["route", "replace", &host, "via", &via, "dev", "eth0"])?;
    ip_in(ns, &["route", "replace", &host, "via", &via, "dev", "eth0", "table", &table])?;
    Ok(())
}

/// Deletes what [`add_remote_pod_routes`] installed (missing routes are fine); returns failures.
pub(crate) fn del_remote_pod_routes(ns: &str, pod: &Pod) -> Vec<String> {
    let host = format!("{}/32", pod.address);
    let table = ENI_TABLE.to_string();
    let mut errors = Vec::new();
    for args in [vec!["route", "del", &host], vec!["route", "del", &host, "table", &table]] {
        if let Err(e) = ip_in(ns, &args)
            && !is_missing(&e)
        {
            errors.push(e.to_string());
        }
    }
    errors
}

/// True if `ip route del` failed only because there was nothing to delete.
fn is_missing(e: &LabError) -> bool {
    matches!(e, LabError::CommandFailed { stderr, .. } if stderr.contains("No such process"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pool: &mut PodPool, n: usize) -> Vec<u32> {
        let base = u32::from(Ipv4Addr::new(10, 244, 128, 0));
        (0..n).map(|_| u32::from(pool.allocate().expect("free address")) - base).collect()
    }

    #[test]
    fn dense_unique_deterministic_and_reusing() {
        let a = offsets(&mut PodPool::new(7), 40);
        assert_eq!(a, offsets(&mut PodPool::new(7), 40), "same seed, same addresses");
        assert_ne!(a, offsets(&mut PodPool::new(8), 40), "another seed, other addresses");
        let set: BTreeSet<u32> = a.iter().copied().collect();
        assert_eq!(set.len(), 40, "unique: {a:?}");
        assert!(a.iter().all(|&o| (RESERVED_LOW..RESERVED_LOW + 40 + PICK_WINDOW as u32).contains(&o)));
        assert_ne!(a, (RESERVED_LOW..RESERVED_LOW + 40).collect::<Vec<_>>(), "not handed out in order");

        let mut pool = PodPool::new(1);
        let first = pool.allocate().unwrap();
        pool.release(first);
        let again: Vec<Ipv4Addr> = (0..PICK_WINDOW * 4).filter_map(|_| pool.allocate()).collect();
        assert!(again.contains(&first), "a released address is handed out again");
    }

    #[test]
    fn exhausts_the_range() {
        let mut pool = PodPool::new(3);
        let n = (1u32 << 15) - RESERVED_LOW - 1;
        for _ in 0..n {
            let a = pool.allocate().expect("free address");
            assert!(pod_range().contains(&std::net::IpAddr::V4(a)));
            assert_ne!(a, Ipv4Addr::new(10, 244, 255, 255));
        }
        assert_eq!(pool.allocate(), None);
    }
}
