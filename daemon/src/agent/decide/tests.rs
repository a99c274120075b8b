//! The decisions of a pass as a table: a world in sync, one change per row, and what the plan
//! must say about it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use meshcrypt_dataplane::{DeviceCounters, DeviceState, PrivateKey};
use meshcrypt_routing::fake::step;
use meshcrypt_routing::{HostRoute, ObservedLink, RouteKind};

use super::*;

const NOW: i64 = 1_900_000_000;
const LINK: u32 = 7;

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(second).unwrap()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(NOW).unwrap()
}

/// Keys 0 (this node), 1..=5 (others), fixed for the process.
fn key(n: usize) -> PublicKey {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| (0..6).map(|_| PrivateKey::generate().public_key()).collect())[n]
}

fn psk(n: u8) -> meshcrypt_dataplane::PresharedKey {
    meshcrypt_dataplane::PresharedKey::from_bytes([n; 32])
}

fn annotations(n: usize, epoch: u64, created: i64) -> NodeKeyAnnotations {
    NodeKeyAnnotations { public_key: key(n), epoch, created: jiff::Timestamp::from_second(created).unwrap() }
}

/// What the parser makes of a key annotation that is no key.
fn malformed_key() -> Result<Option<NodeKeyAnnotations>, String> {
    let annotations = [(meshcrypt_keyexchange::annotations::PUBLIC_KEY.to_owned(), "not-a-key".to_owned())];
    NodeView::parse_key(&annotations.into_iter().collect())
}

/// Node `name` with key `k` (none: no key published), pod CIDR 10.244.`i`.0/24, InternalIP
/// 198.18.0.`i+1`.
fn node(name: &str, i: u8, k: Option<usize>) -> NodeView {
    NodeView {
        name: name.into(),
        key: Ok(k.map(|k| annotations(k, 0, NOW - 3600))),
        internal_ips: vec![IpAddr::from([198, 18, 0, i + 1])],
        pod_cidrs: vec![format!("10.244.{i}.0/24")],
        created: Some(jiff::Timestamp::from_second(NOW - 86_400 + i64::from(i)).unwrap()),
        key_claimed: Some(jiff::Timestamp::from_second(NOW - 3600 + i64::from(i)).unwrap()),
        no_agent: None,
        annotation_writers: Default::default(),
    }
}

fn settings() -> Settings {
    Settings { pod_networks: vec!["10.244.0.0/16".parse().unwrap()], ..Settings::default() }
}

struct World {
    params: Params,
    state: LoopState,
    inputs: Inputs,
    /// Kept across the passes, as the agent keeps it.
    index: RefCell<PeerIndex>,
}

impl World {
    /// Peer cluster prod-b's node ip-10-9-0-5 (key 5) in its RemoteCluster.
    fn add_remote_b(&mut self) {
        if let View::Complete { remotes, .. } = &mut self.inputs.view {
            remotes.push(meshcrypt_keyexchange::mesh::RemoteView {
                cluster: "prod-b".into(),
                nodes: vec![meshcrypt_keyexchange::mesh::RemoteNodeView {
                    name: "ip-10-9-0-5".into(),
                    public_key: key(5).to_string(),
                    key_epoch: 0,
                    endpoint: "198.19.0.5:51820".into(),
                    allowed_ips: vec!["10.245.1.0/24".into()],
                }],
            });
        }
    }

    fn nodes(&mut self) -> &mut Vec<Arc<NodeView>> {
        match &mut self.inputs.view {
            View::Complete { nodes, .. } => nodes,
            _ => panic!("not a complete view"),
        }
    }

    fn node(&mut self, i: usize) -> &mut NodeView {
        Arc::make_mut(&mut self.nodes()[i])
    }

    fn push_node(&mut self, node: NodeView) {
        self.nodes().push(Arc::new(node));
    }

    /// `settings` are in force already and the ConfigMap still says them (no change to report).
    fn settled(&mut self, settings: Settings) {
        self.inputs.reading = Reading::Valid(settings.clone());
        self.state.settings = Some(settings);
    }

    /// No device held, and the kernel device a previous run left has the device's name.
    fn kernel_device_left(&mut self) {
        self.inputs.device = None;
        self.inputs.kernel_wireguard = true;
        self.inputs.kernel.link.as_mut().unwrap().kind = Some("wireguard".into());
    }

    /// The pass restores the saved peer set (the API server has not answered yet).
    fn restore(&mut self) {
        let last = LastKnown::clone(self.state.last_known.as_ref().unwrap());
        let peers = last.peer_set();
        self.inputs.view = View::LastKnown { last, peers };
    }

    fn decide(&self) -> PassPlan {
        decide(&self.params, &self.state, &self.inputs, &mut self.index.borrow_mut())
    }

    /// Applies what a plan does to the device, the kernel and the state, as a successful execution
    /// would.
    fn converge(&mut self) {
        for _ in 0..2 {
            let plan = self.decide();
            assert_eq!(plan.blocked, None);
            if let DeviceStep::Create { port, backend } = plan.device {
                self.inputs.device = Some(DeviceState {
                    backend,
                    ifname: "meshcrypt0".into(),
                    ifindex: LINK,
                    public_key: self.state.key.public_key,
                    listen_port: port,
                    fwmark: Some(self.params.fwmark),
                    peers: Vec::new(),
                    counters: DeviceCounters::default(),
                });
            }
            for op in &plan.kernel.ops {
                step(&mut self.inputs.kernel, op);
            }
            let device = self.inputs.device.as_mut().expect("a device");
            for op in &plan.peer_ops {
                match op {
                    PeerOp::Remove(k) => device.peers.retain(|p| p.public_key != *k),
                    PeerOp::Add { key, endpoint, allowed_ips, preshared_key } => {
                        let mut peer = peer_state(*key, *endpoint, allowed_ips);
                        peer.preshared_key = preshared_key.as_ref().map(|k| k.fingerprint());
                        device.peers.push(peer);
                    }
                    PeerOp::SetPresharedKey(k, psk) => {
                        device
                            .peers
                            .iter_mut()
                            .filter(|p| p.public_key == *k)
                            .for_each(|p| p.preshared_key = psk.as_ref().map(|k| k.fingerprint()));
                    }
                    PeerOp::SetEndpoint(k, endpoint) => {
                        device
                            .peers
                            .iter_mut()
                            .filter(|p| p.public_key == *k)
                            .for_each(|p| p.endpoint = Some(*endpoint));
                    }
                    PeerOp::SetAllowedIps(k, allowed_ips) => {
                        let state = peer_state(*k, "0.0.0.0:0".parse().unwrap(), allowed_ips);
                        device
                            .peers
                            .iter_mut()
                            .filter(|p| p.public_key == *k)
                            .for_each(|p| p.allowed_ips.clone_from(&state.allowed_ips));
                    }
                }
            }
            // Every backend reports its peers sorted by key (`DeviceState::peer` searches by
            // halves); so does this one.
            device.peers.sort_by_key(|p| p.public_key);
            self.state.settings.clone_from(&plan.settings);
            self.state.reported.clone_from(&plan.problems);
            if let Some(names) = &plan.peer_names {
                self.state.peer_names = Arc::clone(names);
            }
            if let Some(save) = plan.save {
                self.state.last_known = Some(save.snapshot);
                self.state.last_known_end = Some(save.end);
            }
        }
    }
}

fn peer_state(
    key: PublicKey,
    endpoint: std::net::SocketAddr,
    allowed_ips: &[ipnet::IpNet],
) -> meshcrypt_dataplane::PeerState {
    meshcrypt_dataplane::PeerState {
        public_key: key,
        endpoint: Some(endpoint),
        allowed_ips: allowed_ips.to_vec(),
        persistent_keepalive: None,
        preshared_key: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    }
}

/// Node-a (this node) with node-b and node-c, device and kernel programmed, settings in force,
/// the key published, the last known peer set saved.
fn in_sync() -> World {
    let own = annotations(0, 0, NOW - 3600);
    let mut local = node("node-a", 0, Some(0));
    local.key = Ok(Some(own.clone()));
    let mut world = World {
        params: Params {
            node: "node-a".into(),
            ifname: "meshcrypt0".into(),
            table: 51820,
            rule_priority: 100,
            fwmark: 0x20_0000,
            config_map: Some(("kube-system".into(), "meshcrypt".into())),
            no_handshake_after: jiff::SignedDuration::from_secs(180),
        },
        state: LoopState::new(own.clone()),
        inputs: Inputs {
            kernel_wireguard: false,
            now: now(),
            reading: Reading::Valid(settings()),
            view: View::Complete {
                nodes: [local, node("node-b", 1, Some(1)), node("node-c", 2, Some(2))].map(Arc::new).into(),
                pods: Vec::new(),
                remotes: Vec::new(),
            },
            key_files: KeyFiles { current: Some(own), pending: None },
            device: None,
            kernel: ObservedState {
                link: Some(ObservedLink {
                    index: LINK,
                    mtu: 1500,
                    up: false,
                    addresses: Default::default(),
                    kind: Some("tun".into()),
                }),
                ..ObservedState::default()
            },
            underlay_mtu: Some(1500),
            underlay_index: Some(2),
            host_routes: Vec::new(),
            preshared_keys: Some(BTreeMap::new()),
            handshakes: BTreeMap::new(),
        },
        index: RefCell::default(),
    };
    world.converge();
    world
}

/// What a row checks of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    blocked: Option<Blocked>,
    device: DeviceStep,
    move_port: Option<u16>,
    key: KeyStep,
    publish: bool,
    withdraw: bool,
    peer_ops: Vec<&'static str>,
    handshakes_after_switch: usize,
    kernel: Kernel,
    save: bool,
    events: Vec<String>,
    ready: Option<bool>,
    untaint: bool,
}

/// What a row checks of the kernel plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// No operations.
    Nothing,
    /// Operations, none of them through the device (the floor and rules).
    Floor,
    /// Operations through the device.
    Device,
}

fn got(plan: &PassPlan) -> Got {
    Got {
        blocked: plan.blocked.clone(),
        device: plan.device,
        move_port: plan.move_port,
        key: plan.key,
        publish: plan.publish,
        withdraw: plan.withdraw,
        peer_ops: plan
            .peer_ops
            .iter()
            .map(|op| match op {
                PeerOp::Add { preshared_key: None, .. } => "add",
                PeerOp::Add { preshared_key: Some(_), .. } => "add+psk",
                PeerOp::Remove(_) => "remove",
                PeerOp::SetEndpoint(..) => "endpoint",
                PeerOp::SetAllowedIps(..) => "allowed-ips",
                PeerOp::SetPresharedKey(..) => "psk",
            })
            .collect(),
        handshakes_after_switch: plan.handshakes_after_switch.len(),
        kernel: match (&plan.kernel.link, plan.kernel.ops.is_empty()) {
            (_, true) => Kernel::Nothing,
            (None, false) => Kernel::Floor,
            (Some(_), false) => Kernel::Device,
        },
        save: plan.save.is_some(),
        events: plan.events.iter().map(|e| e.reason.clone()).collect(),
        ready: match plan.readiness {
            Readiness::Unchanged => None,
            Readiness::Ready(_) => Some(true),
            Readiness::NotReady(_) => Some(false),
        },
        untaint: plan.untaint,
    }
}

/// The plan of a world in sync: nothing to do, ready.
fn nothing() -> Got {
    Got {
        blocked: None,
        device: DeviceStep::Keep,
        move_port: None,
        key: KeyStep::Keep,
        publish: false,
        withdraw: false,
        peer_ops: vec![],
        handshakes_after_switch: 0,
        kernel: Kernel::Nothing,
        save: false,
        events: vec![],
        ready: Some(true),
        untaint: true,
    }
}

/// A pass that stops, with the state kept.
fn blocked(why: Blocked) -> Got {
    Got { blocked: Some(why), ready: None, untaint: false, ..nothing() }
}

/// The device has sent to every peer (a handshake initiation at least: 148 bytes).
fn tried(world: &mut World) {
    for peer in &mut world.inputs.device.as_mut().expect("a device").peers {
        peer.tx_bytes = 148;
    }
}

fn events(reasons: &[&str]) -> Vec<String> {
    reasons.iter().map(|r| (*r).to_owned()).collect()
}

fn rejected(world: &mut World, key: &str) {
    world.inputs.reading = Reading::Rejected(vec![KeyError { key: key.into(), reason: "bad".into() }]);
}

type Change = fn(&mut World);

/// `auto` takes the kernel's WireGuard where it is, unless flow records need the userspace data
/// path; an explicit choice stands.
#[test]
fn which_backend_table() {
    use crate::config::settings::Backend;
    let rows = [
        (Backend::Auto, true, false, BackendKind::Kernel),
        (Backend::Auto, false, false, BackendKind::Userspace),
        (Backend::Auto, true, true, BackendKind::Userspace),
        (Backend::Kernel, false, false, BackendKind::Kernel),
        (Backend::Kernel, true, true, BackendKind::Kernel),
        (Backend::Userspace, true, false, BackendKind::Userspace),
    ];
    for (setting, module, flows, want) in rows {
        assert_eq!(
            resolve_backend(setting, module, flows),
            want,
            "{setting:?}, module {module}, flows {flows}"
        );
    }
}

#[test]
fn decide_table() {
    let rows: Vec<(&str, Change, Got)> = vec![
        ("in sync: nothing to do", |_| {}, nothing()),
        (
            "first pass after a start: the floor first, then a device",
            |w| {
                w.inputs.device = None;
                w.inputs.kernel = ObservedState::default();
            },
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Userspace },
                kernel: Kernel::Floor,
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "a TUN left by a crashed agent is taken over",
            |w| w.inputs.device = None,
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Userspace },
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "a foreign link with the device's name: the floor stays, nothing else",
            |w| {
                w.inputs.device = None;
                w.inputs.kernel.link.as_mut().unwrap().kind = Some("veth".into());
                w.inputs.kernel.routes.retain(|r| r.kind != RouteKind::Blackhole);
            },
            Got { kernel: Kernel::Floor, ..blocked(Blocked::ForeignLink("veth".into())) },
        ),
        (
            "the kernel backend adopts the wireguard link a previous run left",
            |w| {
                w.kernel_device_left();
            },
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Kernel },
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "backend: userspace where a previous run left a kernel device: adopted, to be replaced next pass",
            |w| {
                w.settled(Settings { backend: crate::config::settings::Backend::Userspace, ..settings() });
                w.kernel_device_left();
            },
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Kernel },
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "backend: userspace and the kernel device held: it goes, the floor holds, the TUN comes next",
            |w| {
                w.settled(Settings { backend: crate::config::settings::Backend::Userspace, ..settings() });
                w.inputs.kernel_wireguard = true;
                w.inputs.device.as_mut().unwrap().backend = BackendKind::Kernel;
            },
            Got { device: DeviceStep::Discard, ready: None, untaint: false, ..nothing() },
        ),
        (
            "the module is there (auto): the userspace device goes, the floor holds, the kernel's comes next",
            |w| w.inputs.kernel_wireguard = true,
            Got { device: DeviceStep::Discard, ready: None, untaint: false, ..nothing() },
        ),
        (
            "a new device (second round): every peer added; handshakes wait for traffic",
            |w| w.inputs.device.as_mut().unwrap().peers.clear(),
            Got { peer_ops: vec!["add", "add"], ..nothing() },
        ),
        (
            "a node joins",
            |w| w.push_node(node("node-d", 3, Some(3))),
            Got { peer_ops: vec!["add"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "a peer cluster's node joins (its RemoteCluster)",
            |w| w.add_remote_b(),
            Got { peer_ops: vec!["add"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "a peer cluster's node joins with the pair's pre-shared key",
            |w| {
                w.add_remote_b();
                w.inputs.preshared_keys = Some([("prod-b".into(), Ok(psk(1)))].into());
            },
            Got { peer_ops: vec!["add+psk"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "a bad first key file: the peer cluster's node is left out, reported",
            |w| {
                w.add_remote_b();
                w.inputs.preshared_keys = Some([("prod-b".into(), Err("bad".into()))].into());
            },
            Got { events: vec!["InvalidPresharedKey".into()], ..nothing() },
        ),
        (
            "a bad key file after a good one: the last good key stays, reported",
            |w| {
                w.add_remote_b();
                w.state.preshared_keys = [("prod-b".into(), psk(1))].into();
                w.inputs.preshared_keys = Some([("prod-b".into(), Err("bad".into()))].into());
            },
            Got {
                peer_ops: vec!["add+psk"],
                kernel: Kernel::Device,
                save: true,
                events: vec!["InvalidPresharedKey".into()],
                ..nothing()
            },
        ),
        (
            "restore: a peer cluster's saved node gets the pair's pre-shared key",
            |w| {
                let last = LastKnown::clone(w.state.last_known.as_ref().unwrap());
                let mut peers = last.peer_set();
                peers.peers.insert(
                    "prod-b/ip-10-9-0-5".into(),
                    meshcrypt_keyexchange::mesh::Peer {
                        node: "prod-b/ip-10-9-0-5".into(),
                        public_key: key(5),
                        key_epoch: 0,
                        endpoint: "198.19.0.5:51820".parse().unwrap(),
                        allowed_ips: vec!["10.245.1.0/24".parse().unwrap()],
                    },
                );
                w.inputs.view = View::LastKnown { last, peers };
                w.inputs.preshared_keys = Some([("prod-b".into(), Ok(psk(1)))].into());
            },
            Got {
                peer_ops: vec!["add+psk"],
                kernel: Kernel::Device,
                ready: Some(false),
                untaint: false,
                ..nothing()
            },
        ),
        (
            "a node leaves",
            |w| {
                w.nodes().pop();
            },
            Got { peer_ops: vec!["remove"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "a peer's key changes: old peer out before the new one comes in",
            |w| *w.node(2) = node("node-c", 2, Some(4)),
            Got { peer_ops: vec!["remove", "add"], save: true, ..nothing() },
        ),
        (
            "a peer's InternalIP changes: the session stays",
            |w| w.node(1).internal_ips = vec![IpAddr::from([198, 18, 0, 42])],
            Got {
                peer_ops: vec!["endpoint", "allowed-ips"],
                kernel: Kernel::Device,
                save: true,
                ..nothing()
            },
        ),
        (
            "a malformed key annotation: the peer is removed and the node reported",
            |w| {
                w.node(1).key = malformed_key();
            },
            Got {
                peer_ops: vec!["remove"],
                kernel: Kernel::Device,
                save: true,
                events: events(&["InvalidKeyAnnotation"]),
                ..nothing()
            },
        ),
        (
            "a key claimed by two nodes: the later claim is refused and both reported",
            |w| {
                let mut copy = node("node-d", 3, Some(1));
                copy.key_claimed = Some(jiff::Timestamp::from_second(NOW).unwrap());
                w.push_node(copy);
            },
            Got { save: true, events: events(&["KeyClaimedByOthers", "DuplicateKey"]), ..nothing() },
        ),
        (
            "a malformed key is raised by the cluster's reporter only: an earlier-named peer here",
            |w| {
                w.push_node(node("node-0", 9, Some(4)));
                w.node(2).key = malformed_key();
            },
            Got { peer_ops: vec!["remove", "add"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "a problem about the first-named node is raised by the next: here, its copied key",
            |w| {
                w.push_node(node("node-0", 9, Some(4)));
                let mut copy = node("node-d", 3, Some(4));
                copy.key_claimed = Some(jiff::Timestamp::from_second(NOW).unwrap());
                w.push_node(copy);
            },
            Got {
                peer_ops: vec!["add"],
                kernel: Kernel::Device,
                save: true,
                events: events(&["KeyClaimedByOthers"]),
                ..nothing()
            },
        ),
        (
            "another field manager wrote this node's meshcrypt.dev/ annotations: this agent raises it",
            |w| {
                let local = w.params.node.clone();
                let me = Arc::make_mut(w.nodes().iter_mut().find(|n| n.name == local).unwrap());
                me.annotation_writers = ["kubectl-annotate".to_owned(), "meshcrypt".to_owned()].into();
            },
            Got { events: events(&["ForeignKeyWriter"]), ..nothing() },
        ),
        (
            "a peer's foreign writer is for the peer's own agent to raise",
            |w| w.node(1).annotation_writers = ["kubectl-annotate".to_owned()].into(),
            nothing(),
        ),
        (
            "handshakes from a key that is no peer's since the last pass: a Warning on this node",
            |w| {
                let counters = &mut w.inputs.device.as_mut().expect("a device").counters;
                counters.handshakes_unknown_key = 3;
                counters.last_unknown_handshake = Some(meshcrypt_dataplane::UnknownHandshake {
                    from: "198.18.0.99:51820".parse().unwrap(),
                    public_key: key(5),
                });
            },
            Got { events: events(&["UnknownKeyHandshake"]), ..nothing() },
        ),
        (
            "a peer's packets from outside its allowed IPs since the last pass: a Warning on this node",
            |w| {
                let counters = &mut w.inputs.device.as_mut().expect("a device").counters;
                counters.dropped_bad_source = 2;
                counters.last_bad_source = Some(meshcrypt_dataplane::BadSource {
                    peer: key(1),
                    source: "10.244.90.1".parse().unwrap(),
                });
            },
            Got { events: events(&["SpoofedSource"]), ..nothing() },
        ),
        (
            "packets no peer covers since the last pass (strict mode): a Warning naming the destination's node",
            |w| {
                let counters = &mut w.inputs.device.as_mut().expect("a device").counters;
                counters.dropped_no_route = 4;
                counters.last_no_route = Some(meshcrypt_dataplane::NoPeerDrop {
                    source: "10.244.0.5".parse().unwrap(),
                    destination: "10.244.200.9".parse().unwrap(),
                });
            },
            Got { events: events(&["StrictModeDrop"]), ..nothing() },
        ),
        (
            "... none new since: nothing",
            |w| {
                w.state.no_peer_drops = 4;
                w.inputs.device.as_mut().expect("a device").counters.dropped_no_route = 4;
            },
            nothing(),
        ),
        (
            "a peer's authenticated packets from an address that is no node's: a Warning, and the endpoint set back",
            |w| {
                let device = w.inputs.device.as_mut().expect("a device");
                let peer = device.peers.iter_mut().find(|p| p.public_key == key(1)).expect("peer key(1)");
                peer.endpoint = Some("198.18.0.99:51820".parse().unwrap());
            },
            Got { events: events(&["EndpointNotANode"]), peer_ops: vec!["endpoint"], ..nothing() },
        ),
        (
            "... from another node's address: no Warning (a key copied there is DuplicateKey's), set back",
            |w| {
                let other = w.node(2).internal_ips[0];
                let device = w.inputs.device.as_mut().expect("a device");
                let peer = device.peers.iter_mut().find(|p| p.public_key == key(1)).expect("peer key(1)");
                peer.endpoint = Some((other, 51820).into());
            },
            Got { peer_ops: vec!["endpoint"], ..nothing() },
        ),
        (
            "... not for a source the peer holds by now (a new pod's first packets, before its address was known)",
            |w| {
                let node_b = w.node(1).clone();
                let cidr = node_b.pod_cidrs[0].parse::<ipnet::IpNet>().unwrap();
                let peer = node_b.published_key().unwrap().public_key;
                let counters = &mut w.inputs.device.as_mut().expect("a device").counters;
                counters.dropped_bad_source = 2;
                counters.last_bad_source = Some(meshcrypt_dataplane::BadSource { peer, source: cidr.addr() });
            },
            nothing(),
        ),
        (
            "... not from a key a Node publishes (a node joining, or one refused and reported as such)",
            |w| {
                let counters = &mut w.inputs.device.as_mut().expect("a device").counters;
                counters.handshakes_unknown_key = 3;
                counters.last_unknown_handshake = Some(meshcrypt_dataplane::UnknownHandshake {
                    from: "198.18.0.12:51820".parse().unwrap(),
                    public_key: key(2),
                });
            },
            nothing(),
        ),
        (
            "a peer the device has been sending to for 180 s without a handshake ever: a Warning on this node",
            |w| {
                tried(w);
                w.state.tried_since = [(key(1), at(NOW - 180)), (key(2), at(NOW - 180))].into();
                w.inputs.handshakes = [(key(2), std::time::SystemTime::now())].into();
            },
            Got { events: events(&["PeerNoHandshake"]), ..nothing() },
        ),
        (
            "... at 179 s: not yet",
            |w| {
                tried(w);
                w.state.tried_since = [(key(1), at(NOW - 179)), (key(2), at(NOW - 179))].into();
            },
            nothing(),
        ),
        (
            "... configured 180 s ago but nothing sent to it (handshakes start with traffic): silent is fine",
            |w| w.state.tried_since = [(key(1), at(NOW - 180)), (key(2), at(NOW - 180))].into(),
            nothing(),
        ),
        (
            "... reported already: once",
            |w| {
                tried(w);
                w.state.tried_since = [(key(1), at(NOW - 600)), (key(2), at(NOW - 600))].into();
                w.state.silent_peers = [key(1), key(2)].into();
            },
            nothing(),
        ),
        (
            "... none new since: nothing",
            |w| {
                w.state.unknown_handshakes = 3;
                w.inputs.device.as_mut().expect("a device").counters.handshakes_unknown_key = 3;
            },
            nothing(),
        ),
        (
            "... a device made anew counts from 0: its first ones are new",
            |w| {
                w.state.unknown_handshakes = 7;
                w.inputs.device.as_mut().expect("a device").counters.handshakes_unknown_key = 2;
            },
            Got { events: events(&["UnknownKeyHandshake"]), ..nothing() },
        ),
        (
            "a Fargate node without a key is no problem: no Event, nothing left out",
            |w| {
                let mut fargate = node("fargate-ip-10-0-0-1", 7, None);
                fargate.no_agent = Some(meshcrypt_keyexchange::mesh::NoAgentExpected::Fargate);
                fargate.pod_cidrs.clear();
                w.push_node(fargate);
            },
            // Its address joins the saved node addresses (delivered without the mesh).
            Got { save: true, ..nothing() },
        ),
        (
            "a problem already reported is not reported again",
            |w| {
                w.node(2).key = Ok(None);
                w.state.reported.insert(("node-c".into(), "NoKey", "no meshcrypt key published".into()));
            },
            Got { peer_ops: vec!["remove"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "this node's Node is missing",
            |w| w.nodes().retain(|n| n.name != "node-a"),
            blocked(Blocked::LocalNodeMissing),
        ),
        ("this node has no InternalIP", |w| w.node(0).internal_ips.clear(), blocked(Blocked::NoInternalIp)),
        (
            "no interface holds the InternalIP (mtu auto)",
            |w| w.inputs.underlay_mtu = None,
            blocked(Blocked::UnderlayUnknown(IpAddr::from([198, 18, 0, 1]))),
        ),
        (
            "an underlay too small for a tunnel",
            |w| w.inputs.underlay_mtu = Some(60),
            blocked(Blocked::UnderlayTooSmall(60)),
        ),
        (
            "a rejected ConfigMap: the last good settings stay, reported once",
            |w| rejected(w, "port"),
            Got { events: events(&["ConfigRejected"]), ..nothing() },
        ),
        (
            "the same rejection again: not reported again",
            |w| {
                rejected(w, "port");
                w.state.rejected = Some(vec![KeyError { key: "port".into(), reason: "bad".into() }]);
            },
            nothing(),
        ),
        (
            "a rejected ConfigMap is raised by the first agent only: here an earlier-named node's",
            |w| {
                rejected(w, "port");
                w.push_node(node("node-0", 9, Some(4)));
            },
            Got { peer_ops: vec!["add"], kernel: Kernel::Device, save: true, ..nothing() },
        ),
        (
            "a new Node without a key is counted, not reported, while its agent may still be starting",
            |w| {
                let mut new = node("node-n", 7, None);
                new.created = Some(jiff::Timestamp::from_second(NOW - 60).unwrap());
                w.push_node(new);
            },
            Got { save: true, ..nothing() },
        ),
        (
            "... and is one once the grace has passed",
            |w| {
                let mut old = node("node-n", 7, None);
                old.created = Some(jiff::Timestamp::from_second(NOW - 301).unwrap());
                w.push_node(old);
            },
            Got { save: true, events: events(&["NoKey"]), ..nothing() },
        ),
        (
            "rejected before any valid settings: nothing can be done",
            |w| {
                rejected(w, "port");
                w.state.settings = None;
            },
            Got { events: events(&["ConfigRejected"]), ..blocked(Blocked::NoSettings) },
        ),
        (
            "a fixed MTU the underlay cannot carry is rejected",
            |w| w.inputs.reading = Reading::Valid(Settings { mtu: Mtu::Fixed(1480), ..settings() }),
            Got { events: events(&["ConfigRejected"]), ..nothing() },
        ),
        (
            "backend: kernel where this kernel has no WireGuard is rejected for this node; the last good stays",
            |w| {
                let kernel = Settings { backend: crate::config::settings::Backend::Kernel, ..settings() };
                w.inputs.reading = Reading::Valid(kernel);
            },
            Got { events: events(&["ConfigRejected"]), ..nothing() },
        ),
        (
            "a new port: the device moves, the change is reported",
            |w| w.inputs.reading = Reading::Valid(Settings { port: 51821, ..settings() }),
            Got {
                move_port: Some(51821),
                peer_ops: vec!["endpoint", "endpoint"],
                save: true,
                events: events(&["ConfigApplied"]),
                ..nothing()
            },
        ),
        (
            "switched off: device, routes, rules, the saved peers and the key go, and the startup taint (pods may run)",
            |w| w.inputs.reading = Reading::Valid(Settings { enabled: false, ..settings() }),
            Got {
                device: DeviceStep::Discard,
                withdraw: true,
                kernel: Kernel::Floor,
                events: events(&["ConfigApplied", "MeshDisabled"]),
                ..nothing()
            },
        ),
        (
            "switched off at start with the kernel device a previous run left: adopted, to be deleted next pass",
            |w| {
                w.settled(Settings { enabled: false, ..settings() });
                w.kernel_device_left();
            },
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Kernel },
                withdraw: true,
                kernel: Kernel::Floor,
                events: events(&["MeshDisabled"]),
                ..nothing()
            },
        ),
        (
            "switched off and nothing left: nothing to do, no Event",
            |w| {
                w.settled(Settings { enabled: false, ..settings() });
                w.inputs.device = None;
                w.inputs.kernel = ObservedState::default();
                w.node(0).key = Ok(None);
            },
            nothing(),
        ),
        (
            "the interface was deleted: the device is dropped, the floor holds",
            |w| {
                w.inputs.kernel.link = None;
                w.inputs.kernel.routes.retain(|r| r.kind != RouteKind::Device);
            },
            Got { device: DeviceStep::Discard, ..blocked(Blocked::DeviceGone) },
        ),
        (
            "the interface was replaced by another link of the name: never routed through",
            |w| {
                // The kernel removed the routes through the old one.
                w.inputs.kernel.link.as_mut().unwrap().index = LINK + 1;
                w.inputs.kernel.routes.retain(|r| r.kind != RouteKind::Device);
            },
            Got { device: DeviceStep::Discard, ..blocked(Blocked::DeviceGone) },
        ),
        (
            "a scheduled rotation is due: staged, published, then switched",
            |w| {
                w.inputs.reading = Reading::Valid(Settings {
                    key_rotation_interval: Some(std::time::Duration::from_secs(600)),
                    ..settings()
                });
                w.state.settings = match &w.inputs.reading {
                    Reading::Valid(s) => Some(s.clone()),
                    Reading::Rejected(_) => None,
                };
            },
            Got { key: KeyStep::Rotate { stage: true, publish_first: true }, ..nothing() },
        ),
        (
            "a clock that jumped back: no rotation is due",
            |w| {
                w.state.key.created = jiff::Timestamp::from_second(NOW + 3600).unwrap();
                w.inputs.key_files.current = Some(w.state.key.clone());
                w.node(0).key = Ok(Some(w.state.key.clone()));
                w.inputs.reading = Reading::Valid(Settings {
                    key_rotation_interval: Some(std::time::Duration::from_secs(600)),
                    ..settings()
                });
                w.state.settings = match &w.inputs.reading {
                    Reading::Valid(s) => Some(s.clone()),
                    Reading::Rejected(_) => None,
                };
            },
            nothing(),
        ),
        (
            "a rotation staged by `meshcrypt keys rotate`: published, then switched",
            |w| w.inputs.key_files.pending = Some(annotations(5, 1, NOW)),
            Got { key: KeyStep::Rotate { stage: false, publish_first: true }, ..nothing() },
        ),
        (
            "... with a peer in session 10 s ago: a handshake with it after the switch",
            |w| {
                w.inputs.key_files.pending = Some(annotations(5, 1, NOW));
                w.inputs.handshakes = [(key(2), std::time::SystemTime::from(at(NOW - 10)))].into();
            },
            Got {
                key: KeyStep::Rotate { stage: false, publish_first: true },
                handshakes_after_switch: 1,
                ..nothing()
            },
        ),
        (
            "a staged key already published (a pass failed after the publish): switched",
            |w| {
                w.inputs.key_files.pending = Some(annotations(5, 1, NOW));
                w.node(0).key = Ok(Some(annotations(5, 1, NOW)));
            },
            Got { key: KeyStep::Rotate { stage: false, publish_first: false }, publish: true, ..nothing() },
        ),
        (
            "the key file changed under the agent: followed, then published",
            |w| w.inputs.key_files.current = Some(annotations(5, 0, NOW)),
            Got { key: KeyStep::Follow, publish: true, ..nothing() },
        ),
        ("the key file vanished", |w| w.inputs.key_files.current = None, blocked(Blocked::KeyFileMissing)),
        (
            "the key annotation was removed from this node's Node: published again",
            |w| w.node(0).key = Ok(None),
            Got { publish: true, ..nothing() },
        ),
        (
            "bootstrap: this node's Node only, no peers, readiness not claimed",
            |w| {
                let local = w.node(0).clone();
                w.inputs.view = View::LocalOnly(local);
            },
            Got {
                peer_ops: vec!["remove", "remove"],
                kernel: Kernel::Device,
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "restore: the saved peers, nothing published, not ready yet",
            |w| {
                w.restore();
                w.inputs.device.as_mut().unwrap().peers.clear();
            },
            Got { peer_ops: vec!["add", "add"], ready: Some(false), untaint: false, ..nothing() },
        ),
        (
            "restore where the module is and a TUN is left: the userspace device again (no switch while the API is away)",
            |w| {
                w.restore();
                w.inputs.device = None;
                w.inputs.kernel_wireguard = true;
            },
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Userspace },
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "restore with the kernel device a previous run left: adopted",
            |w| {
                w.restore();
                w.kernel_device_left();
            },
            Got {
                device: DeviceStep::Create { port: 51820, backend: BackendKind::Kernel },
                ready: None,
                untaint: false,
                ..nothing()
            },
        ),
        (
            "pod-IP mode: a pod the CNI wired here before the API shows it stays local",
            |w| {
                w.settled(Settings { addressing: Addressing::PodIp, ..settings() });
                let pods = vec![
                    PodView {
                        name: "default/b".into(),
                        node: "node-b".into(),
                        ips: vec![IpAddr::from([10, 244, 1, 5])],
                        created: None,
                    },
                    PodView {
                        name: "default/c".into(),
                        node: "node-c".into(),
                        ips: vec![IpAddr::from([10, 244, 2, 5])],
                        created: None,
                    },
                ];
                if let View::Complete { pods: p, .. } = &mut w.inputs.view {
                    *p = pods.into_iter().map(Arc::new).collect();
                }
                w.converge();
                w.inputs.host_routes = vec![HostRoute {
                    dst: "10.244.0.9/32".parse().unwrap(),
                    oif: Some(12),
                    via_gateway: false,
                }];
            },
            // Local prefixes alone are saved at most every SAVE_EVERY.
            Got { kernel: Kernel::Device, ..nothing() },
        ),
    ];
    assert!(rows.len() >= 25);
    let mut failures = Vec::new();
    for (name, change, want) in rows {
        let mut world = in_sync();
        change(&mut world);
        let got = got(&world.decide());
        if got != want {
            failures.push(format!("{name}:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_plan_applied_is_a_fixed_point() {
    let mut world = in_sync();
    world.push_node(node("node-d", 3, Some(3)));
    world.converge();
    let again = world.decide();
    assert_eq!(got(&again), nothing());
    assert_eq!(again.peer_names, None, "the names are unchanged");
    assert_eq!(world.state.peer_names.len(), 3);
}

/// Which agent raises the Event for a problem (`raises_event`): local node-b; reporter or not.
#[test]
fn raises_event_table() {
    use meshcrypt_keyexchange::mesh::Problem;
    let prefix: ipnet::IpNet = "10.244.1.0/24".parse().unwrap();
    let contested = || Problem::ContestedPrefix { prefix, with: vec!["node-c".into()] };
    let psk = || Problem::InvalidPresharedKey { reason: "bad".into(), kept: true };
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Problem, bool, bool, bool)> = vec![
        // (case, about node, problem, reporter, about a peer, raised)
        ("a copy of this node's key: the victim raises it", "node-x", Problem::ClaimsLocalKey, false, false, true),
        ("a foreign writer of its own annotations", "node-b", Problem::ForeignAnnotationWriter { managers: vec!["kubectl".into()] }, false, false, true),
        ("its own pre-shared key file", "prod-b", psk(), false, false, true),
        ("its own contested prefix", "node-b", contested(), false, true, true),
        ("a peer's contested prefix: that peer's agent raises it", "node-c", contested(), true, true, false),
        ("a prefix of a node with no agent: the reporter", "node-c", contested(), true, false, true),
        ("... and nobody else", "node-c", contested(), false, false, false),
        ("a missing key: the reporter", "node-c", Problem::NoKey, true, false, true),
        ("a missing key: not another agent", "node-c", Problem::NoKey, false, false, false),
        ("a key claimed twice: the reporter", "node-c", Problem::DuplicateKey { with: vec!["node-d".into()] }, true, false, true),
        ("a peer cluster's node: the reporter", "prod-b/n1", Problem::InvalidRemoteNode("x".into()), true, false, true),
        ("a peer cluster's node: not another agent", "prod-b/n1", Problem::InvalidRemoteNode("x".into()), false, false, false),
    ];
    for (case, node, problem, reporter, about_peer, want) in cases {
        let p = NodeProblem { node: node.into(), problem };
        assert_eq!(super::raises_event(&p, "node-b", reporter, about_peer), want, "{case}");
    }
}

/// The names for metric labels are built again only when a peer's key or node name changed, or
/// a peer came or went (`peer_names`).
#[test]
fn peer_names_table() {
    let peer = |node: &str, k: usize| meshcrypt_keyexchange::mesh::Peer {
        node: node.into(),
        public_key: key(k),
        key_epoch: 1,
        endpoint: "198.18.0.11:51820".parse().unwrap(),
        allowed_ips: vec![],
    };
    let set = |peers: &[meshcrypt_keyexchange::mesh::Peer]| PeerSet {
        peers: peers.iter().map(|p| (p.node.clone(), p.clone())).collect(),
        ..PeerSet::default()
    };
    let before: BTreeMap<PublicKey, String> = [(key(1), "node-b".into()), (key(2), "node-c".into())].into();
    let cases = [
        ("the same peers", set(&[peer("node-b", 1), peer("node-c", 2)]), false),
        ("a key rotated", set(&[peer("node-b", 3), peer("node-c", 2)]), true),
        ("a key moved to another node", set(&[peer("node-b", 2), peer("node-c", 1)]), true),
        ("a peer gone", set(&[peer("node-b", 1)]), true),
        ("a peer more", set(&[peer("node-b", 1), peer("node-c", 2), peer("node-d", 4)]), true),
        ("no peers", set(&[]), true),
    ];
    for (what, peers, changed) in cases {
        let names = peer_names(&before, &peers);
        assert_eq!(names.is_some(), changed, "{what}");
        if let Some(names) = names {
            let want: BTreeMap<PublicKey, String> =
                peers.peers.values().map(|p| (p.public_key, p.node.clone())).collect();
            assert_eq!(*names, want, "{what}");
        }
    }
    assert_eq!(peer_names(&BTreeMap::new(), &set(&[])), None, "none before, none now");
}

/// One walk of the Nodes finds the local one, the sorted InternalIPs and whether this agent is
/// the cluster's first (`survey`): only keyed nodes with a name before the local one's take that.
#[test]
fn survey_table() {
    let ip = |i: u8| IpAddr::from([198, 18, 0, i + 1]);
    let cases: [(&str, Vec<NodeView>, Option<u8>, bool); 6] = [
        ("alone", vec![node("node-b", 1, Some(0))], Some(1), true),
        ("first by name", vec![node("node-c", 2, Some(2)), node("node-b", 1, Some(0))], Some(1), true),
        (
            "a keyed node before it",
            vec![node("node-a", 3, Some(3)), node("node-b", 1, Some(0))],
            Some(1),
            false,
        ),
        (
            "a keyless node before it",
            vec![node("node-a", 3, None), node("node-b", 1, Some(0))],
            Some(1),
            true,
        ),
        (
            "a malformed key before it",
            vec![NodeView { key: malformed_key(), ..node("node-a", 3, None) }, node("node-b", 1, Some(0))],
            Some(1),
            true,
        ),
        ("not listed", vec![node("node-c", 2, Some(2))], None, true),
    ];
    for (what, nodes, local, first) in cases {
        let nodes: Vec<Arc<NodeView>> = nodes.into_iter().map(Arc::new).collect();
        let got = survey(&nodes, "node-b");
        assert_eq!(got.local.map(|n| n.internal_ips[0]), local.map(ip), "{what}");
        assert_eq!(got.first_agent, first, "{what}");
        let mut want: Vec<IpAddr> = nodes.iter().flat_map(|n| n.internal_ips.clone()).collect();
        want.sort_unstable();
        assert_eq!(got.node_ips, want, "{what}");
        assert!(got.node_ips.is_sorted(), "{what}");
    }
}
