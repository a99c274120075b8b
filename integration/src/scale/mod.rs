//! The scale harness: a few real agents in the lab, the rest of a 5,000-node cluster (and, in
//! pod-IP mode, its 150,000 Pods) simulated in the test API server, and a churn of node joins
//! and leaves, key rotations, kubelet heartbeats and pod creations and deletions at stated rates
//! ([`churn`]). It measures, on the real agents: the time from an API change to the route (and
//! so the peer) being programmed, CPU per event, memory, the API requests and bytes each agent
//! receives, device and kernel operations against the number of changed peers, and finally that
//! nothing stale or missing is left against the API's truth.
//!
//! A benchmark, not a test: it fails only when the mesh does not converge; figures go to
//! BENCHMARKS.md. Run by `meshcrypt-scale` (`scripts/scale.sh`).

pub mod churn;
pub mod observe;
mod report;
pub mod sim;
pub mod truth;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;
use meshcrypt_keyexchange::NodeKeyAnnotations;
use meshcrypt_netlab::lab::Lab;
use meshcrypt_netlab::wait::poll_every;
use serde_json::json;

pub use report::{AgentFigures, BurstOps, ScaleReport};

use crate::cluster::{AgentOptions, Cluster, ClusterError};
use churn::{Event, Rates, SimState};
use observe::RouteChange;
use truth::{Drift, ExpectedPeer};

/// The mesh's UDP port, interface and table, as the agents run them (the defaults).
const PORT: u16 = 51_820;
const IFNAME: &str = "meshcrypt0";
const TABLE: u32 = 51_820;

/// What a scale run does.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Nodes in the cluster, the real ones included.
    pub nodes: usize,
    /// Real nodes, each with an agent (the rest are simulated).
    pub agents: usize,
    /// Pods on each simulated node; more than 0 runs pod-IP mode.
    pub pods_per_node: usize,
    /// Churn events to apply.
    pub events: usize,
    /// The churn's rates.
    pub rates: Rates,
    /// The churn schedule's seed.
    pub seed: u64,
    /// Node joins applied at once, one burst at a time before the churn, to count device and
    /// kernel operations against the number of changed peers.
    pub bursts: Vec<usize>,
    /// How long the mesh may take to converge (first sync, each burst, after the churn).
    pub deadline: Duration,
    /// Each real agent's `--peer-source`, in turn (`nodes`, `mesh-peers`): with both, one run
    /// compares them under the same churn.
    pub peer_sources: Vec<String>,
}

/// One real node of the run.
struct RealNode {
    name: String,
    peer_source: String,
    namespace: String,
    pid: u32,
    monitor_log: PathBuf,
}

/// The simulated cluster as the harness last wrote it.
struct Sim {
    state: SimState,
    keys: BTreeMap<usize, NodeKeyAnnotations>,
    pod_ip: bool,
}

impl Sim {
    /// The sim's peers as every real agent should have them, by public key.
    fn expected(&self) -> BTreeMap<String, ExpectedPeer> {
        self.state
            .nodes
            .iter()
            .filter_map(|(i, pods)| {
                let key = self.keys.get(i)?;
                let node = IpAddr::V4(sim::node_ip(*i));
                let mut allowed_ips: BTreeSet<IpNet> = if self.pod_ip {
                    pods.iter().map(|j| IpNet::from(IpAddr::V6(sim::pod_ip(*i, *j)))).collect()
                } else {
                    BTreeSet::from([sim::pod_cidr(*i)])
                };
                allowed_ips.insert(IpNet::from(node));
                Some((
                    key.public_key.to_string(),
                    ExpectedPeer { endpoint: SocketAddr::new(node, PORT), allowed_ips },
                ))
            })
            .collect()
    }

    /// Whether a prefix belongs to the simulated nodes' pods.
    fn ours(&self) -> impl Fn(&IpNet) -> bool + use<> {
        let range: IpNet =
            if self.pod_ip { sim::SIM_POD_RANGE6 } else { "10.244.128.0/17" }.parse().expect("range");
        move |net| range.contains(net)
    }
}

/// Runs the harness, printing progress through `say`.
pub fn run(options: &ScaleOptions, say: &mut dyn FnMut(&str)) -> Result<ScaleReport, ClusterError> {
    let joins: usize = options.bursts.iter().sum();
    let sims = options.nodes.checked_sub(options.agents).filter(|n| n + joins < sim::MAX_SIM_NODES);
    let Some(sims) = sims else {
        return Err(ClusterError::Invalid(format!(
            "{} nodes with {} agents and {joins} joining in bursts: at most {} simulated nodes fit the address plan",
            options.nodes,
            options.agents,
            sim::MAX_SIM_NODES
        )));
    };
    let pod_ip = options.pods_per_node > 0;
    let lab = Lab::builder().nodes(options.agents).pods_per_node(1).vpc_cni(pod_ip).build()?;
    let mut agent_options = AgentOptions::new()?;
    for (node, source) in lab.nodes().iter().zip(options.peer_sources.iter().cycle()) {
        agent_options.node_args.insert(node.name.clone(), vec!["--peer-source".into(), source.clone()]);
    }
    agent_options.resync_seconds = 10;
    agent_options.log_level = "info".into();
    agent_options.extra_args = vec!["--no-handshake-after".into(), "86400".into()];
    agent_options.config_map = Some(BTreeMap::from([
        ("addressing".into(), if pod_ip { "pod-ip" } else { "pod-cidr" }.into()),
        // The lab's pod ranges: the real pods, the simulated nodes' /30s, the simulated pods.
        ("pod-networks".into(), "10.244.0.0/16,fd00:10:244::/56".into()),
        ("peer-metrics".into(), "summary".into()),
    ]));
    let cluster = Cluster::start_in(lab, agent_options)?;
    cluster.wait_converged(options.deadline)?;
    let real = real_nodes(&cluster, &options.peer_sources)?;
    say(&format!("{} agents up; seeding {sims} simulated nodes", real.len()));

    let started = Instant::now();
    let now = Timestamp::now();
    let mut sim = Sim { state: SimState::new(sims, options.pods_per_node), keys: BTreeMap::new(), pod_ip };
    let pods: Vec<usize> = (0..options.pods_per_node).collect();
    for i in 0..sims {
        let key = sim::key_annotations(1, now);
        for j in &pods {
            cluster.api().create(sim::pod_object(i, *j))?;
        }
        create_node(&cluster, i, &key, now, &pods)?;
        sim.keys.insert(i, key);
    }
    say(&format!("seeded in {:.1} s; waiting for the agents' first sync", started.elapsed().as_secs_f64()));
    wait_in_step(&cluster, &real, &sim, options.deadline)?;
    let first_sync = started.elapsed();
    let after_sync: Vec<(u64, u64)> =
        real.iter().map(|r| observe::memory(r.pid).unwrap_or_default()).collect();
    say(&format!("first sync after {:.1} s", first_sync.as_secs_f64()));

    let mut bursts = Vec::new();
    for &n in options.bursts.iter().filter(|n| **n > 0) {
        bursts.push(burst(&cluster, &real, &mut sim, n, options.deadline)?);
        say(&format!("burst of {n} joins measured"));
    }

    let schedule = churn::schedule(&sim.state, &options.rates, options.events, options.seed);
    let before = Snapshot::take(&cluster, &real)?;
    let churn_started = Instant::now();
    let mut expected_changes: Vec<(IpNet, bool, Timestamp)> = Vec::new();
    for (at, event) in &schedule {
        if let Some(wait) = at.checked_sub(churn_started.elapsed()) {
            // The schedule's pace, not a wait for a condition.
            std::thread::sleep(wait);
        }
        apply(&cluster, &mut sim, *event, &mut expected_changes)?;
    }
    let churn_seconds = churn_started.elapsed().as_secs_f64();
    let after = Snapshot::take(&cluster, &real)?;
    say(&format!("{} events applied in {churn_seconds:.1} s; waiting for convergence", schedule.len()));
    let drift = wait_in_step(&cluster, &real, &sim, options.deadline)?;

    let tz = jiff::tz::TimeZone::system();
    let mut agents = Vec::new();
    for (k, node) in real.iter().enumerate() {
        let log = std::fs::read_to_string(&node.monitor_log)?;
        let changes = observe::route_changes(&log, IFNAME, TABLE, &tz);
        let (latencies, unobserved) = latencies(&changes, &expected_changes);
        let events = schedule.len().max(1) as f64;
        let traffic =
            |s: &Snapshot| s.traffic.get(&format!("node:{}", node.name)).copied().unwrap_or_default();
        let (t0, t1) = (traffic(&before), traffic(&after));
        let metric = |s: &Snapshot, name: &str| s.metrics[k].get(name).copied().unwrap_or_default();
        let delta = |name: &str| metric(&after, name) - metric(&before, name);
        let (rss, peak) = observe::memory(node.pid).unwrap_or_default();
        agents.push(AgentFigures {
            node: node.name.clone(),
            peer_source: node.peer_source.clone(),
            latencies_ms: latencies,
            unobserved,
            cpu_ms_per_event: (after.cpu[k] - before.cpu[k]) * 1_000.0 / events,
            requests_per_event: (t1.requests - t0.requests) as f64 / events,
            bytes_per_event: (t1.bytes - t0.bytes) as f64 / events,
            watch_events_per_event: (t1.watch_events - t0.watch_events) as f64 / events,
            passes: delta("meshcrypt_reconcile_total"),
            decide_seconds: delta("meshcrypt_reconcile_phase_seconds_sum{phase=\"decide\"}"),
            gather_seconds: delta("meshcrypt_reconcile_phase_seconds_sum{phase=\"gather\"}"),
            execute_seconds: delta("meshcrypt_reconcile_phase_seconds_sum{phase=\"execute\"}"),
            release_seconds: delta("meshcrypt_reconcile_phase_seconds_sum{phase=\"release\"}"),
            rss_after_sync: after_sync[k].0,
            rss_end: rss,
            rss_peak: peak,
            drift: drift[k].clone(),
        });
    }
    Ok(ScaleReport {
        nodes: options.nodes + joins,
        pods: sims * options.pods_per_node,
        pod_ip,
        first_sync_seconds: first_sync.as_secs_f64(),
        events: schedule.len(),
        churn_seconds,
        expected_changes: expected_changes.len(),
        bursts,
        agents,
    })
}

/// The real nodes and their agents, each with an `unreachable` route for the simulated nodes'
/// addresses and an `ip -ts monitor route` recording its route changes.
fn real_nodes(cluster: &Cluster, sources: &[String]) -> Result<Vec<RealNode>, ClusterError> {
    let mut out = Vec::new();
    for (node, source) in cluster.lab.nodes().iter().zip(sources.iter().cycle()) {
        let pid = cluster.agent(&node.name).ok_or_else(|| ClusterError::NoSuchNode(node.name.clone()))?.pid;
        cluster.lab.exec(&node.namespace, &["ip", "route", "add", "unreachable", sim::SIM_UNDERLAY])?;
        let monitor = cluster.lab.spawn(&node.namespace, &["ip", "-ts", "monitor", "route"])?;
        out.push(RealNode {
            name: node.name.clone(),
            peer_source: source.clone(),
            namespace: node.namespace.clone(),
            pid,
            monitor_log: monitor.log,
        });
    }
    Ok(out)
}

/// Creates simulated node `i` with `key`, and its MeshPeer (offering `pods`) as its agent would.
fn create_node(
    cluster: &Cluster,
    i: usize,
    key: &NodeKeyAnnotations,
    now: Timestamp,
    pods: &[usize],
) -> Result<(), ClusterError> {
    let node = cluster.api().create(sim::node_object(i, key, now))?;
    let uid = node.pointer("/metadata/uid").and_then(serde_json::Value::as_str).unwrap_or_default();
    cluster.api().create(sim::mesh_peer_object(i, key, uid, pods))?;
    Ok(())
}

/// Writes the pod addresses simulated node `i` offers on its MeshPeer, as its agent would after
/// its pods changed.
fn offer_pods(cluster: &Cluster, sim: &Sim, i: usize) -> Result<(), ClusterError> {
    let pods: Vec<usize> = sim.state.nodes.get(&i).into_iter().flatten().copied().collect();
    let patch = json!({"spec": {"podIPs": sim::offered_pod_ips(i, &pods)}});
    cluster.api().merge_patch(
        "meshcrypt.dev/v1alpha1",
        "MeshPeer",
        None,
        &sim::node_name(i),
        &patch,
        false,
    )?;
    Ok(())
}

/// Applies one churn event to the API (and to `sim`), noting the route change it should cause.
fn apply(
    cluster: &Cluster,
    sim: &mut Sim,
    event: Event,
    expected: &mut Vec<(IpNet, bool, Timestamp)>,
) -> Result<(), ClusterError> {
    let api = cluster.api();
    let now = Timestamp::now();
    match event {
        Event::NodeJoin { node } if node >= sim::MAX_SIM_NODES => {
            return Err(ClusterError::Invalid(format!(
                "node {node} joins beyond the address plan's {} simulated nodes",
                sim::MAX_SIM_NODES
            )));
        }
        Event::NodeJoin { node } => {
            let key = sim::key_annotations(1, now);
            create_node(cluster, node, &key, now, &[])?;
            sim.keys.insert(node, key);
            if !sim.pod_ip {
                expected.push((sim::pod_cidr(node), false, now));
            }
        }
        Event::NodeLeave { node } => {
            // Its MeshPeer goes with it (the garbage collector).
            api.delete("v1", "Node", None, &sim::node_name(node))?;
            sim.keys.remove(&node);
            if sim.pod_ip {
                // The pod garbage collector's part: a gone node's Pods go too.
                for pod in sim.state.nodes.get(&node).into_iter().flatten() {
                    api.delete("v1", "Pod", Some("default"), &sim::pod_name(node, *pod))?;
                }
            } else {
                expected.push((sim::pod_cidr(node), true, now));
            }
        }
        Event::KeyRotation { node } => {
            let epoch = sim.keys.get(&node).map_or(1, |k| k.epoch + 1);
            let key = sim::key_annotations(epoch, now);
            let patch = json!({"metadata": {"annotations": key.to_annotations()}});
            api.merge_patch("v1", "Node", None, &sim::node_name(node), &patch, false)?;
            api.merge_patch(
                "meshcrypt.dev/v1alpha1",
                "MeshPeer",
                None,
                &sim::node_name(node),
                &patch,
                false,
            )?;
            sim.keys.insert(node, key);
        }
        Event::Heartbeat { node } => {
            let patch = sim::heartbeat_patch(now);
            api.merge_patch_as("kubelet", "v1", "Node", None, &sim::node_name(node), &patch, true)?;
        }
        Event::PodAdd { node, pod } => {
            api.create(sim::pod_object(node, pod))?;
            expected.push((IpNet::from(IpAddr::V6(sim::pod_ip(node, pod))), false, now));
        }
        Event::PodDelete { node, pod } => {
            api.delete("v1", "Pod", Some("default"), &sim::pod_name(node, pod))?;
            expected.push((IpNet::from(IpAddr::V6(sim::pod_ip(node, pod))), true, now));
        }
    }
    sim.state.apply(event);
    if let Event::PodAdd { node, .. } | Event::PodDelete { node, .. } = event {
        offer_pods(cluster, sim, node)?;
    }
    Ok(())
}

/// `n` nodes joining at once on a quiet mesh: the device and kernel operations and the passes
/// each agent spent on them.
fn burst(
    cluster: &Cluster,
    real: &[RealNode],
    sim: &mut Sim,
    n: usize,
    deadline: Duration,
) -> Result<BurstOps, ClusterError> {
    wait_in_step(cluster, real, sim, deadline)?;
    let before = Snapshot::take(cluster, real)?;
    let mut ignored = Vec::new();
    for _ in 0..n {
        let node = sim.state.next_node;
        apply(cluster, sim, Event::NodeJoin { node }, &mut ignored)?;
        if sim.pod_ip {
            apply(cluster, sim, Event::PodAdd { node, pod: 0 }, &mut ignored)?;
        }
    }
    wait_in_step(cluster, real, sim, deadline)?;
    // The pass that programmed the last change counts its operations after its execute step:
    // wait for that count (every agent added at least `n` peers).
    let after = poll_every(Duration::from_millis(100), deadline, || {
        let after = Snapshot::take(cluster, real).map_err(|e| e.to_string())?;
        let done = (0..real.len()).all(|k| {
            let ops = |s: &Snapshot| {
                s.metrics[k].get("meshcrypt_device_peer_ops_total").copied().unwrap_or_default()
            };
            ops(&after) - ops(&before) >= n as f64
        });
        if done { Ok(after) } else { Err("peer operations not counted yet".into()) }
    })
    .map_err(ClusterError::Timeout)?;
    let mean = |name: &str| {
        (0..real.len())
            .map(|k| {
                let get = |s: &Snapshot| s.metrics[k].get(name).copied().unwrap_or_default();
                get(&after) - get(&before)
            })
            .sum::<f64>()
            / real.len() as f64
    };
    Ok(BurstOps {
        changed: n,
        peer_ops: mean("meshcrypt_device_peer_ops_total"),
        kernel_ops: mean("meshcrypt_kernel_ops_total"),
        passes: mean("meshcrypt_reconcile_total"),
    })
}

/// What the agents and the API server counted at one moment.
struct Snapshot {
    cpu: Vec<f64>,
    metrics: Vec<BTreeMap<String, f64>>,
    traffic: BTreeMap<String, meshcrypt_test_apiserver::Traffic>,
}

impl Snapshot {
    fn take(cluster: &Cluster, real: &[RealNode]) -> Result<Self, ClusterError> {
        let mut cpu = Vec::new();
        let mut metrics = Vec::new();
        for node in real {
            cpu.push(observe::cpu_seconds(node.pid).unwrap_or_default());
            let (status, body) = cluster.http(&node.name, "/metrics")?;
            if status != 200 {
                return Err(ClusterError::Command(format!("{}: /metrics answered {status}", node.name)));
            }
            metrics.push(observe::samples(&body));
        }
        Ok(Self { cpu, metrics, traffic: cluster.api().traffic() })
    }
}

/// Polls (every second: reading 150,000 routes costs something) until every real agent's device
/// and table hold exactly the simulated nodes' peers and prefixes; returns each agent's drift.
fn wait_in_step(
    cluster: &Cluster,
    real: &[RealNode],
    sim: &Sim,
    deadline: Duration,
) -> Result<Vec<Drift>, ClusterError> {
    let expected = sim.expected();
    let family = if sim.pod_ip { "-6" } else { "-4" };
    poll_every(Duration::from_secs(1), deadline, || {
        let mut drifts = Vec::new();
        for node in real {
            let dump = cluster.wg(&node.name, &["show", IFNAME, "dump"]).map_err(|e| e.to_string())?;
            let table = TABLE.to_string();
            let routes = cluster
                .lab
                .exec(&node.namespace, &["ip", family, "route", "show", "table", &table, "dev", IFNAME])
                .map_err(|e| e.to_string())?;
            let drift =
                truth::drift(&expected, &truth::parse_dump(&dump), &truth::parse_routes(&routes), sim.ours());
            if !drift.is_zero() {
                return Err(format!("{}: {drift:?}", node.name));
            }
            drifts.push(drift);
        }
        Ok(drifts)
    })
    .map_err(ClusterError::Timeout)
}

/// Each expected change's latency on one agent (milliseconds from the API write to the kernel's
/// route notification), and how many it never showed (a pod deleted before the pass that would
/// have added it, or a change undone within one pass).
fn latencies(changes: &[RouteChange], expected: &[(IpNet, bool, Timestamp)]) -> (Vec<f64>, usize) {
    let seen: BTreeMap<(IpNet, bool), Timestamp> =
        changes.iter().rev().map(|c| ((c.prefix, c.deleted), c.at)).collect::<BTreeMap<_, _>>();
    let mut out = Vec::new();
    let mut missed = 0;
    for (prefix, deleted, at) in expected {
        match seen.get(&(*prefix, *deleted)) {
            Some(when) if when >= at => out.push(when.duration_since(*at).as_secs_f64() * 1_000.0),
            _ => missed += 1,
        }
    }
    (out, missed)
}
