//! The `MeshNode` resource (`meshcrypt.dev/v1alpha1`, cluster-scoped, one object per node, named
//! after it, owned by its Node so it goes with it): the state the node's agent reports for the
//! cluster view (`meshcrypt status --cluster`). Only the node's own agent writes it (the admission
//! policy in `deploy/base`); no agent watches it, so a write costs one request and no fan-out.
//! `meshcrypt crd` prints its CustomResourceDefinition with RemoteCluster's.

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A node as its agent reports it. The spec is empty: everything is status.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "meshcrypt.dev",
    version = "v1alpha1",
    kind = "MeshNode",
    status = "MeshNodeStatus",
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Strict","type":"boolean","jsonPath":".status.strict"}"#,
    printcolumn = r#"{"name":"Peers","type":"integer","jsonPath":".status.peers"}"#,
    printcolumn = r#"{"name":"Handshaked","type":"integer","jsonPath":".status.peersHandshaked"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.keyEpoch"}"#,
    printcolumn = r#"{"name":"Reported","type":"date","jsonPath":".status.reportedAt"}"#
)]
pub struct MeshNodeSpec {}

/// What the agent reports. Written when it changes (at most every fifth of the report interval)
/// and at least once per report interval, so a stale `reportedAt` means the agent is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshNodeStatus {
    /// The latest reconcile pass programmed the device, its peers and the routes.
    pub ready: bool,
    /// Why it is (not) ready.
    pub reason: String,
    /// The mesh is switched on by the ConfigMap.
    pub enabled: bool,
    /// Fail-closed mode is on.
    pub strict: bool,
    /// The key in use: `sha256:` and 16 hex digits.
    pub key_fingerprint: String,
    /// Its epoch.
    pub key_epoch: u64,
    /// When it was made (RFC 3339).
    pub key_created: String,
    /// Peers configured on the device.
    pub peers: u64,
    /// Of those, the peers a handshake has completed with since they were configured.
    pub peers_handshaked: u64,
    /// The oldest of those peers' latest handshakes (RFC 3339), as of `reportedAt`: how recent
    /// the least recent session is. A change of it alone waits for the next heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_handshake: Option<String>,
    /// Problems this node's agent sees about its own node (at most 20), as `reason: message`.
    #[serde(default)]
    pub problems: Vec<String>,
    /// The agent's version.
    pub version: String,
    /// The agent stopped (SIGTERM); its routes are gone, the fail-closed floor stays.
    #[serde(default)]
    pub stopped: bool,
    /// When this was written (RFC 3339).
    pub reported_at: String,
    /// The report interval in seconds: a `reportedAt` older than twice this, plus a minute, means
    /// the agent stopped reporting.
    pub report_interval_seconds: u64,
}

impl MeshNode {
    /// The MeshNodes as untyped objects: a MeshNode read back may come without its (empty) spec,
    /// which the typed form would refuse.
    pub fn dynamic_api(client: &kube::Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &ApiResource::erase::<MeshNode>(&()))
    }

    /// Every MeshNode's status by name (those without a readable status are left out; none at
    /// all while the CRD is not installed).
    pub async fn reports(client: &kube::Client) -> Result<BTreeMap<String, MeshNodeStatus>, kube::Error> {
        let list = match Self::dynamic_api(client).list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(list
            .into_iter()
            .filter_map(|o| {
                let status = serde_json::from_value(o.data.get("status")?.clone()).ok()?;
                Some((o.metadata.name?, status))
            })
            .collect())
    }
}
