//! The index against the full recompute: random sequences of Node and Pod changes, each update
//! compared with [`desired_peers`] over everything.

use std::sync::Arc;

use proptest::prelude::*;

use super::super::tests::{at, key, node, pod};
use super::*;
use crate::mesh::{NoAgentExpected, desired_peers};

/// Names: `a` is the observer; `ghost` has Pods and no Node.
const NODES: [&str; 6] = ["a", "n1", "n2", "n3", "n4", "n5"];
const POD_NODES: [&str; 7] = ["a", "n1", "n2", "n3", "n4", "n5", "ghost"];
/// Few addresses and prefixes, so that changes collide: shared endpoints, nested and equal CIDRs,
/// a non-canonical one, addresses claimed by Pods on two nodes.
const IPS: [&str; 5] = ["198.18.0.10", "198.18.0.11", "198.18.0.12", "198.18.0.13", "fd00::13"];
const CIDRS: [&str; 6] =
    ["10.244.0.0/24", "10.244.1.0/24", "10.244.0.0/16", "10.244.0.128/25", "10.244.1.0/24", "10.244.0.1/24"];
const POD_IPS: [&str; 5] = ["10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.1.1", "fd00:10:244::1"];

/// One Node as generated: key (seed 1 is the observer's; `Some(0)` a malformed annotation),
/// addresses, CIDRs, creation, key claim, exempt from running an agent.
type NodeSpec = (Option<u8>, Vec<usize>, Vec<usize>, Option<i64>, Option<i64>, bool);

/// One Pod as generated: node, addresses, creation.
type PodSpec = (usize, Vec<usize>, Option<i64>);

#[derive(Debug, Clone)]
enum Step {
    Node(usize, NodeSpec),
    RemoveNode(usize),
    Pod(usize, PodSpec),
    RemovePod(usize),
    /// Every view made again with the same values (a relist, or heartbeats).
    Remake,
    /// The observer's key (seed) and underlay address change.
    Local(u8, usize),
    /// The settings: the port, and pod-IP mode.
    Config(u16, bool),
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        prop::option::of(0u8..5),
        prop::collection::vec(0..IPS.len(), 0..3),
        prop::collection::vec(0..CIDRS.len(), 0..3),
        prop::option::of(0i64..3),
        prop::option::of(0i64..3),
        prop::bool::weighted(0.1),
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..NODES.len(), node_spec()).prop_map(|(i, s)| Step::Node(i, s)),
        2 => (0..NODES.len()).prop_map(Step::RemoveNode),
        6 => (0usize..8, (0..POD_NODES.len(), prop::collection::vec(0..POD_IPS.len(), 0..3), prop::option::of(0i64..3)))
            .prop_map(|(i, s)| Step::Pod(i, s)),
        2 => (0usize..8).prop_map(Step::RemovePod),
        1 => Just(Step::Remake),
        1 => (1u8..3, 0usize..2).prop_map(|(k, ip)| Step::Local(k, ip)),
        1 => (prop::sample::select(vec![51820u16, 51821]), prop::bool::ANY).prop_map(|(p, m)| Step::Config(p, m)),
    ]
}

fn make_node(name: &str, (seed, ips, cidrs, created, claimed, exempt): &NodeSpec) -> NodeView {
    let text = seed.map(|s| if s == 0 { "not-a-key".to_owned() } else { key(s).to_string() });
    let ips: Vec<&str> = ips.iter().map(|i| IPS[*i]).collect();
    let cidrs: Vec<&str> = cidrs.iter().map(|i| CIDRS[*i]).collect();
    let mut view = node(name, text.as_deref(), &ips, &cidrs);
    view.created = created.map(at);
    view.key_claimed = claimed.map(at);
    view.no_agent = exempt.then_some(NoAgentExpected::Fargate);
    view
}

fn make_pod(i: usize, (on, ips, created): &PodSpec) -> PodView {
    let ips: Vec<&str> = ips.iter().map(|i| POD_IPS[*i]).collect();
    let mut view = pod(&format!("default/p{i}"), POD_NODES[*on], &ips);
    view.created = created.map(at);
    view
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After every change, the index gives exactly what the full recompute gives.
    #[test]
    fn the_index_agrees_with_the_full_recompute(
        start in prop::collection::vec((0..NODES.len(), node_spec()), 0..6),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut nodes: BTreeMap<usize, Arc<NodeView>> = BTreeMap::new();
        let mut pods: BTreeMap<usize, Arc<PodView>> = BTreeMap::new();
        for (i, spec) in &start {
            nodes.insert(*i, Arc::new(make_node(NODES[*i], spec)));
        }
        let mut local = LocalNode { name: "a".into(), public_key: key(1), underlay_ip: IPS[0].parse().unwrap() };
        let mut config = MeshConfig { port: 51820, allowed_ips: AllowedIpsFrom::PodCidrs };
        let mut index = PeerIndex::default();
        for step in steps {
            match &step {
                Step::Node(i, spec) => { nodes.insert(*i, Arc::new(make_node(NODES[*i], spec))); }
                Step::RemoveNode(i) => { nodes.remove(i); }
                Step::Pod(i, spec) => { pods.insert(*i, Arc::new(make_pod(*i, spec))); }
                Step::RemovePod(i) => { pods.remove(i); }
                Step::Remake => {
                    nodes.values_mut().for_each(|n| *n = Arc::new((**n).clone()));
                    pods.values_mut().for_each(|p| *p = Arc::new((**p).clone()));
                }
                Step::Local(seed, ip) => {
                    local.public_key = key(*seed);
                    local.underlay_ip = IPS[*ip].parse().unwrap();
                }
                Step::Config(port, pod_ip) => {
                    config.port = *port;
                    config.allowed_ips = if *pod_ip { AllowedIpsFrom::PodIps } else { AllowedIpsFrom::PodCidrs };
                }
            }
            let node_list: Vec<Arc<NodeView>> = nodes.values().cloned().collect();
            let pod_list: Vec<Arc<PodView>> = pods.values().cloned().collect();
            let pod_refs: Vec<&PodView> = pod_list.iter().map(|p| &**p).collect();
            let want = desired_peers(&node_list, &pod_refs, &local, &config);
            let got = index.desired_peers(&node_list, &pod_list, &local, &config);
            prop_assert_eq!(got, &want, "after {:?}", step);
        }
    }
}
