//! A Node as the agent keeps it: a v1 Node read as only what the mesh uses. serde skips the rest
//! as it parses (the image list, the conditions, the node info, and of `managedFields` all but
//! which `meshcrypt.dev/` annotations each entry owns), and the two facts the mesh reads from
//! `managedFields` are computed as the object arrives, so the store holds neither the entries
//! nor their JSON trees.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeAddress, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, Time};
use kube::core::ClusterResourceScope;
use meshcrypt_keyexchange::annotations::{ANNOTATION_PREFIX, annotation_writers};
use meshcrypt_keyexchange::mesh::{
    COMPUTE_TYPE_LABEL, NoAgentExpected, NodeFields, NodeView, OS_LABEL, key_claimed,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// A v1 Node with only the fields the mesh reads, trimmed as it is parsed ([`SlimNode::new`]).
/// It serializes (for the watchers' change detection) with its [`ManagedFacts`] in place of
/// `managedFields`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "WireNode")]
pub struct SlimNode {
    /// The Node's metadata: name, uid, resourceVersion, creation time, the labels that say a
    /// node runs no agent (none when they do not say so), the `meshcrypt.dev/` annotations;
    /// never `managedFields`.
    pub metadata: ObjectMeta,
    /// `spec`: the pod CIDRs and taints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<SlimNodeSpec>,
    /// `status`: the InternalIP addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<SlimNodeStatus>,
    /// What `managedFields` said when the Node arrived.
    #[serde(rename = "meshcryptManagedFacts")]
    pub facts: ManagedFacts,
}

/// The Node spec fields the mesh reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimNodeSpec {
    /// `spec.podCIDR`.
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// `spec.podCIDRs`.
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Option::is_none")]
    pub pod_cidrs: Option<Vec<String>>,
    /// `spec.taints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
}

/// The Node status fields the mesh reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct SlimNodeStatus {
    /// `status.addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
}

/// The two facts the mesh reads from a Node's `managedFields`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ManagedFacts {
    /// When the API server recorded the latest write of the public-key annotation
    /// ([`key_claimed`]).
    pub key_claimed: Option<jiff::Timestamp>,
    /// The field managers owning `meshcrypt.dev/` annotations, sorted ([`annotation_writers`]).
    pub annotation_writers: Vec<String>,
}

impl SlimNode {
    /// The slim Node of `metadata`, `spec` and `status`: computes the [`ManagedFacts`] from
    /// `metadata.managedFields` and drops the entries; of the labels keeps the two that say a
    /// node runs no agent, and those only when they do ([`NoAgentExpected::from_labels`]: a
    /// map per Node is 600 bytes, 3 MB at 5,000 nodes); of the annotations the `meshcrypt.dev/`
    /// ones, of the addresses the InternalIPs.
    pub fn new(
        mut metadata: ObjectMeta,
        spec: Option<SlimNodeSpec>,
        mut status: Option<SlimNodeStatus>,
    ) -> Self {
        let facts = ManagedFacts {
            key_claimed: key_claimed(&metadata),
            annotation_writers: annotation_writers(&metadata),
        };
        metadata.managed_fields = None;
        metadata.labels =
            metadata.labels.take().filter(|l| NoAgentExpected::from_labels(l).is_some()).map(|mut labels| {
                labels.retain(|k, _| k == COMPUTE_TYPE_LABEL || k == OS_LABEL);
                labels
            });
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.retain(|k, _| k.starts_with(ANNOTATION_PREFIX));
        }
        if let Some(addresses) = status.as_mut().and_then(|s| s.addresses.as_mut()) {
            addresses.retain(|a| a.type_ == "InternalIP");
        }
        Self { metadata, spec, status, facts }
    }

    /// The Node as the peer set reads it.
    pub fn view(&self) -> NodeView {
        let spec = self.spec.as_ref();
        let fields = NodeFields {
            metadata: &self.metadata,
            pod_cidr: spec.and_then(|s| s.pod_cidr.as_ref()),
            pod_cidrs: spec.and_then(|s| s.pod_cidrs.as_deref()),
            addresses: self.status.as_ref().and_then(|s| s.addresses.as_deref()),
            key_claimed: self.facts.key_claimed,
        };
        NodeView::from_fields(fields, self.facts.annotation_writers.clone())
    }
}

/// A Node as the API sends it, read as only what [`SlimNode`] keeps.
#[derive(Deserialize)]
struct WireNode {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<SlimNodeSpec>,
    #[serde(default)]
    status: Option<SlimNodeStatus>,
}

/// `metadata`, of which a Node's `managedFields` are read only for the annotations each entry
/// owns ([`WireEntry`]).
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    managed_fields: Vec<WireEntry>,
}

/// A `managedFields` entry: its manager, its time, and the annotations it owns (the rest of its
/// `fieldsV1` tree, kilobytes for kubelet's status, is skipped unparsed).
#[derive(Deserialize)]
struct WireEntry {
    #[serde(default)]
    manager: Option<String>,
    #[serde(default)]
    time: Option<Time>,
    #[serde(default, rename = "fieldsV1")]
    fields: OwnedFields,
}

/// `fieldsV1` as far as `f:metadata` → `f:annotations`.
#[derive(Default, Deserialize)]
struct OwnedFields {
    #[serde(default, rename = "f:metadata")]
    metadata: OwnedMeta,
}

/// `f:metadata` as far as the keys of `f:annotations` (`f:<annotation>`).
#[derive(Default, Deserialize)]
struct OwnedMeta {
    #[serde(default, rename = "f:annotations")]
    annotations: BTreeMap<String, IgnoredAny>,
}

impl From<WireNode> for SlimNode {
    /// Keeps of the entries those owning `meshcrypt.dev/` annotations, as entries owning only
    /// those, which is all [`key_claimed`] and [`annotation_writers`] read.
    fn from(wire: WireNode) -> Self {
        let WireMeta { name, uid, resource_version, creation_timestamp, labels, annotations, managed_fields } =
            wire.metadata;
        let field_prefix = format!("f:{ANNOTATION_PREFIX}");
        let managed = managed_fields
            .into_iter()
            .filter_map(|entry| {
                let owned: serde_json::Map<String, serde_json::Value> = (entry.fields.metadata.annotations)
                    .into_keys()
                    .filter(|k| k.starts_with(&field_prefix))
                    .map(|k| (k, serde_json::json!({})))
                    .collect();
                (!owned.is_empty()).then(|| ManagedFieldsEntry {
                    manager: entry.manager,
                    time: entry.time,
                    fields_type: Some("FieldsV1".into()),
                    fields_v1: Some(FieldsV1(serde_json::json!({"f:metadata": {"f:annotations": owned}}))),
                    ..ManagedFieldsEntry::default()
                })
            })
            .collect();
        let metadata = ObjectMeta {
            name,
            uid,
            resource_version,
            creation_timestamp,
            labels,
            annotations,
            managed_fields: Some(managed),
            ..ObjectMeta::default()
        };
        SlimNode::new(metadata, wire.spec, wire.status)
    }
}

impl kube::Resource for SlimNode {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    const KEY: &str = "hAAcTTy5xmB09LRHZQ4vyDn3KHKfHLBNoDzS8DOJnxU=";

    /// A managedFields entry of `manager` at `time` owning `fields`.
    fn entry(manager: &str, time: &str, fields: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"manager": manager, "operation": "Update", "apiVersion": "v1", "time": time,
                           "fieldsType": "FieldsV1", "fieldsV1": fields})
    }

    /// A kubelet's Node with `annotations` and `entries`.
    fn node(annotations: serde_json::Value, entries: Vec<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "n1", "uid": "u-1", "resourceVersion": "7", "creationTimestamp": "2026-11-01T00:00:00Z",
                         "labels": {"kubernetes.io/os": "linux", "eks.amazonaws.com/compute-type": "fargate", "zone": "a"},
                         "annotations": annotations, "managedFields": entries},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
                     "providerID": "aws:///x", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.11"},
                                     {"type": "Hostname", "address": "n1"},
                                     {"type": "InternalIP", "address": "fd00::11"}],
                       "images": [{"names": ["busybox"], "sizeBytes": 1}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    /// Parsed as a slim Node, a Node gives the peer set the view the full Node gives (key,
    /// addresses, pod CIDRs, labels, and the two managedFields facts), whoever wrote what when.
    #[test]
    fn a_slim_node_gives_the_view_of_the_full_node() {
        let key_annotations = serde_json::json!({"meshcrypt.dev/public-key": KEY, "meshcrypt.dev/key-epoch": "3",
            "meshcrypt.dev/key-created": "2026-11-02T00:00:00Z", "node.alpha.kubernetes.io/ttl": "0"});
        let agent = |time| {
            entry(
                "meshcrypt",
                time,
                serde_json::json!({"f:metadata": {"f:annotations": {
                "f:meshcrypt.dev/public-key": {}, "f:meshcrypt.dev/key-epoch": {}, "f:meshcrypt.dev/key-created": {}}}}),
            )
        };
        let kubelet = entry(
            "kubelet",
            "2026-11-04T10:00:00Z",
            serde_json::json!({
            "f:metadata": {"f:annotations": {".": {}, "f:node.alpha.kubernetes.io/ttl": {}}, "f:labels": {"f:zone": {}}},
            "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {"f:lastHeartbeatTime": {}}}, "f:images": {}}}),
        );
        let annotate = |field: &str| {
            entry(
                "kubectl-annotate",
                "2026-11-05T10:00:00Z",
                serde_json::json!({"f:metadata": {"f:annotations": {field: {}}}}),
            )
        };
        let cases = [
            ("no managedFields", key_annotations.clone(), vec![]),
            (
                "the agent's key, kubelet's status",
                key_annotations.clone(),
                vec![agent("2026-11-02T10:00:00Z"), kubelet.clone()],
            ),
            (
                "another writer of the key, later",
                key_annotations.clone(),
                vec![agent("2026-11-02T10:00:00Z"), kubelet.clone(), annotate("f:meshcrypt.dev/public-key")],
            ),
            (
                "another writer of another meshcrypt annotation",
                key_annotations.clone(),
                vec![agent("2026-11-06T10:00:00Z"), annotate("f:meshcrypt.dev/key-created")],
            ),
            (
                "a writer of a foreign annotation only",
                key_annotations.clone(),
                vec![agent("2026-11-02T10:00:00Z"), annotate("f:team")],
            ),
            ("no annotations", serde_json::json!({}), vec![kubelet.clone()]),
            (
                "a malformed key",
                serde_json::json!({"meshcrypt.dev/public-key": "nope"}),
                vec![agent("2026-11-02T10:00:00Z")],
            ),
        ];
        let label_sets = [
            serde_json::json!({"kubernetes.io/os": "linux", "eks.amazonaws.com/compute-type": "fargate", "zone": "a"}),
            serde_json::json!({"kubernetes.io/os": "linux", "eks.amazonaws.com/compute-type": "ec2", "zone": "a"}),
            serde_json::json!({"kubernetes.io/os": "windows"}),
            serde_json::json!(null),
        ];
        for (what, annotations, entries) in cases {
            for labels in &label_sets {
                let mut json = node(annotations.clone(), entries.clone());
                json["metadata"]["labels"] = labels.clone();
                let full: Node = serde_json::from_value(json.clone()).unwrap();
                let slim: SlimNode = serde_json::from_value(json).unwrap();
                assert_eq!(slim.view(), NodeView::from_node(&full), "{what}, labels {labels}");
                let spec = slim.spec.as_ref().unwrap();
                assert_eq!(spec.taints, full.spec.as_ref().unwrap().taints, "{what}");
            }
        }
    }

    /// What a slim Node keeps: no managedFields, two labels (where they say no agent runs), the
    /// `meshcrypt.dev/` annotations,
    /// the InternalIPs; the facts stand in for the entries. Its inline size is under half the
    /// full type's, and it is read from the same URL.
    #[test]
    fn a_slim_node_keeps_only_what_the_mesh_reads() {
        let json = node(
            serde_json::json!({"meshcrypt.dev/public-key": KEY, "node.alpha.kubernetes.io/ttl": "0"}),
            vec![entry(
                "meshcrypt",
                "2026-11-02T10:00:00Z",
                serde_json::json!({"f:metadata": {"f:annotations": {"f:meshcrypt.dev/public-key": {}}}}),
            )],
        );
        let slim: SlimNode = serde_json::from_value(json).unwrap();
        assert!(slim.metadata.managed_fields.is_none());
        assert_eq!(slim.facts.annotation_writers.iter().collect::<Vec<_>>(), ["meshcrypt"]);
        assert_eq!(slim.facts.key_claimed, Some("2026-11-02T10:00:00Z".parse().unwrap()));
        let labels: Vec<_> = slim.metadata.labels.as_ref().unwrap().keys().collect();
        assert_eq!(labels, ["eks.amazonaws.com/compute-type", "kubernetes.io/os"], "a Fargate node's");
        let mut ec2 = node(serde_json::json!({}), vec![]);
        ec2["metadata"]["labels"] =
            serde_json::json!({"kubernetes.io/os": "linux", "eks.amazonaws.com/compute-type": "ec2"});
        let ec2: SlimNode = serde_json::from_value(ec2).unwrap();
        assert!(ec2.metadata.labels.is_none(), "an EC2 node's labels say nothing the mesh reads");
        let annotations: Vec<_> = slim.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(annotations, ["meshcrypt.dev/public-key"]);
        let addresses: Vec<_> =
            slim.status.as_ref().unwrap().addresses.iter().flatten().map(|a| &a.address).collect();
        assert_eq!(addresses, ["198.18.0.11", "fd00::11"]);
        assert_eq!(slim.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(slim.metadata.uid.as_deref(), Some("u-1"));
        assert!(
            std::mem::size_of::<SlimNode>() * 2 < std::mem::size_of::<Node>(),
            "slim {} B, full {} B",
            std::mem::size_of::<SlimNode>(),
            std::mem::size_of::<Node>()
        );
        use kube::Resource as _;
        assert_eq!(SlimNode::url_path(&(), None), Node::url_path(&(), None));
    }
}
