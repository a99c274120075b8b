//! The mesh on MeshPeers (`--peer-source mesh-peers`) end to end: real agents in lab nodes learn
//! each other from MeshPeer objects, not Nodes or other nodes' Pods; pods talk only encrypted as
//! pods come and go; a MeshPeer that claims another node's pod CIDR redirects nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::lab::{Lab, Pod};

fn cluster(pod_ip: bool) -> Cluster {
    let lab = Lab::builder().nodes(3).pods_per_node(2).vpc_cni(pod_ip).build().expect("lab");
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.extra_args = vec!["--peer-source".into(), "mesh-peers".into()];
    let addressing = if pod_ip { "pod-ip" } else { "pod-cidr" };
    options.config_map = Some(BTreeMap::from([("addressing".to_owned(), addressing.to_owned())]));
    let cluster = Cluster::start_in(lab, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    // Ready is not complete: a node's agent is ready with the MeshPeers it has read, and the
    // tests compare a node's peers before and after a change.
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    cluster
}

fn reach(cluster: &Cluster, from: &Pod, to: &Pod, deadline: Duration) {
    poll(deadline, || {
        if cluster.lab.ping(from, to.address.into()).unwrap_or(false) { Ok(()) } else { Err("no".into()) }
    })
    .unwrap_or_else(|e| {
        panic!("{} cannot reach {}: {e}\n{}", from.name, to.name, cluster.agent_logs_tail(20))
    });
}

/// `node`'s MeshPeer's spec, as the API server holds it.
fn mesh_peer_spec(cluster: &Cluster, node: &str) -> serde_json::Value {
    let peer = cluster.api().get("meshcrypt.dev/v1alpha1", "MeshPeer", None, node).expect("MeshPeer");
    peer["spec"].clone()
}

/// Pod-IP mode: every agent offers its own pods' addresses on its MeshPeer and takes the others'
/// from theirs; every pair of pods on different nodes talks, only encrypted, and a new pod is
/// reachable from the other nodes, and a removed one's address withdrawn, through MeshPeers alone.
#[test]
fn pods_talk_only_encrypted_with_addresses_from_mesh_peers() {
    let mut cluster = cluster(true);
    let pods = cluster.lab.pods().to_vec();
    for node in cluster.lab.nodes() {
        // Sorted as addresses, as the agent offers them.
        let mut addresses: Vec<std::net::IpAddr> =
            cluster.lab.pods_on(&node.name).iter().map(|p| p.address.into()).collect();
        addresses.sort();
        let want: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        poll(Duration::from_secs(10), || {
            let got = mesh_peer_spec(&cluster, &node.name)["podIPs"].clone();
            if got == serde_json::json!(want) { Ok(()) } else { Err(format!("{}: {got}", node.name)) }
        })
        .expect("each MeshPeer offers its node's pods");
    }
    let leak = cluster.leak_detector().expect("leak detector");
    cluster.cross_node_pods_talk(Duration::from_secs(10), b"mesh-peers").expect("pods talk");
    let added = cluster.add_pod("node-1").expect("add pod");
    for other in pods.iter().filter(|p| p.node != "node-1") {
        reach(&cluster, other, &added, Duration::from_secs(10));
    }
    let removed = pods.iter().find(|p| p.node == "node-2").expect("a pod on node-2").clone();
    cluster.remove_pod(&removed.name).expect("remove pod");
    poll(Duration::from_secs(10), || {
        let routes =
            cluster.wg("node-0", &["show", "meshcrypt0", "allowed-ips"]).map_err(|e| e.to_string())?;
        let stale = routes.contains(&format!("{}/32", removed.address));
        if stale { Err(format!("node-0 still routes {}", removed.address)) } else { Ok(()) }
    })
    .expect("the removed pod's address withdrawn");
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");
    assert!(report.mesh_packets > 0, "{report}");
}

/// podCIDR mode: a MeshPeer rewritten (by someone allowed to) to claim another node's pod CIDR
/// and address changes no agent's routes: the addresses come from the Nodes. Traffic to the
/// victim's pods still reaches them.
#[test]
fn a_mesh_peer_claiming_another_nodes_pod_cidr_redirects_nothing() {
    let cluster = cluster(false);
    let victim = cluster.lab.pods_on("node-1")[0].clone();
    let client = cluster.lab.pods_on("node-0")[0].clone();
    reach(&cluster, &client, &victim, Duration::from_secs(10));
    let before = cluster.wg("node-0", &["show", "meshcrypt0", "allowed-ips"]).expect("wg show");
    let lie = mesh_peer_spec(&cluster, "node-1");
    let patch = serde_json::json!({"spec": lie});
    cluster
        .api()
        .merge_patch("meshcrypt.dev/v1alpha1", "MeshPeer", None, "node-2", &patch, false)
        .expect("lie");
    poll(Duration::from_secs(10), || {
        let agent = cluster.agent("node-0").ok_or("no agent on node-0")?;
        let log = std::fs::read_to_string(&agent.log).map_err(|e| e.to_string())?;
        if log.contains("a MeshPeer claims addresses or pod CIDRs its Node does not list") {
            Ok(())
        } else {
            Err("node-0 has not read the lie yet".into())
        }
    })
    .expect("node-0 saw the claim and checked it against the Node");
    let leak = cluster.leak_detector().expect("leak detector");
    reach(&cluster, &client, &victim, Duration::from_secs(5));
    let after = cluster.wg("node-0", &["show", "meshcrypt0", "allowed-ips"]).expect("wg show");
    let report = leak.stop().expect("leak report");
    assert_eq!(before, after, "the lie changed node-0's peers");
    assert_eq!(report.pod_plaintext, 0, "{report}");
}
