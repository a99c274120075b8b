//! Dataplane-specific test helpers on top of `meshcrypt_netlab::lab`: meshcrypt devices inside
//! lab nodes, their tunnel addresses, and pings that wait for the first handshake.
//!
//! Tunnel subnets are 10.244.10.0/24 and up: the lab routes its nodes' pod CIDRs (10.244.0.0/24,
//! 10.244.1.0/24) over the underlay, and those routes must not shadow the tunnel's.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use meshcrypt_dataplane::{Change, Device, DeviceConfig, PeerConfig, PrivateKey, PublicKey};
use meshcrypt_netlab::lab::{Lab, Node};
use meshcrypt_netlab::wait::poll;
use tempfile::TempDir;

/// The tunnel interface's name; every lab node is a namespace of its own, so one name does.
pub const IFNAME: &str = "mc0";

/// How long the first packets may wait for a handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(15);

pub fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A lab of `nodes` bare nodes (no pods) on the underlay.
pub fn lab(nodes: usize) -> Lab {
    Lab::builder().nodes(nodes).pods_per_node(0).build().expect("build lab")
}

/// Creates a device from `config` inside lab namespace `ns`: its TUN and UDP socket live there.
pub fn device_in(lab: &Lab, ns: &str, config: DeviceConfig) -> Device {
    lab.run_in(ns, move || Device::create(config)).expect("enter netns").expect("create device")
}

/// Gives `ifname` in `ns` the address `cidr`, MTU 1420, a route to 10.244.0.0/16, and brings it up.
pub fn tunnel_addr(lab: &Lab, ns: &str, ifname: &str, cidr: &str) {
    lab.exec(ns, &["ip", "addr", "add", cidr, "dev", ifname]).unwrap();
    lab.exec(ns, &["ip", "link", "set", ifname, "mtu", "1420", "up"]).unwrap();
    lab.exec(ns, &["ip", "route", "add", "10.244.0.0/16", "dev", ifname]).unwrap();
}

/// Pings `to` from `ns` until answered (the first packets wait for the handshake).
pub fn ping_eventually(lab: &Lab, ns: &str, to: &str) -> Result<(), String> {
    let to: IpAddr = to.parse().unwrap();
    poll(HANDSHAKE, || match lab.ping_from(ns, to) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("no reply from {to}")),
        Err(e) => Err(e.to_string()),
    })
}

/// Two meshcrypt devices on two lab nodes, each the other's only peer: A (node-0) has
/// 10.244.10.1/24, B (node-1) 10.244.20.1/24. Fields drop in order: devices before the lab.
pub struct Pair {
    pub a: Device,
    pub b: Device,
    pub key_a: PublicKey,
    pub key_b: PublicKey,
    pub node_a: Node,
    pub node_b: Node,
    _dirs: TempDir,
    pub lab: Lab,
}

impl Pair {
    pub fn new() -> Self {
        Self::with(true)
    }

    /// `b_knows_a` false leaves B without an endpoint for A, to be learned.
    pub fn with(b_knows_a: bool) -> Self {
        Self::build(b_knows_a, 1)
    }

    /// Devices with `workers` data-path workers each.
    pub fn with_workers(workers: usize) -> Self {
        Self::build(true, workers)
    }

    fn build(b_knows_a: bool, workers: usize) -> Self {
        let lab = lab(2);
        let (node_a, node_b) = (lab.nodes()[0].clone(), lab.nodes()[1].clone());
        let dirs = TempDir::new().unwrap();
        let (sk_a, sk_b) = (PrivateKey::generate(), PrivateKey::generate());
        let (key_a, key_b) = (sk_a.public_key(), sk_b.public_key());
        let config = |key, side: &str| {
            let mut config = DeviceConfig::new(IFNAME, key);
            config.uapi_dir = dirs.path().join(side);
            config.workers = workers;
            config
        };
        let a = device_in(&lab, &node_a.namespace, config(sk_a, "a"));
        let b = device_in(&lab, &node_b.namespace, config(sk_b, "b"));
        let peer = |public_key, endpoint: Option<&Node>, allowed: &str| {
            Change::UpsertPeer(PeerConfig {
                public_key,
                endpoint: endpoint.map(|n| (n.underlay_addr, 51820).into()),
                allowed_ips: nets(&[allowed]),
                persistent_keepalive: None,
                preshared_key: None,
            })
        };
        a.apply(&[peer(key_b, Some(&node_b), "10.244.20.0/24")]).unwrap();
        b.apply(&[peer(key_a, b_knows_a.then_some(&node_a), "10.244.10.0/24")]).unwrap();
        tunnel_addr(&lab, &node_a.namespace, IFNAME, "10.244.10.1/24");
        tunnel_addr(&lab, &node_b.namespace, IFNAME, "10.244.20.1/24");
        Self { a, b, key_a, key_b, node_a, node_b, _dirs: dirs, lab }
    }

    /// Pings `to` once (with the lab's short retry window) from A's or B's node.
    pub fn ping(&self, from: &Node, to: &str) -> bool {
        self.lab.ping_from(&from.namespace, to.parse().unwrap()).unwrap()
    }

    pub fn handshake_a(&self) -> SystemTime {
        self.a.observe().peer(&self.key_b).unwrap().last_handshake.expect("a session with b")
    }
}
