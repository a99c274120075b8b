//! The `RemoteCluster` resource (`meshcrypt.dev/v1alpha1`, cluster-scoped, one object per peer
//! cluster, named by its cluster id): the peer cluster's nodes as this cluster's registry read
//! them from that cluster's verified bundle. Agents hold no AWS credentials: they watch these
//! objects and mesh with the nodes listed. `meshcrypt crd` prints the CustomResourceDefinitions
//! (`deploy/base/crds.yaml` is its output).

use kube::CustomResource;
use meshcrypt_keyexchange::mesh::{RemoteNodeView, RemoteView};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A peer cluster's nodes.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "meshcrypt.dev",
    version = "v1alpha1",
    kind = "RemoteCluster",
    status = "RemoteClusterStatus",
    printcolumn = r#"{"name":"Generation","type":"integer","jsonPath":".spec.generation"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Fetched","type":"date","jsonPath":".status.fetched"}"#,
    printcolumn = r#"{"name":"Stale since","type":"date","jsonPath":".status.staleSince"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterSpec {
    /// The generation of the peer cluster's bundle these nodes come from.
    pub generation: u64,
    /// The peer cluster's nodes.
    #[serde(default)]
    pub nodes: Vec<RemoteNode>,
}

/// One node of a peer cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNode {
    /// The node's name in its cluster.
    pub name: String,
    /// Its WireGuard public key, base64 (44 characters).
    pub public_key: String,
    /// Its key epoch.
    #[serde(default)]
    pub key_epoch: u64,
    /// `address:port` this cluster's nodes send to.
    pub endpoint: String,
    /// Its pod prefixes.
    #[serde(default, rename = "allowedIPs")]
    pub allowed_ips: Vec<String>,
}

/// What the registry last did for this peer cluster (for people: `kubectl get remoteclusters`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterStatus {
    /// When the bundle was last read and verified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<String>,
    /// How many nodes the spec lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    /// Since when reads have failed (the nodes listed stay in use), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<String>,
    /// The last failure, if reads are failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RemoteCluster {
    /// The view the peer-set step reads: the cluster id is the object's name.
    pub fn view(&self) -> RemoteView {
        RemoteView {
            cluster: self.metadata.name.clone().unwrap_or_default(),
            nodes: self
                .spec
                .nodes
                .iter()
                .map(|n| RemoteNodeView {
                    name: n.name.clone(),
                    public_key: n.public_key.clone(),
                    key_epoch: n.key_epoch,
                    endpoint: n.endpoint.clone(),
                    allowed_ips: n.allowed_ips.clone(),
                })
                .collect(),
        }
    }
}

/// meshcrypt's CustomResourceDefinitions (RemoteCluster, MeshNode, MeshPeer), as one YAML stream.
pub fn crd_yaml() -> Result<String, yaml_serde::Error> {
    use kube::CustomResourceExt as _;
    Ok(format!(
        "{}---\n{}---\n{}",
        yaml_serde::to_string(&RemoteCluster::crd())?,
        yaml_serde::to_string(&crate::mesh_node::MeshNode::crd())?,
        yaml_serde::to_string(&crate::mesh_peer::MeshPeer::crd())?
    ))
}
