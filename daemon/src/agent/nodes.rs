//! The Node watchers: a reflector store of every Node (`--peer-source nodes`), and one of this
//! node's own Node alone (its addresses, pod CIDRs, taints and published key, in either mode).
//! A store is only read after its first complete list, so nothing is pruned early.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use meshcrypt_keyexchange::annotations::ANNOTATION_PREFIX;
use meshcrypt_keyexchange::mesh::{COMPUTE_TYPE_LABEL, OS_LABEL};
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

/// Drops what the mesh never reads from a Node: of the labels it keeps the two that say a node runs no agent, of the annotations the
/// `meshcrypt.dev/` ones and the `managedFields` entries that own them, of the spec the pod CIDRs
/// and taints, of the status the InternalIPs.
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
    let meta = &mut node.metadata;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == COMPUTE_TYPE_LABEL || k == OS_LABEL);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(ANNOTATION_PREFIX));
    }
    if let Some(spec) = node.spec.as_mut() {
        *spec = NodeSpec {
            pod_cidr: spec.pod_cidr.take(),
            pod_cidrs: spec.pod_cidrs.take(),
            taints: spec.taints.take(),
            ..Default::default()
        };
    }
    if let Some(status) = node.status.as_mut() {
        let mut addresses = status.addresses.take().unwrap_or_default();
        addresses.retain(|a| a.type_ == "InternalIP");
        *status = NodeStatus { addresses: Some(addresses), ..Default::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::mesh::NodeView;

    #[test]
    fn trimming_keeps_what_the_mesh_reads_and_drops_the_rest() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1",
                "labels": {"kubernetes.io/os": "linux", "eks.amazonaws.com/compute-type": "ec2",
                           "topology.kubernetes.io/zone": "us-east-1a"},
                "annotations": {"meshcrypt.dev/public-key": "k", "node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [
                {"manager": "meshcrypt", "operation": "Apply", "time": "2026-11-02T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {
                     "f:meshcrypt.dev/public-key": {}, "f:meshcrypt.dev/key-epoch": {}}}}},
                {"manager": "kubelet", "operation": "Update", "time": "2026-11-04T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "time": "2026-11-05T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:meshcrypt.dev/key-created": {}, "f:team": {}}}}},
            ]},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "aws:///us-east-1a/i-1",
                     "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"images": [{"names": ["busybox"]}],
                       "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-04T10:00:00Z"}],
                       "addresses": [{"type": "InternalIP", "address": "198.18.0.11"},
                                     {"type": "InternalDNS", "address": "ip-198-18-0-11.ec2.internal"}]},
        }))
        .unwrap();
        let before = NodeView::from_node(&node);
        trim(&mut node);
        let after = NodeView::from_node(&node);
        assert_eq!(
            (&after.internal_ips, &after.pod_cidrs, after.no_agent, &after.annotation_writers),
            (&before.internal_ips, &before.pod_cidrs, before.no_agent, &before.annotation_writers),
            "the mesh reads the same"
        );
        let labels: Vec<_> = node.metadata.labels.as_ref().unwrap().keys().collect();
        assert_eq!(labels, ["eks.amazonaws.com/compute-type", "kubernetes.io/os"]);
        let annotations: Vec<_> = node.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(annotations, ["meshcrypt.dev/public-key"]);
        let spec = node.spec.as_ref().unwrap();
        assert!(spec.provider_id.is_none() && spec.taints.as_ref().unwrap().len() == 1, "{spec:?}");
        assert_eq!(spec.pod_cidrs.as_deref(), Some(&["10.244.1.0/24".to_owned()][..]));
        let entries = node.metadata.managed_fields.as_ref().unwrap();
        let managers: Vec<_> = entries.iter().map(|e| e.manager.as_deref().unwrap()).collect();
        assert_eq!(managers, ["meshcrypt", "kubectl-annotate"]);
        assert_eq!(
            entries[1].fields_v1.as_ref().unwrap().0,
            serde_json::json!({"f:metadata": {"f:annotations": {"f:meshcrypt.dev/key-created": {}}}})
        );
        assert_eq!(after.key_claimed, before.key_claimed);
        assert!(before.key_claimed.is_some());
        let status = node.status.unwrap();
        assert!(status.images.is_none() && status.conditions.is_none());
        let addresses: Vec<_> = status.addresses.unwrap().into_iter().map(|a| a.address).collect();
        assert_eq!(addresses, ["198.18.0.11"]);
    }
}
