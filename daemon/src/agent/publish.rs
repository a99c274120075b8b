//! Publishing this node's key on its own Node with server-side apply: field manager `meshcrypt`,
//! owning only the `meshcrypt.dev/` key annotations.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use meshcrypt_keyexchange::NodeKeyAnnotations;

/// The field manager meshcrypt applies with.
pub const FIELD_MANAGER: &str = "meshcrypt";

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
