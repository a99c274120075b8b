//! A Pod as the agent keeps it: a v1 Pod read as only what pod-IP mode and the flow records use.
//! serde skips the rest as it parses (the containers, volumes, conditions, container statuses,
//! `managedFields`), and the Pod's view for the peer set is made once, as the object arrives, not
//! once per pass: at 150,000 Pods a pass made them again in hundreds of milliseconds.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodIP;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::core::NamespaceResourceScope;
use meshcrypt_keyexchange::mesh::{PodFields, PodView};
use serde::{Deserialize, Serialize};

/// A v1 Pod with only the fields the agent reads, and its view ([`SlimPod::view`]).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "WirePod")]
pub struct SlimPod {
    /// The Pod's metadata: name, namespace, uid, resourceVersion, creation time and labels.
    pub metadata: ObjectMeta,
    /// `spec`: the node and the host-network flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<SlimPodSpec>,
    /// `status`: the phase and the addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<SlimPodStatus>,
    /// The view the peer set reads, made when the Pod arrived: `None` for a Pod that holds no
    /// pod-network address on a node ([`PodView::from_fields`]). Not serialized: it follows from
    /// the fields above.
    #[serde(skip)]
    pub view: Option<Arc<PodView>>,
}

/// The Pod spec fields the agent reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    /// `spec.nodeName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `spec.hostNetwork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// The Pod status fields the agent reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodStatus {
    /// `status.phase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `status.podIP`.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// `status.podIPs`.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
}

impl SlimPod {
    /// The slim Pod of `metadata`, `spec` and `status`, with its view made.
    pub fn new(metadata: ObjectMeta, spec: Option<SlimPodSpec>, status: Option<SlimPodStatus>) -> Self {
        let view = PodView::from_fields(PodFields {
            namespace: metadata.namespace.as_deref(),
            name: metadata.name.as_deref(),
            created: metadata.creation_timestamp.as_ref(),
            node_name: spec.as_ref().and_then(|s| s.node_name.as_deref()),
            host_network: spec.as_ref().and_then(|s| s.host_network),
            phase: status.as_ref().and_then(|s| s.phase.as_deref()),
            pod_ip: status.as_ref().and_then(|s| s.pod_ip.as_deref()),
            pod_ips: status.as_ref().and_then(|s| s.pod_ips.as_deref()),
        })
        .map(Arc::new);
        Self { metadata, spec, status, view }
    }

    /// Drops the labels (the peer set reads none; the flow records' own store of this node's
    /// Pods keeps them).
    pub fn without_labels(pod: &mut Self) {
        pod.metadata.labels = None;
    }
}

/// A Pod as the API sends it, read as only what [`SlimPod`] keeps.
#[derive(Deserialize)]
struct WirePod {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<SlimPodSpec>,
    #[serde(default)]
    status: Option<SlimPodStatus>,
}

/// The `metadata` fields kept.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
}

impl From<WirePod> for SlimPod {
    fn from(wire: WirePod) -> Self {
        let WireMeta { name, namespace, uid, resource_version, creation_timestamp, labels } = wire.metadata;
        let metadata = ObjectMeta {
            name,
            namespace,
            uid,
            resource_version,
            creation_timestamp,
            labels,
            ..ObjectMeta::default()
        };
        SlimPod::new(metadata, wire.spec, wire.status)
    }
}

impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
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

    /// A Pod as the API sends it, with what a slim Pod skips (containers, conditions, statuses).
    fn pod(host_network: bool, node: Option<&str>, phase: &str, ips: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "9",
                         "creationTimestamp": "2026-11-01T00:00:00Z", "labels": {"app": "web"},
                         "annotations": {"a": "b"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u-0"}],
                         "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]},
            "spec": {"containers": [{"name": "app", "image": "app", "env": [{"name": "X", "value": "1"}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}], "hostNetwork": host_network, "nodeName": node},
            "status": {"phase": phase, "podIP": ips.first(),
                       "podIPs": ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>(),
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "app", "image": "app", "imageID": "", "ready": true, "restartCount": 0}]},
        })
    }

    /// Only Pods holding pod-network addresses on a node have a view, with every address, the
    /// `namespace/name`, the node and the creation time.
    #[test]
    fn only_pods_holding_pod_network_addresses_have_a_view() {
        let cases = [
            ("running, dual stack", pod(false, Some("n1"), "Running", &["10.244.128.9", "fd00::9"]), Some(2)),
            ("pending with an address", pod(false, Some("n1"), "Pending", &["10.244.128.9"]), Some(1)),
            ("host network", pod(true, Some("n1"), "Running", &["198.18.0.11"]), None),
            ("not scheduled", pod(false, None, "Pending", &[]), None),
            ("no address yet", pod(false, Some("n1"), "Pending", &[]), None),
            ("succeeded", pod(false, Some("n1"), "Succeeded", &["10.244.128.9"]), None),
            ("failed", pod(false, Some("n1"), "Failed", &["10.244.128.9"]), None),
        ];
        for (what, json, want) in cases {
            let slim: SlimPod = serde_json::from_value(json).unwrap();
            let view = slim.view.as_deref();
            assert_eq!(view.map(|v| v.ips.len()), want, "{what}");
            if let Some(v) = view {
                assert_eq!((v.name.as_str(), v.node.as_str()), ("ns/p", "n1"), "{what}");
                assert_eq!(v.created, Some("2026-11-01T00:00:00Z".parse().unwrap()), "{what}");
            }
        }
        // An address only in the older `podIP`.
        let mut json = pod(false, Some("n1"), "Running", &[]);
        json["status"]["podIP"] = "10.244.128.7".into();
        let slim: SlimPod = serde_json::from_value(json).unwrap();
        assert_eq!(slim.view.unwrap().ips, ["10.244.128.7".parse::<std::net::IpAddr>().unwrap()]);
    }

    /// What is kept serializes back (the watchers' change detection hashes it) and parses again
    /// to the same slim Pod; what is skipped is gone.
    #[test]
    fn a_slim_pod_keeps_only_what_the_agent_reads() {
        let slim: SlimPod =
            serde_json::from_value(pod(false, Some("n1"), "Running", &["10.244.128.9"])).unwrap();
        let json = serde_json::to_value(&slim).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "9",
                             "creationTimestamp": "2026-11-01T00:00:00Z", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "hostNetwork": false},
                "status": {"phase": "Running", "podIP": "10.244.128.9", "podIPs": [{"ip": "10.244.128.9"}]},
            })
        );
        assert_eq!(serde_json::from_value::<SlimPod>(json).unwrap(), slim);
        let mut trimmed = slim;
        SlimPod::without_labels(&mut trimmed);
        assert_eq!(trimmed.metadata.labels, None);
        assert!(trimmed.view.is_some(), "the view stays");
    }
}
