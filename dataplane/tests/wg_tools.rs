//! `wg show` and `wg set` (wireguard-tools) against a meshcrypt device's UAPI socket, plus the
//! raw protocol's error replies. The device lives in a lab node with its socket in a per-test
//! directory, which `wg` sees at its default `/var/run/wireguard` through a bind mount in a mount
//! namespace of its own. Needs root, iproute2 and wireguard-tools.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::{IFNAME, device_in, lab, nets};
use meshcrypt_dataplane::{Change, DeviceConfig, PeerConfig, PrivateKey, uapi_socket_path};
use meshcrypt_netlab::lab::{Lab, LabError};

/// Bind-mounts `$1` over `wg`'s socket directory, then runs `wg` with the remaining arguments.
/// `ip netns exec` has already put the shell in a private (slave) mount namespace, so the mount
/// never shows on the host.
const WG_IN_DIR: &str =
    r#"mkdir -p /var/run/wireguard && mount --bind "$1" /var/run/wireguard && shift && exec wg "$@""#;

/// Runs `wg ARGS` in lab namespace `ns` against the UAPI sockets in `uapi_dir`.
fn wg_in(lab: &Lab, ns: &str, uapi_dir: &Path, args: &[&str]) -> Result<String, LabError> {
    let mut argv = vec!["sh", "-c", WG_IN_DIR, "sh", uapi_dir.to_str().unwrap()];
    argv.extend_from_slice(args);
    lab.exec(ns, &argv)
}

fn uapi_request(path: &Path, request: &str) -> String {
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
    let lab = lab(1);
    let ns = &lab.nodes()[0].namespace;
    let tmp = tempfile::TempDir::new().unwrap();
    let uapi_dir = tmp.path().join("uapi");
    let mut config = DeviceConfig::new(IFNAME, PrivateKey::generate());
    config.uapi_dir = uapi_dir.clone();
    config.listen_port = 0;
    let dev = device_in(&lab, ns, config);
    let sock = uapi_socket_path(&uapi_dir, IFNAME);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    let wg = |args: &[&str]| wg_in(&lab, ns, &uapi_dir, args).unwrap();

    let peer = PrivateKey::generate().public_key();
    dev.apply(&[Change::UpsertPeer(PeerConfig {
        public_key: peer,
        endpoint: Some("198.18.200.2:51820".parse().unwrap()),
        allowed_ips: nets(&["10.244.2.0/24", "10.244.4.0/24"]),
        persistent_keepalive: None,
        preshared_key: None,
    })])
    .unwrap();

    let show = wg(&["show", IFNAME]);
    assert!(show.contains(&format!("peer: {peer}")), "{show}");
    assert!(show.contains("10.244.2.0/24, 10.244.4.0/24"), "{show}");
    assert!(show.contains("198.18.200.2:51820"), "{show}");
    assert!(show.contains(&format!("listening port: {}", dev.listen_port())), "{show}");
    assert_eq!(wg(&["show", IFNAME, "public-key"]).trim(), dev.observe().public_key.to_string());
    assert!(wg(&["show", "interfaces"]).split_whitespace().any(|i| i == IFNAME));

    // wg set adds a peer with allowed IPs, endpoint and keepalive...
    let other = PrivateKey::generate().public_key();
    wg(&[
        "set",
        IFNAME,
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
    wg(&["set", IFNAME, "peer", &peer.to_string(), "remove"]);
    let state = dev.observe();
    assert!(state.peer(&peer).is_none());
    assert!(state.peer(&other).is_some());
    assert!(!wg(&["show", IFNAME]).contains(&peer.to_string()));

    // Device settings: listen port (rebinds the socket), fwmark, private key.
    let port = dev.listen_port().wrapping_add(1).max(1024).to_string();
    wg(&["set", IFNAME, "listen-port", &port, "fwmark", "0x1234"]);
    let state = dev.observe();
    assert_eq!(state.listen_port.to_string(), port);
    assert_eq!(state.fwmark, Some(0x1234));
    assert_eq!(wg(&["show", IFNAME, "fwmark"]).trim(), "0x1234");
    let new_key = PrivateKey::generate();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, new_key.to_base64().as_bytes()).unwrap();
    wg(&["set", IFNAME, "private-key", key_file.to_str().unwrap()]);
    assert_eq!(dev.observe().public_key, new_key.public_key());
    assert!(dev.observe().peer(&other).is_some(), "peers survive a key change");

    // Errors come back as errno lines, and the connection survives them.
    assert_eq!(uapi_request(&sock, "set=1\nbogus=1\n\n"), "errno=22\n");
    assert_eq!(uapi_request(&sock, &format!("set=1\npublic_key={}\n\n", "00".repeat(32))), "errno=22\n");
    assert_eq!(uapi_request(&sock, "set=1\n\n"), "errno=0\n");
    assert!(uapi_request(&sock, "get=1\n\n").ends_with("errno=0\n"));

    dev.shutdown();
    assert!(!sock.exists(), "socket removed on shutdown");
    let gone = wg_in(&lab, ns, &uapi_dir, &["show", IFNAME]).expect_err("wg show after shutdown");
    assert!(gone.to_string().contains("Unable to access interface"), "{gone}");
}
