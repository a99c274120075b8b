//! Tables for the peer set: nodes in, peers and problems out.

use super::*;
use crate::PrivateKey;
use crate::annotations::{KEY_CREATED, KEY_EPOCH, PUBLIC_KEY};

pub(super) fn key(seed: u8) -> PublicKey {
    // Deterministic, valid keys: the public half of a fixed private key.
    PrivateKey::from_base64(&base64_of([seed; 32])).unwrap().public_key()
}

fn base64_of(bytes: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn annotated(k: Option<&str>) -> BTreeMap<String, String> {
    k.map(|k| {
        BTreeMap::from([
            (PUBLIC_KEY.to_owned(), k.to_owned()),
            (KEY_EPOCH.to_owned(), "2".to_owned()),
            (KEY_CREATED.to_owned(), "2026-11-28T20:40:52Z".to_owned()),
        ])
    })
    .unwrap_or_default()
}

pub(super) fn node(name: &str, key: Option<&str>, ips: &[&str], cidrs: &[&str]) -> NodeView {
    NodeView {
        name: name.to_owned(),
        key: NodeView::parse_key(&annotated(key)),
        internal_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        pod_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
        created: None,
        key_claimed: None,
        no_agent: None,
        annotation_writers: Default::default(),
    }
}

/// `node`, labelled as expected to run no agent.
fn exempt(mut node: NodeView, why: NoAgentExpected) -> NodeView {
    node.no_agent = Some(why);
    node
}

/// A point in time, `secs` seconds into a fixed day.
pub(super) fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// `node` created at second `created`, its key annotation written at second `claimed`.
fn aged(mut node: NodeView, created: i64, claimed: i64) -> NodeView {
    node.created = Some(at(created));
    node.key_claimed = Some(at(claimed));
    node
}

fn cidr_mode(port: u16) -> MeshConfig {
    MeshConfig { port, allowed_ips: AllowedIpsFrom::PodCidrs }
}

pub(super) fn pod(name: &str, node: &str, ips: &[&str]) -> PodView {
    PodView {
        name: name.to_owned(),
        node: node.to_owned(),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        created: None,
    }
}

/// `pod` created at second `created`.
fn pod_at(created: i64, mut pod: PodView) -> PodView {
    pod.created = Some(at(created));
    pod
}

fn local(underlay: &str) -> LocalNode {
    LocalNode { name: "a".to_owned(), public_key: key(1), underlay_ip: underlay.parse().unwrap() }
}

/// A peer's allowed IPs but its node address, which every peer has (checked here).
fn pod_prefixes_of(p: &Peer) -> Vec<String> {
    let host = IpNet::from(p.endpoint.ip());
    assert!(p.allowed_ips.contains(&host), "{}: node address not allowed: {:?}", p.node, p.allowed_ips);
    p.allowed_ips.iter().filter(|n| **n != host).map(ToString::to_string).collect()
}

struct Case {
    name: &'static str,
    underlay: &'static str,
    nodes: Vec<NodeView>,
    /// node → (endpoint, allowed IPs)
    peers: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    /// (node, reason)
    problems: Vec<(&'static str, &'static str)>,
}

#[test]
fn peer_set_table() {
    let (k1, k2, k3, k4) = (key(1).to_string(), key(2).to_string(), key(3).to_string(), key(4).to_string());
    let (k1, k2, k3, k4) = (k1.as_str(), k2.as_str(), k3.as_str(), k4.as_str());
    let a = || node("a", Some(k1), &["198.18.0.10"], &["10.244.0.0/24"]);
    let cases = vec![
        Case {
            name: "every other node with a key is a peer",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]),
                node("c", Some(k3), &["198.18.0.12"], &["10.244.2.0/24"]),
            ],
            peers: vec![
                ("b", "198.18.0.11:51820", vec!["10.244.1.0/24"]),
                ("c", "198.18.0.12:51820", vec!["10.244.2.0/24"]),
            ],
            problems: vec![],
        },
        Case {
            name: "a node deleted from the API is gone; the local node is never a peer",
            underlay: "198.18.0.10",
            nodes: vec![a(), node("c", Some(k3), &["198.18.0.12"], &["10.244.2.0/24"])],
            peers: vec![("c", "198.18.0.12:51820", vec!["10.244.2.0/24"])],
            problems: vec![],
        },
        Case {
            name: "missing and malformed keys are skipped and reported",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", None, &["198.18.0.11"], &["10.244.1.0/24"]),
                node("c", Some("not-a-key"), &["198.18.0.12"], &["10.244.2.0/24"]),
                node("d", Some(k4), &["198.18.0.13"], &["10.244.3.0/24"]),
            ],
            peers: vec![("d", "198.18.0.13:51820", vec!["10.244.3.0/24"])],
            problems: vec![("b", "NoKey"), ("c", "InvalidKeyAnnotation")],
        },
        Case {
            name: "nodes expected to run no agent (Fargate, hybrid, Auto Mode) are no problem without a key",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                exempt(node("fargate-ip-1", None, &["198.18.0.21"], &[]), NoAgentExpected::Fargate),
                exempt(node("hybrid-1", None, &["198.18.0.22"], &["10.244.5.0/24"]), NoAgentExpected::Hybrid),
                // A key is a key: whoever runs an agent there is a peer.
                exempt(
                    node("auto-1", Some(k4), &["198.18.0.13"], &["10.244.3.0/24"]),
                    NoAgentExpected::AutoMode,
                ),
                exempt(node("auto-2", Some("not-a-key"), &["198.18.0.14"], &[]), NoAgentExpected::AutoMode),
            ],
            peers: vec![("auto-1", "198.18.0.13:51820", vec!["10.244.3.0/24"])],
            problems: vec![("auto-2", "InvalidKeyAnnotation")],
        },
        Case {
            name: "a key copied by a newer node stays with the node that published it first",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                // c is the older Node, but b published the key first: b holds it.
                aged(node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]), 20, 30),
                aged(node("c", Some(k2), &["198.18.0.12"], &["10.244.2.0/24"]), 10, 31),
                node("d", Some(k4), &["198.18.0.13"], &["10.244.3.0/24"]),
            ],
            peers: vec![
                ("b", "198.18.0.11:51820", vec!["10.244.1.0/24"]),
                ("d", "198.18.0.13:51820", vec!["10.244.3.0/24"]),
            ],
            problems: vec![("b", "KeyClaimedByOthers"), ("c", "DuplicateKey")],
        },
        Case {
            name: "a key claimed in the same second stays with the older Node",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                aged(node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]), 20, 30),
                aged(node("c", Some(k2), &["198.18.0.12"], &["10.244.2.0/24"]), 10, 30),
            ],
            peers: vec![("c", "198.18.0.12:51820", vec!["10.244.2.0/24"])],
            problems: vec![("b", "DuplicateKey"), ("c", "KeyClaimedByOthers")],
        },
        Case {
            name: "a claim of unknown age yields; with no ages at all the name decides",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]),
                aged(node("c", Some(k2), &["198.18.0.12"], &["10.244.2.0/24"]), 10, 30),
                node("d", Some(k3), &["198.18.0.13"], &["10.244.3.0/24"]),
                node("e", Some(k3), &["198.18.0.14"], &["10.244.4.0/24"]),
            ],
            peers: vec![
                ("c", "198.18.0.12:51820", vec!["10.244.2.0/24"]),
                ("d", "198.18.0.13:51820", vec!["10.244.3.0/24"]),
            ],
            problems: vec![
                ("b", "DuplicateKey"),
                ("c", "KeyClaimedByOthers"),
                ("d", "KeyClaimedByOthers"),
                ("e", "DuplicateKey"),
            ],
        },
        Case {
            name: "a node publishing this node's key is refused",
            underlay: "198.18.0.10",
            nodes: vec![a(), node("b", Some(k1), &["198.18.0.11"], &["10.244.1.0/24"])],
            peers: vec![],
            problems: vec![("b", "DuplicateKey")],
        },
        Case {
            name: "no InternalIP, or none in the underlay's family, means no endpoint",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &[], &["10.244.1.0/24"]),
                node("c", Some(k3), &["fd00:198:18::12"], &["10.244.2.0/24"]),
            ],
            peers: vec![],
            problems: vec![("b", "NoInternalIP"), ("c", "NoInternalIP")],
        },
        Case {
            name: "dual-stack pod CIDRs and an IPv6 underlay",
            underlay: "fd00:198:18::10",
            nodes: vec![
                node("a", Some(k1), &["fd00:198:18::10"], &["10.244.0.0/24", "fd00:10:244::/64"]),
                node(
                    "b",
                    Some(k2),
                    &["198.18.0.11", "fd00:198:18::11"],
                    &["10.244.1.0/24", "fd00:10:244:1::/64"],
                ),
            ],
            peers: vec![("b", "[fd00:198:18::11]:51820", vec!["10.244.1.0/24", "fd00:10:244:1::/64"])],
            problems: vec![],
        },
        Case {
            name: "a non-canonical pod CIDR is dropped, the rest kept",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &["198.18.0.11"], &["10.244.1.5/24", "10.244.11.0/24", "x"]),
            ],
            peers: vec![("b", "198.18.0.11:51820", vec!["10.244.11.0/24"])],
            problems: vec![("b", "InvalidPodCIDR"), ("b", "InvalidPodCIDR")],
        },
        Case {
            name: "an overlapping prefix stays with the older Node; the newer one is refused it",
            underlay: "198.18.0.10",
            nodes: vec![
                aged(a(), 0, 0),
                aged(node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24", "10.244.21.0/24"]), 10, 10),
                aged(node("c", Some(k3), &["198.18.0.12"], &["10.244.1.128/25", "10.244.2.0/24"]), 20, 20),
                aged(node("d", Some(k4), &["198.18.0.13"], &["10.244.0.0/16"]), 30, 30),
            ],
            peers: vec![
                ("b", "198.18.0.11:51820", vec!["10.244.1.0/24", "10.244.21.0/24"]),
                ("c", "198.18.0.12:51820", vec!["10.244.2.0/24"]),
                ("d", "198.18.0.13:51820", vec![]),
            ],
            problems: vec![
                ("a", "PrefixClaimedByOthers"),
                ("b", "PrefixClaimedByOthers"),
                ("b", "PrefixClaimedByOthers"),
                ("c", "ContestedPrefix"),
                ("c", "PrefixClaimedByOthers"),
                ("d", "ContestedPrefix"),
            ],
        },
        Case {
            name: "a prefix over the local node's pods is never routed away, however old its claim",
            underlay: "198.18.0.10",
            nodes: vec![
                aged(a(), 10, 10),
                aged(node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]), 20, 20),
                aged(node("d", Some(k4), &["198.18.0.13"], &["10.244.0.0/16"]), 0, 0),
            ],
            peers: vec![("b", "198.18.0.11:51820", vec![]), ("d", "198.18.0.13:51820", vec![])],
            problems: vec![
                ("a", "ContestedPrefix"),
                ("b", "ContestedPrefix"),
                ("d", "PrefixClaimedByOthers"),
            ],
        },
        Case {
            name: "overlapping prefixes of unknown age: the name decides, the same on every node",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]),
                node("c", Some(k3), &["198.18.0.12"], &["10.244.1.128/25"]),
            ],
            peers: vec![
                ("b", "198.18.0.11:51820", vec!["10.244.1.0/24"]),
                ("c", "198.18.0.12:51820", vec![]),
            ],
            problems: vec![("b", "PrefixClaimedByOthers"), ("c", "ContestedPrefix")],
        },
        Case {
            name: "two Nodes claiming one InternalIP: the older keeps it, the newer is refused",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                aged(node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]), 20, 20),
                aged(node("c", Some(k3), &["198.18.0.11"], &["10.244.2.0/24"]), 30, 30),
                node("d", Some(k4), &["198.18.0.13"], &["10.244.3.0/24"]),
            ],
            peers: vec![
                ("b", "198.18.0.11:51820", vec!["10.244.1.0/24"]),
                ("d", "198.18.0.13:51820", vec!["10.244.3.0/24"]),
            ],
            problems: vec![("b", "SharedInternalIP"), ("c", "SharedInternalIP")],
        },
        Case {
            name: "a node claiming this node's own InternalIP is refused, however old",
            underlay: "198.18.0.10",
            nodes: vec![a(), aged(node("b", Some(k2), &["198.18.0.10"], &["10.244.1.0/24"]), 0, 0)],
            peers: vec![],
            problems: vec![("b", "SharedInternalIP")],
        },
        Case {
            name: "the same prefix listed twice by one node is not a contest",
            underlay: "198.18.0.10",
            nodes: vec![a(), node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24", "10.244.1.0/24"])],
            peers: vec![("b", "198.18.0.11:51820", vec!["10.244.1.0/24"])],
            problems: vec![],
        },
    ];
    for case in cases {
        let got = desired_peers(&case.nodes, &[], &local(case.underlay), &cidr_mode(51820));
        let peers: Vec<(String, String, Vec<String>)> = got
            .peers
            .values()
            .map(|p| (p.node.clone(), p.endpoint.to_string(), pod_prefixes_of(p)))
            .collect();
        let want: Vec<(String, String, Vec<String>)> = case
            .peers
            .iter()
            .map(|(n, e, a)| ((*n).to_owned(), (*e).to_owned(), a.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        assert_eq!(peers, want, "{}", case.name);
        let problems: Vec<(&str, &str)> =
            got.problems.iter().map(|p| (p.node.as_str(), p.problem.reason())).collect();
        assert_eq!(problems, case.problems, "{}: {:?}", case.name, got.problems);
    }
}

#[test]
fn pod_ip_mode_table() {
    let (k1, k2, k3) = (key(1).to_string(), key(2).to_string(), key(3).to_string());
    // Nodes carry pod CIDRs that pod-IP mode must ignore.
    let nodes = vec![
        node("a", Some(&k1), &["198.18.0.10"], &["10.244.0.0/24"]),
        node("b", Some(&k2), &["198.18.0.11"], &["10.244.1.0/24"]),
        node("c", Some(&k3), &["198.18.0.12"], &[]),
    ];
    /// (name, pods, peers' allowed IPs, local prefixes, problems)
    type Case = (
        &'static str,
        Vec<PodView>,
        Vec<(&'static str, Vec<&'static str>)>,
        Vec<&'static str>,
        Vec<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "scattered addresses become the fewest exact prefixes",
            vec![
                pod("p1", "a", &["10.244.128.8"]),
                pod("p2", "b", &["10.244.128.9"]),
                pod("p3", "b", &["10.244.128.10", "fd00:10:244::a"]),
                pod("p4", "b", &["10.244.128.11"]),
                pod("p5", "c", &["10.244.128.12"]),
                pod("p6", "a", &["10.244.128.13"]),
            ],
            vec![
                ("b", vec!["10.244.128.9/32", "10.244.128.10/31", "fd00:10:244::a/128"]),
                ("c", vec!["10.244.128.12/32"]),
            ],
            vec!["10.244.128.8/32", "10.244.128.13/32"],
            vec![],
        ),
        (
            "an address claimed on two nodes stays with the older Pod; a local one is never taken",
            vec![
                pod_at(5, pod("p1", "a", &["10.244.128.8"])),
                pod_at(20, pod("p2", "b", &["10.244.128.9"])),
                pod_at(10, pod("p3", "c", &["10.244.128.9"])),
                pod_at(1, pod("p4", "c", &["10.244.128.8"])),
                pod_at(1, pod("p5", "c", &["10.244.128.20"])),
            ],
            vec![("b", vec![]), ("c", vec!["10.244.128.9/32", "10.244.128.20/32"])],
            vec!["10.244.128.8/32"],
            vec![
                ("a", "ContestedPrefix"),
                ("b", "ContestedPrefix"),
                ("c", "PrefixClaimedByOthers"),
                ("c", "PrefixClaimedByOthers"),
            ],
        ),
        (
            "no pods: peers with nothing routed to them",
            vec![],
            vec![("b", vec![]), ("c", vec![])],
            vec![],
            vec![],
        ),
    ];
    for (name, pods, want_peers, want_local, want_problems) in cases {
        let config = MeshConfig { port: 51820, allowed_ips: AllowedIpsFrom::PodIps };
        let pods: Vec<&PodView> = pods.iter().collect();
        let got = desired_peers(&nodes, &pods, &local("198.18.0.10"), &config);
        let peers: Vec<(&str, Vec<String>)> =
            got.peers.values().map(|p| (p.node.as_str(), pod_prefixes_of(p))).collect();
        let want: Vec<(&str, Vec<String>)> =
            want_peers.iter().map(|(n, a)| (*n, a.iter().map(|s| (*s).to_owned()).collect())).collect();
        assert_eq!(peers, want, "{name}");
        let local: Vec<String> = got.local_prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(local, want_local, "{name}");
        let problems: Vec<(&str, &str)> =
            got.problems.iter().map(|p| (p.node.as_str(), p.problem.reason())).collect();
        assert_eq!(problems, want_problems, "{name}: {:?}", got.problems);
    }
}

#[test]
fn each_peers_node_address_is_among_its_allowed_ips() {
    let nodes = vec![
        node("a", Some(&key(1).to_string()), &["198.18.0.10"], &["10.244.0.0/24"]),
        node("b", Some(&key(2).to_string()), &["198.18.0.11"], &["10.244.1.0/24"]),
    ];
    let config = MeshConfig { port: 51820, allowed_ips: AllowedIpsFrom::PodCidrs };
    let got = desired_peers(&nodes, &[], &local("198.18.0.10"), &config);
    let allowed: Vec<String> = got.peers["b"].allowed_ips.iter().map(ToString::to_string).collect();
    assert_eq!(allowed, vec!["10.244.1.0/24", "198.18.0.11/32"]);
}

#[test]
fn duplicate_key_names_the_other_claimant_and_keeps_the_epoch() {
    let nodes = vec![
        aged(node("b", Some(&key(2).to_string()), &["198.18.0.11"], &[]), 0, 40),
        aged(node("c", Some(&key(2).to_string()), &["198.18.0.12"], &[]), 0, 30),
        node("d", Some(&key(4).to_string()), &["198.18.0.13"], &[]),
    ];
    let got = desired_peers(&nodes, &[], &local("198.18.0.10"), &cidr_mode(7));
    assert_eq!(got.problems[0].problem, Problem::DuplicateKey { with: vec!["c".to_owned()] });
    assert_eq!(got.problems[1].problem, Problem::KeyClaimedByOthers { by: vec!["b".to_owned()] });
    assert_eq!(got.peers["c"].public_key, key(2));
    assert_eq!(got.peers["d"].key_epoch, 2);
    assert_eq!(got.peers["d"].public_key, key(4));
}

#[test]
fn reads_the_fields_it_trusts_from_a_node_object() {
    let owns = |annotation: &str| serde_json::json!({"f:metadata": {"f:annotations": {format!("f:{annotation}"): {}}}});
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "n1",
            "annotations": {"x": "y", "meshcrypt.dev/public-key": "not-a-key"},
            "creationTimestamp": "2026-11-01T10:00:00Z",
            "managedFields": [
                {"manager": "meshcrypt", "operation": "Apply", "time": "2026-11-02T10:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": owns("meshcrypt.dev/public-key")},
                {"manager": "kubectl", "operation": "Update", "time": "2026-11-03T10:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": owns("x")},
                {"manager": "kubelet", "operation": "Update", "time": "2026-11-04T10:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}},
            ],
        },
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "203.0.113.9"},
            {"type": "InternalIP", "address": "198.18.0.11"},
            {"type": "InternalIP", "address": "garbage"},
        ]},
    }))
    .unwrap();
    let view = NodeView::from_node(&node);
    assert_eq!(view.name, "n1");
    assert_eq!(view.internal_ips, vec!["198.18.0.11".parse::<IpAddr>().unwrap()]);
    assert_eq!(view.pod_cidrs, vec!["10.244.1.0/24"]);
    assert!(view.key.as_ref().is_err_and(|why| why.contains("meshcrypt.dev/public-key")), "{:?}", view.key);
    assert_eq!(view.created, Some("2026-11-01T10:00:00Z".parse().unwrap()));
    assert_eq!(
        view.key_claimed,
        Some("2026-11-02T10:00:00Z".parse().unwrap()),
        "only the key's owner counts"
    );
}

proptest::proptest! {
    /// The O(n log n) sweep finds exactly the overlaps a brute-force comparison of every pair finds.
    #[test]
    fn contested_sweep_matches_brute_force(
        claims in proptest::collection::vec((0u8..4, 0u8..8, 22u8..=26, 0i64..3), 0..24),
    ) {
        let names = ["n0", "n1", "n2", "n3"];
        let mut prefixes: BTreeMap<&str, BTreeMap<IpNet, ClaimOrder<'_>>> = BTreeMap::new();
        for (owner, third, len, since) in claims {
            let net = IpNet::new(IpAddr::from([10, 244, third, 0]), len).unwrap().trunc();
            let name = names[owner as usize];
            prefixes.entry(name).or_default().insert(net, (at(since), Timestamp::MAX, name));
        }
        let mut brute: BTreeMap<(&str, IpNet), Conflict<'_>> = BTreeMap::new();
        for (a, nets_a) in &prefixes {
            for (b, nets_b) in &prefixes {
                for (x, x_order) in nets_a {
                    for (y, y_order) in nets_b {
                        if a != b && (x.contains(&y.network()) || y.contains(&x.network())) {
                            let c = brute.entry((a, *x)).or_insert_with(|| Conflict {
                                with: BTreeSet::new(),
                                established: true,
                                overlaps_local: false,
                            });
                            c.with.insert(b);
                            c.established &= x_order < y_order;
                            c.overlaps_local |= *b == "n0";
                        }
                    }
                }
            }
        }
        let claimed: Claims<'_> =
            prefixes.iter().map(|(node, nets)| (*node, nets.iter().map(|(n, o)| (*n, *o)).collect())).collect();
        proptest::prop_assert_eq!(contested_prefixes(&claimed, "n0"), brute);
    }
}

/// What a cluster publishes about itself: every node with a valid key and an endpoint, each
/// under the same claim rules a member applies (here, a copied key and a contested pod CIDR).
#[test]
fn cluster_members_are_every_node_a_member_would_peer_with() {
    let nodes = vec![
        aged(node("a", Some(&key(1).to_string()), &["198.18.0.10"], &["10.244.0.0/24"]), 10, 10),
        aged(node("b", Some(&key(2).to_string()), &["198.18.0.11"], &["10.244.1.0/24"]), 11, 11),
        // Copies a's key later: refused.
        aged(node("c", Some(&key(1).to_string()), &["198.18.0.12"], &["10.244.2.0/24"]), 12, 12),
        // Claims b's CIDR later: the node stays, without it.
        aged(node("d", Some(&key(4).to_string()), &["198.18.0.13"], &["10.244.1.0/24"]), 13, 13),
        node("e", None, &["198.18.0.14"], &["10.244.4.0/24"]),
        // Only an IPv6 address: no endpoint in the cluster's IPv4 underlay.
        node("f", Some(&key(6).to_string()), &["fd00::6"], &["10.244.6.0/24"]),
    ];
    let members = cluster_members(&nodes, &[], true, &cidr_mode(51820));
    let got: Vec<(&str, Vec<String>)> =
        members.peers.values().map(|p| (p.node.as_str(), pod_prefixes_of(p))).collect();
    assert_eq!(
        got,
        vec![("a", vec!["10.244.0.0/24".to_owned()]), ("b", vec!["10.244.1.0/24".to_owned()]), ("d", vec![])]
    );
    assert!(members.local_prefixes.is_empty(), "no node is the observer");
    let reasons: Vec<(&str, &str)> =
        members.problems.iter().map(|p| (p.node.as_str(), p.problem.reason())).collect();
    assert!(reasons.contains(&("c", "DuplicateKey")), "{reasons:?}");
    assert!(reasons.contains(&("d", "ContestedPrefix")), "{reasons:?}");
    assert!(reasons.contains(&("e", "NoKey")), "{reasons:?}");
    assert!(reasons.contains(&("f", "NoInternalIP")), "{reasons:?}");
    // The same rules as a member's: b's view of a, c and d is the cluster's.
    let seen_by_b = desired_peers(
        &nodes,
        &[],
        &LocalNode { name: "b".into(), public_key: key(2), underlay_ip: "198.18.0.11".parse().unwrap() },
        &cidr_mode(51820),
    );
    assert_eq!(seen_by_b.peers["a"], members.peers["a"]);
    assert_eq!(seen_by_b.peers["d"], members.peers["d"]);
}

proptest::proptest! {
    /// Whatever addresses Nodes claim, no two peers share an endpoint, none is this node's own
    /// address, and every Node left out for its address is reported as refused.
    #[test]
    fn no_two_peers_share_an_endpoint(
        claims in proptest::collection::vec((0u8..4, proptest::option::of(0i64..3)), 0..10),
    ) {
        let mut nodes = vec![node("a", Some(&key(1).to_string()), &["198.18.0.10"], &[])];
        for (i, (host, created)) in claims.iter().enumerate() {
            let mut n = node(&format!("n{i}"), Some(&key(10 + i as u8).to_string()), &[&format!("198.18.0.1{host}")], &[]);
            n.created = created.map(at);
            nodes.push(n);
        }
        let set = desired_peers(&nodes, &[], &local("198.18.0.10"), &cidr_mode(51820));
        let endpoints: BTreeSet<SocketAddr> = set.peers.values().map(|p| p.endpoint).collect();
        proptest::prop_assert_eq!(endpoints.len(), set.peers.len());
        proptest::prop_assert!(set.peers.values().all(|p| p.endpoint.ip().to_string() != "198.18.0.10"));
        for n in nodes.iter().skip(1) {
            let refused = set.problems.iter().any(|p| {
                p.node == n.name && matches!(p.problem, Problem::SharedInternalIp { refused: true, .. })
            });
            proptest::prop_assert_eq!(refused, !set.peers.contains_key(&n.name), "{}", n.name);
        }
    }
}

/// Three nodes claiming one key and one address: each claim is listed once, in the order it is
/// honoured, and what only one node claims is not listed at all.
#[test]
fn shared_claims_list_every_claimant_once_in_order() {
    let k = key(1).to_string();
    let nodes = [
        aged(node("b", Some(&k), &["198.18.0.10"], &[]), 2, 30),
        aged(node("a", Some(&k), &["198.18.0.10"], &[]), 3, 10),
        aged(node("c", Some(&k), &["198.18.0.10"], &[]), 1, 20),
        aged(node("d", Some(&key(2).to_string()), &["198.18.0.11"], &[]), 4, 40),
    ];
    fn names(group: &[&NodeView]) -> Vec<String> {
        group.iter().map(|n| n.name.clone()).collect()
    }
    let keys = shared(nodes.iter().map(|n| (n.published_key().unwrap().public_key, n)), key_claim);
    assert_eq!(keys.len(), 1, "d's key is d's alone");
    assert_eq!(names(&keys[&key(1)]), ["a", "c", "b"], "by when the key was claimed");
    let ip: IpAddr = "198.18.0.10".parse().unwrap();
    let ips = shared(nodes.iter().map(|n| (n.internal_ips[0], n)), |n: &NodeView| n.created);
    assert_eq!(ips.len(), 1);
    assert_eq!(names(&ips[&ip]), ["c", "b", "a"], "by the Node's age");
}
