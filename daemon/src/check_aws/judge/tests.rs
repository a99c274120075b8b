//! The pair check as a table: which groups let UDP 51820 through, each way, and how the blocked
//! pairs are grouped.

use super::*;

fn rule(protocol: &str, ports: Option<(i32, i32)>, cidrs: &[&str], groups: &[&str]) -> Rule {
    Rule {
        protocol: protocol.into(),
        from_port: ports.map(|p| p.0),
        to_port: ports.map(|p| p.1),
        cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        prefix_lists: false,
    }
}

fn group(id: &str, ingress: Vec<Rule>) -> Group {
    // EC2's default egress: everything, everywhere.
    let all_out = rule("-1", None, &["0.0.0.0/0", "::/0"], &[]);
    Group { id: id.into(), name: id.into(), ingress, egress: vec![all_out] }
}

fn groups() -> Vec<Group> {
    let mut closed_out = group("sg-no-egress", vec![rule("udp", Some((51820, 51820)), &[], &["sg-mesh"])]);
    closed_out.egress = vec![rule("tcp", Some((443, 443)), &["0.0.0.0/0"], &[])];
    let mut prefix_list = group("sg-prefix-list", vec![rule("udp", Some((51820, 51820)), &[], &[])]);
    prefix_list.ingress[0].prefix_lists = true;
    vec![
        group("sg-mesh", vec![rule("udp", Some((51820, 51820)), &[], &["sg-mesh"])]),
        group("sg-vpc", vec![rule("udp", Some((51820, 51820)), &["10.0.0.0/16"], &[])]),
        group("sg-tcp", vec![rule("tcp", Some((51820, 51820)), &["0.0.0.0/0"], &[])]),
        group("sg-all", vec![rule("-1", None, &[], &["sg-mesh"])]),
        group("sg-range", vec![rule("17", Some((50000, 52000)), &["10.0.0.0/8"], &[])]),
        group("sg-other-port", vec![rule("udp", Some((51821, 51821)), &["10.0.0.0/8"], &[])]),
        closed_out,
        prefix_list,
    ]
}

fn node(name: &str, ip: &str, groups: &[&str]) -> NodeNet {
    NodeNet {
        node: name.into(),
        instance: format!("i-{name}"),
        ip: ip.parse().unwrap(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// One blocked class: side, from groups, to groups, pairs, prefix-list note.
type Class = (Side, Vec<String>, Vec<String>, usize, bool);

/// (side, from groups, to groups, pairs, prefix-list note) of each blocked class.
type Summary = Vec<(Side, Vec<&'static str>, Vec<&'static str>, usize, bool)>;

#[test]
fn pairs_table() {
    let (a, b) = ("10.0.1.10", "10.0.2.20");
    let outside = "10.9.0.5";
    let cases: Vec<(&str, Vec<NodeNet>, Vec<PeerRange>, Summary)> = vec![
        (
            "one group referencing itself: all allowed",
            vec![node("n1", a, &["sg-mesh"]), node("n2", b, &["sg-mesh"])],
            vec![],
            vec![],
        ),
        (
            "a CIDR rule covering the VPC",
            vec![node("n1", a, &["sg-vpc"]), node("n2", b, &["sg-vpc"])],
            vec![],
            vec![],
        ),
        (
            "all traffic from the group",
            vec![node("n1", a, &["sg-mesh", "sg-all"]), node("n2", b, &["sg-mesh"])],
            vec![],
            vec![],
        ),
        (
            "a port range holding 51820, protocol by number",
            vec![node("n1", a, &["sg-range"]), node("n2", b, &["sg-range"])],
            vec![],
            vec![],
        ),
        (
            "TCP only: both directions blocked, inbound",
            vec![node("n1", a, &["sg-tcp"]), node("n2", b, &["sg-tcp"])],
            vec![],
            vec![(Side::Ingress, vec!["sg-tcp"], vec!["sg-tcp"], 2, false)],
        ),
        (
            "another port",
            vec![node("n1", a, &["sg-other-port"]), node("n2", b, &["sg-other-port"])],
            vec![],
            vec![(Side::Ingress, vec!["sg-other-port"], vec!["sg-other-port"], 2, false)],
        ),
        (
            "a node outside the referenced group: traffic from it is blocked; its CIDR rule lets the others in",
            vec![node("n1", a, &["sg-mesh"]), node("n2", b, &["sg-mesh"]), node("n3", outside, &["sg-vpc"])],
            vec![],
            vec![(Side::Ingress, vec!["sg-vpc"], vec!["sg-mesh"], 2, false)],
        ),
        (
            "a closed egress beside an open one: the groups' rules add up",
            vec![node("n1", a, &["sg-no-egress", "sg-mesh"]), node("n2", b, &["sg-mesh"])],
            vec![],
            vec![],
        ),
        (
            "egress closed and nothing else",
            vec![node("n1", a, &["sg-no-egress"]), node("n2", b, &["sg-mesh"])],
            vec![],
            vec![
                (Side::Egress, vec!["sg-no-egress"], vec!["sg-mesh"], 1, false),
                (Side::Ingress, vec!["sg-no-egress"], vec!["sg-mesh"], 1, false),
            ],
        ),
        (
            "a prefix-list rule is not resolved: blocked, with a note",
            vec![node("n1", a, &["sg-prefix-list"]), node("n2", b, &["sg-prefix-list"])],
            vec![],
            vec![(Side::Ingress, vec!["sg-prefix-list"], vec!["sg-prefix-list"], 2, true)],
        ),
        (
            "a peer cluster's range inside the allowed CIDR, and one outside it",
            vec![node("n1", a, &["sg-vpc"])],
            vec![
                PeerRange { name: "east/node-1".into(), range: "10.0.7.7/32".parse().unwrap() },
                PeerRange { name: "--peer-cidr".into(), range: "10.1.0.0/16".parse().unwrap() },
            ],
            vec![(Side::Ingress, vec!["--peer-cidr"], vec!["sg-vpc"], 1, false)],
        ),
        (
            "a range is allowed only by a rule holding all of it",
            vec![node("n1", a, &["sg-vpc"])],
            vec![PeerRange { name: "wide".into(), range: "10.0.0.0/8".parse().unwrap() }],
            vec![(Side::Ingress, vec!["wide"], vec!["sg-vpc"], 1, false)],
        ),
    ];
    for (name, nodes, ranges, want) in cases {
        let got = judge(&nodes, &groups(), &ranges, 51820, vec![]);
        let summary: Vec<Class> = got
            .blocked
            .iter()
            .map(|b| (b.side, b.from_groups.clone(), b.to_groups.clone(), b.pairs, b.prefix_list_rules))
            .collect();
        let want: Vec<Class> = want
            .into_iter()
            .map(|(s, f, t, p, pl)| {
                (
                    s,
                    f.into_iter().map(str::to_owned).collect(),
                    t.into_iter().map(str::to_owned).collect(),
                    p,
                    pl,
                )
            })
            .collect();
        let mut summary = summary;
        let mut want = want;
        summary.sort();
        want.sort();
        assert_eq!(summary, want, "{name}");
        assert_eq!(got.clean(), want.is_empty(), "{name}");
        assert_eq!(got.pairs, nodes.len() * (nodes.len() - 1) + nodes.len() * ranges.len(), "{name}");
    }
}

#[test]
fn a_group_ec2_did_not_return_and_an_unchecked_node_are_findings() {
    let nodes = [node("n1", "10.0.1.10", &["sg-mesh", "sg-gone"]), node("n2", "10.0.2.20", &["sg-mesh"])];
    let got = judge(&nodes, &groups(), &[], 51820, vec!["n3: no aws:// providerID".into()]);
    assert_eq!(got.missing_groups, ["sg-gone"]);
    assert_eq!(got.unchecked, ["n3: no aws:// providerID"]);
    assert!(got.blocked.is_empty() && !got.clean());
}

#[test]
fn examples_are_capped_and_pairs_counted() {
    let nodes: Vec<NodeNet> =
        (0..10).map(|i| node(&format!("n{i}"), &format!("10.0.3.{i}"), &["sg-tcp"])).collect();
    let got = judge(&nodes, &groups(), &[], 51820, vec![]);
    let [blocked] = got.blocked.as_slice() else { panic!("{:?}", got.blocked) };
    assert_eq!((blocked.pairs, blocked.examples.len()), (90, EXAMPLES));
    assert_eq!(blocked.examples[0], "n1 (10.0.3.1) → n0 (10.0.3.0)");
}
