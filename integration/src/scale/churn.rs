//! The churn a scale run drives: a seeded, reproducible schedule of node joins and leaves, key
//! rotations, kubelet heartbeats and pod creations and deletions, at stated rates with bursts.
//!
//! The default rates (per second, at 5,000 nodes and 150,000 pods) and where they come from:
//!
//! | event | rate | why |
//! |---|---|---|
//! | pod created or deleted (pod-IP mode) | 80 | 150,000 pods living an hour on average: 42 creations and 42 deletions a second; upstream's load test drives 10–20 pods/s, Cilium's 100 |
//! | a rollout burst | 200 pod events at once, every 20 s | a 100-replica Deployment rolled at once (100 deletions, 100 creations) |
//! | kubelet status heartbeat | 16.7 | every Node re-posts its status every 5 min (`nodeStatusReportFrequency`) even unchanged: 5,000 / 300 s |
//! | node joins, node leaves | 1 each | an autoscaler replacing 7% of the nodes an hour, or a scale-out wave |
//! | key rotation | 0.5 | every node's key rotated within 3 h (far above a daily schedule) |
//!
//! Containers come and go about 250 times as often as VMs (ten per host living under a day,
//! against a VM's 23 days): the pod rate dominates, and it is what pod-IP mode must carry.

use std::collections::BTreeMap;
use std::time::Duration;

/// One change to the simulated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A simulated node joins with a fresh key (and no pods yet).
    NodeJoin {
        /// The node's index.
        node: usize,
    },
    /// A simulated node leaves (its Node object is deleted).
    NodeLeave {
        /// The node's index.
        node: usize,
    },
    /// A simulated node publishes a new key (epoch up by one).
    KeyRotation {
        /// The node's index.
        node: usize,
    },
    /// A simulated node's kubelet re-posts an unchanged status.
    Heartbeat {
        /// The node's index.
        node: usize,
    },
    /// A pod of a simulated node is created, running, with its address.
    PodAdd {
        /// The node's index.
        node: usize,
        /// The pod's index on the node.
        pod: usize,
    },
    /// A pod of a simulated node is deleted.
    PodDelete {
        /// The node's index.
        node: usize,
        /// The pod's index on the node.
        pod: usize,
    },
}

/// The rates of a schedule, per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Pod creations plus deletions (0 in podCIDR mode).
    pub pods: f64,
    /// Kubelet heartbeats.
    pub heartbeats: f64,
    /// Node joins (and as many leaves).
    pub node_joins: f64,
    /// Key rotations.
    pub rotations: f64,
    /// Pod events in one burst (0: none).
    pub burst: usize,
    /// Seconds between bursts.
    pub burst_every: u64,
}

impl Rates {
    /// The defaults of the table above; no pod events unless `pod_ip`.
    pub fn defaults(nodes: usize, pod_ip: bool) -> Self {
        Self {
            pods: if pod_ip { 80.0 } else { 0.0 },
            heartbeats: nodes as f64 / 300.0,
            node_joins: 1.0,
            rotations: 0.5,
            burst: if pod_ip { 200 } else { 0 },
            burst_every: 20,
        }
    }
}

/// The simulated cluster as the schedule leaves it: which simulated nodes exist and their pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimState {
    /// Live simulated nodes and their pods' indices.
    pub nodes: BTreeMap<usize, std::collections::BTreeSet<usize>>,
    /// The next index a joining node gets.
    pub next_node: usize,
    /// The next index a node's new pod gets, per node.
    pub next_pod: BTreeMap<usize, usize>,
}

impl SimState {
    /// `nodes` simulated nodes with `pods` pods each.
    pub fn new(nodes: usize, pods: usize) -> Self {
        Self {
            nodes: (0..nodes).map(|i| (i, (0..pods).collect())).collect(),
            next_node: nodes,
            next_pod: (0..nodes).map(|i| (i, pods)).collect(),
        }
    }

    /// Applies `event` (the schedule's own bookkeeping).
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::NodeJoin { node } => {
                self.nodes.insert(node, Default::default());
                self.next_node = self.next_node.max(node + 1);
            }
            Event::NodeLeave { node } => {
                self.nodes.remove(&node);
            }
            Event::PodAdd { node, pod } => {
                self.nodes.entry(node).or_default().insert(pod);
                let next = self.next_pod.entry(node).or_default();
                *next = (*next).max(pod + 1);
            }
            Event::PodDelete { node, pod } => {
                if let Some(pods) = self.nodes.get_mut(&node) {
                    pods.remove(&pod);
                }
            }
            Event::KeyRotation { .. } | Event::Heartbeat { .. } => {}
        }
    }
}

/// splitmix64: a small, seeded, reproducible generator (the lab's VPC-CNI pool uses the same).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `count` events from `state` at `rates`, each with its offset from the start, in time order.
/// Every kind arrives as a Poisson process at its rate; a burst's pod events all come at once.
/// Pods are added to and deleted from random live nodes, so the pod count stays about level;
/// leaving nodes are picked at random among the live ones. Pure: the same inputs give the same
/// schedule.
pub fn schedule(state: &SimState, rates: &Rates, count: usize, seed: u64) -> Vec<(Duration, Event)> {
    let mut state = state.clone();
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(count);
    let total = rates.pods + rates.heartbeats + 2.0 * rates.node_joins + rates.rotations;
    let mut now = 0.0_f64;
    let mut next_burst = rates.burst_every as f64;
    while out.len() < count && total > 0.0 {
        now += -(1.0 - rng.unit()).ln() / total;
        if now >= next_burst && rates.burst > 0 {
            for _ in 0..rates.burst {
                if let Some(event) = pod_event(&mut state, &mut rng) {
                    out.push((Duration::from_secs_f64(now), event));
                }
            }
            next_burst += rates.burst_every as f64;
        }
        let pick = rng.unit() * total;
        let weights = [
            (rates.pods, Kind::Pod),
            (rates.heartbeats, Kind::Heartbeat),
            (rates.node_joins, Kind::Join),
            (rates.node_joins, Kind::Leave),
            (rates.rotations, Kind::Rotation),
        ];
        let mut upto = 0.0;
        let kind = weights
            .iter()
            .find_map(|(rate, kind)| {
                upto += rate;
                (pick < upto).then_some(*kind)
            })
            .unwrap_or(Kind::Rotation);
        let live: Vec<usize> = state.nodes.keys().copied().collect();
        let event = match kind {
            Kind::Pod => pod_event(&mut state, &mut rng),
            Kind::Join => Some(Event::NodeJoin { node: state.next_node }),
            _ if live.is_empty() => None,
            Kind::Heartbeat => Some(Event::Heartbeat { node: live[rng.below(live.len())] }),
            Kind::Leave => Some(Event::NodeLeave { node: live[rng.below(live.len())] }),
            Kind::Rotation => Some(Event::KeyRotation { node: live[rng.below(live.len())] }),
        };
        if let Some(event) = event {
            state.apply(event);
            out.push((Duration::from_secs_f64(now), event));
        }
    }
    // Generated in time order already (a burst at the time it falls due): the order applied is
    // the order emitted.
    out.truncate(count);
    out
}

/// The kinds of event a schedule draws from.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Pod,
    Heartbeat,
    Join,
    Leave,
    Rotation,
}

/// A pod creation or deletion, even odds, on a random live node (applied to `state`).
fn pod_event(state: &mut SimState, rng: &mut Rng) -> Option<Event> {
    let live: Vec<usize> = state.nodes.keys().copied().collect();
    let node = *live.get(rng.below(live.len().max(1)))?;
    let pods = &state.nodes[&node];
    let event = if rng.below(2) == 0 || pods.is_empty() {
        Event::PodAdd { node, pod: state.next_pod.get(&node).copied().unwrap_or_default() }
    } else {
        let pick = rng.below(pods.len());
        Event::PodDelete { node, pod: *pods.iter().nth(pick)? }
    };
    state.apply(event);
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(events: &[(Duration, Event)], f: impl Fn(&Event) -> bool) -> usize {
        events.iter().filter(|(_, e)| f(e)).count()
    }

    #[test]
    fn schedules_keep_their_rates_and_are_reproducible() {
        let state = SimState::new(100, 30);
        let rates = Rates::defaults(5_000, true);
        let events = schedule(&state, &rates, 10_000, 7);
        assert_eq!(events, schedule(&state, &rates, 10_000, 7));
        assert_ne!(events, schedule(&state, &rates, 10_000, 8));
        assert_eq!(events.len(), 10_000);
        assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
        let seconds = events.last().unwrap().0.as_secs_f64();
        // 80 pod events, 10 of bursts, 16.7 heartbeats, 2 node events, 0.5 rotations: ≈ 109/s.
        let rate = events.len() as f64 / seconds;
        assert!((95.0..125.0).contains(&rate), "{rate}/s");
        let pods = count(&events, |e| matches!(e, Event::PodAdd { .. } | Event::PodDelete { .. }));
        let beats = count(&events, |e| matches!(e, Event::Heartbeat { .. }));
        let joins = count(&events, |e| matches!(e, Event::NodeJoin { .. }));
        assert!(pods > 7 * beats / 2, "{pods} pod events, {beats} heartbeats");
        assert!(joins > 0 && beats > 10 * joins, "{joins} joins, {beats} heartbeats");
    }

    #[test]
    fn every_event_is_about_a_live_node_and_deletions_name_live_pods() {
        let mut state = SimState::new(20, 3);
        let rates =
            Rates { pods: 50.0, heartbeats: 5.0, node_joins: 3.0, rotations: 1.0, burst: 40, burst_every: 5 };
        for (_, event) in schedule(&state, &rates, 3_000, 1) {
            match event {
                Event::NodeJoin { node } => assert!(!state.nodes.contains_key(&node)),
                Event::PodDelete { node, pod } => assert!(state.nodes[&node].contains(&pod), "{event:?}"),
                Event::PodAdd { node, pod } => assert!(!state.nodes[&node].contains(&pod), "{event:?}"),
                Event::NodeLeave { node } | Event::KeyRotation { node } | Event::Heartbeat { node } => {
                    assert!(state.nodes.contains_key(&node), "{event:?}")
                }
            }
            state.apply(event);
        }
    }

    #[test]
    fn pod_cidr_mode_has_no_pod_events() {
        let events = schedule(&SimState::new(50, 0), &Rates::defaults(5_000, false), 500, 3);
        assert_eq!(count(&events, |e| matches!(e, Event::PodAdd { .. } | Event::PodDelete { .. })), 0);
    }
}
