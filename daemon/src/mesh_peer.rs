//! The `MeshPeer` resource (`meshcrypt.dev/v1alpha1`, cluster-scoped, one object per node, named
//! after it, owned by its Node so it goes with it): what the node offers the mesh, about 1 kB
//! where its Node is 8 to 20 kB. Its metadata carries the same key annotations as the Node
//! (`meshcrypt.dev/public-key`, `-key-epoch`, `-key-created`, `-key-fingerprint`), its spec the
//! node's InternalIPs and pod CIDRs as its Node lists them.
//!
//! Why it exists: kubelet rewrites every Node's status at least every 5 minutes
//! (`nodeStatusReportFrequency`), 17 writes a second at 5,000 nodes, and a watch of Nodes delivers
//! each one whole to every agent. A MeshPeer changes only when the node's key, addresses or pod
//! CIDRs do. Agents started with `--peer-source mesh-peers` watch MeshPeers instead of Nodes.
//!
//! Who may write it, and what a reader trusts: only the node's own agent writes it (RBAC and the
//! admission policy in `deploy/base`: the name must be the node in the writer's bound token, and
//! the only owner its Node). The key is the node's own claim, as on the Node. The addresses and
//! pod CIDRs are not trusted: a reader takes them from the Node itself (read when the claim
//! changes, `agent/mesh_peers.rs`), so no node can claim another's addresses through it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use kube::CustomResource;
use kube::api::{Api, Patch, PatchParams};
use meshcrypt_keyexchange::NodeKeyAnnotations;
use meshcrypt_keyexchange::mesh::NodeView;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent::slim_node::SlimNode;

/// What a node offers the mesh besides its key (which is in the annotations): the addresses and
/// pod CIDRs its Node lists, as the node's agent last saw them.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "meshcrypt.dev",
    version = "v1alpha1",
    kind = "MeshPeer",
    printcolumn = r#"{"name":"InternalIPs","type":"string","jsonPath":".spec.internalIPs"}"#,
    printcolumn = r#"{"name":"PodCIDRs","type":"string","jsonPath":".spec.podCIDRs"}"#,
    printcolumn = r#"{"name":"Epoch","type":"string","jsonPath":".metadata.annotations.meshcrypt\\.dev/key-epoch"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct MeshPeerSpec {
    /// The `InternalIP` entries of the Node's `status.addresses`, in order (readers check them
    /// against the Node).
    #[serde(default, rename = "internalIPs")]
    pub internal_ips: Vec<String>,
    /// The Node's `spec.podCIDRs`, as written (readers check them against the Node).
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    /// In pod-IP mode, the pod-network addresses of the Pods running on this node (as their
    /// `status.podIPs` say; host-network and finished Pods left out), sorted; empty otherwise. The
    /// node's own claim, as trustworthy as its kubelet, which writes those statuses: an address
    /// claimed by two nodes stays with the older Node.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
}

impl MeshPeerSpec {
    /// The claim a Node's view makes: its InternalIPs and pod CIDRs.
    pub fn of(view: &NodeView) -> Self {
        Self {
            internal_ips: view.internal_ips.iter().map(ToString::to_string).collect(),
            pod_cidrs: view.pod_cidrs.clone(),
            pod_ips: Vec::new(),
        }
    }

    /// The claim a reader checks against the Node: the addresses and pod CIDRs (not the pod IPs).
    pub fn node_claim(&self) -> (&[String], &[String]) {
        (&self.internal_ips, &self.pod_cidrs)
    }
}

/// What this node's agent writes to its MeshPeer: the key it publishes (`None`: withdrawn) and
/// its Node's addresses and pod CIDRs, under its Node's uid (the owner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The key annotations.
    pub key: Option<NodeKeyAnnotations>,
    /// The claim.
    pub spec: MeshPeerSpec,
    /// The owning Node's `metadata.uid`.
    pub owner_uid: String,
}

impl Offer {
    /// The offer of `node` (this node's own Node) publishing `key`, with `pod_ips` (pod-IP mode:
    /// the addresses of its Pods, in any order and possibly repeated; empty otherwise).
    pub fn of(
        node: &SlimNode,
        key: Option<&NodeKeyAnnotations>,
        pod_ips: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        let pod_ips: BTreeSet<IpAddr> = pod_ips.into_iter().collect();
        let mut spec = MeshPeerSpec::of(&node.view());
        spec.pod_ips = pod_ips.iter().map(ToString::to_string).collect();
        Self { key: key.cloned(), spec, owner_uid: node.metadata.uid.clone().unwrap_or_default() }
    }
}

/// Writes `offer` to the MeshPeer named `node` with server-side apply (field manager
/// `meshcrypt`, forced; the annotations meshcrypt owned and no longer sends are dropped). Returns
/// false when the API server does not serve MeshPeers (the CRD is not installed: 404).
///
/// # Errors
/// Any other failure of the request (403 from RBAC or the admission policy, 5xx, transport).
pub async fn write(client: &kube::Client, node: &str, offer: &Offer) -> Result<bool, kube::Error> {
    let api: Api<MeshPeer> = Api::all(client.clone());
    let annotations = offer.key.as_ref().map(NodeKeyAnnotations::to_annotations).unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": "meshcrypt.dev/v1alpha1",
        "kind": "MeshPeer",
        "metadata": {
            "name": node,
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": offer.owner_uid}],
        },
        "spec": offer.spec,
    });
    let params = PatchParams::apply(crate::agent::FIELD_MANAGER).force();
    match api.patch(node, &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_of_a_node_is_its_internal_ips_and_pod_cidrs() {
        let node: SlimNode = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u-1"},
            "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "198.18.0.11"},
                {"type": "ExternalIP", "address": "198.19.0.11"},
                {"type": "InternalIP", "address": "fd00::11"},
            ]},
        }))
        .unwrap();
        let offer = Offer::of(&node, None, []);
        assert_eq!(offer.owner_uid, "u-1");
        assert_eq!(offer.spec.internal_ips, ["198.18.0.11", "fd00::11"]);
        assert_eq!(offer.spec.pod_cidrs, ["10.244.1.0/24", "fd00:10:244:1::/64"]);
        let json = serde_json::to_value(&offer.spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"internalIPs": ["198.18.0.11", "fd00::11"],
                                            "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]})
        );
        // Pod-IP mode: its Pods' addresses, sorted and once each.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let offer = Offer::of(&node, None, [ip("10.244.1.9"), ip("10.244.1.3"), ip("10.244.1.9")]);
        assert_eq!(offer.spec.pod_ips, ["10.244.1.3", "10.244.1.9"]);
    }
}
