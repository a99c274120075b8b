//! The MeshPeer watcher (`--peer-source mesh-peers`): a store of every other node as the mesh
//! reads it, made by joining each node's MeshPeer (its key annotations and who wrote them) with
//! its Node (uid, creation time, labels, addresses, pod CIDRs: what a node must not be able to
//! claim for itself). The rest of the agent reads the joined objects as it reads Nodes.
//!
//! What it costs the API server: one watch of MeshPeers, which change only with a node's key,
//! addresses or pod CIDRs; one paged list of Nodes per (re)list of MeshPeers; and one read of a
//! Node when its MeshPeer claims addresses or pod CIDRs other than those last read from the Node
//! (a node joining, or its addresses changing). A kubelet's status writes reach no agent.
//!
//! A MeshPeer whose claim still differs from its Node after the read is logged once per claim,
//! and the Node's values are the ones used. A MeshPeer without a Node (the garbage collector has
//! not yet removed it) is left out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;

use super::slim_node::{SlimNode, SlimNodeSpec};
use super::watch::{Wakes, events};
use crate::mesh_peer::{MeshPeer, MeshPeerSpec};

/// Nodes per page of the list that refreshes what is known of every Node.
const PAGE: u32 = 500;

/// The longest wait between two tries to read a Node.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The annotation a joined Node carries its MeshPeer's pod IPs in (pod-IP mode), comma-separated.
/// Only ever set inside the agent, on the joined objects of this store: never written to the API.
pub const JOINED_POD_IPS: &str = "meshcrypt.dev/joined-pod-ips";

/// The pod IPs a joined Node carries ([`JOINED_POD_IPS`]); unparsable entries are dropped (a
/// MeshPeer's addresses are strings the API server does not check).
pub fn joined_pod_ips(node: &SlimNode) -> Vec<std::net::IpAddr> {
    let joined = node.metadata.annotations.as_ref().and_then(|a| a.get(JOINED_POD_IPS));
    joined.into_iter().flat_map(|ips| ips.split(',')).filter_map(|ip| ip.parse().ok()).collect()
}

/// Starts watching MeshPeers into a store of joined Nodes, waking the loop on each change of what
/// it keeps. The store is complete once it is ready, like the Node store.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<SlimNode> {
    let (reader, mut writer) = reflector::store();
    let peers = events(Api::<MeshPeer>::all(client.clone()), watcher::Config::default(), trim_peer);
    let mut nodes =
        KnownNodes { api: Api::all(client), joined: reader.clone(), listed: None, read_for: HashMap::new() };
    tokio::spawn(async move {
        let mut peers = std::pin::pin!(peers);
        let mut wakes = Wakes::new(wake);
        while let Some(event) = peers.next().await {
            match event {
                Ok(event) => {
                    if let Some(joined) = nodes.join(event).await {
                        writer.apply_watcher_event(&joined);
                        wakes.seen(joined);
                    }
                }
                Err(e) => {
                    tracing::warn!(watch = "meshpeers", error = %e, "watch failed; retrying with backoff")
                }
            }
        }
    });
    reader
}

/// Drops what the join never reads from a MeshPeer.
fn trim_peer(peer: &mut MeshPeer) {
    peer.metadata.owner_references = None;
    peer.metadata.labels = None;
}

/// The Node as the mesh reads it for `peer`, from `node` (its Node as last read, trimmed): the
/// key annotations and their writers from the MeshPeer (and its pod IPs, under
/// [`JOINED_POD_IPS`]), everything else from the Node. Its resourceVersion is both objects', so
/// it changes when either does.
pub fn joined(peer: &MeshPeer, node: &SlimNode) -> SlimNode {
    let version = |m: &ObjectMeta| m.resource_version.clone().unwrap_or_default();
    let mut annotations = peer.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(JOINED_POD_IPS);
    if !peer.spec.pod_ips.is_empty() {
        annotations.insert(JOINED_POD_IPS.to_owned(), peer.spec.pod_ips.join(","));
    }
    let metadata = ObjectMeta {
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        creation_timestamp: node.metadata.creation_timestamp.clone(),
        annotations: Some(annotations),
        managed_fields: peer.metadata.managed_fields.clone(),
        resource_version: Some(format!("{}/{}", version(&peer.metadata), version(&node.metadata))),
        ..ObjectMeta::default()
    };
    let spec = node.spec.as_ref().map(|s| SlimNodeSpec { taints: None, ..s.clone() });
    SlimNode::new(metadata, spec, node.status.clone())
}

/// What the join keeps of a Node as read: its name, uid, creation time and resourceVersion, its
/// pod CIDRs and its InternalIP addresses (a parsed [`SlimNode`] holds no others); nothing else
/// (not its labels: a node with a MeshPeer runs an agent, so the labels that say it runs none do
/// not apply).
fn facts(node: SlimNode) -> SlimNode {
    SlimNode {
        metadata: ObjectMeta {
            name: node.metadata.name,
            uid: node.metadata.uid,
            creation_timestamp: node.metadata.creation_timestamp,
            resource_version: node.metadata.resource_version,
            ..ObjectMeta::default()
        },
        spec: node.spec.map(|s| SlimNodeSpec { pod_cidr: s.pod_cidr, pod_cidrs: s.pod_cidrs, taints: None }),
        status: node.status,
        ..SlimNode::default()
    }
}

/// The joined Node as the Node it was made from ([`facts`] of it): the store's objects carry
/// the Node's uid, creation time, pod CIDRs and addresses, and its resourceVersion after the `/`.
fn facts_of_joined(joined: &SlimNode) -> SlimNode {
    let version =
        joined.metadata.resource_version.as_deref().and_then(|v| v.split_once('/')).map(|(_, node)| node);
    SlimNode {
        metadata: ObjectMeta {
            name: joined.metadata.name.clone(),
            uid: joined.metadata.uid.clone(),
            creation_timestamp: joined.metadata.creation_timestamp.clone(),
            resource_version: version.map(str::to_owned),
            ..ObjectMeta::default()
        },
        spec: joined.spec.clone(),
        status: joined.status.clone(),
        ..SlimNode::default()
    }
}

/// What is known of the Nodes: between relists, the joined Nodes in the store (each made from its
/// Node as last read); during a relist of MeshPeers, every Node as the relist read it. A second
/// copy of 5,000 Nodes kept beside the store was about 5 MB at the first sync (heaptrack).
struct KnownNodes {
    api: Api<SlimNode>,
    /// The store the joined Nodes go to.
    joined: Store<SlimNode>,
    /// Every Node as read at the start of a relist of MeshPeers ([`facts`]) and not yet handed
    /// to its MeshPeer: each MeshPeer comes once per relist, so its Node is taken out, not
    /// copied, and the map empties as the relist goes on (`None` between relists, or when the
    /// list failed: the store answers).
    listed: Option<HashMap<String, SlimNode>>,
    /// The claim (addresses, pod CIDRs) each Node was last read for, where the Node contradicted
    /// it: such a claim is read once, not at every change of its MeshPeer.
    read_for: HashMap<String, (Vec<String>, Vec<String>)>,
}

/// Whether `node` (a Node as last read, and the claim it was read for if it contradicted one)
/// answers `claim`'s addresses and pod CIDRs without reading the Node again: it says the same, or
/// it was read for this very claim.
fn answers(node: &SlimNode, read_for: Option<&(Vec<String>, Vec<String>)>, claim: &MeshPeerSpec) -> bool {
    let (ips, cidrs) = claim.node_claim();
    read_for.is_some_and(|(i, c)| i == ips && c == cidrs)
        || MeshPeerSpec::of(&node.view()).node_claim() == (ips, cidrs)
}

impl KnownNodes {
    /// The joined event for a MeshPeer event (`None`: left out, the MeshPeer has no Node).
    async fn join(&mut self, event: Event<MeshPeer>) -> Option<Event<SlimNode>> {
        match event {
            Event::Init => {
                self.listed = self.relist().await;
                Some(Event::Init)
            }
            Event::InitApply(peer) => Some(Event::InitApply(joined(&peer, &self.node_of(&peer).await?))),
            Event::Apply(peer) => Some(match self.node_of(&peer).await {
                Some(node) => Event::Apply(joined(&peer, &node)),
                None => Event::Delete(named(&peer)),
            }),
            Event::Delete(peer) => {
                self.read_for.remove(peer.metadata.name.as_deref().unwrap_or_default());
                Some(Event::Delete(named(&peer)))
            }
            Event::InitDone => {
                self.listed = None;
                Some(Event::InitDone)
            }
        }
    }

    /// The Node of `peer`, read again unless what is known answers its claim.
    async fn node_of(&mut self, peer: &MeshPeer) -> Option<SlimNode> {
        let name = peer.metadata.name.clone().unwrap_or_default();
        let known = match &mut self.listed {
            Some(listed) => listed.remove(&name),
            None => self.joined.get(&ObjectRef::new(&name)).map(|j| facts_of_joined(&j)),
        };
        if let Some(node) = known
            && answers(&node, self.read_for.get(&name), &peer.spec)
        {
            return Some(node);
        }
        let Some(node) = self.read(&name).await else {
            self.read_for.remove(&name);
            return None;
        };
        let node = facts(node);
        let says = MeshPeerSpec::of(&node.view());
        if says.node_claim() == peer.spec.node_claim() {
            self.read_for.remove(&name);
        } else {
            tracing::warn!(node = %name, claims = ?peer.spec.node_claim(), node_says = ?says.node_claim(),
                "a MeshPeer claims addresses or pod CIDRs its Node does not list; the Node's are used");
            let (ips, cidrs) = peer.spec.node_claim();
            self.read_for.insert(name.clone(), (ips.to_vec(), cidrs.to_vec()));
        }
        Some(node)
    }

    /// Reads Node `name`, trying again (200 ms, doubling up to 5 s) until the API server answers:
    /// a MeshPeer is never used with addresses its Node has not confirmed. `None`: no such Node.
    async fn read(&self, name: &str) -> Option<SlimNode> {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.api.get_opt(name).await {
                Ok(node) => return node,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot read the Node of a MeshPeer; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Reads every Node afresh, a page at a time (at a relist of MeshPeers: after a gap, Nodes
    /// may have changed unseen). `None` on a failure: the store answers, and each MeshPeer whose
    /// claim it does not answer is read on its own.
    async fn relist(&self) -> Option<HashMap<String, SlimNode>> {
        let mut fresh = HashMap::new();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            match self.api.list(&params).await {
                Ok(page) => {
                    for node in page.items {
                        let node = facts(node);
                        let name = node.metadata.name.clone().unwrap_or_default();
                        fresh.insert(name, node);
                    }
                    match page.metadata.continue_ {
                        Some(token) if !token.is_empty() => params = params.continue_token(&token),
                        _ => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the Nodes; MeshPeers are checked one by one");
                    return None;
                }
            }
        }
        Some(fresh)
    }
}

/// A Node carrying only `peer`'s name: what a deletion from the store needs.
fn named(peer: &MeshPeer) -> SlimNode {
    SlimNode {
        metadata: ObjectMeta { name: peer.metadata.name.clone(), ..ObjectMeta::default() },
        ..SlimNode::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ip: &str, cidr: &str) -> SlimNode {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u-1", "resourceVersion": "7",
                         "creationTimestamp": "2026-11-01T00:00:00Z", "labels": {"zone": "a"},
                         "annotations": {"meshcrypt.dev/public-key": "from-the-node"}},
            "spec": {"podCIDRs": [cidr], "providerID": "aws:///x", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "n1"}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn peer(ip: &str, cidr: &str) -> MeshPeer {
        let key = "hAAcTTy5xmB09LRHZQ4vyDn3KHKfHLBNoDzS8DOJnxU=";
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meshcrypt.dev/v1alpha1", "kind": "MeshPeer",
            "metadata": {"name": "n1", "resourceVersion": "9",
                         "annotations": {"meshcrypt.dev/public-key": key, "meshcrypt.dev/key-epoch": "3",
                                         "meshcrypt.dev/key-created": "2026-11-02T00:00:00Z"},
                         "managedFields": [{"manager": "meshcrypt", "operation": "Apply",
                             "time": "2026-11-02T00:00:01Z", "fieldsType": "FieldsV1",
                             "fieldsV1": {"f:metadata": {"f:annotations": {"f:meshcrypt.dev/public-key": {}}},
                                          "f:spec": {"f:podCIDRs": {}}}}]},
            "spec": {"internalIPs": [ip], "podCIDRs": [cidr], "podIPs": ["10.244.1.7", "bad", "10.244.1.8"]},
        }))
        .unwrap()
    }

    /// The key and its writer come from the MeshPeer; the uid, creation time, InternalIPs and pod
    /// CIDRs from the Node, whatever the MeshPeer claims; nothing else of either.
    #[test]
    fn a_joined_node_takes_the_key_from_the_meshpeer_and_the_rest_from_the_node() {
        let n = facts(node("198.18.0.11", "10.244.1.0/24"));
        let cases = [
            ("an honest claim", peer("198.18.0.11", "10.244.1.0/24")),
            ("a claim of another node's pod CIDR and address", peer("198.18.0.12", "10.244.2.0/24")),
        ];
        for (what, p) in cases {
            let j = joined(&p, &n);
            let view = j.view();
            let key = view.published_key().unwrap_or_else(|| panic!("{what}: {view:?}"));
            assert_eq!(key.epoch, 3, "{what}");
            assert!(view.key_claimed.is_some() && view.annotation_writers == ["meshcrypt"], "{what}");
            assert_eq!(view.pod_cidrs, ["10.244.1.0/24"], "{what}");
            assert_eq!(view.internal_ips, ["198.18.0.11".parse::<std::net::IpAddr>().unwrap()], "{what}");
            assert_eq!(j.metadata.uid.as_deref(), Some("u-1"), "{what}");
            assert!(j.metadata.labels.is_none(), "{what}");
            assert_eq!(j.status.as_ref().and_then(|s| s.addresses.as_ref()).map(Vec::len), Some(1), "{what}");
            assert!(view.created.is_some(), "{what}");
            assert_eq!(j.metadata.resource_version.as_deref(), Some("9/7"), "{what}");
            let pod_ips: Vec<String> = joined_pod_ips(&j).iter().map(ToString::to_string).collect();
            assert_eq!(pod_ips, ["10.244.1.7", "10.244.1.8"], "{what}: the node's own claim");
            assert!(j.spec.as_ref().unwrap().taints.is_none(), "{what}");
            assert!(j.metadata.managed_fields.is_none(), "{what}: read into the facts and dropped");
        }
    }

    /// A Node as last read answers a claim it agrees with, or the claim it was read for; any
    /// other claim reads it again. Whether it was read by the relist or is the store's joined
    /// Node makes no difference.
    #[test]
    fn which_claims_read_the_node_again() {
        let honest = peer("198.18.0.11", "10.244.1.0/24").spec;
        let lying = peer("198.18.0.11", "10.244.2.0/24").spec;
        let moved = peer("198.18.0.99", "10.244.1.0/24").spec;
        let listed = facts(node("198.18.0.11", "10.244.1.0/24"));
        let stored = facts_of_joined(&joined(&peer("198.18.0.11", "10.244.1.0/24"), &listed));
        let (ips, cidrs) = lying.node_claim();
        let lie = (ips.to_vec(), cidrs.to_vec());
        let mut honest_new_pods = honest.clone();
        honest_new_pods.pod_ips = vec!["10.244.1.99".into()];
        for (source, node) in [("listed", &listed), ("stored", &stored)] {
            let cases = [
                ("honest claim", None, &honest, true),
                ("honest claim, other pod IPs", None, &honest_new_pods, true),
                ("a claim it contradicts", None, &lying, false),
                ("the node moved", None, &moved, false),
                ("read for this lie: not again", Some(&lie), &lying, true),
                ("read for a lie, another claim", Some(&lie), &moved, false),
                ("read for a lie, honest again", Some(&lie), &honest, true),
            ];
            for (what, read_for, claim, answered) in cases {
                assert_eq!(answers(node, read_for, claim), answered, "{source}, {what}");
            }
        }
    }

    /// The store's joined Node gives back the Node it was made from, so a join made from it is
    /// the join made from the Node (its resourceVersion too).
    #[test]
    fn a_joined_node_gives_back_its_node() {
        let n = facts(node("198.18.0.11", "10.244.1.0/24"));
        let first = joined(&peer("198.18.0.11", "10.244.1.0/24"), &n);
        assert_eq!(facts_of_joined(&first), n);
        let mut rotated = peer("198.18.0.11", "10.244.1.0/24");
        rotated.metadata.resource_version = Some("12".into());
        let again = joined(&rotated, &facts_of_joined(&first));
        assert_eq!(again, joined(&rotated, &n));
        assert_eq!(again.metadata.resource_version.as_deref(), Some("12/7"));
    }
}
