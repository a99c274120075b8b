//! Kubernetes Events about the mesh, published as `meshcrypt` on behalf of one node's agent: the
//! pass decides which (see `decide`: an Event about a node is raised by one agent, not by every
//! agent that sees it), this module only sends them, through [`crate::events::EventRecorder`].

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::reflector::{ObjectRef, Store};

use super::slim_node::SlimNode;
use crate::events::EventRecorder;
pub use crate::events::EventType;

/// The action of the agent's Events.
const ACTION: &str = "Reconcile";

/// Publishes Events as `meshcrypt` on behalf of one node's agent.
pub struct EventReporter {
    recorder: EventRecorder,
    /// The Nodes, for the uid of a Node reference.
    nodes: Store<SlimNode>,
}

impl EventReporter {
    /// A reporter for the agent on `node`; Node references get their uid from `nodes`.
    pub fn new(client: kube::Client, node: &str, nodes: Store<SlimNode>) -> Self {
        Self { recorder: EventRecorder::new(client, "meshcrypt", node), nodes }
    }

    /// A Normal event on Node `node`.
    pub async fn normal(&self, node: &str, reason: &str, note: &str) {
        self.publish(node_ref(node), EventType::Normal, reason, note).await;
    }

    /// A Warning event on Node `node`.
    pub async fn warning(&self, node: &str, reason: &str, note: &str) {
        self.publish(node_ref(node), EventType::Warning, reason, note).await;
    }

    /// An event on any object (a Node reference without a uid gets the Node's).
    pub async fn publish(&self, mut reference: ObjectReference, type_: EventType, reason: &str, note: &str) {
        if reference.kind.as_deref() == Some("Node")
            && reference.uid.is_none()
            && let Some(name) = reference.name.as_deref()
        {
            reference.uid = self.nodes.get(&ObjectRef::new(name)).and_then(|n| n.metadata.uid.clone());
        }
        self.recorder.publish(reference, type_, reason, ACTION, note, jiff::Timestamp::now()).await;
    }
}

/// A reference to Node `name` (its uid is filled in when published).
pub fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}

/// A reference to RemoteCluster `name` (a peer cluster's id).
pub fn remote_cluster_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("meshcrypt.dev/v1alpha1".into()),
        kind: Some("RemoteCluster".into()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}

/// A reference to ConfigMap `namespace/name`.
pub fn configmap_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}
