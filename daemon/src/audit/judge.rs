//! The audit's judgement: a pure function of what the API server holds (Nodes, the MeshNodes'
//! reports, the ConfigMap, Pods, Events) and the policy, at one moment.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use meshcrypt_keyexchange::NodeKeyAnnotations;
use meshcrypt_keyexchange::annotations::{KEY_FINGERPRINT, annotation_writers};

use super::policy::{Policy, human, roughly};
use super::report::{
    AUDIT_REPORT_SCHEMA, AuditReport, AuditSummary, Configuration, Coverage, Exception, Finding, KeyEntry,
    Manager, Setting, Severity, Verdict, content_hash,
};
use crate::agent::FIELD_MANAGER;
use crate::config::settings::{KEYS, Settings};
use crate::mesh_node::MeshNodeStatus;
use crate::status::{AgentState, cluster_status};

/// The annotation the AWS VPC CNI puts on a pod given its own branch ENI (security groups for
/// pods): its traffic leaves through that ENI, not the node's routing.
pub const BRANCH_ENI_ANNOTATION: &str = "vpc.amazonaws.com/pod-eni";

/// The reason of the Warning Event an agent raises when another field manager wrote its Node's
/// `meshcrypt.dev/` annotations.
pub const FOREIGN_KEY_WRITER: &str = "ForeignKeyWriter";

/// Whether a Pod's metadata says it has a branch ENI of its own (a non-empty
/// [`BRANCH_ENI_ANNOTATION`]).
pub fn on_branch_eni(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    let eni = meta.annotations.as_ref().and_then(|a| a.get(BRANCH_ENI_ANNOTATION));
    eni.is_some_and(|v| !v.trim().is_empty() && v.trim() != "[]")
}

/// What the audit reads.
pub struct AuditInputs<'a> {
    /// The API server's URL.
    pub cluster: String,
    /// Every Node.
    pub nodes: &'a [Node],
    /// Every MeshNode's status, by name.
    pub reports: &'a BTreeMap<String, MeshNodeStatus>,
    /// The ConfigMap's `(namespace, name)`.
    pub config_map_name: (String, String),
    /// The ConfigMap, if it exists.
    pub config_map: Option<&'a ConfigMap>,
    /// Pods; those on branch ENIs ([`on_branch_eni`]) are exceptions.
    pub pods: &'a [Pod],
    /// The Events of reason [`FOREIGN_KEY_WRITER`] the API server still holds.
    pub foreign_writer_events: &'a [Event],
}

/// The audit of `inputs` against `policy` at `now`, its content hash filled in.
pub fn audit(inputs: &AuditInputs<'_>, policy: &Policy, now: jiff::Timestamp) -> AuditReport {
    let mut out = Judged::default();
    let by_name: BTreeMap<&str, &Node> =
        inputs.nodes.iter().filter_map(|n| Some((n.metadata.name.as_deref()?, n))).collect();
    for node in cluster_status(inputs.nodes, inputs.reports, now).nodes {
        let Some(object) = by_name.get(node.node.as_str()) else { continue };
        judge_node(&mut out, object, &node, inputs.reports.get(&node.node), policy, now);
    }
    for event in inputs.foreign_writer_events {
        out.finding(
            Severity::Warning,
            event.involved_object.name.as_deref().unwrap_or_default(),
            "ForeignKeyWriterSeen",
            format!("at {}: {}", event_time(event), event.message.as_deref().unwrap_or_default()),
        );
    }
    let (configuration, settings) = configuration(inputs, &mut out);
    if configuration.found && configuration.rejected.is_empty() {
        judge_settings(&mut out, &format!("configmap/{}", configuration.config_map), &settings, policy);
    }
    cluster_exceptions(&mut out, &settings);
    for pod in inputs.pods.iter().filter(|p| on_branch_eni(&p.metadata)) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("(unscheduled)");
        out.exception(
            "branch-eni-pod",
            format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            format!(
                "on node {node}: a pod with its own security groups (security groups for pods) sends through a branch ENI, outside the node's routing, so its traffic is not encrypted by meshcrypt"
            ),
        );
    }
    out.finish(inputs, policy, now, configuration)
}

/// Findings, exceptions and the per-node tables as they accumulate.
#[derive(Default)]
struct Judged {
    findings: Vec<Finding>,
    exceptions: Vec<Exception>,
    coverage: Vec<Coverage>,
    keys: Vec<KeyEntry>,
    no_agent_expected: usize,
}

impl Judged {
    fn finding(&mut self, severity: Severity, subject: &str, code: &str, message: String) {
        self.findings.push(Finding { severity, subject: subject.to_owned(), code: code.to_owned(), message });
    }

    fn exception(&mut self, kind: &str, subject: String, detail: String) {
        self.exceptions.push(Exception { kind: kind.to_owned(), subject, detail });
    }

    fn finish(
        mut self,
        inputs: &AuditInputs<'_>,
        policy: &Policy,
        now: jiff::Timestamp,
        configuration: Configuration,
    ) -> AuditReport {
        self.findings.sort();
        self.exceptions.sort();
        let violating: BTreeSet<&str> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Violation)
            .map(|f| f.subject.as_str())
            .collect();
        for row in &mut self.coverage {
            row.compliant = !violating.contains(row.node.as_str());
        }
        let violations = self.findings.iter().filter(|f| f.severity == Severity::Violation).count();
        let summary = AuditSummary {
            nodes: self.coverage.len(),
            compliant: self.coverage.iter().filter(|c| c.compliant && c.agent == AgentState::Ready).count(),
            no_agent_expected: self.no_agent_expected,
            violations,
            warnings: self.findings.len() - violations,
            exceptions: self.exceptions.len(),
        };
        let mut report = AuditReport {
            schema: AUDIT_REPORT_SCHEMA.to_owned(),
            taken_at: now.round(jiff::Unit::Second).unwrap_or(now).to_string(),
            cluster: inputs.cluster.clone(),
            verdict: if violations == 0 { Verdict::Compliant } else { Verdict::NotCompliant },
            policy: policy.clone(),
            summary,
            findings: self.findings,
            coverage: self.coverage,
            key_inventory: self.keys,
            exceptions: self.exceptions,
            configuration,
            content_hash: String::new(),
        };
        report.content_hash = content_hash(&report);
        report
    }
}

fn judge_node(
    out: &mut Judged,
    node: &Node,
    view: &crate::status::ClusterNode,
    report: Option<&MeshNodeStatus>,
    policy: &Policy,
    now: jiff::Timestamp,
) {
    let name = view.node.as_str();
    let violation = Severity::Violation;
    match view.agent {
        AgentState::Exception => {
            out.no_agent_expected += 1;
            out.exception(
                "no-agent-expected",
                name.to_owned(),
                format!(
                    "{}: no meshcrypt agent runs on this node, so traffic to and from its pods is not encrypted by meshcrypt",
                    view.exception.as_deref().unwrap_or_default()
                ),
            );
        }
        AgentState::NoAgent => out.finding(
            violation,
            name,
            "NoAgent",
            "no agent has ever reported on this node: its pods' traffic is not encrypted (is the DaemonSet scheduled here?)".into(),
        ),
        AgentState::Stopped => out.finding(
            violation,
            name,
            "AgentStopped",
            format!(
                "the agent stopped at {}: traffic to and from this node's pods is dropped (fail closed) until it is back",
                view.reported_at.as_deref().unwrap_or_default()
            ),
        ),
        AgentState::NotReporting => out.finding(
            violation,
            name,
            "AgentNotReporting",
            format!(
                "the agent has not reported since {}: killed, hung or cut off from the API",
                view.reported_at.as_deref().unwrap_or_default()
            ),
        ),
        AgentState::NotReady => out.finding(
            violation,
            name,
            "AgentNotReady",
            format!("the agent is not ready: {}", report.map(|r| r.reason.as_str()).unwrap_or_default()),
        ),
        AgentState::Ready => {}
    }
    let empty = BTreeMap::new();
    let writers = annotation_writers(&node.metadata);
    match NodeKeyAnnotations::parse(node.metadata.annotations.as_ref().unwrap_or(&empty)) {
        Err(e) => out.finding(violation, name, "InvalidKeyAnnotation", e.to_string()),
        Ok(None) if view.agent != AgentState::Exception => {
            out.finding(violation, name, "NoKeyPublished", "no key is published on the Node".into());
        }
        Ok(None) => {}
        Ok(Some(key)) => {
            let age_seconds = u64::try_from(now.duration_since(key.created).as_secs()).unwrap_or(0);
            let within_policy = age_seconds <= policy.max_key_age_seconds;
            if !within_policy {
                out.finding(
                    violation,
                    name,
                    "KeyTooOld",
                    format!(
                        "key {} (epoch {}) was made {} ({} ago), longer ago than the policy's {}: rotate it (meshcrypt keys rotate, or the ConfigMap's key-rotation-interval)",
                        key.public_key.fingerprint(),
                        key.epoch,
                        key.created,
                        roughly(age_seconds),
                        human(policy.max_key_age_seconds)
                    ),
                );
            }
            let published = node.metadata.annotations.as_ref().and_then(|a| a.get(KEY_FINGERPRINT));
            if let Some(published) = published
                && *published != key.public_key.fingerprint()
            {
                out.finding(
                    violation,
                    name,
                    "FingerprintMismatch",
                    format!(
                        "{KEY_FINGERPRINT} says {published} but the published key's fingerprint is {}: the annotations were edited",
                        key.public_key.fingerprint()
                    ),
                );
            }
            if let Some(r) = report
                && r.key_fingerprint != key.public_key.fingerprint()
            {
                out.finding(
                    Severity::Warning,
                    name,
                    "KeyMismatch",
                    format!(
                        "the Node publishes key {} but its agent reported {} (a rotation under way, or a key written by someone else)",
                        key.public_key.fingerprint(),
                        r.key_fingerprint
                    ),
                );
            }
            out.keys.push(KeyEntry {
                node: name.to_owned(),
                fingerprint: key.public_key.fingerprint(),
                epoch: key.epoch,
                created: key.created.to_string(),
                age_seconds,
                within_policy,
                written_by: writers.clone(),
            });
        }
    }
    let foreign: Vec<&str> = writers.iter().map(String::as_str).filter(|w| *w != FIELD_MANAGER).collect();
    if !foreign.is_empty() {
        out.finding(
            violation,
            name,
            FOREIGN_KEY_WRITER,
            format!(
                "the Node's meshcrypt.dev/ annotations are owned by field manager(s) {} besides the agent's ({FIELD_MANAGER}): only the node's agent may write them",
                foreign.join(", ")
            ),
        );
    }
    if let Some(r) = report {
        judge_report(out, name, view.agent, r, policy, now);
    }
    out.coverage.push(Coverage {
        node: name.to_owned(),
        agent: view.agent,
        exception: view.exception.clone(),
        key_published: view.key_fingerprint.is_some(),
        strict: view.strict,
        peers: view.peers,
        peers_handshaked: view.peers_handshaked,
        oldest_handshake: view.oldest_handshake.clone(),
        reported_at: view.reported_at.clone(),
        compliant: false,
    });
}

/// What the agent's own report says against the policy.
fn judge_report(
    out: &mut Judged,
    name: &str,
    agent: AgentState,
    r: &MeshNodeStatus,
    policy: &Policy,
    now: jiff::Timestamp,
) {
    if !r.enabled {
        out.finding(
            Severity::Violation,
            name,
            "MeshDisabled",
            "the mesh is switched off on this node (ConfigMap enabled: false): its pods' traffic is not encrypted".into(),
        );
    } else if !r.strict {
        let detail = "strict (fail-closed) mode is off: pod traffic with no encrypted path (a peer without a key, a node without an agent) is sent in plaintext instead of dropped";
        if policy.require_strict {
            out.finding(Severity::Violation, name, "StrictOff", detail.into());
        } else {
            out.exception("strict-off", name.to_owned(), detail.into());
        }
    }
    if let Some(max) = policy.max_handshake_age_seconds
        && agent == AgentState::Ready
    {
        let oldest = r.oldest_handshake.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if r.peers_handshaked < r.peers {
            out.finding(
                Severity::Violation,
                name,
                "HandshakeMissing",
                format!(
                    "{} of {} peers have never completed a handshake (a blocked mesh port, or no traffic to them)",
                    r.peers - r.peers_handshaked,
                    r.peers
                ),
            );
        } else if let Some(oldest) = oldest
            && u64::try_from(now.duration_since(oldest).as_secs()).unwrap_or(0) > max
        {
            out.finding(
                Severity::Violation,
                name,
                "HandshakeStale",
                format!("the least recent peer handshake was at {oldest}, more than {} ago", human(max)),
            );
        }
    }
    for problem in &r.problems {
        out.finding(Severity::Warning, name, "AgentProblem", problem.clone());
    }
}

/// The configuration section, and the settings it gives (the defaults where it is missing or
/// rejected).
fn configuration(inputs: &AuditInputs<'_>, out: &mut Judged) -> (Configuration, Settings) {
    let (namespace, name) = &inputs.config_map_name;
    let subject = format!("configmap/{namespace}/{name}");
    let Some(cm) = inputs.config_map else {
        out.finding(
            Severity::Warning,
            &subject,
            "ConfigMapMissing",
            "the cluster ConfigMap does not exist: the agents run on their flags".into(),
        );
        let settings = Settings::default();
        let rows = KEYS
            .iter()
            .map(|(key, _, _)| Setting {
                key: (*key).into(),
                value: settings.describe(key),
                source: "default".into(),
            })
            .collect();
        let configuration = Configuration {
            config_map: format!("{namespace}/{name}"),
            found: false,
            resource_version: None,
            settings: rows,
            rejected: Vec::new(),
            managers: Vec::new(),
        };
        return (configuration, settings);
    };
    let data = cm.data.clone().unwrap_or_default();
    let (settings, rejected) = match Settings::parse(&Settings::default(), &data) {
        Ok(settings) => (settings, Vec::new()),
        Err(errors) => {
            let rejected: Vec<String> = errors.iter().map(ToString::to_string).collect();
            out.finding(
                Severity::Warning,
                &subject,
                "ConfigRejected",
                format!(
                    "the agents reject this ConfigMap and keep their last good settings, which this report cannot see: {}",
                    rejected.join("; ")
                ),
            );
            (Settings::default(), rejected)
        }
    };
    let rows = KEYS
        .iter()
        .map(|(key, _, _)| match data.get(*key) {
            Some(raw) if !rejected.is_empty() => {
                Setting { key: (*key).into(), value: raw.trim().to_owned(), source: "configmap".into() }
            }
            Some(_) => {
                Setting { key: (*key).into(), value: settings.describe(key), source: "configmap".into() }
            }
            None => Setting { key: (*key).into(), value: settings.describe(key), source: "default".into() },
        })
        .collect();
    let managers = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| Manager {
            manager: m.manager.clone().unwrap_or_default(),
            operation: m.operation.clone().unwrap_or_default(),
            time: m.time.as_ref().map(|t| t.0.to_string()),
        })
        .collect();
    let configuration = Configuration {
        config_map: format!("{namespace}/{name}"),
        found: true,
        resource_version: cm.metadata.resource_version.clone(),
        settings: rows,
        rejected,
        managers,
    };
    (configuration, settings)
}

/// What the ConfigMap's settings mean against the policy, whatever the agents have reported yet
/// (an agent reports a change within a fifth of its report interval): the mesh or strict mode
/// switched off for every node, and a rotation policy that cannot keep keys within the maximum age.
fn judge_settings(out: &mut Judged, subject: &str, settings: &Settings, policy: &Policy) {
    if !settings.enabled {
        out.finding(
            Severity::Violation,
            subject,
            "MeshDisabled",
            "the ConfigMap sets enabled: false: every agent removes the mesh and pod traffic goes in plaintext".into(),
        );
    } else if !settings.strict && policy.require_strict {
        out.finding(
            Severity::Violation,
            subject,
            "StrictOff",
            "the ConfigMap sets strict: false for every node: pod traffic with no encrypted path is sent in plaintext instead of dropped".into(),
        );
    }
    match settings.key_rotation_interval {
        None => out.finding(
            Severity::Warning,
            subject,
            "NoScheduledRotation",
            format!(
                "key-rotation-interval is off: keys are replaced only by hand (meshcrypt keys rotate); set it below the policy's {} to keep every key within it",
                human(policy.max_key_age_seconds)
            ),
        ),
        Some(interval) if interval.as_secs() > policy.max_key_age_seconds => out.finding(
            Severity::Warning,
            subject,
            "RotationSlowerThanPolicy",
            format!(
                "key-rotation-interval {} is longer than the policy's maximum key age {}: keys will outlive the policy",
                human(interval.as_secs()),
                human(policy.max_key_age_seconds)
            ),
        ),
        Some(_) => {}
    }
}

/// What the mesh never encrypts, and host traffic when host encryption is off.
fn cluster_exceptions(out: &mut Judged, settings: &Settings) {
    out.exception(
        "same-node-traffic",
        "cluster".into(),
        "traffic between two pods on one node never leaves the node (it crosses the node's own veth pairs) and is not encrypted by meshcrypt".into(),
    );
    out.exception(
        "outside-pod-networks",
        "cluster".into(),
        format!(
            "traffic to addresses outside the pod networks ({}) is not steered into the mesh: load balancers, the VPC, the internet",
            settings.describe("pod-networks")
        ),
    );
    if !settings.host_encryption {
        out.exception(
            "host-encryption-off",
            "cluster".into(),
            "host-encryption is false: traffic between node addresses (host-network pods, kubelet, node to node) is not encrypted".into(),
        );
    }
}

/// An Event's latest time: `series.lastObservedTime`, `lastTimestamp`, `eventTime` or its
/// creation.
fn event_time(event: &Event) -> String {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0.to_string())
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
