//! Suspicious-activity signals on the lab: each is raised once as a Warning Event (by one agent,
//! not every agent that sees it), counted in `meshcrypt_node_problems{reason}`, and leaves the
//! mesh working for the node that holds what was claimed.

use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey};
use meshcrypt_test_apiserver::TestApiServer;

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
        let notes: Vec<(String, String)> = cluster
            .events("SharedInternalIP")
            .iter()
            .map(|e| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (text(&e["regarding"]["name"]), text(&e["note"]))
            })
            .collect();
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
