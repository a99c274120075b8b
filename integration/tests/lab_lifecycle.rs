//! The mesh's lifecycle under a continuous TCP stream between pods on different nodes: switched off
//! and on through the ConfigMap, and hostile ConfigMap values rejected with the last good
//! configuration kept. Each test prints the disruption it measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::lab::Pod;
use meshcrypt_netlab::leak::LeakReport;
use meshcrypt_netlab::traffic::Stream;

fn cluster(config: &[(&str, &str)]) -> Cluster {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map =
        Some(config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>());
    let cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    // Ready is per node: wait until each knows the other before the API goes away or traffic is
    // counted.
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    cluster
}

fn pods(cluster: &Cluster) -> (Pod, Pod) {
    (cluster.lab.pods_on("node-0")[0].clone(), cluster.lab.pods_on("node-1")[0].clone())
}

/// Watches the underlay while `a` pings `b` three times.
fn window(cluster: &Cluster, a: &Pod, b: &Pod) -> LeakReport {
    let leak = cluster.leak_detector().expect("leak detector");
    for _ in 0..3 {
        assert!(cluster.lab.ping(a, b.address.into()).expect("ping"), "{} cannot reach {}", a.name, b.name);
    }
    leak.stop().expect("leak report")
}

fn has_device(cluster: &Cluster, node: &str) -> bool {
    let ns = &cluster.lab.node(node).expect("node").namespace;
    cluster.lab.exec_output(ns, &["ip", "link", "show", "meshcrypt0"]).is_ok_and(|o| o.status.success())
}

fn latest_handshake(cluster: &Cluster, node: &str) -> u64 {
    let dump = cluster.wg(node, &["show", "meshcrypt0", "dump"]).unwrap_or_default();
    dump.lines().skip(1).filter_map(|l| l.split('\t').nth(4)?.parse().ok()).max().unwrap_or(0)
}

#[test]
fn the_configmap_switches_the_mesh_off_and_on_live() {
    let cluster = cluster(&[("strict", "false")]);
    let (a, b) = pods(&cluster);
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let on = window(&cluster, &a, &b);
    assert_eq!(on.pod_plaintext, 0, "{on}");

    cluster.set_config(&[("enabled", "false")]).expect("switch off");
    poll(Duration::from_secs(10), || {
        let gone = ["node-0", "node-1"].iter().all(|n| !has_device(&cluster, n));
        let withdrawn = ["node-0", "node-1"].iter().all(|n| {
            let node = cluster.api().get("v1", "Node", None, n).expect("node");
            node["metadata"]["annotations"].get("meshcrypt.dev/public-key").is_none()
        });
        if gone && withdrawn { Ok(()) } else { Err(format!("device gone {gone}, key withdrawn {withdrawn}")) }
    })
    .expect("mesh switched off");
    for node in ["node-0", "node-1"] {
        let ns = &cluster.lab.node(node).unwrap().namespace;
        let rules = cluster.lab.exec(ns, &["ip", "rule", "show"]).expect("rules");
        assert!(!rules.contains("lookup 51820"), "{node} keeps a rule after switching off:\n{rules}");
        let table = cluster.lab.exec(ns, &["ip", "route", "show", "table", "51820"]).unwrap_or_default();
        assert!(table.trim().is_empty(), "{node} keeps routes after switching off:\n{table}");
    }
    assert!(!cluster.events("MeshDisabled").is_empty(), "an Event says the mesh was switched off");
    let off = window(&cluster, &a, &b);
    assert!(off.pod_plaintext > 0, "with the mesh off (strict off) pods talk over the underlay: {off}");

    let switched_on = Instant::now();
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    cluster.set_config(&[("enabled", "true")]).expect("switch on");
    let took = poll(Duration::from_secs(2), || {
        let fresh = ["node-0", "node-1"]
            .iter()
            .all(|n| has_device(&cluster, n) && latest_handshake(&cluster, n) >= since);
        if fresh && cluster.lab.ping(&a, b.address.into()).unwrap_or(false) {
            Ok(switched_on.elapsed())
        } else {
            Err("not encrypted yet".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("encrypted again within 2 s: {e}\n{}", cluster.agent_logs_tail(20)));
    let again = window(&cluster, &a, &b);
    assert_eq!(again.pod_plaintext, 0, "{again}");

    let report = stream.stop();
    println!("switched on again and encrypted after {took:?}; stream: {report:?}");
    assert_eq!(report.error, None, "the TCP stream broke: {report:?}");
}

#[test]
fn hostile_configmap_values_are_rejected_and_the_last_good_configuration_stays() {
    let cluster = cluster(&[]);
    let (a, b) = pods(&cluster);
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let before = cluster.wg("node-0", &["show", "meshcrypt0", "listen-port"]).expect("port");

    cluster
        .set_config(&[("port", "abc"), ("mtu", "70000"), ("enabled", "maybe"), ("surprise", "1")])
        .expect("hostile patch");
    let event = poll(Duration::from_secs(10), || {
        cluster
            .events("ConfigRejected")
            .into_iter()
            .find(|e| {
                let note = e["note"].as_str().unwrap_or_default();
                ["port:", "mtu:", "enabled:", "surprise:"].iter().all(|k| note.contains(k))
            })
            .ok_or_else(|| "no ConfigRejected Event naming every key".to_owned())
    })
    .expect("rejection reported");
    println!("rejection: {}", event["note"]);
    // Still on, same port, still encrypted, still ready.
    assert_eq!(cluster.wg("node-0", &["show", "meshcrypt0", "listen-port"]).expect("port"), before);
    assert!(cluster.is_ready("node-0") && cluster.is_ready("node-1"));
    let report = window(&cluster, &a, &b);
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");

    // Repaired: the agents take the good values again (a new port, to prove they apply it).
    cluster.unset_config(&["mtu", "enabled", "surprise"]).expect("repair");
    cluster.set_config(&[("port", "51821")]).expect("new port");
    poll(Duration::from_secs(10), || {
        let port = cluster.wg("node-0", &["show", "meshcrypt0", "listen-port"]).unwrap_or_default();
        if port.trim() == "51821" { Ok(()) } else { Err(format!("port {port}")) }
    })
    .expect("new port applied");
    poll(Duration::from_secs(10), || {
        cluster.lab.ping(&a, b.address.into()).ok().filter(|ok| *ok).ok_or_else(|| "not yet".to_owned())
    })
    .expect("traffic over the new port");
    let stream_report = stream.stop();
    println!("stream through rejection and port move: {stream_report:?}");
    assert_eq!(stream_report.error, None, "the TCP stream broke: {stream_report:?}");
}

#[test]
fn an_agent_killed_and_restarted_leaks_nothing_and_the_stream_survives() {
    let mut cluster = cluster(&[]);
    let (a, b) = pods(&cluster);
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let leak = cluster.leak_detector().expect("leak detector");

    let killed = Instant::now();
    cluster.kill_agent("node-0").expect("SIGKILL");
    cluster.start_agent("node-0").expect("restart");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready again");
    let ready = killed.elapsed();
    let resumed = poll(Duration::from_secs(10), || {
        if cluster.lab.ping(&a, b.address.into()).unwrap_or(false) {
            Ok(killed.elapsed())
        } else {
            Err("no".into())
        }
    })
    .expect("traffic resumes");

    // The same for a graceful stop and start of the same binary (an upgrade).
    let stopped = Instant::now();
    cluster.stop_agent("node-1").expect("SIGTERM");
    cluster.start_agent("node-1").expect("start");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready again");
    let upgraded = poll(Duration::from_secs(10), || {
        if cluster.lab.ping(&b, a.address.into()).unwrap_or(false) {
            Ok(stopped.elapsed())
        } else {
            Err("no".into())
        }
    })
    .expect("traffic resumes after the upgrade");

    let report = leak.stop().expect("leak report");
    let stream = stream.stop();
    println!(
        "SIGKILL: agent ready after {ready:?}, traffic after {resumed:?}; restart: traffic after {upgraded:?}; stream {stream:?}"
    );
    assert_eq!(report.pod_plaintext, 0, "plaintext during the restarts:\n{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(stream.error, None, "the TCP stream was reset: {stream:?}");
}

/// Each node's published (public key, epoch).
fn published(cluster: &Cluster) -> BTreeMap<String, (String, String)> {
    cluster
        .lab
        .nodes()
        .iter()
        .map(|n| {
            let node = cluster.api().get("v1", "Node", None, &n.name).expect("node");
            let a = &node["metadata"]["annotations"];
            let get = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (n.name.clone(), (get("meshcrypt.dev/public-key"), get("meshcrypt.dev/key-epoch")))
        })
        .collect()
}

#[test]
fn keys_rotate_on_every_node_during_traffic_without_a_reset() {
    let cluster = cluster(&[]);
    let (a, b) = pods(&cluster);
    let before = published(&cluster);
    assert!(before.values().all(|(key, epoch)| !key.is_empty() && epoch == "0"), "{before:?}");
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let leak = cluster.leak_detector().expect("leak detector");

    // On demand on node-0 (`meshcrypt keys rotate`); scheduled on node-1 (its key record made to
    // say two hours old, with a one-hour interval: the file's own time no longer counts).
    let started = Instant::now();
    let state = |node: &str| cluster.dir().join(node).join("state");
    let out = std::process::Command::new(meshcrypt_integration::cluster::meshcrypt_bin().unwrap())
        .args(["keys", "rotate", "--state-dir"])
        .arg(state("node-0"))
        .output()
        .expect("meshcrypt keys rotate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cluster.age_key("node-1", Duration::from_secs(7200)).expect("age the key");
    cluster.set_config(&[("key-rotation-interval", "1h")]).expect("interval");

    let after = poll(Duration::from_secs(15), || {
        let now = published(&cluster);
        let rotated = now.iter().all(|(node, (key, epoch))| *key != before[node].0 && epoch == "1");
        let flowing = cluster.lab.ping(&a, b.address.into()).unwrap_or(false);
        if rotated && flowing { Ok(now) } else { Err(format!("published {now:?}, traffic {flowing}")) }
    })
    .unwrap_or_else(|e| panic!("rotation: {e}\n{}", cluster.agent_logs_tail(20)));
    let took = started.elapsed();
    // The devices run the published keys.
    for (node, (key, _)) in &after {
        let device_key = cluster.wg(node, &["show", "meshcrypt0", "public-key"]).expect("wg");
        assert_eq!(device_key.trim(), key, "{node}");
    }
    let report = leak.stop().expect("leak report");
    let stream = stream.stop();
    println!("both nodes rotated and traffic flowed after {took:?}; stream {stream:?}");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert_eq!(stream.error, None, "the TCP stream was reset: {stream:?}");
}

#[test]
fn the_mesh_rides_out_an_api_outage_and_resyncs_after_410() {
    let mut cluster = cluster(&[]);
    let (a, b) = pods(&cluster);
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");
    let leak = cluster.leak_detector().expect("leak detector");

    cluster.pause_api();
    let down = Instant::now();
    let (mut pings, mut lost) = (0u32, 0u32);
    while down.elapsed() < Duration::from_secs(30) {
        pings += 1;
        lost += u32::from(!cluster.lab.ping(&a, b.address.into()).unwrap_or(false));
    }
    assert!(
        ["node-0", "node-1"].iter().all(|n| has_device(&cluster, n)),
        "the mesh was torn down during the outage"
    );
    assert!(
        cluster.is_ready("node-0") && cluster.is_ready("node-1"),
        "agents stopped being ready during the outage"
    );
    cluster.resume_api().expect("API back");

    // The agents' watches come back through 410 Expired and a relist: a node that joins now is
    // meshed with the others. Watches retry with a backoff capped at 5 s, and the 410 itself is
    // one more retry, so this can take two capped delays after the API is back.
    let joined = cluster.add_node().expect("add node");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    let new_pod = cluster.lab.pods_on(&joined)[0].clone();
    let back = Instant::now();
    let resynced = poll(Duration::from_secs(30), || {
        if cluster.lab.ping(&a, new_pod.address.into()).unwrap_or(false) {
            Ok(back.elapsed())
        } else {
            Err("no".into())
        }
    })
    .unwrap_or_else(|e| {
        panic!("node-0 did not resync after the outage: {e}\n{}", cluster.agent_logs_tail(15))
    });

    let report = leak.stop().expect("leak report");
    let stream = stream.stop();
    println!(
        "30 s API outage: {lost} of {pings} pings lost; new node meshed {resynced:?} after it was ready; stream {stream:?}"
    );
    assert_eq!(lost, 0, "pod traffic was disturbed by the API outage");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert_eq!(stream.error, None, "{stream:?}");
}
