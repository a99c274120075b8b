//! The audit report (schema `meshcrypt.dev/audit-report/v1`): what an assessor files. Its
//! `contentHash` covers everything else in it, so a copy can be checked against the original.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::policy::Policy;
use crate::status::AgentState;

/// The schema name and version of [`AuditReport`].
pub const AUDIT_REPORT_SCHEMA: &str = "meshcrypt.dev/audit-report/v1";

/// One audit of a cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Always [`AUDIT_REPORT_SCHEMA`].
    pub schema: String,
    /// When the cluster was read (RFC 3339, UTC, to the second).
    pub taken_at: String,
    /// The API server audited (its URL, from the kubeconfig).
    pub cluster: String,
    /// Compliant when there is no violation.
    pub verdict: Verdict,
    /// What was checked against.
    pub policy: Policy,
    /// Counts.
    pub summary: AuditSummary,
    /// Every violation and warning, most serious first.
    pub findings: Vec<Finding>,
    /// Every Node: is its pod traffic covered by the mesh.
    pub coverage: Vec<Coverage>,
    /// Every key published, with its age against the policy and who wrote it.
    pub key_inventory: Vec<KeyEntry>,
    /// What the mesh does not encrypt, by design or by configuration, and why.
    pub exceptions: Vec<Exception>,
    /// The cluster ConfigMap: the settings it gives and who last changed it.
    pub configuration: Configuration,
    /// `sha256:` and the hex SHA-256 of this report's compact JSON with keys sorted and
    /// `contentHash` left out ([`content_hash`]).
    pub content_hash: String,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No violation.
    Compliant,
    /// At least one violation (the process exits 2).
    NotCompliant,
}

/// Counts over the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditSummary {
    /// Nodes.
    pub nodes: usize,
    /// Nodes whose agent is ready and that no violation names.
    pub compliant: usize,
    /// Nodes expected to run no agent (Fargate, hybrid, Auto Mode, Windows).
    pub no_agent_expected: usize,
    /// Findings of severity violation.
    pub violations: usize,
    /// Findings of severity warning.
    pub warnings: usize,
    /// Exceptions listed.
    pub exceptions: usize,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Fails the audit.
    Violation,
    /// Needs a look; does not fail the audit.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Violation or warning.
    pub severity: Severity,
    /// What it is about: a node's name, `configmap/<namespace>/<name>`.
    pub subject: String,
    /// A stable code (`NoAgent`, `AgentStopped`, `KeyTooOld`, `StrictOff`, ...; see
    /// docs/compliance.md).
    pub code: String,
    /// Why, for people.
    pub message: String,
}

/// One node's coverage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// The Node.
    pub node: String,
    /// Its agent's state, as `meshcrypt status --cluster` judges it.
    pub agent: AgentState,
    /// Why no agent is expected on it, if none is.
    pub exception: Option<String>,
    /// A valid key is published on the Node.
    pub key_published: bool,
    /// Fail-closed mode, as its agent last reported.
    pub strict: Option<bool>,
    /// Peers configured on its device, as last reported.
    pub peers: Option<u64>,
    /// Of those, peers it completed a handshake with.
    pub peers_handshaked: Option<u64>,
    /// The oldest of those peers' latest handshakes (RFC 3339), as last reported.
    pub oldest_handshake: Option<String>,
    /// When its agent last reported.
    pub reported_at: Option<String>,
    /// No violation names this node.
    pub compliant: bool,
}

/// One published key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    /// The Node publishing it.
    pub node: String,
    /// Its fingerprint (`sha256:` and 16 hex digits of the public key's SHA-256).
    pub fingerprint: String,
    /// How many times the node's key was replaced before this one.
    pub epoch: u64,
    /// When it was made (RFC 3339, from the node's key record).
    pub created: String,
    /// Its age at `takenAt`, in seconds.
    pub age_seconds: u64,
    /// The age is within the policy's maximum.
    pub within_policy: bool,
    /// The field managers owning the Node's `meshcrypt.dev/` annotations (only `meshcrypt`,
    /// the agent, is expected).
    pub written_by: Vec<String>,
}

/// Something the mesh does not encrypt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exception {
    /// A stable kind: `same-node-traffic`, `no-agent-expected`, `strict-off`,
    /// `host-encryption-off`, `branch-eni-pod`.
    pub kind: String,
    /// What it applies to: `cluster`, a node, `<namespace>/<pod>`.
    pub subject: String,
    /// What is not encrypted, and why.
    pub detail: String,
}

/// The cluster ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    /// `<namespace>/<name>`.
    pub config_map: String,
    /// It exists.
    pub found: bool,
    /// Its `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// Every setting as the ConfigMap gives it: its value and `configmap`, or the default and
    /// `default` (an agent's flag may differ; its node's strict mode is in `coverage`).
    pub settings: Vec<Setting>,
    /// Keys the agents reject (they keep their last good settings), as `key: reason`.
    pub rejected: Vec<String>,
    /// Who changed it, from `metadata.managedFields` (the EKS audit log has the full history).
    pub managers: Vec<Manager>,
}

/// One setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    /// The ConfigMap key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// `configmap` or `default`.
    pub source: String,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    /// The field manager (`kubectl-client-side-apply`, `argocd-controller`, ...).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// When it last wrote (RFC 3339).
    pub time: Option<String>,
}

/// `sha256:` and the hex SHA-256 of `report`'s compact JSON (UTF-8, no spaces) with object keys
/// sorted at every level and `contentHash` left out: Python's `json.dumps(report,
/// sort_keys=True, separators=(",", ":"), ensure_ascii=False)` gives the same text (the lab test
/// checks a report this way; docs/compliance.md has the one-liner).
pub fn content_hash(report: &AuditReport) -> String {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("contentHash");
    }
    let canonical = sorted(value).to_string();
    format!("sha256:{}", hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// `value` with every object's keys in sorted order (whatever serde_json's map type keeps).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
