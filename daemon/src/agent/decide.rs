//! The decisions of one pass, pure: from what was gathered ([`Inputs`]) and what the loop
//! remembers ([`LoopState`]) to a [`PassPlan`]: the settings in force, what to publish, the
//! device and kernel changes, the Events, the metrics and readiness. No IO and no clock: time is
//! [`Inputs::now`]. [`super::execute`] carries a plan out.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use meshcrypt_dataplane::{BackendKind, DeviceState, PresharedKey, PublicKey};
use meshcrypt_keyexchange::mesh::{
    LocalNode, MeshConfig, NodeProblem, NodeView, PeerIndex, PeerSet, PodView, Problem, RemoteView,
    add_remote_peers, desired_peers,
};
use meshcrypt_keyexchange::{NodeKeyAnnotations, rotation};
use meshcrypt_routing::mtu::tunnel_mtu;
use meshcrypt_routing::plan::plan as plan_kernel;
use meshcrypt_routing::{DesiredState, HostRoute, LinkSpec, ObservedLink, ObservedState, Op};

use super::config_source::Reading;
use super::device_view::unanswered;
use super::last_known::{self, LastKnown, Snapshot, journal};
use super::peer_ops::{PeerOp, handshake_targets_after_key_change, peer_ops};
use super::preshared;
use super::routing_input::{RoutingSettings, routing_input, wired_local_pods};
use super::state::LoopState;
use crate::config::settings::{Addressing, Backend, KeyError, Mtu, Settings};

/// What does not change while the agent runs: its node and the kernel objects it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// This node's name.
    pub node: String,
    /// The WireGuard interface.
    pub ifname: String,
    /// meshcrypt's routing table.
    pub table: u32,
    /// meshcrypt's rule priority.
    pub rule_priority: u32,
    /// The firewall mark on the device's UDP packets.
    pub fwmark: u32,
    /// The watched ConfigMap as (namespace, name), for Events.
    pub config_map: Option<(String, String)>,
    /// How long a peer may be configured without ever completing a handshake before that is
    /// reported (`--no-handshake-after`).
    pub no_handshake_after: jiff::SignedDuration,
}

/// Where a pass's peers come from.
#[derive(Debug, Clone)]
pub enum View {
    /// The API server's complete Node list and, in pod-IP mode, every Pod with a pod address.
    Complete {
        /// Every Node (the views are shared with the Node store's cache).
        nodes: Vec<Arc<NodeView>>,
        /// Every Pod holding pod-network addresses (empty in podCIDR mode; the views are shared
        /// with the Pod store's objects).
        pods: Vec<Arc<PodView>>,
        /// Every peer cluster's nodes.
        remotes: Vec<RemoteView>,
    },
    /// Only this node's own Node, before the complete list (bootstrap): the device and the
    /// fail-closed floor, no peers; readiness is not claimed.
    LocalOnly(NodeView),
    /// The last known peer set, before the API server answered (restore): its settings and peers,
    /// nothing published; readiness stays false with the reason.
    LastKnown {
        /// The saved snapshot.
        last: LastKnown,
        /// Its peers, checked.
        peers: PeerSet,
    },
}

/// The node key files, as their public annotations (the private halves stay on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// The key file (`None`: it vanished).
    pub current: Option<NodeKeyAnnotations>,
    /// A staged rotation (`meshcrypt keys rotate`, or a scheduled one not yet published).
    pub pending: Option<NodeKeyAnnotations>,
}

/// Everything a pass reads, gathered before any decision.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The time of the pass.
    pub now: jiff::Timestamp,
    /// The ConfigMap as read now (with the flags under it).
    pub reading: Reading,
    /// The peers' source.
    pub view: View,
    /// The key files.
    pub key_files: KeyFiles,
    /// The device the agent holds, as it reports itself; `None` without one.
    pub device: Option<DeviceState>,
    /// This node's kernel has WireGuard (`dataplane::Kernel::available`, read at start).
    pub kernel_wireguard: bool,
    /// The kernel: the link with the device's name (whatever it is), meshcrypt's table and rules.
    pub kernel: ObservedState,
    /// The MTU of the interface holding this node's underlay address, if found.
    pub underlay_mtu: Option<u32>,
    /// The index of that interface, if found.
    pub underlay_index: Option<u32>,
    /// The main table's host routes (pod-IP mode: what the CNI wired here), else empty.
    pub host_routes: Vec<HostRoute>,
    /// The peer clusters' pre-shared key files.
    pub preshared_keys: preshared::Reading,
    /// Each peer's latest handshake seen, kept after its session expires (peers that never
    /// completed one are absent).
    pub handshakes: BTreeMap<PublicKey, std::time::SystemTime>,
}

/// Why a pass cannot complete. What the plan still holds (the fail-closed floor, at least where
/// the kernel is known) is applied first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// No valid settings yet (the first ConfigMap read was rejected).
    NoSettings,
    /// The local Node is not in the list.
    LocalNodeMissing,
    /// The local Node has no InternalIP.
    NoInternalIp,
    /// No interface holds the node's InternalIP, so the MTU cannot be derived.
    UnderlayUnknown(IpAddr),
    /// The underlay's MTU leaves no room for a tunnel.
    UnderlayTooSmall(u32),
    /// A link with the device's name exists and is not a TUN (its kind).
    ForeignLink(String),
    /// The device's interface was deleted from outside; a new device is created next pass.
    DeviceGone,
    /// The node key file is missing.
    KeyFileMissing,
}

/// What happens to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStep {
    /// Keep the one held (or stay without one).
    Keep,
    /// Create one of this backend listening on this port (a kernel device left by a previous
    /// run is adopted with its peers and sessions); the pass then runs again to program it.
    Create {
        /// The UDP port.
        port: u16,
        /// The implementation.
        backend: BackendKind,
    },
    /// Remove the one held (switched off, its interface is gone, or the backend changed).
    Discard,
}

/// What happens to the node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStep {
    /// The key in use stays.
    Keep,
    /// Switch to the staged key (staging one first if `stage`: a scheduled rotation is due),
    /// publishing it first unless `publish_first` is false (it is already on the Node).
    Rotate {
        /// Generate and stage a new key first.
        stage: bool,
        /// Publish the staged key before switching.
        publish_first: bool,
    },
    /// The key file changed under the agent (restored from a backup): switch to it.
    Follow,
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// On this Node (or, for `<cluster>/<node>`, on that peer cluster's RemoteCluster), or
    /// (`None`) on the watched ConfigMap.
    pub node: Option<String>,
    /// Warning (else Normal).
    pub warning: bool,
    /// The reason (`ConfigApplied`, `KeyMissing`, ...).
    pub reason: String,
    /// The note.
    pub note: String,
}

/// Readiness after the pass, if its execution succeeds (a failed one is never ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Not touched (bootstrap).
    Unchanged,
    /// Ready, with the reason `/readyz` gives.
    Ready(String),
    /// Not ready, with the reason.
    NotReady(String),
}

/// The kernel changes and the link they go through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelPlan {
    /// The device's interface index, when a device is in use; `None`: the floor and rules only.
    pub link: Option<u32>,
    /// The operations, in the planner's make-before-break order.
    pub ops: Vec<Op>,
}

/// A save of the last known peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Save {
    /// What is saved (the loop remembers it once written).
    pub snapshot: Arc<LastKnown>,
    /// How the file is written: the change appended, or the snapshot whole.
    pub write: journal::Write,
    /// Where the file's journal ends once it is written.
    pub end: journal::End,
}

/// Everything one pass does, decided up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassPlan {
    /// The settings in force after the pass (`None`: none valid yet).
    pub settings: Option<Settings>,
    /// The settings changed (the log filter follows; the change is logged).
    pub settings_changed: bool,
    /// The rejection in force (reported once).
    pub rejected: Option<Vec<KeyError>>,
    /// The pass cannot complete, and why.
    pub blocked: Option<Blocked>,
    /// The device.
    pub device: DeviceStep,
    /// Move the device to this port.
    pub move_port: Option<u16>,
    /// The node key.
    pub key: KeyStep,
    /// The key annotations the Node carries, as parsed (`None`: no key published).
    pub published: Option<NodeKeyAnnotations>,
    /// Publish the key in use after step 5 (it is not the published one, or the device follows a
    /// changed key file); skipped when a rotation switched keys (its key was published first).
    pub publish: bool,
    /// Withdraw the published key (switched off).
    pub withdraw: bool,
    /// The device's peer changes, removals first.
    pub peer_ops: Vec<PeerOp>,
    /// Peers to start a handshake with if this node's key switches in this pass
    /// ([`handshake_targets_after_key_change`]: those that may hold a session under the old key).
    pub handshakes_after_switch: Vec<PublicKey>,
    /// The kernel.
    pub kernel: KernelPlan,
    /// The last known peer set to save, and how.
    pub save: Option<Save>,
    /// Remove the saved last known peer set (switched off).
    pub forget: bool,
    /// Problems newly found (each logged and reported once).
    pub new_problems: Vec<NodeProblem>,
    /// Every problem now, as reported (the loop remembers it).
    pub problems: BTreeSet<(String, &'static str, String)>,
    /// `meshcrypt_node_problems` by reason (`None`: no peer set was computed; left as is).
    pub problem_counts: Option<BTreeMap<&'static str, i64>>,
    /// Peer key → node name, for metric labels, when it changed ([`peer_names`]; `None`: left as
    /// it is).
    pub peer_names: Option<Arc<BTreeMap<PublicKey, String>>>,
    /// The Events to publish at the end of the pass.
    pub events: Vec<PlannedEvent>,
    /// Readiness if the execution succeeds.
    pub readiness: Readiness,
    /// Remove the startup taint once the pass succeeds (the mesh is in place, or switched off).
    pub untaint: bool,
    /// The number of configured peers after the pass.
    pub peers: usize,
    /// The peer clusters' pre-shared keys in force after the pass (`None`: left as they are).
    pub preshared_keys: Option<BTreeMap<String, PresharedKey>>,
    /// The device's count of handshake initiations from unknown keys, to remember.
    pub unknown_handshakes: u64,
    /// In pod-IP mode, the addresses of this node's Pods, which its MeshPeer offers (from the
    /// view's Pods; empty otherwise).
    pub own_pod_ips: Vec<IpAddr>,
    /// The device's count of packets with a bad inner source, to remember.
    pub bad_sources: u64,
    /// The device's no-peer drop count, as of this pass.
    pub no_peer_drops: u64,
    /// When the device was first seen sending to each peer that has not answered yet
    /// ([`unanswered`]), to remember.
    pub tried_since: Option<BTreeMap<PublicKey, jiff::Timestamp>>,
    /// The peers without a handshake long after the device started sending to them, to remember.
    pub silent_peers: Option<BTreeSet<PublicKey>>,
}

impl PassPlan {
    fn new(state: &LoopState) -> Self {
        Self {
            settings: state.settings.clone(),
            settings_changed: false,
            rejected: state.rejected.clone(),
            blocked: None,
            device: DeviceStep::Keep,
            move_port: None,
            key: KeyStep::Keep,
            published: None,
            publish: false,
            withdraw: false,
            peer_ops: Vec::new(),
            handshakes_after_switch: Vec::new(),
            kernel: KernelPlan::default(),
            save: None,
            forget: false,
            new_problems: Vec::new(),
            problems: state.reported.clone(),
            problem_counts: None,
            peer_names: None,
            events: Vec::new(),
            readiness: Readiness::Unchanged,
            untaint: false,
            peers: 0,
            preshared_keys: None,
            unknown_handshakes: state.unknown_handshakes,
            own_pod_ips: Vec::new(),
            bad_sources: state.bad_sources,
            no_peer_drops: state.no_peer_drops,
            tried_since: None,
            silent_peers: None,
        }
    }

    fn blocked(mut self, why: Blocked) -> Self {
        self.blocked = Some(why);
        self
    }
}

/// How long a new Node may go without a published key before that is reported (a log line and a
/// `NoKey` Event; the metric counts it at once): its agent starts with it, and publishes within
/// seconds once its image is pulled.
pub const KEY_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(5 * 60);

/// Decides one pass. See the module doc; the order [`super::execute`] applies a plan in is
/// documented there.
///
/// `index` holds the peer set between passes: it gives what [`desired_peers`] would give for the
/// pass's view, judging again only the nodes that changed (see [`PeerIndex`]), so the plan is the
/// same function of `state` and `inputs` whatever the index held before.
pub fn decide(params: &Params, state: &LoopState, inputs: &Inputs, index: &mut PeerIndex) -> PassPlan {
    let mut plan = PassPlan::new(state);
    // What the pass needs of every Node, in one walk ([`survey`]); the ConfigMap's Events come
    // from one agent (every agent reads the same ConfigMap), and only once it knows the other
    // nodes.
    let Survey { node_ips, local, first_agent: reporter } = match &inputs.view {
        View::Complete { nodes, .. } => survey(nodes, &params.node),
        View::LocalOnly(local) => {
            Survey { node_ips: sorted_ips([local]), local: Some(local), first_agent: false }
        }
        View::LastKnown { last, .. } => {
            Survey { node_ips: last.node_ips.clone(), local: None, first_agent: false }
        }
    };
    device_signals(params, state, inputs, &node_ips, &mut plan);
    silent_peers(params, state, inputs, &mut plan);
    let settings = match &inputs.view {
        View::LastKnown { last, .. } => restored_settings(last, inputs.kernel.link.as_ref()),
        _ => {
            let underlay_ip = local.and_then(|l| l.internal_ips.first());
            let underlay = (underlay_ip, inputs.underlay_mtu);
            decide_settings(
                params,
                state,
                &inputs.reading,
                underlay,
                inputs.kernel_wireguard,
                reporter,
                &mut plan,
            );
            match plan.settings.clone() {
                Some(settings) => settings,
                None => return plan.blocked(Blocked::NoSettings),
            }
        }
    };
    let published = local.and_then(|l| l.published_key().cloned());
    if !settings.enabled {
        return switched_off(params, inputs, settings.port, published, plan);
    }

    // The peer clusters' pre-shared keys (the files are local: a restored snapshot gets them
    // too); a cluster refused for a bad first file has no peers.
    let chosen = preshared::choose(&inputs.preshared_keys, &state.preshared_keys);
    let refused = |id: &String| preshared::cluster_of(id).is_some_and(|c| chosen.refused.contains(c));

    // The peers, this node's underlay address (not needed for a restored snapshot: its MTU is
    // fixed) and the tunnel MTU.
    let (peers, underlay_ip) = match &inputs.view {
        View::LastKnown { peers, .. } => {
            let mut peers = peers.clone();
            peers.peers.retain(|id, _| !refused(id));
            (Cow::Owned(peers), None)
        }
        view => {
            let Some(local) = local else { return plan.blocked(Blocked::LocalNodeMissing) };
            let Some(ip) = local.internal_ips.first().copied() else {
                return plan.blocked(Blocked::NoInternalIp);
            };
            let local_node =
                LocalNode { name: params.node.clone(), public_key: state.key.public_key, underlay_ip: ip };
            let config =
                MeshConfig { port: settings.port, allowed_ips: settings.addressing.allowed_ips_from() };
            // The index answers for the complete view, judging again only what changed since the
            // last pass; the bootstrap's view of one Node is judged whole. The index's set is
            // borrowed, and copied only when this pass adds to it.
            let mut peers: Cow<'_, PeerSet> = match view {
                View::Complete { nodes, pods, .. } => {
                    plan.own_pod_ips = pods
                        .iter()
                        .filter(|p| p.node == params.node)
                        .flat_map(|p| p.ips.iter().copied())
                        .collect();
                    Cow::Borrowed(index.desired_peers(nodes, pods, &local_node, &config))
                }
                _ => Cow::Owned(desired_peers(&[local], &[], &local_node, &config)),
            };
            // The Nodes listed, for the two uses that need them all (peer clusters, new nodes).
            let listed = || -> Vec<&NodeView> {
                match view {
                    View::Complete { nodes, .. } => nodes.iter().map(|n| &**n).collect(),
                    _ => vec![local],
                }
            };
            if let View::Complete { remotes, .. } = view
                && !remotes.is_empty()
            {
                let local_keys =
                    listed().iter().filter_map(|n| n.published_key()).map(|k| k.public_key).collect();
                add_remote_peers(peers.to_mut(), remotes, &local_node, &local_keys);
            }
            if !chosen.refused.is_empty() && peers.peers.keys().any(&refused) {
                peers.to_mut().peers.retain(|id, _| !refused(id));
            }
            if !chosen.problems.is_empty() {
                peers.to_mut().problems.extend(chosen.problems.iter().cloned());
            }
            // Who else wrote this node's meshcrypt.dev/ annotations: only this agent sees it (the
            // others may see the Node only after this agent has published its key again).
            if let Some(problem) = local.foreign_writers() {
                peers.to_mut().problems.push(NodeProblem { node: params.node.clone(), problem });
            }
            // A new node whose agent may still be starting is counted, not yet reported (a set:
            // thousands of new keyless nodes must not cost problems × nodes; and made only when
            // some node has no key, which in steady state none lacks).
            let young_since = inputs.now - KEY_GRACE;
            let young: HashSet<&str> = match peers.problems.iter().any(|p| p.problem == Problem::NoKey) {
                true => listed()
                    .into_iter()
                    .filter(|n| n.created.is_some_and(|c| c > young_since))
                    .map(|n| n.name.as_str())
                    .collect(),
                false => HashSet::default(),
            };
            let starting = |p: &NodeProblem| p.problem == Problem::NoKey && young.contains(p.node.as_str());
            report_problems(&params.node, state, &peers, &starting, &mut plan);
            if settings.addressing == Addressing::PodIp {
                // Pods the CNI wired here that the API has not shown yet are delivered locally too.
                let not_local: Vec<u32> = inputs
                    .underlay_index
                    .into_iter()
                    .chain(inputs.device.as_ref().map(|d| d.ifindex))
                    .collect();
                let wired = wired_local_pods(
                    &inputs.host_routes,
                    &settings.pod_networks,
                    &peers.local_prefixes,
                    &not_local,
                );
                if !wired.is_empty() {
                    let local_prefixes = &mut peers.to_mut().local_prefixes;
                    local_prefixes.extend(wired);
                    local_prefixes.sort();
                }
            }
            (peers, Some(ip))
        }
    };
    let mtu = match (settings.mtu, underlay_ip) {
        (Mtu::Fixed(mtu), _) => mtu,
        (Mtu::Auto, None) => return plan.blocked(Blocked::NoInternalIp),
        (Mtu::Auto, Some(ip)) => {
            let Some(underlay) = inputs.underlay_mtu else {
                return plan.blocked(Blocked::UnderlayUnknown(ip));
            };
            match tunnel_mtu(underlay, ip.is_ipv6()) {
                Some(mtu) => mtu,
                None => return plan.blocked(Blocked::UnderlayTooSmall(underlay)),
            }
        }
    };

    // The kernel: routed through the device held if its interface is still the one the kernel
    // has; the floor and rules alone otherwise.
    let held = inputs.device.as_ref();
    let link = inputs.kernel.link.as_ref();
    let mut observed = inputs.kernel.clone();
    observed.link = link.filter(|l| held.is_some_and(|d| d.ifindex == l.index)).cloned();
    let mesh = Snapshot {
        node: &params.node,
        port: settings.port,
        mtu,
        strict: settings.strict,
        host_encryption: settings.host_encryption,
        pod_networks: &settings.pod_networks,
        node_ips: &node_ips,
    };
    let desired = meshcrypt_routing::desired::build(&routing_input(
        &routing_settings(params, &settings),
        mtu,
        &node_ips,
        &peers,
    ));
    plan.kernel =
        KernelPlan { link: observed.link.as_ref().map(|l| l.index), ops: plan_kernel(&desired, &observed) };
    plan.peer_names = peer_names(&state.peer_names, &peers);

    let backend = resolve_backend(settings.backend, inputs.kernel_wireguard, settings.flows.enabled);
    let Some(device) = held else {
        // A TUN of this name is a userspace device's to open. A wireguard link is the kernel
        // device a previous run left: it is adopted whatever backend is wanted, and then held
        // like any device (replaced next pass if the userspace backend is wanted). Anything
        // else is not meshcrypt's.
        let backend = if left_kernel_device(link) { BackendKind::Kernel } else { backend };
        let ours = match backend {
            BackendKind::Userspace => "tun",
            BackendKind::Kernel => "wireguard",
        };
        if let Some(link) = link.filter(|l| l.kind.as_deref() != Some(ours)) {
            return plan.blocked(Blocked::ForeignLink(link.kind.clone().unwrap_or_else(|| "unknown".into())));
        }
        if inputs.key_files.current.is_none() {
            return plan.blocked(Blocked::KeyFileMissing);
        }
        plan.device = DeviceStep::Create { port: settings.port, backend };
        return plan;
    };
    if observed.link.is_none() {
        plan.device = DeviceStep::Discard;
        return plan.blocked(Blocked::DeviceGone);
    }
    if device.backend != backend {
        // The floor holds while the one goes and the other comes (next pass).
        plan.device = DeviceStep::Discard;
        return plan;
    }
    if device.listen_port != settings.port {
        plan.move_port = Some(settings.port);
    }

    // The key: publish before use.
    if !matches!(inputs.view, View::LastKnown { .. }) {
        let Some(stored) = &inputs.key_files.current else { return plan.blocked(Blocked::KeyFileMissing) };
        let due = rotation::due(state.key.created, settings.key_rotation_interval, inputs.now);
        plan.key = match &inputs.key_files.pending {
            Some(pending) => {
                KeyStep::Rotate { stage: false, publish_first: published.as_ref() != Some(pending) }
            }
            None if due => KeyStep::Rotate { stage: true, publish_first: true },
            None if *stored != state.key => KeyStep::Follow,
            None => KeyStep::Keep,
        };
        plan.publish = published.as_ref() != Some(&state.key) || plan.key == KeyStep::Follow;
        plan.published = published;
    }

    plan.peer_ops = peer_ops(&peers, &preshared::by_peer(&peers, &chosen.keys), device);
    plan.preshared_keys = Some(chosen.keys);
    let now = std::time::SystemTime::from(inputs.now);
    plan.handshakes_after_switch = handshake_targets_after_key_change(&peers, &inputs.handshakes, now);
    plan.peers = peers.peers.len();
    match &inputs.view {
        View::Complete { .. } => {
            plan.save =
                last_known::save_due(state.last_known.as_deref(), mesh, &peers, inputs.now).then(|| {
                    let snapshot = LastKnown::of(mesh, &peers, inputs.now);
                    let last = state.last_known.as_deref().zip(state.last_known_end.as_ref());
                    let (write, end) = journal::write_for(last, &snapshot);
                    Save { snapshot: Arc::new(snapshot), write, end }
                });
            plan.readiness = Readiness::Ready(format!("mesh programmed: {} peers configured", plan.peers));
            plan.untaint = true;
        }
        View::LocalOnly(_) => {}
        View::LastKnown { last, .. } => {
            plan.readiness = Readiness::NotReady(format!(
                "carrying traffic from the last known peer set (saved {}); waiting for the API server",
                last.saved
            ));
        }
    }
    plan
}

/// Peer key → node name for `peers`, if that is not what `before` says (`None`: unchanged). The
/// check walks the peers without allocating; the map is built only when a peer's key or name
/// changed, or a peer came or went.
fn peer_names(
    before: &BTreeMap<PublicKey, String>,
    peers: &PeerSet,
) -> Option<Arc<BTreeMap<PublicKey, String>>> {
    let unchanged = before.len() == peers.peers.len()
        && peers.peers.values().all(|p| before.get(&p.public_key).is_some_and(|name| *name == p.node));
    (!unchanged).then(|| Arc::new(peers.peers.values().map(|p| (p.public_key, p.node.clone())).collect()))
}

/// The settings a restored snapshot ran with. Its backend is the one on the node: a `wireguard`
/// link of meshcrypt's name is the kernel device a previous run left, kept (a switch would drop
/// the path the restart is meant to keep); without one, the userspace device, which died with
/// the previous run anyway.
fn restored_settings(last: &LastKnown, link: Option<&ObservedLink>) -> Settings {
    let kernel = left_kernel_device(link);
    Settings {
        backend: if kernel { Backend::Kernel } else { Backend::Userspace },
        port: last.port,
        mtu: Mtu::Fixed(last.mtu),
        strict: last.strict,
        host_encryption: last.host_encryption,
        pod_networks: last.pod_networks.clone(),
        ..Settings::default()
    }
}

/// The settings in force: the reading if valid and fit for this node's underlay (a change is
/// reported), else the last good ones (a new rejection is reported once).
///
/// A change or a rejection of the ConfigMap is raised as an Event by the `reporter` only (the
/// first agent, see [`Survey::first_agent`]); a value that does not fit this node (its underlay's
/// MTU, or `backend: kernel` where its kernel has no WireGuard) by this node's agent.
fn decide_settings(
    params: &Params,
    state: &LoopState,
    reading: &Reading,
    (underlay_ip, underlay_mtu): (Option<&IpAddr>, Option<u32>),
    kernel_wireguard: bool,
    reporter: bool,
    plan: &mut PassPlan,
) {
    let misfit = match (reading, underlay_ip, underlay_mtu) {
        (Reading::Valid(s), Some(ip), Some(mtu)) => s.check_underlay(mtu, ip.is_ipv6()).err(),
        _ => None,
    }
    .or_else(|| match reading {
        Reading::Valid(s) => s.check_kernel(kernel_wireguard).err(),
        _ => None,
    });
    let raise = params.config_map.is_some() && (reporter || misfit.is_some());
    let config_event = |warning: bool, reason: &str, note: String| PlannedEvent {
        node: None,
        warning,
        reason: reason.to_owned(),
        note,
    };
    match (reading, misfit) {
        (Reading::Valid(settings), None) => {
            plan.rejected = None;
            if state.settings.as_ref() != Some(settings) {
                if let Some(before) = &state.settings
                    && raise
                {
                    let note = format!("configuration applied: {}", settings.changes_from(before).join(", "));
                    plan.events.push(config_event(false, "ConfigApplied", note));
                }
                plan.settings_changed = true;
                plan.settings = Some(settings.clone());
            }
        }
        (reading, misfit) => {
            let errors = match (reading, misfit) {
                (Reading::Rejected(errors), _) => errors.clone(),
                (_, misfit) => misfit.into_iter().collect(),
            };
            if state.rejected.as_ref() != Some(&errors) {
                if raise {
                    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    let note = format!("rejected, last good configuration kept: {}", listed.join("; "));
                    plan.events.push(config_event(true, "ConfigRejected", note));
                }
                plan.rejected = Some(errors);
            }
        }
    }
}

/// Problems new since the last report are logged and become Warning Events, each raised by one
/// agent ([`raises_event`]); those `waiting` (a new node's missing key, see [`KEY_GRACE`]) are
/// reported only once they stop waiting. The metrics count all of them.
fn report_problems(
    local: &str,
    state: &LoopState,
    peers: &PeerSet,
    waiting: &dyn Fn(&NodeProblem) -> bool,
    plan: &mut PassPlan,
) {
    let ready: Vec<&NodeProblem> = peers.problems.iter().filter(|p| !waiting(p)).collect();
    let current: BTreeSet<(String, &'static str, String)> = ready.iter().map(|p| problem_key(p)).collect();
    plan.new_problems =
        ready.into_iter().filter(|p| !state.reported.contains(&problem_key(p))).cloned().collect();
    // This cluster's peers (a peer cluster's are keyed `<cluster>/<node>`).
    let is_peer = |node: &str| peers.peers.contains_key(node) && !node.contains('/');
    // The agents that can raise Events, in name order: this cluster's peers and this one.
    // The reporter for a node leaves the node itself out (it cannot see itself as the others do).
    let agents = || peers.peers.keys().map(String::as_str).filter(|n| is_peer(n));
    let reporter_for = |node: &str| reports_first(agents(), local, node);
    for p in
        plan.new_problems.iter().filter(|p| raises_event(p, local, reporter_for(&p.node), is_peer(&p.node)))
    {
        plan.events.push(PlannedEvent {
            node: Some(p.node.clone()),
            warning: true,
            reason: p.problem.reason().to_owned(),
            note: p.problem.to_string(),
        });
    }
    let mut counts = BTreeMap::new();
    for p in &peers.problems {
        *counts.entry(p.problem.reason()).or_default() += 1;
    }
    plan.problem_counts = Some(counts);
    plan.problems = current;
}

/// What the device counted that points at someone getting around the mesh, as Warning Events on
/// this node when more came since the last pass (a device made anew counts from 0 again; repeats
/// within minutes join the same Event): handshake initiations from keys that are no peer's
/// (`UnknownKeyHandshake`), and packets from a peer with an inner source outside its allowed IPs
/// (`SpoofedSource`). docs/signals.md.
fn device_signals(
    params: &Params,
    state: &LoopState,
    inputs: &Inputs,
    node_ips: &[IpAddr],
    plan: &mut PassPlan,
) {
    let Some(counters) = inputs.device.as_ref().map(|d| d.counters) else { return };
    let new = |total: u64, seen: u64| total.checked_sub(seen).unwrap_or(total);
    plan.unknown_handshakes = counters.handshakes_unknown_key;
    plan.bad_sources = counters.dropped_bad_source;
    plan.no_peer_drops = counters.dropped_no_route;
    let mut warn = |reason: &str, note: String| {
        plan.events.push(PlannedEvent {
            node: Some(params.node.clone()),
            warning: true,
            reason: reason.into(),
            note,
        });
    };
    let unknown = new(counters.handshakes_unknown_key, state.unknown_handshakes);
    // A key some Node publishes is a node joining (it handshakes as soon as it has published,
    // maybe before this agent has added it) or one refused for a problem of its own, reported as
    // such: only a key no Node publishes is a stranger.
    let stranger =
        counters.last_unknown_handshake.is_none_or(|h| node_publishing(inputs, &h.public_key).is_none());
    if unknown > 0 && stranger {
        let latest = counters
            .last_unknown_handshake
            .map(|h| format!(", the latest from {} with key {}", h.from, h.public_key.fingerprint()))
            .unwrap_or_default();
        warn(
            "UnknownKeyHandshake",
            format!("{unknown} handshake initiation(s) from a key that is no peer's{latest}: dropped"),
        );
    }
    let spoofed = new(counters.dropped_bad_source, state.bad_sources);
    // A source the peer's Node (its pod CIDR) or one of its Pods holds by now was a race: the
    // packet came before this agent had the peer's new address, as a new pod's first packets can.
    let race = counters.last_bad_source.is_some_and(|b| holds_now(inputs, &b.peer, b.source));
    if spoofed > 0 && !race {
        let latest = counters
            .last_bad_source
            .map(|b| {
                format!(", the latest from {} with inner source {}", peer_name(inputs, &b.peer), b.source)
            })
            .unwrap_or_default();
        warn(
            "SpoofedSource",
            format!(
                "{spoofed} packet(s) from a peer with an inner source outside its allowed IPs{latest}: dropped"
            ),
        );
    }
    let refused = new(counters.dropped_no_route, state.no_peer_drops);
    if refused > 0 {
        let latest = counters
            .last_no_route
            .map(|d| {
                let node = node_holding(inputs, d.destination)
                    .map_or_else(|| "no node's".to_owned(), |n| format!("node {n}'s"));
                format!(", the latest from {} to {} ({node})", d.source, d.destination)
            })
            .unwrap_or_default();
        warn(
            "StrictModeDrop",
            format!(
                "{refused} packet(s) to pod-network addresses no peer covers{latest}: dropped, not sent in plaintext (flow records name the pods)"
            ),
        );
    }
    // A peer's endpoint is what this agent configured (its Node's InternalIP, saved in the last
    // known peer set) unless its authenticated packets came from elsewhere: WireGuard roams to
    // their source, and the device diff sets it back. An address that is no Node's means the node
    // sends from another address, or its key is in use elsewhere.
    if let (Some(device), View::Complete { .. }) = (&inputs.device, &inputs.view) {
        // A pass looks at every peer, and nothing here may cost peers × nodes: `node_ips` is
        // sorted, searched in halves. (A hash set of them took 1.6 ms a pass at 5,000 nodes to
        // build; sorting takes a tenth of that.)
        let saved = state.last_known.as_ref().map(|l| l.peers.as_slice()).unwrap_or_default();
        // Built only once a peer's endpoint is no node's address (a roam): rarely.
        let mut configured: Option<HashMap<PublicKey, std::net::SocketAddr>> = None;
        for peer in &device.peers {
            let Some(endpoint) = peer.endpoint else { continue };
            if node_ips.binary_search(&endpoint.ip()).is_ok() {
                continue;
            }
            let configured =
                configured.get_or_insert_with(|| saved.iter().map(|p| (p.public_key, p.endpoint)).collect());
            if configured.get(&peer.public_key) == Some(&endpoint) {
                continue;
            }
            let Some(name) = node_publishing(inputs, &peer.public_key) else { continue };
            warn(
                "EndpointNotANode",
                format!(
                    "authenticated packets with node {name}'s key came from {endpoint}, which is no node's address: the endpoint is set back to node {name}'s; if that node does not send from this address, its private key is in use elsewhere"
                ),
            );
        }
    }
}

/// Peers this node has been trying to reach for [`Params::no_handshake_after`] without a
/// handshake ever: a mesh port (UDP) blocked between the two nodes (a security group, a network
/// ACL), or the peer's agent down. Trying is the device sending to the peer (its tx bytes count
/// the handshake initiations); a peer nothing was sent to needs no handshake, as handshakes start
/// with the first packet. A Warning Event on this node naming the peers newly silent.
fn silent_peers(params: &Params, state: &LoopState, inputs: &Inputs, plan: &mut PassPlan) {
    let Some(device) = &inputs.device else { return };
    let since: BTreeMap<PublicKey, jiff::Timestamp> = unanswered(device, &inputs.handshakes)
        .map(|key| (key, state.tried_since.get(&key).copied().unwrap_or(inputs.now)))
        .collect();
    let silent: BTreeSet<PublicKey> = since
        .iter()
        .filter(|(_, at)| inputs.now.duration_since(**at) >= params.no_handshake_after)
        .map(|(key, _)| *key)
        .collect();
    let newly: Vec<String> =
        silent.difference(&state.silent_peers).map(|key| peer_name(inputs, key)).collect();
    if !newly.is_empty() {
        plan.events.push(PlannedEvent {
            node: Some(params.node.clone()),
            warning: true,
            reason: "PeerNoHandshake".into(),
            note: format!(
                "no handshake with {} in {} s of trying to reach them: is UDP {} blocked between the nodes (security groups, network ACLs), or their agent down?",
                newly.join(", "),
                params.no_handshake_after.as_secs(),
                device.listen_port
            ),
        });
    }
    plan.tried_since = Some(since);
    plan.silent_peers = Some(silent);
}

/// The node publishing `key` (from the Nodes, when the view has them), else the key's fingerprint.
fn peer_name(inputs: &Inputs, key: &PublicKey) -> String {
    node_publishing(inputs, key).map_or_else(|| key.fingerprint(), |n| format!("node {n}"))
}

/// Whether the Node publishing `key`, by its pod CIDRs or its Pods (pod-IP mode), holds `source`.
fn holds_now(inputs: &Inputs, key: &PublicKey, source: std::net::IpAddr) -> bool {
    node_publishing(inputs, key).is_some_and(|name| holders(inputs, source).any(|n| n == name))
}

/// The Node whose pod CIDRs (or, in pod-IP mode, Pods) hold `ip`, when the view has the Nodes.
fn node_holding(inputs: &Inputs, ip: std::net::IpAddr) -> Option<&str> {
    holders(inputs, ip).next()
}

/// The Nodes that hold `ip`: those whose pod CIDRs contain it, then those with a Pod that has it.
fn holders(inputs: &Inputs, ip: std::net::IpAddr) -> impl Iterator<Item = &str> {
    let (nodes, pods) = match &inputs.view {
        View::Complete { nodes, pods, .. } => (nodes.as_slice(), pods.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let by_cidr = nodes
        .iter()
        .filter(move |n| {
            n.pod_cidrs.iter().filter_map(|c| c.parse::<ipnet::IpNet>().ok()).any(|c| c.contains(&ip))
        })
        .map(|n| n.name.as_str());
    by_cidr.chain(pods.iter().filter(move |p| p.ips.contains(&ip)).map(|p| p.node.as_str()))
}

/// The Node publishing `key`, when the view has the Nodes.
fn node_publishing<'a>(inputs: &'a Inputs, key: &PublicKey) -> Option<&'a str> {
    let View::Complete { nodes, .. } = &inputs.view else { return None };
    nodes.iter().find(|n| n.published_key().is_some_and(|k| k.public_key == *key)).map(|n| n.name.as_str())
}

/// The InternalIPs of `nodes`, sorted.
fn sorted_ips<'a>(nodes: impl IntoIterator<Item = &'a NodeView>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = nodes.into_iter().flat_map(|n| n.internal_ips.iter().copied()).collect();
    ips.sort_unstable();
    ips
}

/// What a pass needs of every Node ([`survey`]).
#[derive(Debug, PartialEq, Eq)]
struct Survey<'a> {
    /// Every Node's InternalIPs, sorted: the snapshot saves them as a sorted list (so an order
    /// change in the store is no change), and the endpoint check searches them.
    node_ips: Vec<IpAddr>,
    /// The local Node, if listed.
    local: Option<&'a NodeView>,
    /// The agent on the local node is the first agent of the cluster: its node's name comes
    /// first among the Nodes that publish a valid key (its own included). Every agent works it out
    /// the same way from the same Nodes.
    first_agent: bool,
}

/// [`Survey`] of `nodes` for the agent on `local`, in one walk: at 5,000 Nodes each walk of the
/// views is thousands of cache misses (the views lie scattered in the heap after churn), and
/// there were three.
fn survey<'a>(nodes: &'a [Arc<NodeView>], local: &str) -> Survey<'a> {
    let mut survey = Survey { node_ips: Vec::with_capacity(nodes.len()), local: None, first_agent: true };
    for node in nodes {
        survey.node_ips.extend_from_slice(&node.internal_ips);
        if node.name == local {
            survey.local = Some(node);
        } else if node.published_key().is_some() && node.name.as_str() < local {
            survey.first_agent = false;
        }
    }
    survey.node_ips.sort_unstable();
    survey
}

/// Whether `local` comes first in name order among `others` and itself, leaving out `about` (the
/// node an Event would concern).
fn reports_first<'a>(others: impl Iterator<Item = &'a str>, local: &str, about: &str) -> bool {
    local != about && others.filter(|n| *n != about && *n != local).all(|n| local < n)
}

/// Whether this agent (on `local`) raises the Event for `p`, so that each problem is raised by
/// one agent in the cluster rather than by every agent that sees it (N² Events at N nodes).
///
/// - A problem only this agent sees (another node claims this node's key; its own pre-shared key
///   file; another field manager wrote its Node's `meshcrypt.dev/` annotations) is raised here.
/// - A prefix problem is raised by the agent of the node concerned; for a node that is no peer
///   (no agent to speak for it), by the cluster's reporter.
/// - Anything else every agent sees alike (a missing or malformed key, a key claimed twice, no
///   InternalIP, a peer cluster's bad node) is raised by the node's reporter: the agent whose
///   node's name is first among this cluster's peers and itself, leaving out the node concerned
///   (its agent does not see itself as the others do). Every agent works it out the same way from
///   the same Nodes; while their views differ, two may raise it; never N.
fn raises_event(p: &NodeProblem, local: &str, reporter: bool, about_peer: bool) -> bool {
    match p.problem {
        Problem::ClaimsLocalKey
        | Problem::InvalidPresharedKey { .. }
        | Problem::ForeignAnnotationWriter { .. } => true,
        Problem::ContestedPrefix { .. }
        | Problem::PrefixClaimedByOthers { .. }
        | Problem::InvalidPodCidr(_) => p.node == local || (reporter && !about_peer),
        _ => reporter,
    }
}

fn problem_key(p: &NodeProblem) -> (String, &'static str, String) {
    (p.node.clone(), p.problem.reason(), p.problem.to_string())
}

/// The implementation `setting` picks on this node: `auto` takes the kernel's where this kernel
/// has WireGuard, unless flow records are on (they are counted by the userspace data path).
pub fn resolve_backend(setting: Backend, kernel_available: bool, flow_records: bool) -> BackendKind {
    match setting {
        Backend::Kernel => BackendKind::Kernel,
        Backend::Userspace => BackendKind::Userspace,
        Backend::Auto if kernel_available && !flow_records => BackendKind::Kernel,
        Backend::Auto => BackendKind::Userspace,
    }
}

/// Whether `link` (the interface of the device's name) is a kernel WireGuard device, which only a
/// previous run of the agent leaves when no device is held.
fn left_kernel_device(link: Option<&ObservedLink>) -> bool {
    link.is_some_and(|l| l.kind.as_deref() == Some("wireguard"))
}

/// Switched off: the device, every route and rule, the saved peer set and the published key go.
/// A kernel device a previous run left (the agent started switched off) is adopted on `port`
/// first, then deleted next pass like a held one.
fn switched_off(
    params: &Params,
    inputs: &Inputs,
    port: u16,
    published: Option<NodeKeyAnnotations>,
    mut plan: PassPlan,
) -> PassPlan {
    let empty = DesiredState {
        link: LinkSpec { name: params.ifname.clone(), mtu: 0, addresses: Default::default() },
        table: params.table,
        routes: Default::default(),
        rules: Default::default(),
    };
    let observed = ObservedState { link: None, ..inputs.kernel.clone() };
    plan.kernel = KernelPlan { link: None, ops: plan_kernel(&empty, &observed) };
    if inputs.device.is_some() {
        plan.device = DeviceStep::Discard;
    } else if left_kernel_device(inputs.kernel.link.as_ref()) && inputs.key_files.current.is_some() {
        plan.device = DeviceStep::Create { port, backend: BackendKind::Kernel };
    }
    plan.withdraw = published.is_some();
    plan.published = published;
    plan.forget = true;
    plan.peer_names = Some(Arc::default());
    if plan.device == DeviceStep::Discard || !plan.kernel.ops.is_empty() || plan.withdraw {
        plan.events.push(PlannedEvent {
            node: Some(params.node.clone()),
            warning: false,
            reason: "MeshDisabled".into(),
            note: "meshcrypt switched off by its ConfigMap".into(),
        });
    }
    plan.readiness = Readiness::Ready("mesh switched off by its ConfigMap".into());
    // Switched off, the mesh is no precondition for pods: a node registered with the startup taint
    // must not stay unschedulable.
    plan.untaint = matches!(inputs.view, View::Complete { .. });
    plan
}

/// The routing crate's settings for `settings` on this agent.
fn routing_settings(params: &Params, settings: &Settings) -> RoutingSettings {
    RoutingSettings {
        ifname: params.ifname.clone(),
        table: params.table,
        rule_priority: params.rule_priority,
        pod_networks: settings.pod_networks.clone(),
        strict: settings.strict,
        host_encryption: settings.host_encryption,
        fwmark: params.fwmark,
    }
}

#[cfg(test)]
mod tests;
