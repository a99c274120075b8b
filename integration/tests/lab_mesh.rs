//! The mesh end to end: real `meshcrypt agent` processes in lab nodes, the test API server, pods
//! talking across nodes, and the leak detector on the underlay.

use std::time::{Duration, Instant};

use meshcrypt_integration::cluster::{AgentOptions, Cluster};
use meshcrypt_netlab::lab::{Pod, worker_threads};

const READY: Duration = Duration::from_secs(30);

fn cluster(nodes: usize, pods: usize) -> Cluster {
    cluster_with(nodes, pods, AgentOptions::new().expect("meshcrypt binary"))
}

fn cluster_with(nodes: usize, pods: usize, options: AgentOptions) -> Cluster {
    let cluster = Cluster::start(nodes, pods, options).expect("cluster");
    cluster.wait_ready(READY).expect("agents ready");
    cluster
}

/// Every ordered pair of pods on different nodes.
fn cross_node_pairs(pods: &[Pod]) -> Vec<(Pod, Pod)> {
    let mut pairs = Vec::new();
    for a in pods {
        for b in pods {
            if a.node != b.node {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

/// Polls until `from` reaches `to` by ping, returning how long it took.
fn reach(cluster: &Cluster, from: &Pod, to: &Pod, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if cluster.lab.ping(from, to.address.into()).unwrap_or(false) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{} cannot reach {} after {deadline:?}\n{}",
            from.name,
            to.name,
            cluster.agent_logs_tail(30)
        );
    }
}

/// Runs with two data-path workers per agent (`--dataplane-workers 2`): every pair still talks,
/// and only encrypted.
#[test]
fn three_nodes_talk_only_encrypted() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.extra_args = vec!["--dataplane-workers".into(), "2".into()];
    let cluster = cluster_with(3, 2, options);
    for node in cluster.lab.nodes() {
        let pid = cluster.agent(&node.name).expect("agent").pid;
        assert_eq!(worker_threads(pid), ["wg-0", "wg-1"], "{}", node.name);
    }
    let leak = cluster.leak_detector().expect("leak detector");
    let pods = cluster.lab.pods().to_vec();
    for (a, b) in cross_node_pairs(&pods) {
        reach(&cluster, &a, &b, Duration::from_secs(10));
        cluster
            .lab
            .tcp_exchange(&a, &b, b"meshcrypt")
            .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", a.name, b.name));
    }
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "plaintext pod packets on the underlay:\n{report}");
    assert!(report.is_clean(), "unexpected traffic between nodes:\n{report}");
    assert!(report.mesh_packets > 0, "the detector saw no WireGuard traffic at all:\n{report}");

    for node in cluster.lab.nodes() {
        let (status, metrics) = cluster.http(&node.name, "/metrics").expect("metrics");
        assert_eq!(status, 200);
        assert!(metrics.contains("meshcrypt_peers 2"), "{}: {metrics}", node.name);
        assert!(metrics.contains("meshcrypt_peer_handshake_age_seconds{peer_node="), "{metrics}");
        assert!(metrics.contains("meshcrypt_reconcile_errors_total 0"), "{metrics}");
        let dump = cluster.wg(&node.name, &["show", "meshcrypt0", "dump"]).expect("wg show");
        // The first line is the interface; then one line per peer with its latest handshake.
        let peers: Vec<&str> = dump.lines().skip(1).collect();
        assert_eq!(peers.len(), 2, "{}: {dump}", node.name);
        for peer in peers {
            let handshake: u64 =
                peer.split('\t').nth(4).and_then(|t| t.parse().ok()).expect("handshake field");
            assert!(handshake > 0, "{}: no handshake with a peer: {dump}", node.name);
        }
    }
}

/// The peers `node`'s device has, as (public key, latest handshake unix seconds).
fn wg_peers(cluster: &Cluster, node: &str) -> Vec<(String, u64)> {
    let dump = cluster.wg(node, &["show", "meshcrypt0", "dump"]).expect("wg show");
    dump.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[0].to_owned(), fields[4].parse().unwrap_or(0))
        })
        .collect()
}

/// The routes of meshcrypt's table on `node`, as `ip route` prints them.
fn mesh_routes(cluster: &Cluster, node: &str) -> String {
    let ns = &cluster.lab.node(node).expect("node").namespace;
    cluster.lab.exec(ns, &["ip", "route", "show", "table", "51820"]).expect("ip route")
}

#[test]
fn a_node_joins_while_traffic_flows_and_a_deleted_node_disappears_everywhere() {
    let mut cluster = cluster(3, 1);
    let leak = cluster.leak_detector().expect("leak detector");
    let pods = cluster.lab.pods().to_vec();
    for (a, b) in cross_node_pairs(&pods) {
        reach(&cluster, &a, &b, Duration::from_secs(10));
    }

    // Traffic between two existing pods keeps flowing while the node joins.
    let (from_ns, to_addr) = (pods[0].namespace.clone(), pods[1].address.to_string());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut sent, mut lost) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = std::process::Command::new("ip")
                    .args(["netns", "exec", &from_ns, "ping", "-c", "1", "-W", "1", "-q", &to_addr])
                    .output()
                    .is_ok_and(|o| o.status.success());
                sent += 1;
                lost += u32::from(!ok);
            }
            (sent, lost)
        })
    };
    let started = Instant::now();
    let joined = cluster.add_node().expect("add node");
    cluster.wait_ready(READY).expect("new agent ready");
    let ready_after = started.elapsed();
    let new_pods: Vec<Pod> = cluster.lab.pods_on(&joined).into_iter().cloned().collect();
    let ready_at = Instant::now();
    for new in &new_pods {
        for old in &pods {
            reach(&cluster, new, old, Duration::from_secs(2));
            reach(&cluster, old, new, Duration::from_secs(2));
        }
    }
    let reached_after = ready_at.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, lost) = background.join().expect("background pings");
    assert!(sent > 0 && lost == 0, "existing traffic disturbed by the join: {lost} of {sent} pings lost");
    assert!(
        reached_after <= Duration::from_secs(2),
        "pods of {joined} reached everyone {reached_after:?} after it was ready"
    );
    println!(
        "{joined}: agent ready {ready_after:?} after the node was added; all pods reached {reached_after:?} later"
    );
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");

    let leaving = pods[0].node.clone();
    let leaving_cidr = cluster.lab.node(&leaving).expect("node").pod_cidr.to_string();
    cluster.remove_node(&leaving).expect("remove node");
    let remaining: Vec<String> = cluster.lab.nodes().iter().map(|n| n.name.clone()).collect();
    for node in &remaining {
        meshcrypt_netlab::wait::poll(Duration::from_secs(10), || {
            let peers = wg_peers(&cluster, node).len();
            let routes = mesh_routes(&cluster, node);
            if peers == remaining.len() - 1 && !routes.contains(&format!("{leaving_cidr} dev")) {
                Ok(())
            } else {
                Err(format!("{node} still has {leaving}: {peers} peers, routes:\n{routes}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A node whose tunnel is wireguard-go, configured with `wg` and routes by hand, its key published
/// on its Node by the test: meshcrypt nodes treat it as any other peer.
#[test]
fn wireguard_go_node_interoperates() {
    use meshcrypt_integration::cluster::poll;
    use meshcrypt_netlab::lab::SpawnOptions;
    use meshcrypt_netlab::lab::wg_via;

    let mut cluster = cluster(2, 1);
    let wg_node = cluster.lab.add_node().expect("add node").clone();
    cluster.register_node(&wg_node.name).expect("node object");
    let ns = wg_node.namespace.clone();

    let mut cmd = std::process::Command::new("wireguard-go");
    cmd.args(["-f", "meshcrypt0"]).env("LOG_LEVEL", "error");
    let options = SpawnOptions { private_dirs: vec!["/run/wireguard".into()] };
    let wggo = cluster.lab.spawn_with(&ns, &cmd, &options).expect("wireguard-go");
    poll(Duration::from_secs(10), || wg_via(wggo.pid, &["show", "meshcrypt0"]).map_err(|e| e.to_string()))
        .expect("wireguard-go UAPI socket");

    let private = cluster.lab.exec(&ns, &["wg", "genkey"]).expect("wg genkey").trim().to_owned();
    let key_file = cluster.dir().join("wggo.key");
    std::fs::write(&key_file, format!("{private}\n")).expect("key file");
    let public = {
        use std::io::Write as _;
        let mut child = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("wg pubkey");
        child.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_owned()
    };
    let key_path = key_file.to_str().unwrap().to_owned();
    wg_via(wggo.pid, &["set", "meshcrypt0", "listen-port", "51820", "private-key", &key_path])
        .expect("wg set key");
    cluster.lab.exec(&ns, &["ip", "link", "set", "meshcrypt0", "mtu", "1440", "up"]).expect("link up");
    for node in ["node-0", "node-1"] {
        let object = cluster.api().get("v1", "Node", None, node).expect("node");
        let key = object["metadata"]["annotations"]["meshcrypt.dev/public-key"]
            .as_str()
            .expect("published key")
            .to_owned();
        let lab_node = cluster.lab.node(node).unwrap().clone();
        let endpoint = format!("{}:51820", lab_node.underlay_addr);
        let cidr = lab_node.pod_cidr.to_string();
        wg_via(wggo.pid, &["set", "meshcrypt0", "peer", &key, "endpoint", &endpoint, "allowed-ips", &cidr])
            .expect("wg set peer");
        cluster.lab.exec(&ns, &["ip", "route", "replace", &cidr, "dev", "meshcrypt0"]).expect("route");
    }
    let patch = serde_json::json!({"metadata": {"annotations": {
        "meshcrypt.dev/public-key": public,
        "meshcrypt.dev/key-epoch": "0",
        "meshcrypt.dev/key-created": "2026-11-28T00:00:00Z",
    }}});
    cluster.api().merge_patch("v1", "Node", None, &wg_node.name, &patch, false).expect("publish key");

    let leak = cluster.leak_detector().expect("leak detector");
    let go_pod = cluster.lab.pods_on(&wg_node.name)[0].clone();
    let others: Vec<Pod> = cluster.lab.pods().iter().filter(|p| p.node != wg_node.name).cloned().collect();
    for other in &others {
        reach(&cluster, &go_pod, other, Duration::from_secs(10));
        reach(&cluster, other, &go_pod, Duration::from_secs(10));
        cluster.lab.tcp_exchange(other, &go_pod, b"to wireguard-go").expect("tcp to wireguard-go");
        cluster.lab.tcp_exchange(&go_pod, other, b"from wireguard-go").expect("tcp from wireguard-go");
    }
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");
    let handshakes: Vec<u64> =
        wg_peers(&cluster, "node-0").into_iter().filter(|(k, _)| *k == public).map(|(_, h)| h).collect();
    assert_eq!(handshakes.len(), 1, "node-0 has the wireguard-go node as a peer");
    assert!(handshakes[0] > 0, "node-0 completed a handshake with wireguard-go");
}

/// Waits until the wall clock is past the second in which `node`'s key annotation was last
/// written (the API server records claims by the second): a claim made now is a later one.
fn after_key_claim_of(cluster: &Cluster, node: &str) {
    let object = cluster.api().get("v1", "Node", None, node).expect("node");
    let claimed = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !e["fieldsV1"]["f:metadata"]["f:annotations"]["f:meshcrypt.dev/public-key"].is_null())
        .filter_map(|e| e["time"].as_str()?.parse::<jiff::Timestamp>().ok())
        .max()
        .expect("the key annotation's managedFields entry");
    meshcrypt_integration::cluster::poll(Duration::from_secs(3), || {
        let now = jiff::Timestamp::now();
        if now.as_second() > claimed.as_second() { Ok(()) } else { Err(format!("still {now}")) }
    })
    .expect("the clock moves on");
}

/// Behaviour 7 of issue 11 ("a public key is public"), and key changes: a node that comes back
/// with a new key is followed by the others; a Node that copies another node's public key (any
/// node can annotate its own Node) is refused, its holder keeps working, both get a Warning Event,
/// and the decision holds across an agent restart.
#[test]
fn a_key_change_is_picked_up_and_a_copied_key_stays_with_its_holder_across_restarts() {
    let mut cluster = cluster(3, 1);
    let pods = cluster.lab.pods().to_vec();
    reach(&cluster, &pods[0], &pods[1], Duration::from_secs(10));
    let key_of = |cluster: &Cluster, node: &str| -> String {
        let object = cluster.api().get("v1", "Node", None, node).expect("node");
        object["metadata"]["annotations"]["meshcrypt.dev/public-key"].as_str().unwrap_or_default().to_owned()
    };

    // node-1 comes back with a new key: only its annotation changes; the others follow.
    let old = key_of(&cluster, "node-1");
    cluster.stop_agent("node-1").expect("stop");
    std::fs::remove_file(cluster.dir().join("node-1/state/private.key")).expect("forget key");
    cluster.start_agent("node-1").expect("start");
    cluster.wait_ready(READY).expect("ready");
    let new = key_of(&cluster, "node-1");
    assert_ne!(old, new, "node-1 published a new key");
    reach(&cluster, &pods[0], &pods[1], Duration::from_secs(5));
    let peers: Vec<String> = wg_peers(&cluster, "node-0").into_iter().map(|(k, _)| k).collect();
    assert!(peers.contains(&new) && !peers.contains(&old), "node-0 peers {peers:?}");

    // node-0 is compromised (its agent gone) and copies node-1's new key onto its own Node, later.
    // It is the older Node with the smaller name: only the time of each claim can decide for
    // node-1, and must.
    cluster.kill_agent("node-0").expect("kill node-0's agent");
    after_key_claim_of(&cluster, "node-1");
    let patch = serde_json::json!({"metadata": {"annotations": {"meshcrypt.dev/public-key": new}}});
    cluster.api().merge_patch("v1", "Node", None, "node-0", &patch, false).expect("copy the key");
    let warned = |reason: &str, node: &str| {
        cluster.events(reason).iter().any(|e| e["regarding"]["name"].as_str() == Some(node))
    };
    meshcrypt_integration::cluster::poll(Duration::from_secs(10), || {
        if warned("DuplicateKey", "node-0") && warned("KeyClaimedByOthers", "node-1") {
            Ok(())
        } else {
            Err("no Warning Events naming both claimants".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_logs_tail(10)));
    let leak = cluster.leak_detector().expect("leak detector");
    let node1 = cluster.lab.node("node-1").expect("node-1").underlay_addr.to_string();
    for restarted in [false, true] {
        if restarted {
            // The same after node-2's agent restarts: the decision comes from the API, not memory.
            cluster.kill_agent("node-2").expect("kill");
            cluster.start_agent("node-2").expect("start");
            cluster.wait_ready(READY).expect("ready");
        }
        let endpoints = cluster.wg("node-2", &["show", "meshcrypt0", "endpoints"]).expect("wg");
        let holder = endpoints.lines().find(|l| l.starts_with(&new)).unwrap_or_default();
        assert!(holder.contains(&node1), "node-2 does not send node-1's key to node-1:\n{endpoints}");
        reach(&cluster, &pods[2], &pods[1], Duration::from_secs(5));
        reach(&cluster, &pods[1], &pods[2], Duration::from_secs(5));
    }
    let report = leak.stop().expect("report");
    assert!(report.is_clean(), "{report}");
}
