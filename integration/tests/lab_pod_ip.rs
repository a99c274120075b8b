//! Pod-IP mode on a VPC-CNI-like lab: pods hold scattered addresses from one shared range, each
//! node's allowed IPs are its Pods' addresses, and pods come and go while traffic flows. A Pod that
//! claims another node's pod address redirects nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::lab::{Lab, Pod};
use meshcrypt_netlab::leak::LeakReport;
use meshcrypt_netlab::traffic::Stream;

fn cluster() -> Cluster {
    let lab = Lab::builder().nodes(3).pods_per_node(2).vpc_cni(true).build().expect("lab");
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some(BTreeMap::from([("addressing".to_owned(), "pod-ip".to_owned())]));
    let cluster = Cluster::start_in(lab, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster
}

fn reach(cluster: &Cluster, from: &Pod, to: &Pod, deadline: Duration) -> Duration {
    let start = Instant::now();
    poll(deadline, || {
        if cluster.lab.ping(from, to.address.into()).unwrap_or(false) {
            Ok(start.elapsed())
        } else {
            Err("no".into())
        }
    })
    .unwrap_or_else(|e| {
        panic!("{} cannot reach {}: {e}\n{}", from.name, to.name, cluster.agent_logs_tail(20))
    })
}

fn allowed_ips(cluster: &Cluster, node: &str) -> String {
    cluster.wg(node, &["show", "meshcrypt0", "allowed-ips"]).expect("wg show")
}

fn assert_clean(report: &LeakReport) {
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");
}

#[test]
fn scattered_pod_addresses_are_meshed_as_pods_come_and_go() {
    let mut cluster = cluster();
    let pods = cluster.lab.pods().to_vec();
    let leak = cluster.leak_detector().expect("leak detector");
    cluster.cross_node_pods_talk(Duration::from_secs(10), b"pod-ip").expect("pods talk");
    // Each peer's allowed IPs are exactly its pods' addresses (aggregated), not a node CIDR.
    let on_node0 = allowed_ips(&cluster, "node-0");
    for pod in pods.iter().filter(|p| p.node != "node-0") {
        assert!(
            on_node0.contains(&pod.address.to_string()),
            "{} missing on node-0:\n{on_node0}",
            pod.address
        );
    }
    assert!(!on_node0.contains("/24"), "node CIDRs must not be used in pod-IP mode:\n{on_node0}");

    let (a, b) = (pods[0].clone(), pods[2].clone());
    let stream = Stream::start(&cluster.lab, &a.namespace, &b.namespace, b.address.into()).expect("stream");

    let added = cluster.add_pod("node-1").expect("add pod");
    let started = Instant::now();
    for other in pods.iter().filter(|p| p.node != "node-1") {
        reach(&cluster, other, &added, Duration::from_secs(2));
        reach(&cluster, &added, other, Duration::from_secs(2));
    }
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(2), "the new pod was reachable from everywhere after {took:?}");

    let removed = pods[3].clone();
    cluster.remove_pod(&removed.name).expect("remove pod");
    poll(Duration::from_secs(10), || {
        let stale: Vec<String> = ["node-0", "node-2"]
            .iter()
            .filter(|n| {
                **n != removed.node && allowed_ips(&cluster, n).contains(&format!("{}/32", removed.address))
            })
            .map(|n| (*n).to_owned())
            .collect();
        if stale.is_empty() { Ok(()) } else { Err(format!("{stale:?} still route {}", removed.address)) }
    })
    .expect("removed pod's address withdrawn");
    let stream = stream.stop();
    let report = leak.stop().expect("leak report");
    println!("new pod reachable from all in {took:?}; stream {stream:?}");
    assert_clean(&report);
    assert_eq!(stream.error, None, "{stream:?}");
}

/// Behaviour 7 of issue 11 for addresses: a Pod on another node that claims a running pod's
/// address, later, redirects nothing and cuts nothing off: the address stays with the older Pod,
/// the newcomer is refused, and both nodes get a Warning Event.
#[test]
fn a_pod_claiming_another_nodes_address_later_is_refused_and_the_address_stays_with_its_holder() {
    let cluster = cluster();
    let victim = cluster.lab.pods_on("node-1")[0].clone();
    let bystander = cluster.lab.pods_on("node-1")[1].clone();
    let client = cluster.lab.pods_on("node-0")[0].clone();
    reach(&cluster, &client, &victim, Duration::from_secs(10));
    // Claims are ordered by the second: the impostor comes in a later one than the victim's Pod.
    let victim_pod = cluster.api().get("v1", "Pod", Some("default"), &victim.name).expect("victim pod");
    let created: jiff::Timestamp = victim_pod["metadata"]["creationTimestamp"]
        .as_str()
        .expect("creationTimestamp")
        .parse()
        .expect("time");
    poll(Duration::from_secs(3), || {
        let now = jiff::Timestamp::now();
        if now.as_second() > created.as_second() { Ok(()) } else { Err(format!("still {now}")) }
    })
    .expect("the clock moves on");

    // A Pod object on node-2 claims the victim's address (nothing runs behind it).
    cluster
        .api()
        .create(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "impostor", "namespace": "default"},
            "spec": {"nodeName": "node-2", "containers": [{"name": "x", "image": "x"}]},
            "status": {"phase": "Running", "podIP": victim.address.to_string(), "podIPs": [{"ip": victim.address.to_string()}]},
        }))
        .expect("impostor pod");
    let warned = |reason: &str, node: &str| {
        cluster.events(reason).iter().any(|e| e["regarding"]["name"].as_str() == Some(node))
    };
    poll(Duration::from_secs(10), || {
        if warned("ContestedPrefix", "node-2") && warned("PrefixClaimedByOthers", "node-1") {
            Ok(())
        } else {
            Err("no Warning Events on both nodes".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_logs_tail(10)));
    let leak = cluster.leak_detector().expect("leak detector");
    reach(&cluster, &client, &victim, Duration::from_secs(5));
    reach(&cluster, &client, &bystander, Duration::from_secs(5));
    let routes = allowed_ips(&cluster, "node-0");
    let node2 = cluster.lab.node("node-2").expect("node-2").underlay_addr.to_string();
    let report = leak.stop().expect("leak report");
    assert_clean(&report);
    let wg = cluster.wg("node-0", &["show", "meshcrypt0", "dump"]).expect("wg");
    let impostor_routed = wg.lines().any(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        f.len() > 3 && f[2].starts_with(&node2) && f[3].contains(&format!("{}/32", victim.address))
    });
    assert!(!impostor_routed, "the impostor's node got the address:\n{wg}\n{routes}");

    cluster.api().delete("v1", "Pod", Some("default"), "impostor").expect("delete impostor");
    reach(&cluster, &client, &victim, Duration::from_secs(5));
}
