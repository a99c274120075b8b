//! Tables for the planner, and the property that applying a plan reaches a fixed point.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::desired::{FLOOR_METRIC, ROUTE_METRIC, RoutingInput, build};
use crate::model::{ObservedLink, Rule};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn route(dst: &str, metric: u32, kind: RouteKind) -> Route {
    Route { dst: net(dst), metric, kind }
}

fn rule(dst: &str) -> Rule {
    Rule::to(100, net(dst), Some(0x20_0000), 2_000)
}

/// The rule for traffic from pod network `src`.
fn from_rule(src: &str) -> Rule {
    Rule::from(100, net(src), Some(0x20_0000), 2_000)
}

fn input(peers: &[&str], strict: bool) -> RoutingInput {
    RoutingInput {
        ifname: "meshcrypt0".into(),
        mtu: 1440,
        addresses: vec![],
        table: 2_000,
        rule_priority: 100,
        pod_networks: vec![net("10.244.0.0/16")],
        local_prefixes: vec![net("10.244.0.0/24")],
        peer_prefixes: peers.iter().map(|p| net(p)).collect(),
        strict,
        peer_hosts: vec![],
        host_encryption: false,
        fwmark: Some(0x20_0000),
    }
}

fn link(mtu: u32, up: bool) -> Option<ObservedLink> {
    Some(ObservedLink { index: 7, mtu, up, addresses: BTreeSet::new(), kind: Some("tun".into()) })
}

/// The kernel as the planner sees it: applies ops to an observed state, each of which must change
/// something (a plan holds no redundant operation).
fn apply(observed: &ObservedState, ops: &[Op]) -> ObservedState {
    let mut next = observed.clone();
    for op in ops {
        assert!(crate::fake::step(&mut next, op), "redundant: {op}");
    }
    next
}

#[test]
fn plan_table() {
    use RouteKind::*;
    let fresh = ObservedState { link: link(1500, false), ..Default::default() };
    let settled = apply(&fresh, &plan(&build(&input(&["10.244.1.0/24"], true)), &fresh));
    let cases: Vec<(&str, RoutingInput, ObservedState, Vec<Op>)> = vec![
        (
            "from nothing: link, floors and throws before device routes, rule after routes",
            input(&["10.244.1.0/24"], true),
            fresh.clone(),
            vec![
                Op::SetMtu(1440),
                Op::SetUp,
                Op::ReplaceRoute(route("10.244.0.0/16", FLOOR_METRIC, Blackhole)),
                Op::ReplaceRoute(route("10.244.0.0/24", ROUTE_METRIC, Throw)),
                Op::ReplaceRoute(route("10.244.0.0/16", ROUTE_METRIC, Device)),
                Op::ReplaceRoute(route("10.244.1.0/24", ROUTE_METRIC, Device)),
                Op::AddRule(rule("10.244.0.0/16")),
                Op::AddRule(from_rule("10.244.0.0/16")),
            ],
        ),
        ("settled: nothing to do", input(&["10.244.1.0/24"], true), settled.clone(), vec![]),
        (
            "a peer added: one route",
            input(&["10.244.1.0/24", "10.244.2.0/24"], true),
            settled.clone(),
            vec![Op::ReplaceRoute(route("10.244.2.0/24", ROUTE_METRIC, Device))],
        ),
        (
            "a peer removed: its route goes, the floor stays",
            input(&[], true),
            settled.clone(),
            vec![Op::DelRoute(route("10.244.1.0/24", ROUTE_METRIC, Device))],
        ),
        (
            "strict off: the device catch-all and the blackhole floor are removed",
            input(&["10.244.1.0/24"], false),
            settled.clone(),
            vec![
                Op::DelRoute(route("10.244.0.0/16", ROUTE_METRIC, Device)),
                Op::DelRoute(route("10.244.0.0/16", FLOOR_METRIC, Blackhole)),
            ],
        ),
        (
            "device missing: floors, throws and rules only",
            input(&["10.244.1.0/24"], true),
            ObservedState::default(),
            vec![
                Op::ReplaceRoute(route("10.244.0.0/16", FLOOR_METRIC, Blackhole)),
                Op::ReplaceRoute(route("10.244.0.0/24", ROUTE_METRIC, Throw)),
                Op::AddRule(rule("10.244.0.0/16")),
                Op::AddRule(from_rule("10.244.0.0/16")),
            ],
        ),
        (
            "a foreign route in our table is replaced, one elsewhere in it deleted",
            input(&["10.244.1.0/24"], true),
            ObservedState {
                routes: settled
                    .routes
                    .iter()
                    .copied()
                    .filter(|r| r.dst != net("10.244.1.0/24"))
                    .chain([
                        route("10.244.1.0/24", ROUTE_METRIC, Foreign(1)),
                        route("192.0.2.0/24", ROUTE_METRIC, Foreign(7)),
                    ])
                    .collect(),
                ..settled.clone()
            },
            vec![
                Op::ReplaceRoute(route("10.244.1.0/24", ROUTE_METRIC, Device)),
                Op::DelRoute(route("192.0.2.0/24", ROUTE_METRIC, Foreign(7))),
            ],
        ),
        (
            "the pod network changes: the new rule is added before the old one is removed",
            RoutingInput { pod_networks: vec![net("10.244.0.0/15")], ..input(&["10.244.1.0/24"], false) },
            ObservedState {
                link: link(1440, true),
                routes: BTreeSet::from([
                    route("10.244.0.0/24", ROUTE_METRIC, Throw),
                    route("10.244.1.0/24", ROUTE_METRIC, Device),
                ]),
                rules: BTreeSet::from([rule("10.244.0.0/16"), from_rule("10.244.0.0/16")]),
            },
            vec![
                Op::AddRule(rule("10.244.0.0/15")),
                Op::AddRule(from_rule("10.244.0.0/15")),
                Op::DelRule(rule("10.244.0.0/16")),
                Op::DelRule(from_rule("10.244.0.0/16")),
            ],
        ),
    ];
    for (name, input, observed, want) in cases {
        let desired = build(&input);
        let got = plan(&desired, &observed);
        assert_eq!(got, want, "{name}");
        if observed.link.is_some() {
            assert_eq!(plan(&desired, &apply(&observed, &got)), vec![], "{name}: not a fixed point");
        }
    }
}

fn arb_prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (1u8..16, 24u8..=28)
            .prop_map(|(third, len)| IpNet::new([10, 244, third, 0].into(), len).unwrap().trunc()),
        (1u16..16, 64u8..=72).prop_map(|(sub, len)| {
            IpNet::new(std::net::Ipv6Addr::new(0xfd00, 0x10, 0x244, sub, 0, 0, 0, 0).into(), len)
                .unwrap()
                .trunc()
        }),
    ]
}

fn arb_route() -> impl Strategy<Value = Route> {
    (arb_prefix(), prop_oneof![Just(ROUTE_METRIC), Just(FLOOR_METRIC), 1u32..10], 0u8..5).prop_map(
        |(dst, metric, k)| {
            let kind = match k {
                0 => RouteKind::Device,
                1 => RouteKind::Blackhole,
                2 => RouteKind::Throw,
                n => RouteKind::Foreign(n),
            };
            Route { dst, metric, kind }
        },
    )
}

proptest! {
    /// From any observed state with the device present, applying the plan reaches a state whose
    /// plan is empty, and every op of the plan is valid for the state it is applied to.
    #[test]
    fn applying_a_plan_reaches_a_fixed_point(
        peers in proptest::collection::vec(arb_prefix(), 0..12),
        strict in any::<bool>(),
        dual in any::<bool>(),
        mtu in 1280u32..9000,
        up in any::<bool>(),
        stale_routes in proptest::collection::vec(arb_route(), 0..12),
        stale_rules in proptest::collection::vec(arb_prefix(), 0..3),
    ) {
        let mut input = input(&[], strict);
        input.peer_prefixes = peers;
        if dual {
            input.pod_networks.push(net("fd00:10:244::/48"));
        }
        let mut observed = ObservedState { link: link(mtu, up), ..Default::default() };
        // The kernel keys routes by (dst, metric): keep one per key.
        for r in stale_routes {
            if !observed.routes.iter().any(|o| (o.dst, o.metric) == (r.dst, r.metric)) {
                observed.routes.insert(r);
            }
        }
        observed.rules = stale_rules.into_iter().map(|dst| Rule::to(100, dst, Some(0x20_0000), 2_000)).collect();
        let desired = build(&input);
        let after = apply(&observed, &plan(&desired, &observed));
        prop_assert_eq!(plan(&desired, &after), vec![]);
        prop_assert_eq!(&after.routes, &desired.routes);
        prop_assert_eq!(&after.rules, &desired.rules);
    }
}
