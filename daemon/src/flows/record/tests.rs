//! From counted flows to records: which end each name comes from, drops, peers in other clusters,
//! the overflow line; a table over one directory.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::agent::slim_pod::SlimPod;
use meshcrypt_dataplane::{
    DropReason, Flow, FlowDirection, FlowHarvest, FlowKey, FlowOutcome, PrivateKey, PublicKey,
};
use serde_json::json;

use super::*;
use crate::agent::slim_node::SlimNode;
use crate::flows::Directory;

fn pod(name: &str, node: &str, ip: &str, phase: &str, host_network: bool) -> SlimPod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name, "secret-label": "x"}},
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": []},
        "status": {"phase": phase, "podIPs": [{"ip": ip}]},
    }))
    .unwrap()
}

fn node(name: &str, internal: &str, cidr: &str) -> SlimNode {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": internal}]},
    }))
    .unwrap()
}

fn key(n: u8) -> PublicKey {
    PrivateKey::from_bytes(zeroize::Zeroizing::new([n; 32])).public_key()
}

fn at(second: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(second)
}

fn flow(
    direction: FlowDirection,
    src: &str,
    dst: &str,
    outcome: FlowOutcome,
    peer: Option<PublicKey>,
) -> Flow {
    Flow {
        key: FlowKey {
            direction,
            protocol: 6,
            src: src.parse().unwrap(),
            src_port: 40000,
            dst: dst.parse().unwrap(),
            dst_port: 80,
        },
        outcome,
        peer,
        packets: 3,
        bytes: 300,
        first_seen: at(1_800_000_010),
        last_seen: at(1_800_000_020),
    }
}

/// The names on one record: (source pod, source node, destination pod, destination node,
/// destination cluster, encrypted, drop reason, peer node).
type Names = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<&'static str>,
    Option<String>,
);

fn names(r: &FlowRecord) -> Names {
    (
        r.source.pod.clone(),
        r.source.node.clone(),
        r.destination.pod.clone(),
        r.destination.node.clone(),
        r.destination.cluster.clone(),
        r.encrypted,
        r.drop_reason,
        r.peer.as_ref().and_then(|p| p.node.clone()),
    )
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn records_name_both_ends_table() {
    let pods = [
        pod("web", "node-0", "10.244.0.5", "Running", false),
        pod("db", "node-1", "10.244.1.7", "Running", false),
        pod("old-job", "node-1", "10.244.1.9", "Succeeded", false),
        pod("new-api", "node-1", "10.244.1.9", "Running", false),
        pod("later-done", "node-1", "10.244.1.9", "Failed", false),
        pod("hostnet", "node-0", "198.18.0.10", "Running", true),
    ];
    let nodes = [
        node("node-0", "198.18.0.10", "10.244.0.0/24"),
        node("node-1", "198.18.0.11", "10.244.1.0/24"),
        node("keyless", "198.18.0.12", "10.244.2.0/24"),
    ];
    let peers = BTreeMap::from([(key(1), "node-1".to_owned()), (key(2), "east/node-9".to_owned())]);
    let dir = Directory::build(pods.iter(), nodes.iter(), &peers, &["app".to_owned()]);
    let (out, inb) = (FlowDirection::Outbound, FlowDirection::Inbound);
    let enc = FlowOutcome::Encrypted;
    let cases: Vec<(&str, Flow, Names)> = vec![
        (
            "pod to pod, outbound",
            flow(out, "10.244.0.5", "10.244.1.7", enc, Some(key(1))),
            (s("web"), s("node-0"), s("db"), s("node-1"), None, true, None, s("node-1")),
        ),
        (
            "pod to pod, inbound: the far end is the source",
            flow(inb, "10.244.1.7", "10.244.0.5", enc, Some(key(1))),
            (s("db"), s("node-1"), s("web"), s("node-0"), None, true, None, s("node-1")),
        ),
        (
            "a running pod holds an address a finished one held",
            flow(out, "10.244.0.5", "10.244.1.9", enc, Some(key(1))),
            (s("web"), s("node-0"), s("new-api"), s("node-1"), None, true, None, s("node-1")),
        ),
        (
            "strict drop to a keyless node: named from its podCIDR, no peer",
            flow(out, "10.244.0.5", "10.244.2.3", FlowOutcome::Dropped(DropReason::NoPeer), None),
            (s("web"), s("node-0"), None, s("keyless"), None, false, Some("no_peer"), None),
        ),
        (
            "a peer cluster's node: named from the peer, with its cluster",
            flow(out, "10.244.0.5", "10.9.0.1", enc, Some(key(2))),
            (s("web"), s("node-0"), None, s("node-9"), s("east"), true, None, s("node-9")),
        ),
        (
            "a spoofed source: the peer is named, the address is not its own",
            flow(inb, "10.244.77.1", "10.244.0.5", FlowOutcome::Dropped(DropReason::BadSource), Some(key(1))),
            (None, s("node-1"), s("web"), s("node-0"), None, false, Some("bad_source"), s("node-1")),
        ),
        (
            "the host: a node address, not the host-network pod",
            flow(out, "198.18.0.10", "10.244.1.7", enc, Some(key(1))),
            (None, s("node-0"), s("db"), s("node-1"), None, true, None, s("node-1")),
        ),
        (
            "an unknown peer key: fingerprint only",
            flow(out, "10.244.0.5", "10.244.1.7", enc, Some(key(3))),
            (s("web"), s("node-0"), s("db"), s("node-1"), None, true, None, None),
        ),
    ];
    let window = Window {
        start: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        end: jiff::Timestamp::from_second(1_800_000_060).unwrap(),
    };
    for (name, f, want) in cases {
        let harvest = FlowHarvest { flows: vec![f.clone()], ..Default::default() };
        let (records, overflow) = records(&harvest, &dir, "node-0", window);
        assert_eq!(overflow, None, "{name}");
        let [r] = records.as_slice() else { panic!("{name}: {records:?}") };
        assert_eq!(names(r), want, "{name}");
        assert_eq!(
            (r.node.as_str(), r.protocol.as_str(), r.packets, r.bytes),
            ("node-0", "tcp", 3, 300),
            "{name}"
        );
        assert_eq!(
            r.peer.as_ref().map(|p| p.key_fingerprint.clone()),
            f.peer.map(|k| k.fingerprint()),
            "{name}"
        );
    }
}

#[test]
fn a_record_serializes_to_the_documented_shape_and_overflow_gets_its_own_line() {
    let pods = [pod("web", "node-0", "10.244.0.5", "Running", false)];
    let dir = Directory::build(pods.iter(), std::iter::empty(), &BTreeMap::new(), &["app".to_owned()]);
    let harvest = FlowHarvest {
        flows: vec![flow(
            FlowDirection::Outbound,
            "10.244.0.5",
            "10.244.2.3",
            FlowOutcome::Dropped(DropReason::NoPeer),
            None,
        )],
        overflow_packets: 5,
        overflow_bytes: 500,
    };
    let window = Window {
        start: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        end: jiff::Timestamp::from_second(1_800_000_060).unwrap(),
    };
    let (records, overflow) = records(&harvest, &dir, "node-0", window);
    let got = serde_json::to_value(&records[0]).unwrap();
    let want = json!({
        "schema": "meshcrypt.dev/flow/v1", "kind": "flow", "node": "node-0",
        "intervalStart": "2027-01-15T08:00:00Z", "intervalEnd": "2027-01-15T08:01:00Z",
        "direction": "outbound", "protocol": "tcp",
        "source": {"ip": "10.244.0.5", "port": 40000, "pod": "web", "namespace": "shop", "labels": {"app": "web"}, "node": "node-0"},
        "destination": {"ip": "10.244.2.3", "port": 80},
        "packets": 3, "bytes": 300,
        "firstSeen": "2027-01-15T08:00:10Z", "lastSeen": "2027-01-15T08:00:20Z",
        "encrypted": false, "dropReason": "no_peer",
    });
    assert_eq!(got, want);
    let overflow = serde_json::to_value(overflow.expect("an overflow line")).unwrap();
    assert_eq!(overflow["kind"], "overflow");
    assert_eq!((overflow["packets"].as_u64(), overflow["bytes"].as_u64()), (Some(5), Some(500)));
}

/// Every signal reason is in the catalogue (docs/signals.md) and the JSON Schema, and only Warning
/// reasons of the catalogue become signal lines.
#[test]
fn signal_reasons_are_catalogued_and_only_they_become_lines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let catalogue = std::fs::read_to_string(root.join("docs/signals.md")).expect("docs/signals.md");
    let schema = std::fs::read_to_string(root.join("docs/flow-record.schema.json")).expect("the schema");
    for reason in SIGNAL_REASONS {
        assert!(catalogue.contains(&format!("`{reason}`")), "{reason} not in docs/signals.md");
        assert!(schema.contains(&format!("\"{reason}\"")), "{reason} not in the schema");
    }
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    for (reason, signal) in
        [("SpoofedSource", true), ("SharedInternalIP", true), ("ConfigApplied", false), ("NoKey", false)]
    {
        let got = SignalRecord::from_event("node-0", "node-1", reason, "note", now);
        assert_eq!(got.is_some(), signal, "{reason}");
    }
    let line = serde_json::to_value(SignalRecord::from_event("node-0", "node-1", "SpoofedSource", "n", now))
        .unwrap();
    assert_eq!(
        line,
        json!({"schema": "meshcrypt.dev/flow/v1", "kind": "signal", "node": "node-0", "time": "2027-01-15T08:00:00Z",
               "reason": "SpoofedSource", "subject": "node-1", "message": "n"})
    );
}
