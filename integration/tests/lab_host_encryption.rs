//! Host-to-host encryption (opt-in): with `host-encryption: "true"` traffic between node addresses
//! crosses the underlay only as the mesh's WireGuard UDP (the mesh's own packets carry a mark and
//! are never steered back into it), and every agent keeps its API connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::leak::LeakReport;

fn node_tcp(cluster: &Cluster, from: &str, to: &str) -> LeakReport {
    let leak = cluster.leak_detector().expect("leak detector");
    let (a, b) = (cluster.lab.node(from).unwrap().clone(), cluster.lab.node(to).unwrap().clone());
    cluster
        .lab
        .tcp_exchange_ns(
            &a.namespace,
            &b.namespace,
            IpAddr::V4(b.underlay_addr),
            b"node to node",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("node TCP {from} -> {to}: {e}"));
    leak.stop().expect("leak report")
}

#[test]
fn node_to_node_traffic_crosses_only_as_wireguard() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some(BTreeMap::new());
    let cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");

    let plain = node_tcp(&cluster, "node-0", "node-1");
    assert!(plain.stray_underlay > 0, "without host encryption node TCP is plain: {plain}");

    cluster.set_config(&[("host-encryption", "true")]).expect("switch on");
    // Both nodes' rules for the other's address (a peer's address is among its allowed IPs
    // whether or not host encryption is on, so only the rules tell).
    poll(Duration::from_secs(10), || {
        let rules = |node: &str| {
            let ns = &cluster.lab.node(node).unwrap().namespace;
            cluster.lab.exec(ns, &["ip", "rule", "show"]).unwrap_or_default()
        };
        let (on0, on1) = (rules("node-0"), rules("node-1"));
        if on0.contains("to 198.18.0.11 fwmark 0/0x200000 lookup 51820")
            && on1.contains("to 198.18.0.10 fwmark 0/0x200000 lookup 51820")
        {
            Ok(())
        } else {
            Err(format!("rules on node-0: {on0}\nrules on node-1: {on1}"))
        }
    })
    .expect("host encryption programmed");
    for (from, to) in [("node-0", "node-1"), ("node-1", "node-0")] {
        let report = node_tcp(&cluster, from, to);
        assert_eq!(report.stray_underlay, 0, "{from} -> {to} in plaintext: {report}");
        assert!(report.is_clean(), "{report}");
        assert!(report.mesh_packets > 0, "{report}");
    }
    // Pods still talk, and the agents still hear the API server: switching it off again applies.
    let (a, b) = (cluster.lab.pods_on("node-0")[0].clone(), cluster.lab.pods_on("node-1")[0].clone());
    assert!(cluster.lab.ping(&a, b.address.into()).expect("ping"));
    cluster.set_config(&[("host-encryption", "false")]).expect("switch off");
    poll(Duration::from_secs(10), || {
        let ns = &cluster.lab.node("node-1").unwrap().namespace;
        let rules = cluster.lab.exec(ns, &["ip", "rule", "show"]).unwrap_or_default();
        if rules.contains("to 198.18.0.10 ") { Err(rules) } else { Ok(()) }
    })
    .expect("agents still follow the API after host encryption");
    assert!(cluster.is_ready("node-0") && cluster.is_ready("node-1"));
    // Off again: node-to-node traffic is the host's own business once more (pods' is not).
    let plain = node_tcp(&cluster, "node-0", "node-1");
    assert!(plain.stray_underlay > 0, "host encryption still on after switching it off: {plain}");
}
