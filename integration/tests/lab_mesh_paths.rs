//! The mesh over other paths: a dual-stack lab (IPv4 and IPv6 pod networks over an IPv4 underlay)
//! passes the mesh checks over IPv6 too, and a 9001-byte underlay (EKS jumbo frames) gets its MTU.

use std::net::IpAddr;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::lab::Lab;

#[test]
fn pods_talk_over_ipv6_only_encrypted() {
    let lab = Lab::builder().nodes(2).pods_per_node(1).ipv6(true).build().expect("dual-stack lab");
    let cluster = Cluster::start_in(lab, AgentOptions::new().expect("meshcrypt binary")).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    let pods = cluster.lab.pods().to_vec();
    let leak = cluster.leak_detector().expect("leak detector");
    for a in &pods {
        for b in pods.iter().filter(|b| b.node != a.node) {
            let to = IpAddr::V6(b.address6.expect("IPv6 pod address"));
            poll(Duration::from_secs(10), || {
                if cluster.lab.ping(a, to).unwrap_or(false) {
                    Ok(())
                } else {
                    Err(format!("{} -> {to}", a.name))
                }
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_logs_tail(20)));
            cluster
                .lab
                .tcp_exchange_ns(&a.namespace, &b.namespace, to, b"over IPv6", Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("tcp {} -> {to}: {e}", a.name));
            assert!(cluster.lab.ping(a, b.address.into()).expect("ping v4"));
        }
    }
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.is_clean(), "{report}");
    let allowed = cluster.wg("node-0", &["show", "meshcrypt0", "allowed-ips"]).expect("wg");
    assert!(allowed.contains("fd00:10:244:1::/64"), "node-1's IPv6 pod CIDR is an allowed IP:\n{allowed}");
}

/// On a 9001-byte underlay (EKS jumbo frames) the tunnel MTU is 8941 and a jumbo packet crosses
/// whole, encrypted.
#[test]
fn jumbo_underlay_gets_an_8941_byte_tunnel() {
    let lab = Lab::builder().nodes(2).pods_per_node(1).underlay_mtu(9001).pod_mtu(9001).build().expect("lab");
    let cluster = Cluster::start_in(lab, AgentOptions::new().expect("meshcrypt binary")).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    let ns = cluster.lab.node("node-0").expect("node").namespace.clone();
    let link = cluster.lab.exec(&ns, &["ip", "link", "show", "meshcrypt0"]).expect("link");
    assert!(link.contains("mtu 8941"), "{link}");
    let (a, b) = (cluster.lab.pods_on("node-0")[0].clone(), cluster.lab.pods_on("node-1")[0].clone());
    let leak = cluster.leak_detector().expect("leak detector");
    // 8900 bytes of payload + 28 of headers = 8928 ≤ 8941, sent with "don't fragment".
    let to = b.address.to_string();
    poll(Duration::from_secs(10), || {
        let out = cluster
            .lab
            .exec_output(&a.namespace, &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "8900", &to])
            .map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stdout).into_owned()) }
    })
    .expect("a jumbo ping crosses the tunnel");
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
}

/// Nodes whose first InternalIP is IPv6 mesh over an IPv6 underlay: endpoints are IPv6 and the
/// tunnel MTU is the underlay's less 80.
#[test]
fn an_ipv6_underlay_carries_the_mesh_with_80_bytes_of_overhead() {
    let lab = Lab::builder().nodes(2).pods_per_node(1).ipv6(true).build().expect("dual-stack lab");
    let cluster = Cluster::start_in(lab, AgentOptions::new().expect("meshcrypt binary")).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    for node in cluster.lab.nodes().to_vec() {
        let v6 = node.underlay_addr6.expect("IPv6 underlay").to_string();
        let patch = serde_json::json!({"status": {"addresses": [
            {"type": "InternalIP", "address": v6},
            {"type": "InternalIP", "address": node.underlay_addr.to_string()},
            {"type": "Hostname", "address": node.name},
        ]}});
        cluster.api().merge_patch("v1", "Node", None, &node.name, &patch, true).expect("IPv6 first");
    }
    let ns = cluster.lab.node("node-0").unwrap().namespace.clone();
    poll(Duration::from_secs(10), || {
        let endpoints = cluster.wg("node-0", &["show", "meshcrypt0", "endpoints"]).unwrap_or_default();
        let link = cluster.lab.exec(&ns, &["ip", "link", "show", "meshcrypt0"]).unwrap_or_default();
        if endpoints.contains("[fd00:198:18::11]:51820") && link.contains("mtu 1420") {
            Ok(())
        } else {
            Err(format!("endpoints {endpoints} link {link}"))
        }
    })
    .expect("IPv6 endpoints and MTU 1420");
    let (a, b) = (cluster.lab.pods_on("node-0")[0].clone(), cluster.lab.pods_on("node-1")[0].clone());
    let leak = cluster.leak_detector().expect("leak detector");
    for to in [IpAddr::V4(b.address), IpAddr::V6(b.address6.unwrap())] {
        poll(Duration::from_secs(10), || {
            if cluster.lab.ping(&a, to).unwrap_or(false) { Ok(()) } else { Err(format!("-> {to}")) }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_logs_tail(20)));
    }
    let report = leak.stop().expect("leak report");
    assert_eq!(report.pod_plaintext, 0, "{report}");
    assert!(report.mesh_packets > 0 && report.is_clean(), "{report}");
}
