//! Growing and shrinking a running lab: a node added later reaches and is reached by every pod; a
//! removed node's namespaces, routes and processes are gone while the rest keeps working.

use std::net::IpAddr;

use meshcrypt_netlab::lab::{Lab, leftovers, netns};

fn all_pairs_reach(lab: &Lab) {
    for a in lab.pods() {
        for b in lab.pods() {
            if a != b {
                assert!(lab.ping(a, IpAddr::V4(b.address)).unwrap(), "ping {} -> {}", a.name, b.name);
            }
        }
    }
}

#[test]
fn add_and_remove_nodes_while_running() {
    let mut lab = Lab::builder().nodes(2).pods_per_node(1).build().expect("build lab");
    let prefix = lab.prefix().to_string();

    let added = lab.add_node().expect("add node").clone();
    assert_eq!(added.name, "node-2");
    assert_eq!(added.underlay_addr.to_string(), "198.18.0.12");
    assert_eq!(added.pod_cidr.to_string(), "10.244.2.0/24");
    assert_eq!(lab.pods_on("node-2").len(), 1);
    assert_eq!(lab.pods_on("node-2")[0].address.to_string(), "10.244.2.10");
    all_pairs_reach(&lab);
    // The node itself reaches the services address on the bridge.
    assert!(lab.ping_from(&added.namespace, lab.services_addr().into()).unwrap());

    let gone = lab.node("node-1").expect("node-1").clone();
    let gone_pod = lab.pods_on("node-1")[0].clone();
    let p = lab.spawn(&gone.namespace, &["sleep", "600"]).expect("spawn");
    lab.remove_node("node-1").expect("remove node");
    assert!(!netns::exists(&gone.namespace));
    assert!(!netns::exists(&gone_pod.namespace));
    assert!(!leftovers::pid_alive(p.pid));
    assert!(lab.node("node-1").is_none() && lab.pod(&gone_pod.name).is_none());
    let routes = lab.exec(&lab.nodes()[0].namespace, &["ip", "route"]).unwrap();
    assert!(!routes.contains(&gone.pod_cidr.to_string()), "{routes}");
    all_pairs_reach(&lab);

    // Indices are not reused.
    assert_eq!(lab.add_node().expect("add node").name, "node-3");
    all_pairs_reach(&lab);
    assert!(matches!(lab.remove_node("node-9"), Err(meshcrypt_netlab::lab::LabError::Unknown { .. })));
    assert!(lab.exec("not-a-lab-namespace", &["true"]).is_err());

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn a_failed_add_node_rolls_back() {
    let mut lab = Lab::builder().nodes(1).pods_per_node(1).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    let before = leftovers::namespaces_with_prefix(&prefix);
    // Pull the underlay away: the next node's veth has nowhere to go.
    netns::delete(lab.underlay_ns()).expect("delete underlay");
    let err = lab.add_node().expect_err("add_node must fail without an underlay");
    println!("{err}");
    assert!(err.to_string().contains("ip -n"), "the failing command is named: {err}");
    assert_eq!(lab.nodes().len(), 1);
    assert_eq!(lab.pods().len(), 1);
    let mut expected = before.clone();
    expected.retain(|n| n != lab.underlay_ns());
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), expected);
    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}
