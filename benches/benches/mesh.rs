//! Criterion benches of the agent's per-change computations at 100, 1,000 and 5,000 nodes: the
//! peer set from the Nodes' views (`mesh::desired_peers`; the views made one after another, and
//! scattered in memory as an agent holds them after churn), the same through the index kept
//! between passes when one Node changed (`mesh::PeerIndex`), and the routing plan
//! (`desired::build`, then `plan::plan` against an empty table as at first sync, and against an
//! up-to-date table as in steady state).

use std::borrow::Borrow;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ipnet::IpNet;
use meshcrypt_keyexchange::mesh::{
    AllowedIpsFrom, LocalNode, MeshConfig, NodeView, PeerIndex, desired_peers,
};
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey};
use meshcrypt_routing::{ObservedLink, ObservedState, RoutingInput, desired, plan};

const SIZES: [usize; 3] = [100, 1_000, 5_000];

fn node_addr(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).unwrap();
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i)
}

/// Node `i`'s pod prefix: a /24 under 10.0.0.0/8 (5,000 nodes do not fit a /16).
fn pod_cidr(i: usize) -> IpNet {
    let i = u32::try_from(i).unwrap();
    IpNet::new(IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (i << 8))), 24).unwrap()
}

fn nodes(n: usize) -> Vec<NodeView> {
    let created = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    (0..n)
        .map(|i| NodeView {
            name: format!("node-{i}"),
            key: NodeView::parse_key(
                &NodeKeyAnnotations { public_key: PrivateKey::generate().public_key(), epoch: 1, created }
                    .to_annotations(),
            ),
            internal_ips: vec![IpAddr::V4(node_addr(i))],
            pod_cidrs: vec![pod_cidr(i).to_string()],
            created: Some(created),
            key_claimed: Some(created),
            no_agent: None,
            annotation_writers: Default::default(),
        })
        .collect()
}

/// `node-0` (with a key of its own) in podCIDR mode.
fn observer() -> (LocalNode, MeshConfig) {
    let local = LocalNode {
        name: "node-0".into(),
        public_key: PrivateKey::generate().public_key(),
        underlay_ip: IpAddr::V4(node_addr(0)),
    };
    (local, MeshConfig { port: 51820, allowed_ips: AllowedIpsFrom::PodCidrs })
}

/// Times the peer set of `node-0` at each size, over the views `views` gives for that size.
fn bench_peer_set_over<N: Borrow<NodeView>, K>(
    c: &mut Criterion,
    group: &str,
    views: impl Fn(usize) -> (Vec<N>, K),
) {
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for n in SIZES {
        let (all, _keep) = views(n);
        let (local, config) = observer();
        group.bench_with_input(BenchmarkId::from_parameter(n), &all, |b, all| {
            b.iter(|| {
                let set = desired_peers(black_box(all), &[], &local, &config);
                assert_eq!(set.peers.len(), n - 1);
                set
            })
        });
    }
    group.finish();
}

/// The views as an agent holds them after churn: each in its own `Arc`, made at different times
/// between other allocations (returned, to be kept alive), listed in an order unrelated to where
/// they lie in memory.
fn scattered(n: usize) -> (Vec<Arc<NodeView>>, Vec<Vec<u8>>) {
    let mut junk = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut views: Vec<Arc<NodeView>> = nodes(n)
        .into_iter()
        .map(|v| {
            junk.push(vec![0u8; 64 + (next() % 4096) as usize]);
            Arc::new(v)
        })
        .collect();
    for i in (1..views.len()).rev() {
        views.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    (views, junk)
}

fn bench_peer_set(c: &mut Criterion) {
    bench_peer_set_over(c, "desired_peers", |n| (nodes(n), ()));
    bench_peer_set_over(c, "desired_peers_scattered", scattered);
}

/// The peer set through the index an agent keeps between passes (`mesh::PeerIndex`), one Node
/// changing (its key epoch) between updates: a pass's peer set for one event, over the views as
/// an agent holds them.
fn bench_peer_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("peer_index_one_change");
    group.sample_size(10);
    for n in SIZES {
        let (mut all, _keep) = scattered(n);
        let (local, config) = observer();
        let mut index = PeerIndex::default();
        index.desired_peers(&all, &[], &local, &config);
        let at = all.iter().position(|v| v.name != local.name).unwrap();
        let mut changed = (*all[at]).clone();
        if let Ok(Some(key)) = &mut changed.key {
            key.epoch += 1;
        }
        let versions = [all[at].clone(), Arc::new(changed)];
        let mut turn = 0;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                turn ^= 1;
                all[at] = versions[turn].clone();
                let set = index.desired_peers(black_box(&all), &[], &local, &config);
                assert_eq!(set.peers[&versions[turn].name].key_epoch, 1 + turn as u64);
            })
        });
    }
    group.finish();
}

fn input(n: usize) -> RoutingInput {
    RoutingInput {
        ifname: "meshcrypt0".into(),
        mtu: 1420,
        addresses: vec!["10.0.0.0/32".parse().unwrap()],
        table: 2_000,
        rule_priority: 100,
        pod_networks: vec!["10.0.0.0/8".parse().unwrap()],
        local_prefixes: vec![pod_cidr(0)],
        peer_prefixes: (1..n).map(pod_cidr).collect(),
        strict: true,
        peer_hosts: vec![],
        host_encryption: false,
        fwmark: Some(0x20_0000),
    }
}

fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group.sample_size(10);
    for n in SIZES {
        let input = input(n);
        group.bench_with_input(BenchmarkId::new("build", n), &input, |b, input| {
            b.iter(|| desired::build(black_box(input)))
        });
        let want = desired::build(&input);
        let link = ObservedLink {
            index: 7,
            mtu: want.link.mtu,
            up: true,
            addresses: want.link.addresses.clone(),
            kind: Some("tun".into()),
        };
        let empty =
            ObservedState { link: Some(link.clone()), routes: Default::default(), rules: Default::default() };
        let synced =
            ObservedState { link: Some(link), routes: want.routes.clone(), rules: want.rules.clone() };
        group.bench_with_input(BenchmarkId::new("plan_first_sync", n), &empty, |b, observed| {
            b.iter(|| {
                let ops = plan::plan(black_box(&want), observed);
                assert!(ops.len() >= n);
                ops
            })
        });
        group.bench_with_input(BenchmarkId::new("plan_steady", n), &synced, |b, observed| {
            b.iter(|| {
                let ops = plan::plan(black_box(&want), observed);
                assert!(ops.is_empty());
                ops
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_peer_set, bench_peer_index, bench_routing);
criterion_main!(benches);
