//! Kubernetes Events about the mesh: a Warning on each Node left out of the peer set (once per
//! distinct problem, again only if it goes away and comes back), and Normal events for milestones.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use meshcrypt_keyexchange::mesh::NodeProblem;

/// Publishes Events as `meshcrypt` on behalf of one node's agent.
pub struct EventReporter {
    recorder: Recorder,
    reported: BTreeSet<(String, &'static str, String)>,
}

impl EventReporter {
    /// A reporter for the agent on `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter { controller: "meshcrypt".into(), instance: Some(node.to_owned()) };
        Self { recorder: Recorder::new(client, reporter), reported: BTreeSet::new() }
    }

    /// Reports the problems that are new since the last call, and logs each.
    pub async fn problems(&mut self, problems: &[NodeProblem]) {
        let current: BTreeSet<(String, &'static str, String)> =
            problems.iter().map(|p| (p.node.clone(), p.problem.reason(), p.problem.to_string())).collect();
        for (node, reason, message) in current.difference(&self.reported) {
            tracing::warn!(peer_node = %node, reason, %message, "node left out of the mesh");
            self.publish(node, EventType::Warning, reason, message).await;
        }
        self.reported = current;
    }

    /// A Normal event on `node`.
    pub async fn normal(&self, node: &str, reason: &str, note: &str) {
        self.publish(node, EventType::Normal, reason, note).await;
    }

    async fn publish(&self, node: &str, type_: EventType, reason: &str, note: &str) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, node, reason, "cannot publish a Kubernetes Event");
        }
    }
}
