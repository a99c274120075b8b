//! Fail closed: pod traffic without an encrypted path is dropped, never sent in plaintext — to a
//! node that never published a key, and from a node whose agent is down. With strict mode off the
//! operator's choice holds: traffic to a keyless node falls back to the underlay and is reported.

use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::lab::Pod;

fn cluster(extra: &[&str]) -> Cluster {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.extra_args = extra.iter().map(|s| (*s).to_owned()).collect();
    let cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster
}

/// Adds a node with a Node object but no agent (so no key), returning its pod.
fn keyless_node(cluster: &mut Cluster) -> Pod {
    let name = cluster.lab.add_node().expect("add node").name.clone();
    cluster.register_node(&name).expect("node object");
    cluster.lab.pods_on(&name)[0].clone()
}

fn metric(cluster: &Cluster, node: &str, line_start: &str) -> Option<f64> {
    let (_, body) = cluster.http(node, "/metrics").ok()?;
    body.lines().find(|l| l.starts_with(line_start))?.rsplit(' ').next()?.parse().ok()
}

#[test]
fn strict_mode_drops_traffic_to_a_node_without_a_key() {
    let mut cluster = cluster(&[]);
    let keyless = keyless_node(&mut cluster);
    let meshed = cluster.lab.pods_on("node-0")[0].clone();
    poll(Duration::from_secs(10), || {
        metric(&cluster, "node-0", "meshcrypt_node_problems{reason=\"NoKey\"}")
            .filter(|v| *v == 1.0)
            .ok_or_else(|| "node-0 has not noticed the keyless node".to_owned())
    })
    .expect("keyless node reported");
    let dropped_before =
        metric(&cluster, "node-0", "meshcrypt_dropped_packets_total{reason=\"no_peer\"}").unwrap_or(0.0);

    let leak = cluster.leak_detector().expect("leak detector");
    for _ in 0..3 {
        assert!(!cluster.lab.ping(&meshed, keyless.address.into()).expect("ping"), "reached a keyless node");
    }
    let report = leak.stop().expect("report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");
    let dropped_after =
        metric(&cluster, "node-0", "meshcrypt_dropped_packets_total{reason=\"no_peer\"}").unwrap_or(0.0);
    assert!(dropped_after >= dropped_before + 3.0, "drops counted: {dropped_before} -> {dropped_after}");
    // The signal: a Warning on node-0 naming the latest source and destination, and its node.
    let keyless_node = keyless.node.clone();
    let note = poll(Duration::from_secs(10), || {
        let events = cluster.events("StrictModeDrop");
        let on_node0 = events.iter().find(|e| e["regarding"]["name"] == "node-0");
        on_node0.and_then(|e| e["note"].as_str().map(str::to_owned)).ok_or_else(|| format!("{events:?}"))
    })
    .expect("a StrictModeDrop Event on node-0");
    let want = [meshed.address.to_string(), keyless.address.to_string(), format!("node {keyless_node}'s")];
    assert!(want.iter().all(|w| note.contains(w.as_str())), "{note}");
    let signals = metric(&cluster, "node-0", "meshcrypt_signals_total{reason=\"StrictModeDrop\"}");
    assert!(signals >= Some(1.0), "{signals:?}");
    // Pods on meshed nodes still talk, encrypted.
    let other = cluster.lab.pods_on("node-1")[0].clone();
    assert!(cluster.lab.ping(&meshed, other.address.into()).expect("ping"));
}

#[test]
fn strict_mode_off_falls_back_to_the_underlay_and_reports_the_node() {
    let mut cluster = cluster(&["--strict", "false"]);
    let keyless = keyless_node(&mut cluster);
    let meshed = cluster.lab.pods_on("node-0")[0].clone();
    poll(Duration::from_secs(10), || {
        metric(&cluster, "node-0", "meshcrypt_node_problems{reason=\"NoKey\"}")
            .filter(|v| *v == 1.0)
            .ok_or_else(|| "node-0 has not reported the keyless node".to_owned())
    })
    .expect("keyless node reported");
    let leak = cluster.leak_detector().expect("leak detector");
    assert!(cluster.lab.ping(&meshed, keyless.address.into()).expect("ping"), "no fallback to the underlay");
    let other = cluster.lab.pods_on("node-1")[0].clone();
    assert!(cluster.lab.ping(&meshed, other.address.into()).expect("ping"));
    let report = leak.stop().expect("report");
    assert!(report.pod_flow(meshed.address.into(), keyless.address.into()) > 0, "{report}");
    assert_eq!(
        report.pod_flow(meshed.address.into(), other.address.into()),
        0,
        "meshed pair in plaintext: {report}"
    );
}

#[test]
fn nothing_leaves_in_plaintext_while_the_agent_is_down() {
    let mut cluster = cluster(&[]);
    let a = cluster.lab.pods_on("node-0")[0].clone();
    let b = cluster.lab.pods_on("node-1")[0].clone();
    assert!(cluster.lab.ping(&b, a.address.into()).expect("ping"));

    let leak = cluster.leak_detector().expect("leak detector");
    cluster.kill_agent("node-1").expect("kill agent");
    for _ in 0..3 {
        assert!(!cluster.lab.ping(&b, a.address.into()).expect("ping"), "traffic flowed with the agent down");
        cluster.lab.tcp_exchange(&b, &a, b"while down").expect_err("TCP flowed with the agent down");
    }
    let report = leak.stop().expect("report");
    assert_eq!(report.pod_plaintext, 0, "plaintext while the agent was down:\n{report}");

    cluster.start_agent("node-1").expect("restart");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready again");
    poll(Duration::from_secs(5), || {
        cluster.lab.ping(&b, a.address.into()).ok().filter(|ok| *ok).ok_or_else(|| "not yet".to_owned())
    })
    .expect("traffic back after restart");
}
