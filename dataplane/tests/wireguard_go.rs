//! Interoperability with an independent implementation: wireguard-go (Debian's 0.0.20220316,
//! configured with `wg`) in one namespace, a meshcrypt device in the other; ping and TCP both
//! ways, with each side initiating a handshake. Needs root, iproute2, iputils-ping,
//! wireguard-tools and wireguard-go.

mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use common::wggo::GoProcess;
use common::{Underlay, eventually, must, ping_eventually, tcp_echo, tunnel_addr, unique};
use meshcrypt_dataplane::{Change, Device, DeviceConfig, PeerConfig, PresharedKey, PrivateKey};
use tempfile::TempDir;

/// A 32-byte key in WireGuard's base64 form, for `wg`'s key files.
fn base64_key(bytes: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn meshcrypt_and_wireguard_go_talk_both_ways() {
    let net = Underlay::new(4);
    let go_if = unique("mcg");
    let go_key = PrivateKey::generate();
    let mesh_key = PrivateKey::generate();
    let (go_pub, mesh_pub) = (go_key.public_key(), mesh_key.public_key());

    let go = GoProcess::start(&net.a, &go_if);

    let dir = TempDir::new().unwrap();
    let key_file = dir.path().join("go.key");
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_file).unwrap();
    f.write_all(go_key.to_base64().as_bytes()).unwrap();
    drop(f);
    must(&[
        "wg",
        "set",
        &go_if,
        "private-key",
        key_file.to_str().unwrap(),
        "listen-port",
        "51820",
        "peer",
        &mesh_pub.to_string(),
        "endpoint",
        &format!("{}:51820", net.b_ip),
        "allowed-ips",
        "10.244.2.0/24",
    ]);
    tunnel_addr(&net.a, &go_if, "10.244.1.1/24");

    let mesh_if = unique("wg");
    let mut config = DeviceConfig::new(mesh_if.clone(), mesh_key);
    config.uapi_dir = dir.path().join("uapi");
    let dev = net.b.run(move || Device::create(config)).expect("create device");
    dev.apply(&[Change::UpsertPeer(PeerConfig {
        public_key: go_pub,
        endpoint: Some((net.a_ip, 51820).into()),
        allowed_ips: vec!["10.244.1.0/24".parse().unwrap()],
        persistent_keepalive: None,
        preshared_key: None,
    })])
    .unwrap();
    tunnel_addr(&net.b, &mesh_if, "10.244.2.1/24");

    // wireguard-go initiates the first handshake.
    assert!(ping_eventually(&net.a, "10.244.2.1"), "wireguard-go → meshcrypt ping");
    assert!(ping_eventually(&net.b, "10.244.1.1"), "meshcrypt → wireguard-go ping");
    tcp_echo(&net.b, "10.244.2.1", 7101, &net.a, 1 << 20);
    tcp_echo(&net.a, "10.244.1.1", 7102, &net.b, 1 << 20);

    let state = dev.observe();
    let peer = state.peer(&go_pub).unwrap();
    assert!(peer.last_handshake.is_some() && peer.rx_bytes > 1 << 20 && peer.tx_bytes > 1 << 20, "{peer:?}");
    let go_show = must(&["wg", "show", &go_if, "transfer"]);
    assert!(go_show.contains(&mesh_pub.to_string()), "{go_show}");

    // meshcrypt initiates too, now with a pre-shared key on both sides: a fresh peer entry (new
    // session) must complete a handshake that mixes in the key.
    let psk = [0x5au8; 32];
    let psk_file = dir.path().join("psk");
    std::fs::write(&psk_file, base64_key(&psk)).unwrap();
    must(&["wg", "set", &go_if, "peer", &mesh_pub.to_string(), "preshared-key", psk_file.to_str().unwrap()]);
    dev.apply(&[Change::RemovePeer(go_pub)]).unwrap();
    dev.apply(&[Change::UpsertPeer(PeerConfig {
        public_key: go_pub,
        endpoint: Some((net.a_ip, 51820).into()),
        allowed_ips: vec!["10.244.1.0/24".parse().unwrap()],
        persistent_keepalive: Some(1),
        preshared_key: Some(PresharedKey::from_bytes(psk)),
    })])
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || dev.observe().peer(&go_pub).unwrap().last_handshake.is_some()),
        "meshcrypt-initiated handshake (persistent keepalive, pre-shared key)"
    );
    assert!(ping_eventually(&net.b, "10.244.1.1"));
    tcp_echo(&net.a, "10.244.1.1", 7103, &net.b, 256 << 10);
    drop(dev);
    drop(go);
}
