//! The node's state for the cluster view: after each pass the agent sums up its node as a
//! [`MeshNodeStatus`] and writes it to its `MeshNode` when it changed (at most every fifth of the
//! report interval) or when the interval has passed without a write (a heartbeat); on SIGTERM it
//! writes once more, stopped. At the default 300 s interval that is at most 5 writes per node per
//! 5 minutes while the state churns and one per 5 minutes when it does not: 17 writes a second
//! for 5,000 nodes in steady state, and no watch fan-out (no agent watches MeshNodes).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kube::api::{Patch, PatchParams};
use meshcrypt_dataplane::{DeviceState, PublicKey};
use meshcrypt_keyexchange::NodeKeyAnnotations;

use super::slim_node::SlimNode;
use crate::config::settings::Settings;
use crate::error::AgentError;
use crate::mesh_node::{MeshNode, MeshNodeStatus};

/// The field manager of the agent's MeshNode writes.
const FIELD_MANAGER: &str = "meshcrypt";

/// The most problems a report lists.
const MAX_PROBLEMS: usize = 20;

/// The last report written: its content (with `reportedAt` empty) and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// What was written, `reportedAt` left empty.
    pub status: MeshNodeStatus,
    /// When.
    pub at: jiff::Timestamp,
}

/// What goes into a report.
pub struct ReportInputs<'a> {
    /// Readiness and its reason.
    pub readiness: (bool, String),
    /// The settings in force.
    pub settings: Option<&'a Settings>,
    /// The key in use.
    pub key: &'a NodeKeyAnnotations,
    /// The device as it reports itself (`None`: switched off or not created).
    pub device: Option<&'a DeviceState>,
    /// Each peer's latest handshake seen since it was configured.
    pub handshakes: &'a BTreeMap<PublicKey, SystemTime>,
    /// Problems about this node, as `reason: message`.
    pub problems: Vec<String>,
    /// The report interval.
    pub interval: Duration,
    /// The agent is stopping.
    pub stopped: bool,
}

/// The report (with `reportedAt` empty).
pub fn summary(inputs: &ReportInputs<'_>) -> MeshNodeStatus {
    let peers = inputs.device.map(|d| d.peers.as_slice()).unwrap_or_default();
    let mut problems = inputs.problems.clone();
    problems.truncate(MAX_PROBLEMS);
    MeshNodeStatus {
        ready: inputs.readiness.0 && !inputs.stopped,
        reason: if inputs.stopped { "agent stopped".to_owned() } else { inputs.readiness.1.clone() },
        enabled: inputs.settings.is_some_and(|s| s.enabled),
        strict: inputs.settings.is_some_and(|s| s.strict),
        key_fingerprint: inputs.key.public_key.fingerprint(),
        key_epoch: inputs.key.epoch,
        key_created: inputs.key.created.to_string(),
        peers: peers.len() as u64,
        peers_handshaked: peers.iter().filter(|p| inputs.handshakes.contains_key(&p.public_key)).count()
            as u64,
        oldest_handshake: peers
            .iter()
            .filter_map(|p| inputs.handshakes.get(&p.public_key))
            .min()
            .and_then(|t| jiff::Timestamp::try_from(*t).ok())
            .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
        problems,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        stopped: inputs.stopped,
        reported_at: String::new(),
        report_interval_seconds: inputs.interval.as_secs(),
    }
}

/// Whether `next` is to be written at `now`, `last` being the last report written: the first
/// always; a change once the last write is a fifth of `interval` old; no change once it is
/// `interval` old; a stop at once. A new `oldestHandshake` alone is no change: under traffic it
/// moves every two minutes (WireGuard's REKEY_AFTER_TIME), and heartbeats carry it.
pub fn report_due(
    last: Option<&Reported>,
    next: &MeshNodeStatus,
    now: jiff::Timestamp,
    interval: Duration,
) -> bool {
    let Some(last) = last else { return true };
    let age = now.duration_since(last.at).unsigned_abs();
    if next.stopped && !last.status.stopped {
        return true;
    }
    let changed = MeshNodeStatus { oldest_handshake: None, ..last.status.clone() }
        != MeshNodeStatus { oldest_handshake: None, ..next.clone() };
    if changed { age >= interval / 5 } else { age >= interval }
}

/// Writes `status` (stamped `now`) to the MeshNode named after `node`, creating it (owned by
/// its Node, so it goes with the Node) when it does not exist.
pub async fn write(
    client: &kube::Client,
    node: &SlimNode,
    status: &MeshNodeStatus,
    now: jiff::Timestamp,
) -> Result<(), AgentError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api = MeshNode::dynamic_api(client);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let stamped = MeshNodeStatus { reported_at: now.to_string(), ..status.clone() };
    let body = serde_json::json!({
        "apiVersion": "meshcrypt.dev/v1alpha1",
        "kind": "MeshNode",
        "status": stamped,
    });
    match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        other => return other.map(|_| ()).map_err(AgentError::from),
    }
    let owner = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "name": name,
        "uid": node.metadata.uid,
    });
    let object = serde_json::json!({
        "apiVersion": "meshcrypt.dev/v1alpha1",
        "kind": "MeshNode",
        "metadata": { "name": name, "ownerReferences": [owner] },
        "spec": {},
    });
    api.patch(&name, &params, &Patch::Apply(&object)).await?;
    api.patch_status(&name, &params, &Patch::Apply(&body)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_due_table() {
        let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let interval = Duration::from_secs(300);
        let ready = MeshNodeStatus { ready: true, peers: 3, ..MeshNodeStatus::default() };
        let fewer = MeshNodeStatus { peers: 2, ..ready.clone() };
        let stopped = MeshNodeStatus { stopped: true, ..ready.clone() };
        let rekeyed =
            MeshNodeStatus { oldest_handshake: Some("2027-01-15T08:02:00Z".into()), ..ready.clone() };
        let last = |status: &MeshNodeStatus| Some(Reported { status: status.clone(), at: t0 });
        for (case, last, next, now, want) in [
            ("the first report", None, &ready, at(0), true),
            ("unchanged, within the interval", last(&ready), &ready, at(299), false),
            ("unchanged, the interval passed: heartbeat", last(&ready), &ready, at(300), true),
            ("changed, too soon after the last write", last(&ready), &fewer, at(59), false),
            ("changed, a fifth of the interval after it", last(&ready), &fewer, at(60), true),
            ("stopping: at once", last(&ready), &stopped, at(1), true),
            (
                "only the oldest handshake moved: waits for the heartbeat",
                last(&ready),
                &rekeyed,
                at(60),
                false,
            ),
            ("only the oldest handshake moved, the interval passed", last(&ready), &rekeyed, at(300), true),
            ("stopped already, unchanged", last(&stopped), &stopped, at(1), false),
        ] {
            assert_eq!(report_due(last.as_ref(), next, now, interval), want, "{case}");
        }
    }
}
