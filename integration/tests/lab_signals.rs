//! Suspicious-activity signals on the lab: each is raised once as a Warning Event (by one agent,
//! not every agent that sees it), counted in `meshcrypt_node_problems{reason}`, and leaves the
//! mesh working for the node that holds what was claimed.

use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey};
use meshcrypt_test_apiserver::TestApiServer;

/// The Events of `reason`, as (the Node they regard, their note).
fn notes(cluster: &Cluster, reason: &str) -> Vec<(String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    cluster.events(reason).iter().map(|e| (text(&e["regarding"]["name"]), text(&e["note"]))).collect()
}

/// A Node registered after node-1 with a valid key and node-1's InternalIP (a second Node object
/// for one machine, or a node lying in its own status) is refused as a peer on every node;
/// node-1 keeps its address and its traffic; both are named in `SharedInternalIP` Events.
#[test]
fn a_node_claiming_another_nodes_internal_ip_is_refused_and_reported() {
    let cluster = Cluster::start(3, 1, AgentOptions::new().expect("meshcrypt binary")).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    let address = cluster.lab.node("node-1").expect("node-1").underlay_addr.to_string();
    // The API server records creation by the second, and a tie falls to the name ("impostor"
    // sorts first): register it in a later second than node-1, as a real newcomer would be.
    let node1 = cluster.api().get("v1", "Node", None, "node-1").expect("node-1");
    let created: jiff::Timestamp =
        node1["metadata"]["creationTimestamp"].as_str().expect("creationTimestamp").parse().expect("a time");
    poll(Duration::from_secs(3), || {
        if jiff::Timestamp::now().as_second() > created.as_second() {
            Ok(())
        } else {
            Err("same second".to_owned())
        }
    })
    .expect("a later second");
    let mut impostor = TestApiServer::node_object("impostor", "10.244.200.0/24", &address);
    let key = NodeKeyAnnotations {
        public_key: PrivateKey::generate().public_key(),
        epoch: 0,
        created: jiff::Timestamp::now().round(jiff::Unit::Second).expect("a time"),
    };
    impostor["metadata"]["annotations"] = serde_json::json!(key.to_annotations());
    cluster.api().create(impostor).expect("the impostor's Node");

    let notes = poll(Duration::from_secs(20), || {
        let notes = notes(&cluster, "SharedInternalIP");
        let named = |node: &str| notes.iter().any(|(n, _)| n == node);
        if named("impostor") && named("node-1") { Ok(notes) } else { Err(format!("{notes:?}")) }
    })
    .expect("SharedInternalIP Events on both Nodes");
    assert_eq!(notes.len(), 2, "raised once each, not by every agent: {notes:?}");
    for (node, note) in &notes {
        let want = if node == "impostor" { "refused as a peer" } else { "kept by this node" };
        assert!(note.contains(&address) && note.contains(want), "{node}: {note}");
    }
    for node in ["node-0", "node-1", "node-2"] {
        poll(Duration::from_secs(10), || {
            let (_, metrics) = cluster.http(node, "/metrics").map_err(|e| e.to_string())?;
            // node-1's own agent sees only the impostor; the others see both claimants.
            let want = if node == "node-1" { 1 } else { 2 };
            let line = format!("meshcrypt_node_problems{{reason=\"SharedInternalIP\"}} {want}");
            if metrics.contains(&line) { Ok(()) } else { Err(format!("{node}: no {line:?}")) }
        })
        .expect("counted");
        let peers = cluster.wg(node, &["show", "meshcrypt0", "peers"]).expect("wg show");
        assert!(!peers.contains(&key.public_key.to_string()), "{node} took the impostor as a peer: {peers}");
    }
    let pods = cluster.lab.pods().to_vec();
    let (a, b) = (&pods[0], pods.iter().find(|p| p.node == "node-1").expect("a pod on node-1"));
    assert!(cluster.lab.ping(a, b.address.into()).expect("ping"), "node-1 still reached at its address");
}

/// A machine that is no node of the mesh (a lab node with no Node object and no agent) runs a
/// WireGuard device of its own key and tries to reach node-0's pods: node-0's device drops the
/// handshakes, counts them (`unknown_key`) and its agent names the source and key in an
/// `UnknownKeyHandshake` Warning Event.
#[test]
fn a_handshake_from_a_key_that_is_no_peers_is_reported_by_the_node_it_reached() {
    use meshcrypt_netlab::lab::{SpawnOptions, wg_via};

    let mut cluster = Cluster::start(2, 1, AgentOptions::new().expect("meshcrypt binary")).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    let probe = cluster.lab.add_node().expect("a machine outside the mesh").clone();
    let mut cmd =
        std::process::Command::new(meshcrypt_integration::cluster::meshcrypt_bin().expect("binary"));
    cmd.args(["device", "probe0"]);
    let options = SpawnOptions { private_dirs: vec!["/run/wireguard".into()] };
    let device = cluster.lab.spawn_with(&probe.namespace, &cmd, &options).expect("meshcrypt device");
    poll(Duration::from_secs(10), || wg_via(device.pid, &["show", "probe0"]).map_err(|e| e.to_string()))
        .expect("the probe's UAPI socket");
    let key = PrivateKey::generate();
    let key_file = cluster.dir().join("probe.key");
    meshcrypt_keyexchange::write_private(
        cluster.dir(),
        &key_file,
        format!("{}\n", key.to_base64().as_str()).as_bytes(),
    )
    .expect("key file");
    let node0 = cluster.lab.node("node-0").expect("node-0").clone();
    let node0_key = cluster.api().get("v1", "Node", None, "node-0").expect("node-0")["metadata"]["annotations"]
        ["meshcrypt.dev/public-key"]
        .as_str()
        .expect("node-0's key")
        .to_owned();
    let endpoint = format!("{}:51820", node0.underlay_addr);
    let cidr = node0.pod_cidr.to_string();
    let key_path = key_file.to_str().expect("path");
    wg_via(
        device.pid,
        &[
            "set",
            "probe0",
            "private-key",
            key_path,
            "peer",
            &node0_key,
            "endpoint",
            &endpoint,
            "allowed-ips",
            &cidr,
        ],
    )
    .expect("wg set");
    cluster.lab.exec(&probe.namespace, &["ip", "link", "set", "probe0", "up"]).expect("link up");
    cluster.lab.exec(&probe.namespace, &["ip", "route", "replace", &cidr, "dev", "probe0"]).expect("route");
    let target = cluster.lab.pods_on("node-0")[0].address;
    let from = probe.underlay_addr.to_string();
    let fingerprint = key.public_key().fingerprint();

    let note = poll(Duration::from_secs(20), || {
        // Each ping sends a handshake initiation (WireGuard retries every 5 s while packets wait).
        let _ = cluster.lab.ping_from(&probe.namespace, target.into());
        let notes = notes(&cluster, "UnknownKeyHandshake");
        let on_node0 = notes.iter().find(|(node, _)| node == "node-0").map(|(_, note)| note.clone());
        on_node0.ok_or_else(|| format!("no UnknownKeyHandshake Event on node-0 yet: {notes:?}"))
    })
    .expect("the Event");
    assert!(note.contains(&from) && note.contains(&fingerprint), "{note}");
    let (_, metrics) = cluster.http("node-0", "/metrics").expect("metrics");
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshcrypt_dropped_packets_total{reason=\"unknown_key\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 1.0, "unknown_key drops counted: {dropped}");
}

/// A pod on node-1 sends with a source address that is not node-1's (spoofing a pod elsewhere):
/// node-1's device encrypts it to node-0, whose device drops it, since the inner source is
/// outside node-1's allowed IPs, counts it (`bad_source`) and its agent names the peer and the
/// source in a `SpoofedSource` Warning Event.
#[test]
fn a_pod_spoofing_its_source_is_dropped_and_reported_by_the_receiving_node() {
    // With flow records on, the signal is also a line in the flow log, next to the dropped flow.
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some(
        [("flow-records", "true"), ("flow-interval", "10s")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
    );
    let cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    // Every signal's counter is there from the start, at 0, so that a first one shows as an increase.
    let (_, metrics) = cluster.http("node-0", "/metrics").expect("metrics");
    assert!(metrics.lines().any(|l| l == "meshcrypt_signals_total{reason=\"SpoofedSource\"} 0"), "{metrics}");
    let spoofer = cluster.lab.pods_on("node-1")[0].clone();
    let target = cluster.lab.pods_on("node-0")[0].address.to_string();
    // An address in the pod network that node-1 does not hold (node-5's range).
    let spoofed = "10.244.5.77";
    cluster
        .lab
        .exec(&spoofer.namespace, &["ip", "addr", "add", &format!("{spoofed}/32"), "dev", &spoofer.iface])
        .expect("a second address");
    let note = poll(Duration::from_secs(20), || {
        let ping = ["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", spoofed, &target];
        let _ = cluster.lab.exec_output(&spoofer.namespace, &ping);
        let notes = notes(&cluster, "SpoofedSource");
        let on_node0 = notes.iter().find(|(node, _)| node == "node-0").map(|(_, note)| note.clone());
        on_node0.ok_or_else(|| format!("no SpoofedSource Event on node-0 yet: {notes:?}"))
    })
    .expect("the Event");
    assert!(note.contains("node node-1") && note.contains(spoofed), "{note}");
    let (_, metrics) = cluster.http("node-0", "/metrics").expect("metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("meshcrypt_dropped_packets_total{reason=\"bad_source\"} ")
            && !l.ends_with(" 0")),
        "bad_source drops counted"
    );
    assert!(metrics.lines().any(|l| l.starts_with("meshcrypt_signals_total{reason=\"SpoofedSource\"} ")));
    let lines = |cluster: &Cluster| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(cluster.flow_log("node-0")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let (signal, flow) = poll(Duration::from_secs(30), || {
        let lines = lines(&cluster);
        let signal = lines.iter().find(|l| l["kind"] == "signal" && l["reason"] == "SpoofedSource").cloned();
        let flow = lines
            .iter()
            .find(|l| l["kind"] == "flow" && l["source"]["ip"] == spoofed && l["dropReason"] == "bad_source")
            .cloned();
        signal
            .zip(flow)
            .ok_or_else(|| format!("no signal and dropped flow in node-0's flow log yet: {lines:?}"))
    })
    .expect("the flow log");
    assert_eq!(
        (signal["node"].as_str(), signal["subject"].as_str()),
        (Some("node-0"), Some("node-0")),
        "{signal}"
    );
    assert!(signal["message"].as_str().is_some_and(|m| m.contains(spoofed)), "{signal}");
    assert_eq!(
        (flow["direction"].as_str(), flow["peer"]["node"].as_str()),
        (Some("inbound"), Some("node-1")),
        "{flow}"
    );
    assert_eq!(flow["destination"]["ip"], target.as_str());
}

/// A Node with a key whose machine answers nothing on the mesh port (its agent down, or the port
/// blocked by a security group): every agent configures it; once pods send to its pods, every
/// device tries to handshake, none completes, and each agent raises a `PeerNoHandshake` Warning
/// naming it once `--no-handshake-after` has passed since it started trying.
#[test]
fn a_peer_that_never_answers_a_handshake_is_reported() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.extra_args = vec!["--no-handshake-after".into(), "3".into()];
    let mut cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    let silent = cluster.lab.add_node().expect("a machine with nothing on UDP 51820").name.clone();
    cluster.register_node(&silent).expect("its Node");
    let key = NodeKeyAnnotations {
        public_key: PrivateKey::generate().public_key(),
        epoch: 0,
        created: jiff::Timestamp::now().round(jiff::Unit::Second).expect("a time"),
    };
    let patch = serde_json::json!({"metadata": {"annotations": key.to_annotations()}});
    cluster.api().merge_patch("v1", "Node", None, &silent, &patch, false).expect("its key");
    let target = cluster.lab.pods_on(&silent)[0].address;
    let senders = [cluster.lab.pods_on("node-0")[0].clone(), cluster.lab.pods_on("node-1")[0].clone()];
    let notes = poll(Duration::from_secs(30), || {
        for pod in &senders {
            let _ = cluster.lab.ping(pod, target.into());
        }
        let notes = notes(&cluster, "PeerNoHandshake");
        let by =
            |node: &str| notes.iter().any(|(n, note)| n == node && note.contains(&format!("node {silent}")));
        if by("node-0") && by("node-1") { Ok(notes) } else { Err(format!("{notes:?}")) }
    })
    .expect("PeerNoHandshake on both agents' nodes");
    for answering in ["node node-0", "node node-1"] {
        assert!(notes.iter().all(|(_, note)| !note.contains(answering)), "{answering} answers: {notes:?}");
    }
}

/// node-1 sends to node-0 from a second address on its underlay interface, one that is no Node's:
/// node-0's device roams to it on the first authenticated packet, and node-0's agent raises
/// `EndpointNotANode` naming node-1 and the address, and sets the endpoint back. Traffic flows.
#[test]
fn a_peer_sending_from_an_address_that_is_no_nodes_is_reported() {
    let cluster = Cluster::start(2, 1, AgentOptions::new().expect("meshcrypt binary")).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    let (node0, node1) =
        (cluster.lab.node("node-0").expect("node-0"), cluster.lab.node("node-1").expect("node-1"));
    let other = "198.18.1.200";
    let to_node0 = format!("{}/32", node0.underlay_addr);
    for cmd in [
        vec!["ip", "addr", "add", &format!("{other}/32"), "dev", &node1.underlay_iface],
        vec!["ip", "route", "add", &to_node0, "dev", &node1.underlay_iface, "src", other],
    ] {
        cluster.lab.exec(&node1.namespace, &cmd).expect("node-1 sends to node-0 from another address");
    }
    let (from, to) = (cluster.lab.pods_on("node-1")[0].clone(), cluster.lab.pods_on("node-0")[0].clone());
    let note = poll(Duration::from_secs(30), || {
        let _ = cluster.lab.ping(&from, to.address.into());
        let notes = notes(&cluster, "EndpointNotANode");
        notes
            .into_iter()
            .find(|(node, _)| node == "node-0")
            .map(|(_, n)| n)
            .ok_or("no Event on node-0 yet".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_logs_tail(20)));
    assert!(note.contains("node node-1") && note.contains(other), "{note}");
    let (_, metrics) = cluster.http("node-0", "/metrics").expect("metrics");
    assert!(metrics.lines().any(|l| l.starts_with("meshcrypt_signals_total{reason=\"EndpointNotANode\"} ")));
    assert!(
        cluster.lab.ping(&from, to.address.into()).expect("ping"),
        "the mesh still carries node-1's traffic"
    );
    assert!(cluster.lab.ping(&to, from.address.into()).expect("ping"), "and node-0's");
}
