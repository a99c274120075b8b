//! The flow record (`meshcrypt.dev/flow/v1`, docs/flows.md): one JSON object per line, and the
//! pure step from the device's counted flows to records naming pods, namespaces and nodes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use meshcrypt_dataplane::{Flow, FlowDirection, FlowHarvest, FlowOutcome};
use serde::Serialize;

use super::directory::Directory;

/// The schema every line names (`schema`).
pub const SCHEMA: &str = "meshcrypt.dev/flow/v1";

/// One end of a flow: its address and port, and what the agent knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The inner (pod or node) address.
    pub ip: IpAddr,
    /// The port (TCP, UDP, SCTP), 0 for protocols without one.
    pub port: u16,
    /// The pod holding the address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's labels named by `flow-labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The node the address is on, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The peer cluster the address is in (absent: this cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// The peer a flow went to or came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRef {
    /// The peer's node (its name in its own cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The peer cluster (absent: this cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The peer's key fingerprint (`sha256:` and 16 hex digits, as the audit and `meshcrypt
    /// status` show it).
    pub key_fingerprint: String,
}

/// A flow over one interval, as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRecord {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Always `flow`.
    pub kind: &'static str,
    /// The node that saw the flow (whose agent wrote the record).
    pub node: String,
    /// The interval's start and end (RFC 3339).
    pub interval_start: String,
    /// See `interval_start`.
    pub interval_end: String,
    /// `outbound` (from this node into the tunnel) or `inbound` (from the tunnel to this node).
    pub direction: &'static str,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, or the IANA protocol number.
    pub protocol: String,
    /// The inner source.
    pub source: Endpoint,
    /// The inner destination.
    pub destination: Endpoint,
    /// Packets in the interval.
    pub packets: u64,
    /// Bytes of inner IP packets in the interval.
    pub bytes: u64,
    /// The first and last packet in the interval (RFC 3339, millisecond resolution).
    pub first_seen: String,
    /// See `first_seen`.
    pub last_seen: String,
    /// True: every packet crossed the wire encrypted. False: every packet was dropped.
    pub encrypted: bool,
    /// Why they were dropped: `no_peer` (strict mode: no peer covers the destination, so no
    /// tunnel), `no_endpoint`, `bad_source` (inner source outside the peer's allowed IPs),
    /// `too_big`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<&'static str>,
    /// The peer, when the packets had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerRef>,
}

/// What did not fit in the node's flow table over the interval (`kind: overflow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverflowRecord {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Always `overflow`.
    pub kind: &'static str,
    /// The node.
    pub node: String,
    /// The interval (RFC 3339).
    pub interval_start: String,
    /// See `interval_start`.
    pub interval_end: String,
    /// Packets of flows the table had no room for.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The Event reasons that are suspicious-activity signals (docs/signals.md): each Warning Event
/// with one of them is also a `kind: signal` line in the flow log.
pub const SIGNAL_REASONS: &[&str] = &[
    "DuplicateKey",
    "KeyClaimedByOthers",
    "ContestedPrefix",
    "PrefixClaimedByOthers",
    "SharedInternalIP",
    "ForeignKeyWriter",
    "PeerNoHandshake",
    "UnknownKeyHandshake",
    "SpoofedSource",
    "EndpointNotANode",
    "StrictModeDrop",
];

/// A suspicious-activity signal in the flow log (`kind: signal`): the same as its Warning Event,
/// written by the one agent that raises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalRecord {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Always `signal`.
    pub kind: &'static str,
    /// The node whose agent raised it.
    pub node: String,
    /// When (RFC 3339).
    pub time: String,
    /// The reason code (one of [`SIGNAL_REASONS`]).
    pub reason: String,
    /// What it is about: the Node's name, `<cluster>/<node>` for a peer cluster's node.
    pub subject: String,
    /// The Event's note.
    pub message: String,
}

impl SignalRecord {
    /// The record of a Warning Event with `reason` about `subject`, raised at `now` by `node`'s
    /// agent; `None` when the reason is no signal.
    pub fn from_event(node: &str, subject: &str, reason: &str, note: &str, now: Timestamp) -> Option<Self> {
        SIGNAL_REASONS.contains(&reason).then(|| SignalRecord {
            schema: SCHEMA,
            kind: "signal",
            node: node.to_owned(),
            time: now.to_string(),
            reason: reason.to_owned(),
            subject: subject.to_owned(),
            message: note.to_owned(),
        })
    }
}

/// The interval a drain covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The previous drain.
    pub start: Timestamp,
    /// This drain.
    pub end: Timestamp,
}

fn protocol_name(number: u8) -> String {
    match number {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    Timestamp::try_from(t).map(|t| t.to_string()).unwrap_or_default()
}

/// Names one end: its pod if known; its node from the pod, else the peer (the far end), else the
/// node's addresses and podCIDRs, else this node (the near end).
fn endpoint(dir: &Directory, ip: IpAddr, port: u16, far: bool, flow: &Flow, local: &str) -> Endpoint {
    let pod = dir.pod(ip);
    let peer = flow.peer.as_ref().and_then(|k| dir.peer(k)).filter(|_| far);
    let node = pod
        .and_then(|p| p.node.clone())
        .or_else(|| peer.map(|p| p.node.clone()))
        .or_else(|| dir.node(ip).map(str::to_owned))
        .or_else(|| (!far).then(|| local.to_owned()));
    Endpoint {
        ip,
        port,
        pod: pod.map(|p| p.name.clone()),
        namespace: pod.map(|p| p.namespace.clone()),
        labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
        node,
        cluster: peer.and_then(|p| p.cluster.clone()),
    }
}

/// The records for one drain: a [`FlowRecord`] per flow, in the harvest's order, and an
/// [`OverflowRecord`] when packets did not fit.
pub fn records(
    harvest: &FlowHarvest,
    dir: &Directory,
    local: &str,
    window: Window,
) -> (Vec<FlowRecord>, Option<OverflowRecord>) {
    let (start, end) = (window.start.to_string(), window.end.to_string());
    let flows = harvest
        .flows
        .iter()
        .map(|flow| {
            let k = &flow.key;
            let outbound = k.direction == FlowDirection::Outbound;
            let peer = flow.peer.as_ref().map(|key| {
                let info = dir.peer(key);
                PeerRef {
                    node: info.map(|p| p.node.clone()),
                    cluster: info.and_then(|p| p.cluster.clone()),
                    key_fingerprint: key.fingerprint(),
                }
            });
            let (encrypted, drop_reason) = match flow.outcome {
                FlowOutcome::Encrypted => (true, None),
                FlowOutcome::Dropped(reason) => (false, Some(reason.as_str())),
            };
            FlowRecord {
                schema: SCHEMA,
                kind: "flow",
                node: local.to_owned(),
                interval_start: start.clone(),
                interval_end: end.clone(),
                direction: if outbound { "outbound" } else { "inbound" },
                protocol: protocol_name(k.protocol),
                source: endpoint(dir, k.src, k.src_port, !outbound, flow, local),
                destination: endpoint(dir, k.dst, k.dst_port, outbound, flow, local),
                packets: flow.packets,
                bytes: flow.bytes,
                first_seen: rfc3339(flow.first_seen),
                last_seen: rfc3339(flow.last_seen),
                encrypted,
                drop_reason,
                peer,
            }
        })
        .collect();
    let overflow = (harvest.overflow_packets > 0).then(|| OverflowRecord {
        schema: SCHEMA,
        kind: "overflow",
        node: local.to_owned(),
        interval_start: start,
        interval_end: end,
        packets: harvest.overflow_packets,
        bytes: harvest.overflow_bytes,
    });
    (flows, overflow)
}

#[cfg(test)]
mod tests;
