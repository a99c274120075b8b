//! The Node watchers: a reflector store of every Node (`--peer-source nodes`), and one of this
//! node's own Node alone (its addresses, pod CIDRs, taints and published key, in either mode).
//! A store is only read after its first complete list, so nothing is pruned early.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use meshcrypt_keyexchange::annotations::ANNOTATION_PREFIX;
use tokio::sync::Notify;

/// Starts watching Nodes, waking the loop on each change of what it keeps. The store keeps what
/// the mesh reads: of `managedFields` only the entries that own a `meshcrypt.dev/` annotation,
/// trimmed to those annotations (when the key was claimed decides between two Nodes claiming one
/// key; who wrote them is checked), and of the status only the addresses: not the image list,
/// nor the conditions whose heartbeats kubelet re-posts every 5 minutes (17 writes a second at
/// 5,000 nodes, none of which may cost a pass).
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<Node> {
    super::watch::reflect(Api::all(client), watcher::Config::default(), "nodes".into(), wake, trim)
}

/// Starts watching this node's own Node (`metadata.name=<node>`: one object, whatever the
/// cluster's size), waking the loop on each change of what it keeps.
pub fn watch_own(client: kube::Client, wake: Arc<Notify>, node: &str) -> Store<Node> {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    super::watch::reflect(Api::all(client), config, "own node".into(), wake, trim)
}

/// Drops what the mesh never reads from a Node, keeping the owners of its `meshcrypt.dev/`
/// annotations.
pub(crate) fn trim(node: &mut Node) {
    let field_prefix = format!("f:{ANNOTATION_PREFIX}");
    if let Some(entries) = node.metadata.managed_fields.as_mut() {
        entries.retain_mut(|entry| {
            let owned: serde_json::Map<String, serde_json::Value> = entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0["f:metadata"]["f:annotations"].as_object())
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with(&field_prefix))
                .map(|(k, _)| (k.clone(), serde_json::json!({})))
                .collect();
            let keep = !owned.is_empty();
            entry.fields_v1 =
                keep.then(|| FieldsV1(serde_json::json!({"f:metadata": {"f:annotations": owned}})));
            keep
        });
    }
    if let Some(status) = node.status.as_mut() {
        *status = k8s_openapi::api::core::v1::NodeStatus {
            addresses: status.addresses.take(),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::mesh::NodeView;

    #[test]
    fn trimming_keeps_who_wrote_the_meshcrypt_annotations_and_the_addresses_and_drops_the_rest() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "managedFields": [
                {"manager": "meshcrypt", "operation": "Apply", "time": "2026-11-02T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {
                     "f:meshcrypt.dev/public-key": {}, "f:meshcrypt.dev/key-epoch": {}}}}},
                {"manager": "kubelet", "operation": "Update", "time": "2026-11-04T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "time": "2026-11-05T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:meshcrypt.dev/key-created": {}, "f:team": {}}}}},
            ]},
            "status": {"images": [{"names": ["busybox"]}],
                       "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-04T10:00:00Z"}],
                       "addresses": [{"type": "InternalIP", "address": "198.18.0.11"}]},
        }))
        .unwrap();
        let before = NodeView::from_node(&node).key_claimed;
        trim(&mut node);
        let entries = node.metadata.managed_fields.as_ref().unwrap();
        let managers: Vec<_> = entries.iter().map(|e| e.manager.as_deref().unwrap()).collect();
        assert_eq!(managers, ["meshcrypt", "kubectl-annotate"]);
        assert_eq!(
            entries[1].fields_v1.as_ref().unwrap().0,
            serde_json::json!({"f:metadata": {"f:annotations": {"f:meshcrypt.dev/key-created": {}}}})
        );
        assert_eq!(NodeView::from_node(&node).key_claimed, before);
        assert!(before.is_some());
        let status = node.status.unwrap();
        assert!(status.images.is_none() && status.conditions.is_none());
        assert_eq!(status.addresses.unwrap()[0].address, "198.18.0.11");
    }
}
