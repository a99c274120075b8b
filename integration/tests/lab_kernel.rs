//! The mesh on the kernel backend (`backend: kernel`): real agents drive the kernel's WireGuard in
//! lab nodes. These need a kernel with WireGuard: nextest runs this binary inside the kernel VM
//! (`scripts/vm/run.sh`, `.config/nextest.toml`), as root.

use std::collections::BTreeMap;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster};
use meshcrypt_netlab::lab::Pod;
use meshcrypt_netlab::traffic::Stream;
use meshcrypt_netlab::wait::until;

const READY: Duration = Duration::from_secs(60);

fn kernel_cluster(nodes: usize, pods: usize) -> Cluster {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some(BTreeMap::from([("backend".to_owned(), "kernel".to_owned())]));
    let cluster = Cluster::start(nodes, pods, options).expect("cluster");
    cluster.wait_ready(READY).expect("agents ready");
    // Not `wait_converged`: the kernel device starts its handshakes with the first packet
    // (`initiate_handshakes` has no kernel counterpart yet), so the pods' traffic converges it.
    cluster
}

fn pod_on(cluster: &Cluster, node: &str) -> Pod {
    cluster.lab.pods_on(node)[0].clone()
}

/// Every pod reaches every pod on another node through the kernel's WireGuard, and only
/// encrypted; the devices are `wireguard` links; the metrics count the peers and handshakes.
#[test]
fn the_mesh_runs_on_kernel_wireguard_and_leaks_nothing() {
    let cluster = kernel_cluster(3, 2);
    let leak = cluster.leak_detector().expect("leak detector");
    let pods = cluster.lab.pods().to_vec();
    for a in &pods {
        for b in pods.iter().filter(|b| b.node != a.node) {
            until(&format!("{} reaches {}", a.name, b.name), Duration::from_secs(20), || {
                cluster.lab.ping(a, b.address.into()).unwrap_or(false)
            });
            cluster
                .lab
                .tcp_exchange(a, b, b"meshcrypt")
                .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", a.name, b.name));
        }
    }
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "plaintext pod packets on the underlay:\n{report}");
    assert!(report.is_clean(), "{report}");
    for node in cluster.lab.nodes() {
        let link =
            cluster.lab.exec(&node.namespace, &["ip", "-d", "link", "show", "meshcrypt0"]).expect("ip link");
        assert!(link.contains("wireguard"), "{}: {link}", node.name);
        let (_, metrics) = cluster.http(&node.name, "/metrics").expect("metrics");
        assert!(metrics.contains("meshcrypt_peers 2"), "{}: {metrics}", node.name);
        assert!(
            metrics.contains("meshcrypt_peer_handshake_age_seconds{peer_node="),
            "{}: {metrics}",
            node.name
        );
    }
}

/// Under a TCP stream between two nodes, the sending node's agent is killed (SIGKILL) and
/// restarted, then stopped (SIGTERM) and restarted: the kernel device carries the stream the whole
/// time, so it is never reset and never stalls for long.
#[test]
fn an_agent_restart_costs_the_stream_nothing() {
    let mut cluster = kernel_cluster(2, 1);
    let (a, b) = (pod_on(&cluster, "node-0"), pod_on(&cluster, "node-1"));
    until("node-0's pod reaches node-1's", Duration::from_secs(20), || {
        cluster.lab.ping(&a, b.address.into()).unwrap_or(false)
    });
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let leak = cluster.leak_detector().expect("leak detector");
    for kill in [true, false] {
        if kill {
            cluster.kill_agent("node-0").expect("kill");
        } else {
            cluster.stop_agent("node-0").expect("stop");
        }
        // No agent: the kernel device still carries the pods' traffic.
        for _ in 0..5 {
            assert!(cluster.lab.ping(&a, b.address.into()).unwrap(), "no agent: the path must stay up");
        }
        cluster.start_agent("node-0").expect("restart");
        cluster.wait_ready(READY).expect("ready again");
    }
    let report = leak.stop().expect("leak report");
    let stream = stream.stop();
    println!("stream {stream:?}\n{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(stream.error, None, "the TCP stream was reset: {stream:?}");
    assert!(stream.max_stall < Duration::from_secs(1), "the stream stalled: {stream:?}");
}
