//! The mesh on the kernel backend (`--backend kernel`): real agents drive the kernel's WireGuard in
//! lab nodes, beside a node on the userspace backend. These need a kernel with WireGuard: nextest
//! runs this binary inside the kernel VM (`scripts/vm/run.sh`, `.config/nextest.toml`), as root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster};
use meshcrypt_netlab::lab::Pod;
use meshcrypt_netlab::traffic::Stream;
use meshcrypt_netlab::wait::until;
use serde_json::Value;

const READY: Duration = Duration::from_secs(60);

/// A cluster of `nodes` × `pods` on the kernel backend (`--backend kernel`), but for the nodes in
/// `userspace` (`--backend userspace`): the ConfigMap has no `backend` key, so each agent's flag
/// decides.
fn kernel_cluster(nodes: usize, pods: usize, userspace: &[&str]) -> Cluster {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some(BTreeMap::new());
    for n in 0..nodes {
        let node = format!("node-{n}");
        let backend = if userspace.contains(&node.as_str()) { "userspace" } else { "kernel" };
        options.node_args.insert(node, vec!["--backend".into(), backend.into()]);
    }
    let cluster = Cluster::start(nodes, pods, options).expect("cluster");
    cluster.wait_ready(READY).expect("agents ready");
    cluster.wait_converged(READY).expect("complete mesh");
    cluster
}

/// `meshcrypt status -o json` on `node`, against its agent's status socket.
fn status(cluster: &Cluster, node: &str) -> Value {
    let binary = AgentOptions::new().expect("meshcrypt binary").binary;
    let out = Command::new(binary)
        .args(["status", "-o", "json", "--state-dir"])
        .arg(cluster.state_dir(node))
        .output()
        .expect("run meshcrypt status");
    assert!(out.status.success(), "meshcrypt status on {node}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn pod_on(cluster: &Cluster, node: &str) -> Pod {
    cluster.lab.pods_on(node)[0].clone()
}

/// Two nodes on the kernel backend and one on the userspace backend: every pod reaches every pod
/// on another node, and only encrypted; the kernel nodes' devices are `wireguard` links, the other
/// a TUN; `meshcrypt status` and the metrics say which backend runs each and show its peers and
/// their handshakes.
#[test]
fn the_mesh_runs_on_kernel_wireguard_beside_a_userspace_node_and_leaks_nothing() {
    let cluster = kernel_cluster(3, 2, &["node-2"]);
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
        let (backend, kind) =
            if node.name == "node-2" { ("userspace", "tun") } else { ("kernel", "wireguard") };
        let link =
            cluster.lab.exec(&node.namespace, &["ip", "-d", "link", "show", "meshcrypt0"]).expect("ip link");
        assert!(link.contains(kind), "{}: {link}", node.name);
        let (_, metrics) = cluster.http(&node.name, "/metrics").expect("metrics");
        assert!(metrics.contains("meshcrypt_peers 2"), "{}: {metrics}", node.name);
        let info = format!(r#"meshcrypt_device_info{{backend="{backend}",interface="meshcrypt0"}} 1"#);
        assert!(metrics.contains(&info), "{}: {metrics}", node.name);
        // Every pair talked above, so every peer has a handshake the device reports.
        let doc = status(&cluster, &node.name);
        assert_eq!(doc["device"]["backend"], backend, "{}: {doc}", node.name);
        let peers = doc["peers"].as_array().expect("peers");
        assert_eq!(peers.len(), 2, "{}: {doc}", node.name);
        assert!(peers.iter().all(|p| p["lastHandshake"].is_string()), "{}: {doc}", node.name);
        assert!(
            metrics.contains("meshcrypt_peer_handshake_age_seconds{peer_node="),
            "{}: {metrics}",
            node.name
        );
    }
}

/// The other build of the agent, for an upgrade: `$MESHCRYPT_UPGRADE_BIN`, else the release build
/// when the tests run the debug one (scripts/test.sh builds it), else the debug build. It must be
/// another file with other contents than `current`: the same source optimised differently is a
/// different binary, which is what an upgrade puts on a node.
fn other_build(current: &Path) -> PathBuf {
    let other = std::env::var_os("MESHCRYPT_UPGRADE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let profile_dir = current.parent().expect("a profile directory");
        let other_profile = if profile_dir.ends_with("debug") { "release" } else { "debug" };
        profile_dir.with_file_name(other_profile).join("meshcrypt")
    });
    let (a, b) = (std::fs::read(current), std::fs::read(&other));
    let b = b.unwrap_or_else(|e| {
        panic!("{}: {e} (build it: cargo build --release --locked -p meshcrypt)", other.display())
    });
    assert_ne!(
        a.expect("the agent's binary"),
        b,
        "{} is the same build as {}",
        other.display(),
        current.display()
    );
    other
}

/// Under a TCP stream between two nodes, the sending node's agent is killed (SIGKILL) and
/// restarted, then stopped (SIGTERM) and replaced by another build (an upgrade): the kernel device
/// carries the stream the whole time, so no packet of it is lost (no retransmission), it is never
/// reset and it never stalls for long. With `backend: userspace` the path goes with the agent.
#[test]
fn an_agent_restart_and_an_upgrade_cost_the_stream_nothing() {
    let mut cluster = kernel_cluster(2, 1, &[]);
    let upgrade = other_build(&AgentOptions::new().expect("meshcrypt binary").binary);
    let (a, b) = (pod_on(&cluster, "node-0"), pod_on(&cluster, "node-1"));
    until("node-0's pod reaches node-1's", Duration::from_secs(20), || {
        cluster.lab.ping(&a, b.address.into()).unwrap_or(false)
    });
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let leak = cluster.leak_detector().expect("leak detector");
    for upgrading in [false, true] {
        if upgrading {
            cluster.stop_agent("node-0").expect("stop");
        } else {
            cluster.kill_agent("node-0").expect("kill");
        }
        // No agent: the kernel device still carries the pods' traffic.
        for _ in 0..5 {
            assert!(cluster.lab.ping(&a, b.address.into()).unwrap(), "no agent: the path must stay up");
        }
        if upgrading {
            cluster.start_agent_from("node-0", &upgrade).expect("upgrade");
        } else {
            cluster.start_agent("node-0").expect("restart");
        }
        cluster.wait_ready(READY).expect("ready again");
    }
    let report = leak.stop().expect("leak report");
    let stream = stream.stop();
    println!("stream {stream:?}\n{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(stream.error, None, "the TCP stream was reset: {stream:?}");
    assert_eq!(stream.retransmits, Some(0), "packets of the stream were lost: {stream:?}");
    assert!(stream.max_stall < Duration::from_secs(1), "the stream stalled: {stream:?}");
    let doc = status(&cluster, "node-0");
    assert_eq!(doc["device"]["backend"], "kernel", "node-0 after the upgrade: {doc}");
}

/// The kind of `node`'s `meshcrypt0` (`wireguard`, `tun`), or `None` when it has none.
fn link_kind(cluster: &Cluster, node: &str) -> Option<&'static str> {
    let ns = &cluster.lab.node(node).expect("node").namespace;
    let out = cluster.lab.exec_output(ns, &["ip", "-d", "link", "show", "meshcrypt0"]).expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    ["wireguard", "tun"].into_iter().find(|kind| out.status.success() && text.contains(kind))
}

/// Kernel devices left by stopped agents (SIGTERM leaves them) meet agents restarted with
/// `--backend userspace` (a node group's DaemonSet changed) and without their saved peer set (a
/// restore would adopt the device anyway): the restarted agent adopts the kernel device, deletes
/// it and runs a TUN in its place (its pod talks again, through the other node's kernel device,
/// which still has its peer); switched off in the ConfigMap meanwhile, the restarted agent
/// deletes it.
#[test]
fn a_kernel_device_left_behind_is_replaced_or_removed_as_the_settings_say() {
    let mut cluster = kernel_cluster(2, 1, &[]);
    let (a, b) = (pod_on(&cluster, "node-0"), pod_on(&cluster, "node-1"));
    until("node-0's pod reaches node-1's", Duration::from_secs(20), || {
        cluster.lab.ping(&a, b.address.into()).unwrap_or(false)
    });
    cluster.stop_agent("node-0").expect("stop node-0");
    cluster.stop_agent("node-1").expect("stop node-1");
    assert_eq!(link_kind(&cluster, "node-0"), Some("wireguard"), "SIGTERM leaves the kernel device");

    for node in ["node-0", "node-1"] {
        std::fs::remove_file(cluster.state_dir(node).join("last-known.json")).expect("saved peer set");
    }
    cluster.set_agent_args("node-0", &["--backend", "userspace"]);
    cluster.start_agent("node-0").expect("restart node-0");
    cluster.wait_ready(READY).unwrap_or_else(|e| panic!("node-0 on userspace: {e}"));
    assert_eq!(link_kind(&cluster, "node-0"), Some("tun"), "node-0's kernel device replaced");
    until("node-0's pod reaches node-1's again", Duration::from_secs(20), || {
        cluster.lab.ping(&a, b.address.into()).unwrap_or(false)
    });
    assert_eq!(status(&cluster, "node-0")["device"]["backend"], "userspace");

    cluster.set_config(&[("enabled", "false")]).expect("ConfigMap");
    cluster.set_agent_args("node-1", &["--backend", "userspace"]);
    cluster.start_agent("node-1").expect("restart node-1");
    until("node-1's kernel device deleted", READY, || link_kind(&cluster, "node-1").is_none());
}
