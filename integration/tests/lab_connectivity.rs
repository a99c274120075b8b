//! A 3-node × 2-pod lab before meshcrypt runs: every pod reaches every other pod (ping and TCP), the
//! leak detector sees the plaintext pod traffic between nodes on the underlay (and none of the
//! traffic that stays on one node), and nothing of the run is left afterwards.

use std::time::Duration;

use meshcrypt_netlab::lab::{Lab, leftovers};
use meshcrypt_netlab::leak::{LeakConfig, LeakDetector};
use meshcrypt_netlab::wait::until as wait_until;

#[test]
fn pods_reach_each_other_in_plaintext_and_the_detector_sees_it() {
    let lab = Lab::builder().nodes(3).pods_per_node(2).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    assert_eq!(lab.nodes().len(), 3);
    assert_eq!(lab.pods().len(), 6);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix).len(), 1 + 3 + 3 * 2);

    // A long-running process that forks: both it and its child must be gone after drop.
    let node0 = lab.nodes()[0].namespace.clone();
    let proc = lab.spawn(&node0, &["sh", "-c", "sleep 600 & exec sleep 600"]).expect("spawn");
    wait_until("the forked sleep", Duration::from_secs(5), || {
        lab.exec(&node0, &["true"]).is_ok() && pids_in(&node0).len() >= 2
    });
    let mut owned_pids = pids_in(&node0);
    owned_pids.push(proc.pid);
    assert!(lab.process_running(proc.pid));

    let detector = LeakDetector::start_for_lab(&lab, LeakConfig::for_lab(&lab)).expect("start detector");
    for a in lab.pods() {
        for b in lab.pods() {
            if a == b {
                continue;
            }
            assert!(lab.ping(a, b.address.into()).expect("run ping"), "ping {} -> {}", a.name, b.name);
            lab.tcp_exchange(a, b, format!("{} to {}", a.name, b.name).as_bytes())
                .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", a.name, b.name));
        }
    }
    let report = detector.stop().expect("stop detector");
    println!("{report}");

    // One echo request and one TCP exchange at least per cross-node pair; none within a node.
    let problems = report.plaintext_baseline_problems(lab.pods(), 2);
    assert!(problems.is_empty(), "{problems:#?}\n{report}");

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(leftovers::root_links_with_lab_names(), Vec::<String>::new());
    for pid in owned_pids {
        assert!(!leftovers::pid_alive(pid), "pid {pid} survived the lab");
    }
}

fn pids_in(ns: &str) -> Vec<u32> {
    meshcrypt_netlab::lab::netns::pids(ns)
}
