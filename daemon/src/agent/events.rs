//! Kubernetes Events about the mesh, published as `meshcrypt` on behalf of one node's agent: the
//! pass decides which (a Warning on each Node left out of the peer set, once per distinct problem;
//! Normal events for milestones), this module only sends them.

use k8s_openapi::api::core::v1::ObjectReference;
pub use kube::runtime::events::EventType;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Publishes Events as `meshcrypt` on behalf of one node's agent.
pub struct EventReporter {
    recorder: Recorder,
}

impl EventReporter {
    /// A reporter for the agent on `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter { controller: "meshcrypt".into(), instance: Some(node.to_owned()) };
        Self { recorder: Recorder::new(client, reporter) }
    }

    /// A Normal event on Node `node`.
    pub async fn normal(&self, node: &str, reason: &str, note: &str) {
        self.publish(node_ref(node), EventType::Normal, reason, note).await;
    }

    /// A Warning event on Node `node`.
    pub async fn warning(&self, node: &str, reason: &str, note: &str) {
        self.publish(node_ref(node), EventType::Warning, reason, note).await;
    }

    /// An event on any object.
    pub async fn publish(&self, reference: ObjectReference, type_: EventType, reason: &str, note: &str) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, object = ?reference.name, reason, "cannot publish a Kubernetes Event");
        }
    }
}

/// A reference to Node `name`.
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
