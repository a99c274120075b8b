//! The Node watcher: a reflector store of every Node. The store is only read after its first
//! complete list, so nothing is pruned early.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use meshcrypt_keyexchange::annotations::PUBLIC_KEY;
use tokio::sync::Notify;

/// Starts watching Nodes, waking the loop on each change. The store keeps what the mesh reads:
/// of `managedFields` only the entries that own the public-key annotation, trimmed to that field
/// (when the key was claimed decides between two Nodes claiming one key), and no image list.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<Node> {
    super::watch::reflect(Api::all(client), watcher::Config::default(), "nodes".into(), wake, trim)
}

/// Drops what the mesh never reads from a Node, keeping the key annotation's owners.
fn trim(node: &mut Node) {
    let field = format!("f:{PUBLIC_KEY}");
    if let Some(entries) = node.metadata.managed_fields.as_mut() {
        entries.retain_mut(|entry| {
            let owns = entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:metadata"]["f:annotations"].get(&field).is_some());
            entry.fields_v1 =
                owns.then(|| FieldsV1(serde_json::json!({"f:metadata": {"f:annotations": {&field: {}}}})));
            owns
        });
    }
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::mesh::NodeView;

    #[test]
    fn trimming_keeps_when_the_key_was_claimed_and_drops_the_rest() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "managedFields": [
                {"manager": "meshcrypt", "operation": "Apply", "time": "2026-11-02T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {
                     "f:meshcrypt.dev/public-key": {}, "f:meshcrypt.dev/key-epoch": {}}}}},
                {"manager": "kubelet", "operation": "Update", "time": "2026-11-04T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}}}},
            ]},
            "status": {"images": [{"names": ["busybox"]}]},
        }))
        .unwrap();
        let before = NodeView::from_node(&node).key_claimed;
        trim(&mut node);
        let entries = node.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager.as_deref(), Some("meshcrypt"));
        assert_eq!(NodeView::from_node(&node).key_claimed, before);
        assert!(before.is_some());
        assert!(node.status.unwrap().images.is_none());
    }
}
