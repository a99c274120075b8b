//! The cluster view, `meshcrypt status --cluster` (schema `meshcrypt.dev/cluster-status/v1`): every
//! Node with what its own annotations say (the key published) and what its agent last reported on
//! its MeshNode, judged at one moment. Two list requests, whatever the cluster's size.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use meshcrypt_keyexchange::NodeKeyAnnotations;
use meshcrypt_keyexchange::mesh::NoAgentExpected;
use serde::{Deserialize, Serialize};

use crate::mesh_node::MeshNodeStatus;

/// The schema name and version of [`ClusterStatus`].
pub const CLUSTER_STATUS_SCHEMA: &str = "meshcrypt.dev/cluster-status/v1";

/// How late a report may be beyond twice its interval before the agent counts as gone.
const REPORT_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Every node's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Always [`CLUSTER_STATUS_SCHEMA`].
    pub schema: String,
    /// When this was taken (RFC 3339).
    pub time: String,
    /// Counts over [`Self::nodes`].
    pub summary: Summary,
    /// Every Node, by name.
    pub nodes: Vec<ClusterNode>,
}

/// Counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Nodes.
    pub nodes: usize,
    /// Nodes whose agent is ready.
    pub ready: usize,
    /// Nodes expected to run no agent (Fargate, hybrid, Auto Mode).
    pub exceptions: usize,
    /// Nodes with at least one problem.
    pub with_problems: usize,
}

/// The agent's state on a node, as the cluster view judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Reporting, and its latest pass programmed the mesh.
    Ready,
    /// Reporting, not ready (the reason is among the problems).
    NotReady,
    /// Stopped (SIGTERM): traffic to and from its pods is dropped (fail closed) until it is back.
    Stopped,
    /// Its last report is older than twice its interval plus a minute: killed, hung or cut off.
    NotReporting,
    /// No agent has ever reported on this node.
    NoAgent,
    /// The node is expected to run no agent (see `exception`).
    Exception,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNode {
    /// The Node's name.
    pub node: String,
    /// Its agent's state.
    pub agent: AgentState,
    /// Why no agent is expected (`Fargate`, `HybridNode`, `AutoModeNode`).
    pub exception: Option<String>,
    /// The key fingerprint the Node publishes (`None`: none, or malformed).
    pub key_fingerprint: Option<String>,
    /// Its epoch.
    pub key_epoch: Option<u64>,
    /// When it was made (RFC 3339, `meshcrypt.dev/key-created`).
    pub key_created: Option<String>,
    /// Its age in seconds, from the key's creation time.
    pub key_age_seconds: Option<u64>,
    /// Peers configured on its device, as last reported.
    pub peers: Option<u64>,
    /// Of those, peers it completed a handshake with.
    pub peers_handshaked: Option<u64>,
    /// The oldest of those peers' latest handshakes (RFC 3339), as last reported.
    pub oldest_handshake: Option<String>,
    /// Fail-closed mode, as last reported.
    pub strict: Option<bool>,
    /// When its agent last reported (RFC 3339).
    pub reported_at: Option<String>,
    /// What is wrong, for people.
    pub problems: Vec<String>,
}

/// The cluster view at `now` from every Node and every MeshNode's status by name.
pub fn cluster_status(
    nodes: &[Node],
    reports: &BTreeMap<String, MeshNodeStatus>,
    now: jiff::Timestamp,
) -> ClusterStatus {
    let mut out: Vec<ClusterNode> = nodes.iter().map(|n| judge(n, reports, now)).collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    let summary = Summary {
        nodes: out.len(),
        ready: out.iter().filter(|n| n.agent == AgentState::Ready).count(),
        exceptions: out.iter().filter(|n| n.agent == AgentState::Exception).count(),
        with_problems: out.iter().filter(|n| !n.problems.is_empty()).count(),
    };
    ClusterStatus { schema: CLUSTER_STATUS_SCHEMA.to_owned(), time: now.to_string(), summary, nodes: out }
}

fn judge(node: &Node, reports: &BTreeMap<String, MeshNodeStatus>, now: jiff::Timestamp) -> ClusterNode {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let exception = node.metadata.labels.as_ref().and_then(NoAgentExpected::from_labels);
    let empty = Default::default();
    let published = match NodeKeyAnnotations::parse(node.metadata.annotations.as_ref().unwrap_or(&empty)) {
        Ok(key) => key,
        Err(e) => {
            problems.push(format!("InvalidKeyAnnotation: {e}"));
            None
        }
    };
    let report = reports.get(&name);
    let agent = match report {
        None if exception.is_some() => AgentState::Exception,
        None => {
            problems
                .push("no agent has reported on this node (is meshcrypt's DaemonSet running here?)".into());
            AgentState::NoAgent
        }
        Some(r) if r.stopped => {
            problems.push(format!(
                "agent stopped at {}; pod traffic here is dropped until it is back",
                r.reported_at
            ));
            AgentState::Stopped
        }
        Some(r) if overdue(r, now) => {
            problems.push(format!(
                "agent not reporting since {} (expected every {} s): killed, hung or cut off from the API",
                r.reported_at, r.report_interval_seconds
            ));
            AgentState::NotReporting
        }
        Some(r) if r.ready => AgentState::Ready,
        Some(r) => {
            problems.push(format!("agent not ready: {}", r.reason));
            AgentState::NotReady
        }
    };
    if let Some(r) = report {
        if published.is_none() && r.enabled {
            problems.push("no key published on the Node".into());
        }
        if let Some(k) = &published
            && k.public_key.fingerprint() != r.key_fingerprint
        {
            problems.push(format!(
                "the Node publishes key {} but the agent reported {} (a rotation under way, or a key written by someone else)",
                k.public_key.fingerprint(),
                r.key_fingerprint
            ));
        }
        problems.extend(r.problems.iter().cloned());
    }
    ClusterNode {
        node: name,
        agent,
        exception: exception.map(|e| e.reason().to_owned()),
        key_fingerprint: published.as_ref().map(|k| k.public_key.fingerprint()),
        key_epoch: published.as_ref().map(|k| k.epoch),
        key_created: published.as_ref().map(|k| k.created.to_string()),
        key_age_seconds: published
            .as_ref()
            .map(|k| u64::try_from(now.duration_since(k.created).as_secs()).unwrap_or(0)),
        peers: report.map(|r| r.peers),
        peers_handshaked: report.map(|r| r.peers_handshaked),
        oldest_handshake: report.and_then(|r| r.oldest_handshake.clone()),
        strict: report.map(|r| r.strict),
        reported_at: report.map(|r| r.reported_at.clone()),
        problems,
    }
}

/// Whether a report is older than twice its interval plus [`REPORT_GRACE`] (an unreadable time
/// counts as overdue).
fn overdue(r: &MeshNodeStatus, now: jiff::Timestamp) -> bool {
    let Ok(at) = r.reported_at.parse::<jiff::Timestamp>() else { return true };
    let interval =
        jiff::SignedDuration::from_secs(i64::try_from(r.report_interval_seconds).unwrap_or(i64::MAX / 4));
    now.duration_since(at) > interval * 2 + REPORT_GRACE
}

#[cfg(test)]
mod tests {
    use meshcrypt_keyexchange::PrivateKey;

    use super::*;
    use crate::test_support::{node, ready_report};

    const NOW: i64 = 1_800_000_000;

    /// (case, the Node, its report, the agent's state judged, the problems' beginnings)
    type Case = (&'static str, Node, Option<MeshNodeStatus>, AgentState, &'static [&'static str]);

    fn report(key: &NodeKeyAnnotations, edit: impl FnOnce(&mut MeshNodeStatus)) -> MeshNodeStatus {
        let mut status = ready_report(key, NOW);
        edit(&mut status);
        status
    }

    #[test]
    fn cluster_status_table() {
        let key = NodeKeyAnnotations {
            public_key: PrivateKey::generate().public_key(),
            epoch: 1,
            created: jiff::Timestamp::from_second(NOW - 3600).unwrap(),
        };
        let other = NodeKeyAnnotations { public_key: PrivateKey::generate().public_key(), ..key.clone() };
        let fargate = [("eks.amazonaws.com/compute-type", "fargate")];
        let long_ago = jiff::Timestamp::from_second(NOW - 661).unwrap().to_string();
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("a ready agent", node("n", Some(&key), &[]), Some(report(&key, |_| {})), AgentState::Ready, &[]),
            ("not ready", node("n", Some(&key), &[]), Some(report(&key, |r| { r.ready = false; r.reason = "the last reconcile pass failed".into() })), AgentState::NotReady, &["agent not ready: the last reconcile pass failed"]),
            ("stopped", node("n", Some(&key), &[]), Some(report(&key, |r| { r.ready = false; r.stopped = true })), AgentState::Stopped, &["agent stopped at"]),
            ("a report older than 2 x 300 s + 60 s", node("n", Some(&key), &[]), Some(report(&key, |r| r.reported_at = long_ago.clone())), AgentState::NotReporting, &["agent not reporting since"]),
            ("no report at all", node("n", None, &[]), None, AgentState::NoAgent, &["no agent has reported"]),
            ("a Fargate node: an exception, no problem", node("n", None, &fargate), None, AgentState::Exception, &[]),
            ("the published key is not the reported one", node("n", Some(&other), &[]), Some(report(&key, |_| {})), AgentState::Ready, &["the Node publishes key"]),
            ("handshakes with 1 of 2 peers: they start with traffic, no problem", node("n", Some(&key), &[]), Some(report(&key, |r| r.peers_handshaked = 1)), AgentState::Ready, &[]),
            ("its own problems", node("n", Some(&key), &[]), Some(report(&key, |r| r.problems = vec!["ContestedPrefix: x".into()])), AgentState::Ready, &["ContestedPrefix: x"]),
        ];
        let now = jiff::Timestamp::from_second(NOW).unwrap();
        for (case, n, m, agent, problems) in cases {
            let reports = m.into_iter().map(|m| ("n".to_owned(), m)).collect();
            let view = cluster_status(&[n], &reports, now);
            let got = &view.nodes[0];
            assert_eq!(got.agent, agent, "{case}");
            assert_eq!(got.problems.len(), problems.len(), "{case}: {:?}", got.problems);
            for (p, want) in got.problems.iter().zip(problems) {
                assert!(p.starts_with(want), "{case}: {p:?} should start with {want:?}");
            }
        }
    }
}
