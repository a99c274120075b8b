//! The VPC-CNI-like lab (`LabBuilder::vpc_cni`): pod addresses scattered over the nodes from one
//! shared range, the CNI's per-pod routes and policy rules (512, 1536) and ENI table 2 on every
//! node, plaintext reachability between all pods before meshcrypt runs (seen by the leak detector),
//! pods added and removed while traffic flows, and nothing left afterwards. Also `add_pod` and
//! `remove_pod` on the default lab.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use meshcrypt_netlab::lab::vpc_cni::{ENI_TABLE, FROM_POD_PRIORITY, TO_POD_PRIORITY};
use meshcrypt_netlab::lab::{Lab, LabError, Pod, leftovers, netns};
use meshcrypt_netlab::leak::{LeakConfig, LeakDetector};
use meshcrypt_netlab::wait::until as wait_until;

/// `ip <args>` inside lab namespace `ns`, one line per entry with whitespace collapsed.
fn ip_lines(lab: &Lab, ns: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    let out = lab.exec(ns, &argv).unwrap_or_else(|e| panic!("ip {args:?} in {ns}: {e}"));
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn to_rule(pod: &Pod) -> String {
    format!("{TO_POD_PRIORITY}: from all to {} lookup main", pod.address)
}

fn from_rule(pod: &Pod) -> String {
    format!("{FROM_POD_PRIORITY}: from {} lookup {ENI_TABLE}", pod.address)
}

/// Checks every node's CNI-like state against the lab's pods: rules for exactly its own pods,
/// `/32`s to its pods on their veths, host-gateway `/32`s to every remote pod (main and table 2),
/// and table 2's subnet and default routes.
fn check_node_state(lab: &Lab) {
    let table = ENI_TABLE.to_string();
    for node in lab.nodes() {
        let ns = &node.namespace;
        let rules = ip_lines(lab, ns, &["rule", "show"]);
        let main = ip_lines(lab, ns, &["route", "show"]);
        let eni = ip_lines(lab, ns, &["route", "show", "table", &table]);
        let cni_rules: BTreeSet<&String> = rules
            .iter()
            .filter(|r| {
                r.starts_with(&format!("{TO_POD_PRIORITY}:"))
                    || r.starts_with(&format!("{FROM_POD_PRIORITY}:"))
            })
            .collect();
        let mut expected_rules = BTreeSet::new();
        for pod in lab.pods_on(&node.name) {
            expected_rules.insert(to_rule(pod));
            expected_rules.insert(from_rule(pod));
            let local = format!("{} dev {} scope link", pod.address, pod.node_iface);
            assert!(main.contains(&local), "{}: no `{local}` in {main:#?}", node.name);
            assert!(!eni.iter().any(|r| r.starts_with(&format!("{} ", pod.address))), "{eni:#?}");
        }
        assert_eq!(cni_rules, expected_rules.iter().collect(), "{}: {rules:#?}", node.name);
        for pod in lab.pods().iter().filter(|p| p.node != node.name) {
            let via = lab.node_of(pod).expect("pod's node").underlay_addr;
            let route = format!("{} via {via} dev eth0", pod.address);
            assert!(main.contains(&route), "{}: no `{route}` in main: {main:#?}", node.name);
            assert!(eni.contains(&route), "{}: no `{route}` in table 2: {eni:#?}", node.name);
        }
        assert!(eni.contains(&"default via 198.18.0.1 dev eth0".to_string()), "{eni:#?}");
        assert!(eni.iter().any(|r| r.starts_with("198.18.0.0/15 dev eth0 scope link")), "{eni:#?}");
        // No per-node pod CIDR routes: every route to a pod address is a /32.
        for r in main.iter().chain(&eni) {
            let dst = r.split(' ').next().unwrap_or_default();
            assert!(!dst.starts_with("10.244.") || !dst.contains('/'), "{}: `{r}`", node.name);
        }
    }
}

/// Pings and TCP-exchanges between every ordered pair of distinct pods.
fn all_pairs_reach(lab: &Lab) {
    for a in lab.pods() {
        for b in lab.pods() {
            if a != b {
                assert!(lab.ping(a, b.address.into()).expect("run ping"), "ping {} -> {}", a.name, b.name);
                lab.tcp_exchange(a, b, format!("{} to {}", a.name, b.name).as_bytes())
                    .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", a.name, b.name));
            }
        }
    }
}

/// True if the addresses form one run of consecutive addresses.
fn contiguous(addrs: &[Ipv4Addr]) -> bool {
    let mut v: Vec<u32> = addrs.iter().map(|a| u32::from(*a)).collect();
    v.sort_unstable();
    v.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn vpc_cni_pods_are_scattered_routed_by_cni_rules_and_reach_each_other_in_plaintext() {
    let lab = Lab::builder().nodes(3).pods_per_node(2).vpc_cni(true).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    assert!(lab.is_vpc_cni());
    assert_eq!(lab.cluster_pod_cidr().to_string(), "10.244.128.0/17");
    assert_eq!(lab.pods().len(), 6);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix).len(), 1 + 3 + 3 * 2);

    // Addresses: unique, all in the shared range, none in any node's (nominal) pod CIDR, scattered.
    let all: BTreeSet<Ipv4Addr> = lab.pods().iter().map(|p| p.address).collect();
    assert_eq!(all.len(), 6, "{all:?}");
    for pod in lab.pods() {
        let ip = IpAddr::V4(pod.address);
        assert!(lab.cluster_pod_cidr().contains(&ip), "{}: {ip}", pod.name);
        assert!(lab.nodes().iter().all(|n| !n.pod_cidr.contains(&ip)), "{}: {ip}", pod.name);
        assert_eq!(lab.pod_by_address(ip), Some(pod));
    }
    let mut scattered = 0;
    for node in lab.nodes() {
        let ips = lab.pod_ips_on(&node.name);
        let v4: Vec<Ipv4Addr> = lab.pods_on(&node.name).iter().map(|p| p.address).collect();
        assert_eq!(ips, v4.iter().map(|a| IpAddr::V4(*a)).collect::<Vec<_>>());
        println!("{}: {v4:?}", node.name);
        if !contiguous(&v4) {
            scattered += 1;
        }
    }
    assert!(scattered >= 1, "some node's pods must not be one contiguous block");
    // Interleaved: some node's lowest..highest pod address spans a pod of another node.
    let interleaved = lab.nodes().iter().any(|n| {
        let mine: Vec<u32> = lab.pods_on(&n.name).iter().map(|p| u32::from(p.address)).collect();
        let (lo, hi) = (*mine.iter().min().unwrap(), *mine.iter().max().unwrap());
        lab.pods().iter().any(|p| p.node != n.name && (lo..=hi).contains(&u32::from(p.address)))
    });
    assert!(interleaved, "the nodes' pod addresses must interleave");

    check_node_state(&lab);

    // A pod's own packets to a remote pod are routed by the ENI table (rule 1536), not main.
    let (a, b) = (lab.pods_on("node-0")[0].clone(), lab.pods_on("node-1")[0].clone());
    let n0 = lab.nodes()[0].namespace.clone();
    let (dst, src) = (b.address.to_string(), a.address.to_string());
    let get = lab
        .exec(&n0, &["ip", "route", "get", &dst, "from", &src, "iif", &a.node_iface])
        .expect("ip route get");
    assert!(get.contains(&format!("table {ENI_TABLE}")), "{get}");
    assert!(get.contains(&format!("via {}", lab.nodes()[1].underlay_addr)), "{get}");

    let detector = LeakDetector::start_for_lab(&lab, LeakConfig::for_lab(&lab)).expect("start detector");
    all_pairs_reach(&lab);
    let report = detector.stop().expect("stop detector");
    println!("{report}");
    // One echo request and one TCP exchange at least per cross-node pair; none within a node.
    let problems = report.plaintext_baseline_problems(lab.pods(), 2);
    assert!(problems.is_empty(), "{problems:#?}\n{report}");

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(leftovers::root_links_with_lab_names(), Vec::<String>::new());
}

/// A UDP ping-pong between two pods on background threads (no borrow of the lab), counting replies.
struct Flow {
    replies: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Flow {
    fn start(lab: &Lab, client: &Pod, server: &Pod) -> Flow {
        let server_addr = (server.address, 7700);
        let srv =
            lab.run_in(&server.namespace, || UdpSocket::bind(server_addr)).unwrap().expect("bind server");
        let cli =
            lab.run_in(&client.namespace, || UdpSocket::bind((client.address, 0))).unwrap().expect("bind");
        cli.connect(server_addr).expect("connect");
        for s in [&srv, &cli] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let (replies, sent, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let stop_s = stop.clone();
        let server_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop_s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = srv.recv_from(&mut buf) {
                    let _ = srv.send_to(&buf[..n], from);
                }
            }
        });
        let (replies_c, sent_c, stop_c) = (replies.clone(), sent.clone(), stop.clone());
        let client_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut seq = 0u64;
            while !stop_c.load(Ordering::SeqCst) {
                seq += 1;
                if cli.send(&seq.to_be_bytes()).is_ok() {
                    sent_c.fetch_add(1, Ordering::SeqCst);
                }
                if let Ok(8) = cli.recv(&mut buf) {
                    replies_c.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Flow { replies, sent, stop, threads: vec![server_thread, client_thread] }
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::SeqCst)
    }

    /// Stops the threads; returns (sent, replies).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("flow thread");
        }
        (self.sent.load(Ordering::SeqCst), self.replies.load(Ordering::SeqCst))
    }
}

/// Nothing on any node of `lab` mentions `addr` (rules, main table, table 2).
fn no_trace_of(lab: &Lab, addr: Ipv4Addr) {
    let table = ENI_TABLE.to_string();
    let needle = addr.to_string();
    for node in lab.nodes() {
        for args in [&["rule", "show"][..], &["route", "show"], &["route", "show", "table", &table]] {
            let lines = ip_lines(lab, &node.namespace, args);
            assert!(
                !lines.iter().any(|l| l.split(' ').any(|w| w == needle || w == format!("{needle}/32"))),
                "{}: `ip {args:?}` still mentions {needle}: {lines:#?}",
                node.name
            );
        }
    }
}

#[test]
fn vpc_cni_pods_are_added_and_removed_while_traffic_flows() {
    let mut lab = Lab::builder().nodes(3).pods_per_node(2).vpc_cni(true).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    let (c, s) = (lab.pods_on("node-0")[0].clone(), lab.pods_on("node-2")[0].clone());
    let flow = Flow::start(&lab, &c, &s);
    let before = flow.replies();
    wait_until("the background flow", Duration::from_secs(5), || flow.replies() >= before + 5);

    // Add a pod on node-1 while the flow runs.
    let added = lab.add_pod("node-1").expect("add pod");
    println!("added {} at {}", added.name, added.address);
    assert_eq!(added.name, "pod-1-2");
    assert_eq!(added.node, "node-1");
    assert_eq!(lab.pod(&added.name), Some(&added));
    assert!(lab.cluster_pod_cidr().contains(&IpAddr::V4(added.address)));
    let addrs: BTreeSet<Ipv4Addr> = lab.pods().iter().map(|p| p.address).collect();
    assert_eq!(addrs.len(), 7, "addresses stay unique");
    assert_eq!(lab.pods_on("node-1").len(), 3);
    assert!(lab.pod_ips_on("node-1").contains(&IpAddr::V4(added.address)));
    // Pods stay grouped by node.
    let order: Vec<&str> = lab.pods().iter().map(|p| p.node.as_str()).collect();
    let mut grouped = order.clone();
    grouped.dedup();
    assert_eq!(grouped, ["node-0", "node-1", "node-2"], "{order:?}");
    check_node_state(&lab);
    for p in lab.pods().iter().filter(|p| p.name != added.name) {
        assert!(lab.ping(p, added.address.into()).unwrap(), "ping {} -> {}", p.name, added.name);
        assert!(lab.ping(&added, p.address.into()).unwrap(), "ping {} -> {}", added.name, p.name);
        lab.tcp_exchange(p, &added, b"to the new pod").unwrap_or_else(|e| panic!("{}: {e}", p.name));
        lab.tcp_exchange(&added, p, b"from the new pod").unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    let mid = flow.replies();
    wait_until("the flow to go on after add_pod", Duration::from_secs(5), || flow.replies() >= mid + 5);

    // Remove an original pod (with a process inside) while the flow runs.
    let gone = lab.pods_on("node-2")[1].clone();
    let gone_node = lab.node("node-2").unwrap().clone();
    let proc = lab.spawn(&gone.namespace, &["sleep", "600"]).expect("spawn");
    lab.remove_pod(&gone.name).expect("remove pod");
    assert!(!netns::exists(&gone.namespace), "{} still exists", gone.namespace);
    assert!(!leftovers::pid_alive(proc.pid), "the pod's process survived");
    assert!(lab.pod(&gone.name).is_none());
    assert!(!lab.namespaces().contains(&gone.namespace));
    assert!(!lab.pod_ips_on("node-2").contains(&IpAddr::V4(gone.address)));
    let links = ip_lines(&lab, &gone_node.namespace, &["link", "show"]);
    assert!(!links.iter().any(|l| l.contains(&format!(" {}@", gone.node_iface))), "{links:#?}");
    no_trace_of(&lab, gone.address);
    check_node_state(&lab);
    let after_remove = flow.replies();
    wait_until("the flow to go on after remove_pod", Duration::from_secs(5), || {
        flow.replies() >= after_remove + 5
    });
    all_pairs_reach(&lab);

    // The freed slot is used again; the new pod is wired like the others.
    let again = lab.add_pod("node-2").expect("add pod again");
    assert_eq!(again.name, gone.name, "the lowest free slot is reused");
    check_node_state(&lab);
    for p in lab.pods().iter().filter(|p| p.name != again.name) {
        assert!(lab.ping(&again, p.address.into()).unwrap(), "ping {} -> {}", again.name, p.name);
    }

    let (sent, replies) = flow.stop();
    println!("background flow: {replies}/{sent} replies");
    assert!(replies * 10 >= sent * 9, "the background flow lost too much: {replies}/{sent}");

    assert!(matches!(lab.remove_pod("pod-9-9"), Err(LabError::Unknown { kind: "pod", .. })));
    assert!(matches!(lab.add_pod("node-9"), Err(LabError::Unknown { kind: "node", .. })));

    // Removing a node takes its pods' routes off the other nodes.
    let node1_pods: Vec<Pod> = lab.pods_on("node-1").into_iter().cloned().collect();
    lab.remove_node("node-1").expect("remove node");
    for p in &node1_pods {
        no_trace_of(&lab, p.address);
        assert!(!netns::exists(&p.namespace));
    }
    check_node_state(&lab);

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(leftovers::root_links_with_lab_names(), Vec::<String>::new());
}

#[test]
fn default_lab_pods_are_added_and_removed() {
    let mut lab = Lab::builder().nodes(2).pods_per_node(1).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    assert!(!lab.is_vpc_cni());
    assert_eq!(lab.cluster_pod_cidr().to_string(), "10.244.0.0/16");
    let added = lab.add_pod("node-0").expect("add pod");
    assert_eq!((added.name.as_str(), added.address.to_string()), ("pod-0-1", "10.244.0.11".into()));
    assert_eq!(lab.pod_ips_on("node-0"), [IpAddr::from([10, 244, 0, 10]), IpAddr::from([10, 244, 0, 11])]);
    let other = lab.pods_on("node-1")[0].clone();
    assert!(lab.ping(&other, added.address.into()).unwrap());
    lab.tcp_exchange(&added, &other, b"hello").expect("tcp");

    lab.remove_pod("pod-0-0").expect("remove pod");
    assert_eq!(lab.pods_on("node-0"), [&added]);
    let routes = ip_lines(&lab, &lab.nodes()[0].namespace, &["route", "show"]);
    assert!(!routes.iter().any(|r| r.starts_with("10.244.0.10 ")), "{routes:#?}");
    assert_eq!(lab.add_pod("node-0").expect("add pod").address.to_string(), "10.244.0.10");
    all_pairs_reach(&lab);

    // No VPC-CNI state in the default lab.
    let rules = ip_lines(&lab, &lab.nodes()[0].namespace, &["rule", "show"]);
    assert_eq!(rules.len(), 3, "only the kernel's default rules: {rules:#?}");

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn vpc_cni_rejects_what_it_does_not_model() {
    let err = Lab::builder().vpc_cni(true).ipv6(true).build().expect_err("IPv4 only");
    assert!(matches!(err, LabError::Invalid(_)), "{err}");
    let err = Lab::builder().vpc_cni(true).nodes(129).build().expect_err("at most 128 nodes");
    assert!(matches!(err, LabError::Invalid(_)), "{err}");
}

#[test]
fn a_failed_add_pod_rolls_back() {
    let mut lab = Lab::builder().nodes(2).pods_per_node(2).vpc_cni(true).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    let node1 = lab.node("node-1").unwrap().namespace.clone();
    let namespaces_before = leftovers::namespaces_with_prefix(&prefix);
    let pods_before = lab.pods().to_vec();
    // The next pod on node-1 takes slot 2, whose node-side veth name `pod2` is already taken.
    lab.exec(&node1, &["ip", "link", "add", "pod2", "type", "veth", "peer", "name", "blocker2"])
        .expect("add a veth named pod2");
    let err = lab.add_pod("node-1").expect_err("add_pod must fail");
    println!("{err}");
    assert!(err.to_string().contains("pod2"), "the failing command is named: {err}");
    assert_eq!(lab.pods(), &pods_before[..]);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), namespaces_before);
    check_node_state(&lab);

    lab.exec(&node1, &["ip", "link", "del", "pod2"]).expect("delete it");
    let added = lab.add_pod("node-1").expect("add pod");
    assert_eq!(added.name, "pod-1-2");
    check_node_state(&lab);
    all_pairs_reach(&lab);

    drop(lab);
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}
