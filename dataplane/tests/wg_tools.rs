//! `wg show` and `wg set` (wireguard-tools) against a meshcrypt device's UAPI socket, plus the
//! raw protocol's error replies. The socket lives in `wg`'s default directory under a unique
//! interface name. Needs root, iproute2 and wireguard-tools.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{Netns, must, run, unique};
use meshcrypt_dataplane::{
    Change, DEFAULT_UAPI_DIR, Device, DeviceConfig, IpNetwork, PeerConfig, PrivateKey, uapi_socket_path,
};

fn nets(list: &[&str]) -> Vec<IpNetwork> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn uapi_request(path: &PathBuf, request: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let mut reader = BufReader::new(s);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\n" {
            return reply;
        }
        reply.push_str(&line);
    }
}

#[test]
fn wg_show_lists_peers_and_wg_set_changes_them() {
    let ns = Netns::new("w");
    let ifname = unique("mcw");
    let mut config = DeviceConfig::new(ifname.clone(), PrivateKey::generate());
    config.uapi_dir = DEFAULT_UAPI_DIR.into();
    config.listen_port = 0;
    let dev = ns.run(move || Device::create(config)).expect("create device");
    let sock = uapi_socket_path(DEFAULT_UAPI_DIR.as_ref(), &ifname);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");

    let peer = PrivateKey::generate().public_key();
    dev.apply(&[Change::UpsertPeer(PeerConfig {
        public_key: peer,
        endpoint: Some("198.18.200.2:51820".parse().unwrap()),
        allowed_ips: nets(&["10.244.2.0/24", "10.244.4.0/24"]),
        persistent_keepalive: None,
        preshared_key: None,
    })])
    .unwrap();

    let show = must(&["wg", "show", &ifname]);
    assert!(show.contains(&format!("peer: {peer}")), "{show}");
    assert!(show.contains("10.244.2.0/24, 10.244.4.0/24"), "{show}");
    assert!(show.contains("198.18.200.2:51820"), "{show}");
    assert!(show.contains(&format!("listening port: {}", dev.listen_port())), "{show}");
    assert_eq!(must(&["wg", "show", &ifname, "public-key"]).trim(), dev.observe().public_key.to_string());
    assert!(must(&["wg", "show", "interfaces"]).split_whitespace().any(|i| i == ifname));

    // wg set adds a peer with allowed IPs, endpoint and keepalive...
    let other = PrivateKey::generate().public_key();
    must(&[
        "wg",
        "set",
        &ifname,
        "peer",
        &other.to_string(),
        "allowed-ips",
        "10.244.5.0/24,10.244.6.7/32",
        "endpoint",
        "198.18.200.3:51820",
    ]);
    let state = dev.observe();
    let added = state.peer(&other).expect("peer added by wg set");
    assert_eq!(added.allowed_ips, nets(&["10.244.5.0/24", "10.244.6.7/32"]));
    assert_eq!(added.endpoint, Some("198.18.200.3:51820".parse().unwrap()));

    // ...and removes one.
    must(&["wg", "set", &ifname, "peer", &peer.to_string(), "remove"]);
    let state = dev.observe();
    assert!(state.peer(&peer).is_none());
    assert!(state.peer(&other).is_some());
    assert!(!must(&["wg", "show", &ifname]).contains(&peer.to_string()));

    // Device settings: listen port (rebinds the socket), fwmark, private key.
    let port = dev.listen_port().wrapping_add(1).max(1024).to_string();
    must(&["wg", "set", &ifname, "listen-port", &port, "fwmark", "0x1234"]);
    let state = dev.observe();
    assert_eq!(state.listen_port.to_string(), port);
    assert_eq!(state.fwmark, Some(0x1234));
    assert_eq!(must(&["wg", "show", &ifname, "fwmark"]).trim(), "0x1234");
    let new_key = PrivateKey::generate();
    let key_dir = tempfile::TempDir::new().unwrap();
    let key_file = key_dir.path().join("key");
    std::fs::write(&key_file, new_key.to_base64().as_bytes()).unwrap();
    must(&["wg", "set", &ifname, "private-key", key_file.to_str().unwrap()]);
    assert_eq!(dev.observe().public_key, new_key.public_key());
    assert!(dev.observe().peer(&other).is_some(), "peers survive a key change");

    // Errors come back as errno lines, and the connection survives them.
    assert_eq!(uapi_request(&sock, "set=1\nbogus=1\n\n"), "errno=22\n");
    assert_eq!(uapi_request(&sock, &format!("set=1\npublic_key={}\n\n", "00".repeat(32))), "errno=22\n");
    assert_eq!(uapi_request(&sock, "set=1\n\n"), "errno=0\n");
    assert!(uapi_request(&sock, "get=1\n\n").ends_with("errno=0\n"));

    dev.shutdown();
    assert!(!sock.exists(), "socket removed on shutdown");
    assert!(!run(&["wg", "show", &ifname]).status.success());
}
