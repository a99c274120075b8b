//! Two meshcrypt devices in two namespaces joined by a veth, each the other's peer.

use std::time::SystemTime;

use meshcrypt_dataplane::{Change, Device, DeviceConfig, IpNetwork, PeerConfig, PrivateKey, PublicKey};
use tempfile::TempDir;

use super::{Netns, Underlay, tunnel_addr, unique};

/// Fields drop in order: devices before the namespaces they live in.
pub struct Pair {
    pub a: Device,
    pub b: Device,
    pub key_a: PublicKey,
    pub key_b: PublicKey,
    pub ifname: String,
    _dirs: (TempDir, TempDir),
    pub net: Underlay,
}

pub fn nets(list: &[&str]) -> Vec<IpNetwork> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

pub fn device_in(ns: &Netns, ifname: &str, key: PrivateKey, dir: &TempDir) -> Device {
    device_with_threads(ns, ifname, key, dir, 1)
}

pub fn device_with_threads(
    ns: &Netns,
    ifname: &str,
    key: PrivateKey,
    dir: &TempDir,
    threads: usize,
) -> Device {
    let mut config = DeviceConfig::new(ifname, key);
    config.threads = threads;
    config.uapi_dir = dir.path().to_path_buf();
    ns.run(move || Device::create(config)).expect("create device")
}

impl Pair {
    /// A on 10.244.1.1/24, B on 10.244.2.1/24, each the other's only peer.
    pub fn new(subnet: u8) -> Self {
        Self::with(subnet, true)
    }

    /// As [`Pair::new`]; `b_knows_a` false leaves B without an endpoint for A, to be learned.
    pub fn with(subnet: u8, b_knows_a: bool) -> Self {
        Self::build(subnet, b_knows_a, 1)
    }

    /// The general form: `threads` workers per direction on each device.
    pub fn build(subnet: u8, b_knows_a: bool, threads: usize) -> Self {
        let net = Underlay::new(subnet);
        let ifname = unique("wg");
        let (sk_a, sk_b) = (PrivateKey::generate(), PrivateKey::generate());
        let (key_a, key_b) = (sk_a.public_key(), sk_b.public_key());
        let dirs = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let a = device_with_threads(&net.a, &ifname, sk_a, &dirs.0, threads);
        let b = device_with_threads(&net.b, &ifname, sk_b, &dirs.1, threads);
        a.apply(&[Change::UpsertPeer(PeerConfig {
            public_key: key_b,
            endpoint: Some((net.b_ip, 51820).into()),
            allowed_ips: nets(&["10.244.2.0/24"]),
            persistent_keepalive: None,
            preshared_key: None,
        })])
        .unwrap();
        b.apply(&[Change::UpsertPeer(PeerConfig {
            public_key: key_a,
            endpoint: b_knows_a.then(|| (net.a_ip, 51820).into()),
            allowed_ips: nets(&["10.244.1.0/24"]),
            persistent_keepalive: None,
            preshared_key: None,
        })])
        .unwrap();
        tunnel_addr(&net.a, &ifname, "10.244.1.1/24");
        tunnel_addr(&net.b, &ifname, "10.244.2.1/24");
        Self { a, b, key_a, key_b, ifname, _dirs: dirs, net }
    }

    pub fn handshake_a(&self) -> SystemTime {
        self.a.observe().peer(&self.key_b).unwrap().last_handshake.expect("a session with b")
    }
}
