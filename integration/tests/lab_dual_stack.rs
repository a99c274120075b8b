//! A dual-stack lab with a jumbo underlay: pods reach each other over IPv6 too, the detector reports
//! IPv6 pod packets (and no neighbour discovery), and large unfragmented packets cross the underlay.

use std::net::IpAddr;
use std::time::Duration;

use meshcrypt_netlab::lab::{Lab, leftovers};
use meshcrypt_netlab::leak::{LeakConfig, LeakDetector};

#[test]
fn ipv6_pods_reach_each_other_and_leak_in_plaintext() {
    let lab =
        Lab::builder().nodes(2).pods_per_node(2).ipv6(true).underlay_mtu(9001).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    let n0 = &lab.nodes()[0];
    assert_eq!(n0.underlay_addr6.unwrap().to_string(), "fd00:198:18::10");
    assert_eq!(n0.pod_cidr6.unwrap().to_string(), "fd00:10:244::/64");
    assert_eq!(lab.nodes()[1].pod_cidr6.unwrap().to_string(), "fd00:10:244:1::/64");
    assert_eq!(lab.pods()[1].address6.unwrap().to_string(), "fd00:10:244::11");
    let link = lab.exec(&n0.namespace, &["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 9001"), "{link}");
    assert!(lab.ping_from(&n0.namespace, lab.services_addr6().unwrap().into()).unwrap());

    let detector = LeakDetector::start_for_lab(&lab, LeakConfig::for_lab(&lab)).expect("start");
    for a in lab.pods() {
        for b in lab.pods() {
            if a == b {
                continue;
            }
            let to6 = IpAddr::V6(b.address6.unwrap());
            assert!(lab.ping(a, to6).unwrap(), "ping6 {} -> {}", a.name, b.name);
            lab.tcp_exchange_ns(&a.namespace, &b.namespace, to6, b"over ipv6", Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("tcp6 {} -> {}: {e}", a.name, b.name));
        }
    }
    let report = detector.stop().expect("stop");
    println!("{report}");
    assert_eq!(report.stray_underlay, 0, "neighbour discovery is not a leak: {report}");
    for a in lab.pods() {
        for b in lab.pods() {
            let n = report.pod_flow(a.address6.unwrap().into(), b.address6.unwrap().into());
            assert_eq!(n > 0, a.node != b.node, "{} -> {}: {n}", a.name, b.name);
        }
    }

    // The jumbo underlay carries an 8000-byte packet between pods on different nodes unfragmented.
    let (p0, p1) = (&lab.pods()[0], &lab.pods()[2]);
    assert_ne!(p0.node, p1.node);
    let to = p1.address.to_string();
    let out = lab
        .exec_output(
            &p0.namespace,
            &["ping", "-n", "-q", "-M", "do", "-s", "8000", "-c", "1", "-w", "3", &to],
        )
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}
