//! The kernel backend against the kernel's own WireGuard: devices made over netlink in lab nodes,
//! talking to each other and to meshcrypt's userspace device, read back for status, and adopted
//! with their peers and sessions by a second run. These need a kernel with WireGuard: nextest runs
//! this binary inside the kernel VM (`scripts/vm/run.sh`, `.config/nextest.toml`), as root.

mod common;

use std::sync::Arc;

use common::{IFNAME, device_in, lab, nets, ping_eventually, tunnel_addr};
use meshcrypt_dataplane::{
    Change, DeviceConfig, Error, Kernel, PeerConfig, PrivateKey, PublicKey, WireGuardBackend, WireGuardDevice,
};
use meshcrypt_netlab::lab::{Lab, Node};

/// A kernel device on `node`, made by the backend inside the node's namespace.
fn kernel_device(lab: &Lab, node: &Node, key: PrivateKey) -> Arc<dyn WireGuardDevice> {
    let config = DeviceConfig::new(IFNAME, key);
    lab.run_in(&node.namespace, move || Kernel.create(config))
        .expect("enter netns")
        .expect("create kernel device")
}

fn peer(key: PublicKey, endpoint: &Node, allowed: &[&str]) -> Change {
    Change::UpsertPeer(PeerConfig {
        public_key: key,
        endpoint: Some((endpoint.underlay_addr, 51820).into()),
        allowed_ips: nets(allowed),
        persistent_keepalive: None,
        preshared_key: None,
    })
}

/// `wg show IFNAME dump` in `ns`: wireguard-tools' own reading of the kernel's device.
fn wg_dump(lab: &Lab, ns: &str) -> String {
    lab.exec(ns, &["wg", "show", IFNAME, "dump"]).expect("wg show")
}

/// Two lab nodes, A with a kernel device (10.244.10.1/24) and B with the device `make_b` makes
/// (10.244.20.1/24), each the other's only peer. Fields drop in order: devices before the lab.
struct Mesh {
    a: Arc<dyn WireGuardDevice>,
    b: Arc<dyn WireGuardDevice>,
    key_a: PublicKey,
    key_b: PublicKey,
    /// A's private key again, for a second run.
    again: PrivateKey,
    node_a: Node,
    node_b: Node,
    lab: Lab,
}

impl Mesh {
    fn new(make_b: impl FnOnce(&Lab, &Node, PrivateKey) -> Arc<dyn WireGuardDevice>) -> Self {
        let lab = lab(2);
        let (node_a, node_b) = (lab.nodes()[0].clone(), lab.nodes()[1].clone());
        let (sk_a, sk_b) = (PrivateKey::generate(), PrivateKey::generate());
        let (key_a, key_b) = (sk_a.public_key(), sk_b.public_key());
        let again = PrivateKey::from_bytes(sk_a.to_bytes());
        let a = kernel_device(&lab, &node_a, sk_a);
        let b = make_b(&lab, &node_b, sk_b);
        a.apply(&[peer(key_b, &node_b, &["10.244.20.0/24"])]).unwrap();
        b.apply(&[peer(key_a, &node_a, &["10.244.10.0/24"])]).unwrap();
        tunnel_addr(&lab, &node_a.namespace, IFNAME, "10.244.10.1/24");
        tunnel_addr(&lab, &node_b.namespace, IFNAME, "10.244.20.1/24");
        Self { a, b, key_a, key_b, again, node_a, node_b, lab }
    }
}

#[test]
fn the_kernel_has_wireguard() {
    assert!(Kernel::available(), "this test runs in the kernel VM, whose kernel has WireGuard");
}

/// Two kernel devices configured by deltas: ping through the tunnel both ways, the peers,
/// handshakes and bytes read back (and as `wg` reads them), a peer's allowed IPs replaced and a
/// peer removed without touching the other.
#[test]
fn kernel_devices_talk_and_report_peers_and_handshakes() {
    let Mesh { a, key_a, key_b, node_a, node_b, lab, .. } = &Mesh::new(kernel_device);
    ping_eventually(lab, &node_a.namespace, "10.244.20.1").unwrap();
    ping_eventually(lab, &node_b.namespace, "10.244.10.1").unwrap();

    let state = a.observe().unwrap();
    assert_eq!((state.ifname.as_str(), state.public_key, state.listen_port), (IFNAME, *key_a, 51820));
    let to_b = state.peer(key_b).expect("b is a's peer");
    assert_eq!(to_b.allowed_ips, nets(&["10.244.20.0/24"]));
    assert_eq!(to_b.endpoint, Some((node_b.underlay_addr, 51820).into()));
    assert!(to_b.last_handshake.is_some(), "{to_b:?}");
    assert!(to_b.rx_bytes > 0 && to_b.tx_bytes > 0, "{to_b:?}");
    let dump = wg_dump(lab, &node_a.namespace);
    assert!(dump.contains(&key_b.to_string()) && dump.contains("10.244.20.0/24"), "{dump}");

    // A third peer added, b's allowed IPs replaced, the third removed: b's session stays.
    let third = PrivateKey::generate().public_key();
    let handshake = to_b.last_handshake;
    a.apply(&[
        peer(third, node_b, &["10.244.30.0/24"]),
        Change::ReplaceAllowedIps {
            public_key: *key_b,
            allowed_ips: nets(&["10.244.20.0/24", "10.244.21.0/24"]),
        },
    ])
    .unwrap();
    let state = a.observe().unwrap();
    assert_eq!(state.peers.len(), 2);
    assert_eq!(state.peer(key_b).unwrap().allowed_ips, nets(&["10.244.20.0/24", "10.244.21.0/24"]));
    a.apply(&[Change::RemovePeer(third), Change::RemovePeer(third)]).unwrap();
    let state = a.observe().unwrap();
    let keys: Vec<PublicKey> = state.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [*key_b]);
    assert_eq!(state.peer(key_b).unwrap().last_handshake, handshake, "b's session untouched");
    ping_eventually(lab, &node_a.namespace, "10.244.20.1").unwrap();
}

/// A kernel device and meshcrypt's userspace device are peers: ping both ways.
#[test]
fn a_kernel_device_and_a_userspace_device_interoperate() {
    let dir = tempfile::TempDir::new().unwrap();
    let mesh = Mesh::new(|lab, node, key| {
        let mut config = DeviceConfig::new(IFNAME, key);
        config.uapi_dir = dir.path().to_path_buf();
        Arc::new(device_in(lab, &node.namespace, config))
    });
    ping_eventually(&mesh.lab, &mesh.node_a.namespace, "10.244.20.1").unwrap();
    ping_eventually(&mesh.lab, &mesh.node_b.namespace, "10.244.10.1").unwrap();
    assert!(mesh.a.observe().unwrap().peer(&mesh.key_b).unwrap().last_handshake.is_some(), "kernel side");
    assert!(mesh.b.observe().unwrap().peer(&mesh.key_a).unwrap().last_handshake.is_some(), "userspace side");
}

/// Dropping a kernel device leaves it running; the next `create` adopts it with its peers and
/// its session (no new handshake), and traffic goes on. A link of another kind is not adopted.
#[test]
fn a_second_run_adopts_the_device_with_its_peers_and_session() {
    let Mesh { a, key_b, again, node_a, node_b, lab, .. } = Mesh::new(kernel_device);
    ping_eventually(&lab, &node_a.namespace, "10.244.20.1").unwrap();
    let before = a.observe().unwrap();
    drop(a);

    let a = kernel_device(&lab, &node_a, again);
    let after = a.observe().unwrap();
    assert_eq!(after.ifindex, before.ifindex, "the same link");
    assert_eq!(after.peers.len(), 1);
    let (was, is) = (before.peer(&key_b).unwrap(), after.peer(&key_b).unwrap());
    assert_eq!(is.last_handshake, was.last_handshake, "the session kept: no new handshake");
    assert!(lab.ping_from(&node_a.namespace, "10.244.20.1".parse().unwrap()).unwrap());

    lab.exec(&node_b.namespace, &["ip", "link", "add", "other0", "type", "dummy"]).unwrap();
    let config = DeviceConfig::new("other0", PrivateKey::generate());
    let refused = lab.run_in(&node_b.namespace, move || Kernel.create(config).map(drop)).unwrap();
    assert!(
        matches!(&refused, Err(Error::NotWireGuard { kind: Some(kind), .. }) if kind == "dummy"),
        "{refused:?}"
    );
}
