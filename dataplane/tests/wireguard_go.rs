//! Interoperability with an independent implementation: wireguard-go (Debian's 0.0.20220316,
//! configured with `wg`) on one lab node, a meshcrypt device on the other; ping and TCP both ways,
//! with each side initiating a handshake. wireguard-go runs as a lab process with a private
//! `/run/wireguard`. Needs root, iproute2, iputils-ping, wireguard-tools and wireguard-go.

mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::Duration;

use common::{IFNAME, device_in, lab, ping_eventually, tunnel_addr};
use meshcrypt_dataplane::{Change, DeviceConfig, PeerConfig, PresharedKey, PrivateKey};
use meshcrypt_netlab::lab::SpawnOptions;
use meshcrypt_netlab::lab::wg_via;
use meshcrypt_netlab::wait::poll;
use tempfile::TempDir;

const GO_IF: &str = "wggo0";
const TCP_TIMEOUT: Duration = Duration::from_secs(20);

/// A 32-byte key in WireGuard's base64 form, for `wg`'s key files.
fn base64_key(bytes: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn meshcrypt_and_wireguard_go_talk_both_ways() {
    let lab = lab(2);
    let (go_node, mesh_node) = (&lab.nodes()[0], &lab.nodes()[1]);
    let (go_ns, mesh_ns) = (&go_node.namespace, &mesh_node.namespace);
    let go_key = PrivateKey::generate();
    let mesh_key = PrivateKey::generate();
    let (go_pub, mesh_pub) = (go_key.public_key(), mesh_key.public_key());

    let mut cmd = Command::new("wireguard-go");
    cmd.args(["-f", GO_IF])
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .env("LOG_LEVEL", "verbose");
    let private = SpawnOptions { private_dirs: vec!["/run/wireguard".into()] };
    let go = lab.spawn_with(go_ns, &cmd, &private).expect("start wireguard-go");
    let go_wg = |args: &[&str]| wg_via(go.pid, args);
    poll(Duration::from_secs(10), || go_wg(&["show", GO_IF]).map_err(|e| e.to_string()))
        .expect("wireguard-go UAPI socket");

    let dir = TempDir::new().unwrap();
    let key_file = dir.path().join("go.key");
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_file).unwrap();
    f.write_all(go_key.to_base64().as_bytes()).unwrap();
    drop(f);
    go_wg(&[
        "set",
        GO_IF,
        "private-key",
        key_file.to_str().unwrap(),
        "listen-port",
        "51820",
        "peer",
        &mesh_pub.to_string(),
        "endpoint",
        &format!("{}:51820", mesh_node.underlay_addr),
        "allowed-ips",
        "10.244.20.0/24",
    ])
    .unwrap();
    tunnel_addr(&lab, go_ns, GO_IF, "10.244.10.1/24");

    let mut config = DeviceConfig::new(IFNAME, mesh_key);
    config.uapi_dir = dir.path().join("uapi");
    let dev = device_in(&lab, mesh_ns, config);
    let go_peer = |keepalive, psk| {
        Change::UpsertPeer(PeerConfig {
            public_key: go_pub,
            endpoint: Some((go_node.underlay_addr, 51820).into()),
            allowed_ips: vec!["10.244.10.0/24".parse().unwrap()],
            persistent_keepalive: keepalive,
            preshared_key: psk,
        })
    };
    dev.apply(&[go_peer(None, None)]).unwrap();
    tunnel_addr(&lab, mesh_ns, IFNAME, "10.244.20.1/24");

    // wireguard-go initiates the first handshake.
    let (go_addr, mesh_addr) = ("10.244.10.1".parse().unwrap(), "10.244.20.1".parse().unwrap());
    ping_eventually(&lab, go_ns, "10.244.20.1").expect("wireguard-go → meshcrypt ping");
    ping_eventually(&lab, mesh_ns, "10.244.10.1").expect("meshcrypt → wireguard-go ping");
    lab.tcp_exchange_ns(go_ns, mesh_ns, mesh_addr, &payload(1 << 20), TCP_TIMEOUT).expect("go → mesh TCP");
    lab.tcp_exchange_ns(mesh_ns, go_ns, go_addr, &payload(1 << 20), TCP_TIMEOUT).expect("mesh → go TCP");

    let state = dev.observe();
    let peer = state.peer(&go_pub).unwrap();
    assert!(peer.last_handshake.is_some() && peer.rx_bytes > 1 << 20 && peer.tx_bytes > 1 << 20, "{peer:?}");
    let go_show = go_wg(&["show", GO_IF, "transfer"]).unwrap();
    assert!(go_show.contains(&mesh_pub.to_string()), "{go_show}");

    // meshcrypt initiates too, now with a pre-shared key on both sides: a fresh peer entry (new
    // session) must complete a handshake that mixes in the key.
    let psk = [0x5au8; 32];
    let psk_file = dir.path().join("psk");
    std::fs::write(&psk_file, base64_key(&psk)).unwrap();
    go_wg(&["set", GO_IF, "peer", &mesh_pub.to_string(), "preshared-key", psk_file.to_str().unwrap()])
        .unwrap();
    dev.apply(&[Change::RemovePeer(go_pub)]).unwrap();
    dev.apply(&[go_peer(Some(1), Some(PresharedKey::from_bytes(psk)))]).unwrap();
    poll(Duration::from_secs(10), || match dev.observe().peer(&go_pub).unwrap().last_handshake {
        Some(_) => Ok(()),
        None => Err("no handshake yet".to_string()),
    })
    .expect("meshcrypt-initiated handshake (persistent keepalive, pre-shared key)");
    ping_eventually(&lab, mesh_ns, "10.244.10.1").expect("meshcrypt → wireguard-go ping with PSK");
    lab.tcp_exchange_ns(mesh_ns, go_ns, go_addr, &payload(256 << 10), TCP_TIMEOUT).expect("mesh → go TCP");
    // The lab stops wireguard-go and removes both nodes after the device has gone.
    drop(dev);
}
