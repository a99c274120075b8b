//! Tables for the peer set: nodes in, peers and problems out.

use super::*;
use crate::PrivateKey;
use crate::annotations::{KEY_CREATED, KEY_EPOCH, PUBLIC_KEY};

fn key(seed: u8) -> PublicKey {
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

fn node(name: &str, key: Option<&str>, ips: &[&str], cidrs: &[&str]) -> NodeView {
    NodeView {
        name: name.to_owned(),
        annotations: annotated(key),
        internal_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        pod_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
    }
}

fn local(underlay: &str) -> LocalNode {
    LocalNode { name: "a".to_owned(), public_key: key(1), underlay_ip: underlay.parse().unwrap() }
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
            name: "a key claimed by two nodes is used for neither",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24"]),
                node("c", Some(k2), &["198.18.0.12"], &["10.244.2.0/24"]),
                node("d", Some(k4), &["198.18.0.13"], &["10.244.3.0/24"]),
            ],
            peers: vec![("d", "198.18.0.13:51820", vec!["10.244.3.0/24"])],
            problems: vec![("b", "DuplicateKey"), ("c", "DuplicateKey")],
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
            name: "overlapping prefixes go to nobody, including a claim on the local node's prefix",
            underlay: "198.18.0.10",
            nodes: vec![
                a(),
                node("b", Some(k2), &["198.18.0.11"], &["10.244.1.0/24", "10.244.21.0/24"]),
                node("c", Some(k3), &["198.18.0.12"], &["10.244.1.128/25", "10.244.2.0/24"]),
                node("d", Some(k4), &["198.18.0.13"], &["10.244.0.0/16"]),
            ],
            peers: vec![
                ("b", "198.18.0.11:51820", vec![]),
                ("c", "198.18.0.12:51820", vec![]),
                ("d", "198.18.0.13:51820", vec![]),
            ],
            problems: vec![
                ("a", "ContestedPrefix"),
                ("b", "ContestedPrefix"),
                ("b", "ContestedPrefix"),
                ("c", "ContestedPrefix"),
                ("c", "ContestedPrefix"),
                ("d", "ContestedPrefix"),
            ],
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
        let got = desired_peers(&case.nodes, &local(case.underlay), &MeshConfig { port: 51820 });
        let peers: Vec<(String, String, Vec<String>)> = got
            .peers
            .values()
            .map(|p| {
                (
                    p.node.clone(),
                    p.endpoint.to_string(),
                    p.allowed_ips.iter().map(|n| n.to_string()).collect(),
                )
            })
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
fn duplicate_key_names_the_other_claimant_and_keeps_the_epoch() {
    let nodes = vec![
        node("b", Some(&key(2).to_string()), &["198.18.0.11"], &[]),
        node("c", Some(&key(2).to_string()), &["198.18.0.12"], &[]),
        node("d", Some(&key(4).to_string()), &["198.18.0.13"], &[]),
    ];
    let got = desired_peers(&nodes, &local("198.18.0.10"), &MeshConfig { port: 7 });
    assert_eq!(got.problems[0].problem, Problem::DuplicateKey { with: vec!["c".to_owned()] });
    assert_eq!(got.problems[1].problem, Problem::DuplicateKey { with: vec!["b".to_owned()] });
    assert_eq!(got.peers["d"].key_epoch, 2);
    assert_eq!(got.peers["d"].public_key, key(4));
}

#[test]
fn reads_the_fields_it_trusts_from_a_node_object() {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1", "annotations": {"x": "y"}},
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
    assert_eq!(view.annotations.get("x").map(String::as_str), Some("y"));
}

proptest::proptest! {
    /// The O(n log n) sweep finds exactly the overlaps a brute-force comparison of every pair finds.
    #[test]
    fn contested_sweep_matches_brute_force(
        claims in proptest::collection::vec((0u8..4, 0u8..8, 22u8..=26), 0..24),
    ) {
        let names = ["n0", "n1", "n2", "n3"];
        let mut prefixes: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
        for (owner, third, len) in claims {
            let net = IpNet::new(IpAddr::from([10, 244, third, 0]), len).unwrap().trunc();
            prefixes.entry(names[owner as usize]).or_default().insert(net);
        }
        let mut brute: BTreeMap<(&str, IpNet), BTreeSet<&str>> = BTreeMap::new();
        for (a, nets_a) in &prefixes {
            for (b, nets_b) in &prefixes {
                for x in nets_a {
                    for y in nets_b {
                        if a != b && (x.contains(&y.network()) || y.contains(&x.network())) {
                            brute.entry((a, *x)).or_default().insert(b);
                        }
                    }
                }
            }
        }
        proptest::prop_assert_eq!(contested_prefixes(&prefixes), brute);
    }
}
