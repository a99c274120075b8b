//! Publishing this node's key on its own Node with server-side apply: field manager `meshcrypt`,
//! owning only the `meshcrypt.dev/` key annotations.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use meshcrypt_keyexchange::NodeKeyAnnotations;

use super::slim_node::SlimNode;

/// The field manager meshcrypt applies with.
pub use meshcrypt_keyexchange::annotations::AGENT_FIELD_MANAGER as FIELD_MANAGER;

/// Applies `annotations` to Node `node`. Forced: these annotations belong to meshcrypt, so a
/// conflicting owner (a person's `kubectl annotate`, an old manager) is overruled.
pub async fn publish_key(
    client: &kube::Client,
    node: &str,
    key: &NodeKeyAnnotations,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node, "annotations": key.to_annotations() },
    });
    api.patch(node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    tracing::info!(node, fingerprint = %key.public_key.fingerprint(), epoch = key.epoch, "published the node key");
    Ok(())
}

/// Withdraws the key: applies an empty set of annotations as `meshcrypt`, so the API server drops
/// the annotations only meshcrypt owned. Other nodes then stop using this node as a peer.
pub async fn withdraw_key(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": node } });
    api.patch(node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    tracing::info!(node, "withdrew the node key");
    Ok(())
}

/// The taint a node can be registered with so that no pod is scheduled on it before its agent has
/// the fail-closed floor and the peers in place (otherwise pods that start first follow the
/// host's routes, in plaintext). The agent removes it, with any effect, after its first pass that
/// programmed the mesh; the admission policy in `deploy/` lets it remove exactly this taint, on
/// its own Node, and nothing else.
pub const STARTUP_TAINT: &str = "meshcrypt.dev/agent-not-ready";

/// Removes every [`STARTUP_TAINT`] from `node` with one JSON patch (RFC 6902) that first tests
/// each taint it removes, so a concurrent change to the taints makes it fail (422) rather than
/// remove another taint; the next pass tries again. Returns false when there was none.
pub async fn remove_startup_taint(client: &kube::Client, node: &SlimNode) -> Result<bool, kube::Error> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let mut ops = Vec::new();
    // Highest index first: earlier indices stay valid as later taints go.
    for (i, taint) in taints.iter().enumerate().rev().filter(|(_, t)| t.key == STARTUP_TAINT) {
        ops.push(serde_json::json!({"op": "test", "path": format!("/spec/taints/{i}"), "value": taint}));
        ops.push(serde_json::json!({"op": "remove", "path": format!("/spec/taints/{i}")}));
    }
    if ops.is_empty() {
        return Ok(false);
    }
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let patch = serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    let api: Api<Node> = Api::all(client.clone());
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await?;
    tracing::info!(
        node = name,
        taint = STARTUP_TAINT,
        "removed the startup taint: pods may be scheduled here now"
    );
    Ok(true)
}
