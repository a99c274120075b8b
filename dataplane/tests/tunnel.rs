//! Two meshcrypt devices on two lab nodes: ping and TCP through the tunnel, statistics, receive
//! coalescing (TCP and UDP), padding inside a split super-packet, fail-closed drops, live allowed-IP changes that keep the session, endpoint
//! learning, handshakes from unknown keys, a session lost on one side answered at once, and
//! shutdown.
//! Needs root, `ip` (iproute2) and `ping` (iputils-ping).

mod common;

use std::net::UdpSocket;
use std::time::{Duration, SystemTime};

use common::{IFNAME, Pair, device_in, lab, nets, ping_eventually};
use meshcrypt_dataplane::{Change, Device, DeviceConfig, PeerConfig, PrivateKey};
use meshcrypt_netlab::lab::worker_threads;
use meshcrypt_netlab::wait::poll;
use nix::sys::socket::{setsockopt, sockopt};
use tempfile::TempDir;

const TCP_TIMEOUT: Duration = Duration::from_secs(20);

fn close(x: SystemTime, y: SystemTime) -> bool {
    let d = x.duration_since(y).unwrap_or_else(|e| e.duration());
    d < Duration::from_millis(100)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn ping_and_tcp_cross_the_tunnel_and_unrouted_traffic_is_dropped() {
    let p = Pair::new();
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    ping_eventually(&p.lab, nb, "10.244.10.1").expect("b → a ping");
    let to_b = "10.244.20.1".parse().unwrap();
    p.lab.tcp_exchange_ns(na, nb, to_b, &payload(1 << 20), TCP_TIMEOUT).expect("a → b TCP");
    let to_a = "10.244.10.1".parse().unwrap();
    p.lab.tcp_exchange_ns(nb, na, to_a, &payload(256 << 10), TCP_TIMEOUT).expect("b → a TCP");

    for (dev, peer) in [(&p.a, &p.key_b), (&p.b, &p.key_a)] {
        let state = dev.observe();
        assert_eq!(state.ifname, IFNAME);
        assert!(state.ifindex > 0);
        let ps = state.peer(peer).expect("peer configured");
        let age = SystemTime::now().duration_since(ps.last_handshake.expect("handshake")).unwrap_or_default();
        assert!(age < Duration::from_secs(60), "handshake {age:?} ago");
        assert!(ps.rx_bytes > 1 << 18 && ps.tx_bytes > 1 << 18, "{ps:?}");
        assert!(ps.endpoint.is_some());
    }

    // Fail closed: a destination no peer covers is dropped and counted, never sent anywhere.
    let before = p.a.observe().counters.dropped_no_route;
    assert!(!p.ping(&p.node_a, "10.244.77.1"));
    poll(Duration::from_secs(5), || {
        let c = p.a.observe().counters;
        if c.dropped_no_route > before { Ok(()) } else { Err(format!("no-route drop not counted: {c:?}")) }
    })
    .unwrap();

    // A peer may only send from its allowed IPs: b sources a packet from 10.244.90.1.
    p.lab.exec(nb, &["ip", "addr", "add", "10.244.90.1/24", "dev", IFNAME]).unwrap();
    let before = p.a.observe().counters.dropped_bad_source;
    let ping = ["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", "10.244.90.1", "10.244.10.1"];
    assert!(!p.lab.exec_output(nb, &ping).unwrap().status.success());
    poll(Duration::from_secs(5), || {
        let c = p.a.observe().counters;
        if c.dropped_bad_source > before { Ok(()) } else { Err(format!("bad source not counted: {c:?}")) }
    })
    .unwrap();
    let latest = p.a.observe().counters.last_bad_source.expect("the latest remembered");
    assert_eq!((latest.peer, latest.source), (p.key_b, "10.244.90.1".parse().unwrap()));
}

/// Several workers share each device: TCP in both directions at once arrives whole and in order
/// (each side checks the echo byte for byte).
#[test]
fn several_workers_carry_tcp_both_ways_at_once() {
    const WORKERS: usize = 3;
    let p = Pair::with_workers(WORKERS);
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    let (to_a, to_b) = ("10.244.10.1".parse().unwrap(), "10.244.20.1".parse().unwrap());
    std::thread::scope(|s| {
        let ab = s.spawn(|| p.lab.tcp_exchange_ns(na, nb, to_b, &payload(4 << 20), TCP_TIMEOUT));
        let ba = s.spawn(|| p.lab.tcp_exchange_ns(nb, na, to_a, &payload(4 << 20), TCP_TIMEOUT));
        ab.join().unwrap().expect("a → b TCP");
        ba.join().unwrap().expect("b → a TCP");
    });
    let workers = worker_threads(std::process::id()).len();
    assert_eq!(workers, 2 * WORKERS, "worker threads of the two devices");
}

/// The receiving device hands bulk TCP to the kernel coalesced (GRO): the transfer arrives as
/// super-packets many times the tunnel MTU, not one TUN write per 1,420-byte segment (which costs
/// a trip through the kernel's stack each and made the tunnel 2.5× slower).
/// Packets and bytes B's tunnel interface has handed to B's kernel so far (a super-packet counts
/// once).
fn received_by_b(p: &Pair) -> (u64, u64) {
    let stat = |name: &str| {
        let path = format!("/sys/class/net/{IFNAME}/statistics/{name}");
        p.lab.exec(&p.node_b.namespace, &["cat", &path]).unwrap().trim().parse::<u64>().unwrap()
    };
    (stat("rx_packets"), stat("rx_bytes"))
}

#[test]
fn bulk_tcp_reaches_the_kernel_coalesced() {
    let p = Pair::new();
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    let (packets_before, bytes_before) = received_by_b(&p);
    let to_b = "10.244.20.1".parse().unwrap();
    p.lab.tcp_exchange_ns(na, nb, to_b, &payload(16 << 20), TCP_TIMEOUT).expect("a → b TCP");
    let (packets, bytes) = received_by_b(&p);
    let (packets, bytes) = (packets - packets_before, bytes - bytes_before);
    assert!(bytes >= 16 << 20, "{bytes} bytes received");
    let average = bytes / packets;
    assert!(average >= 4 * 1420, "{packets} packets of {average} bytes on average: not coalesced");
}

/// Packets shorter than the MTU and not a multiple of 16 bytes are padded in the middle of a
/// super-packet, over the first bytes of the next packet's payload, which are put back after
/// sealing: with an MSS of 1001 both ways, TSO super-packets split into packets of 1041 bytes
/// (20 + 32 + 989 with TCP timestamps), padded by 15, and the echo comes back intact.
#[test]
fn bulk_tcp_in_packets_padded_mid_super_packet_crosses_intact() {
    let p = Pair::new();
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    for ns in [na, nb] {
        p.lab
            .exec(ns, &["ip", "route", "replace", "10.244.0.0/16", "dev", IFNAME, "advmss", "1001"])
            .unwrap();
    }
    let to_b = "10.244.20.1".parse().unwrap();
    p.lab.tcp_exchange_ns(na, nb, to_b, &payload(8 << 20), TCP_TIMEOUT).expect("a → b TCP, echoed intact");
}

/// UDP datagrams sent with UDP GSO cross as one train and reach B's kernel as a few USO
/// super-packets, which it splits back into the very datagrams that were sent.
#[test]
fn bulk_udp_reaches_the_kernel_coalesced_and_intact() {
    const SEGMENT: usize = 1200;
    const PER_SEND: usize = 40;
    const SENDS: usize = 4;
    let p = Pair::new();
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    let receiver = p.lab.run_in(nb, || UdpSocket::bind("10.244.20.1:0")).unwrap().expect("bind in B");
    receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = receiver.local_addr().unwrap();
    let sender = p.lab.run_in(na, || UdpSocket::bind("10.244.10.1:0")).unwrap().expect("bind in A");
    setsockopt(&sender, sockopt::UdpGsoSegment, &(SEGMENT as i32)).expect("UDP_SEGMENT");
    let datagram = |j: usize| -> Vec<u8> { (0..SEGMENT).map(|i| (j * 31 + i) as u8).collect() };
    let (packets_before, _) = received_by_b(&p);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    // One train at a time: a train's datagrams fit the receiving socket's buffer.
    for k in 0..SENDS {
        let train: Vec<u8> = (k * PER_SEND..(k + 1) * PER_SEND).flat_map(datagram).collect();
        sender.send_to(&train, to).expect("send a GSO train");
        while got.len() < (k + 1) * PER_SEND {
            let n = receiver.recv(&mut buf).unwrap_or_else(|e| panic!("after {} datagrams: {e}", got.len()));
            got.push(buf[..n].to_vec());
        }
    }
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..SENDS * PER_SEND).map(datagram).collect();
    want.sort();
    assert!(got == want, "the datagrams arrived as they were sent");
    let (packets, _) = received_by_b(&p);
    let written = packets - packets_before;
    assert!(
        written <= (SENDS * PER_SEND / 4) as u64,
        "{written} TUN writes for {} datagrams: not coalesced",
        SENDS * PER_SEND
    );
}

#[test]
fn changing_allowed_ips_keeps_the_session() {
    let p = Pair::new();
    ping_eventually(&p.lab, &p.node_a.namespace, "10.244.20.1").expect("a → b ping");
    let h0 = p.handshake_a();

    p.lab.exec(&p.node_b.namespace, &["ip", "addr", "add", "10.244.30.1/24", "dev", IFNAME]).unwrap();
    p.a.apply(&[Change::ReplaceAllowedIps {
        public_key: p.key_b,
        allowed_ips: nets(&["10.244.20.0/24", "10.244.30.0/24"]),
    }])
    .unwrap();
    assert!(close(p.handshake_a(), h0), "the session survived the change");
    assert_eq!(
        p.a.observe().peer(&p.key_b).unwrap().allowed_ips,
        nets(&["10.244.20.0/24", "10.244.30.0/24"])
    );
    assert!(p.ping(&p.node_a, "10.244.30.1"), "the new prefix works at once");
    assert!(close(p.handshake_a(), h0), "no new handshake was needed");

    // Dropping a prefix closes it at once: fail closed, counted.
    p.a.apply(&[Change::ReplaceAllowedIps { public_key: p.key_b, allowed_ips: nets(&["10.244.30.0/24"]) }])
        .unwrap();
    let before = p.a.observe().counters.dropped_no_route;
    assert!(!p.ping(&p.node_a, "10.244.20.1"));
    assert!(p.a.observe().counters.dropped_no_route > before);
    assert!(p.ping(&p.node_a, "10.244.30.1"));
    assert!(close(p.handshake_a(), h0));
}

#[test]
fn the_endpoint_is_learned_from_an_authenticated_peer() {
    let p = Pair::with(false);
    // B cannot reach A before A has spoken: dropped and counted, not sent anywhere.
    assert!(!p.ping(&p.node_b, "10.244.10.1"));
    assert!(p.b.observe().counters.dropped_no_endpoint > 0);
    assert_eq!(p.b.observe().peer(&p.key_a).unwrap().endpoint, None);
    ping_eventually(&p.lab, &p.node_a.namespace, "10.244.20.1").expect("a → b ping");
    let learned = p.b.observe().peer(&p.key_a).unwrap().endpoint;
    assert_eq!(learned, Some((p.node_a.underlay_addr, 51820).into()));
    assert!(p.ping(&p.node_b, "10.244.10.1"));
}

/// A handshake initiation made for this device's key by a key that is no peer's (a node the mesh
/// refused, someone probing the port) is dropped and counted with its source and key, apart from
/// datagrams that fail to authenticate.
#[test]
fn a_handshake_from_a_key_that_is_no_peers_is_counted_with_its_source() {
    let p = Pair::new();
    p.b.apply(&[Change::RemovePeer(p.key_a)]).unwrap();
    let before = p.b.observe().counters;
    assert!(!p.ping(&p.node_a, "10.244.20.1"), "b no longer knows a");
    let counters = poll(Duration::from_secs(10), || {
        let c = p.b.observe().counters;
        if c.handshakes_unknown_key > before.handshakes_unknown_key { Ok(c) } else { Err(format!("{c:?}")) }
    })
    .expect("counted");
    let latest = counters.last_unknown_handshake.expect("the latest remembered");
    assert_eq!(latest.public_key, p.key_a);
    assert_eq!(latest.from, (p.node_a.underlay_addr, 51820).into());
    assert_eq!(counters.decrypt_errors, before.decrypt_errors, "not counted as a decryption failure");
    // A's tx bytes count the initiations it sent trying, as kernel WireGuard's do.
    let a_to_b = p.a.observe().peer(&p.key_b).cloned().expect("b configured on a");
    assert!(a_to_b.tx_bytes >= 148, "{a_to_b:?}");
}

/// A peer whose initiation this device refused while it was no peer (a node that joined before
/// this one learned of it) is sent an initiation the moment it is added, not answered only at its
/// own next retry (REKEY_TIMEOUT, 5 s after the refused one): the refusal and the add meet in the
/// device, which sees both (an agent deciding from a view read before the refusal would miss it).
#[test]
fn a_peer_added_after_its_initiation_was_refused_gets_a_handshake_at_once() {
    let p = Pair::new();
    p.b.apply(&[Change::RemovePeer(p.key_a)]).unwrap();
    let before = p.b.observe().counters.handshakes_unknown_key;
    // One datagram for B's pods makes A initiate, without waiting as a ping would.
    p.lab
        .run_in(&p.node_a.namespace, || {
            UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"knock", "10.244.20.1:9"))
        })
        .unwrap()
        .expect("sent");
    poll(Duration::from_secs(4), || {
        let c = p.b.observe().counters;
        if c.handshakes_unknown_key > before { Ok(()) } else { Err(format!("{c:?}")) }
    })
    .expect("a's initiation refused");
    let a = PeerConfig {
        public_key: p.key_a,
        endpoint: Some((p.node_a.underlay_addr, 51820).into()),
        allowed_ips: nets(&["10.244.10.0/24"]),
        persistent_keepalive: None,
        preshared_key: None,
    };
    p.b.apply(&[Change::UpsertPeer(a)]).unwrap();
    // Sent by the apply itself: an initiation is 148 bytes (a response to A's retry, 92).
    let b_to_a = p.b.observe().peer(&p.key_a).cloned().expect("a configured");
    assert!(b_to_a.tx_bytes >= 148, "no initiation sent when a was added: {b_to_a:?}");
    assert!(p.ping(&p.node_b, "10.244.10.1"), "the path is up");
}

/// A peer that keeps sending on a session this device lost (its agent restarted, or its interface
/// was made again; here B forgets A and is given it again) gets a handshake from this side at
/// once, instead of after its own timers give up (KEEPALIVE + REKEY_TIMEOUT, 15 s): a ping with a
/// 3 s deadline goes through.
#[test]
fn a_peer_sending_on_a_session_this_device_lost_gets_a_handshake_at_once() {
    let p = Pair::new();
    ping_eventually(&p.lab, &p.node_a.namespace, "10.244.20.1").expect("a session");
    let a = PeerConfig {
        public_key: p.key_a,
        endpoint: Some((p.node_a.underlay_addr, 51820).into()),
        allowed_ips: nets(&["10.244.10.0/24"]),
        persistent_keepalive: None,
        preshared_key: None,
    };
    p.b.apply(&[Change::RemovePeer(p.key_a), Change::UpsertPeer(a)]).unwrap();
    let b_to_a = p.b.observe().peer(&p.key_a).cloned().expect("a configured again");
    assert_eq!((b_to_a.last_handshake, b_to_a.tx_bytes), (None, 0), "a new peer: no session, nothing sent");

    assert!(p.ping(&p.node_a, "10.244.20.1"), "a's stale session is answered within the ping's 3 s");
    // B's entry for A is new, so a handshake on it is a new session, started by B (its tx bytes
    // count the initiation). A's handshake time cannot tell: boringtun stamps a session with the
    // time of its latest timer tick (every 100 ms), which the old session may share.
    let b_to_a = p.b.observe().peer(&p.key_a).cloned().expect("a");
    assert!(b_to_a.last_handshake.is_some() && b_to_a.tx_bytes >= 148, "b initiated it: {b_to_a:?}");
}

#[test]
fn shutdown_removes_the_interface_and_socket() {
    let lab = lab(1);
    let ns = &lab.nodes()[0].namespace;
    let dir = TempDir::new().unwrap();
    let mut config = DeviceConfig::new(IFNAME, PrivateKey::generate());
    config.uapi_dir = dir.path().to_path_buf();
    let dev = device_in(&lab, ns, config);
    let sock = dev.uapi_path().unwrap().to_path_buf();
    assert!(sock.exists());
    lab.exec(ns, &["ip", "link", "show", IFNAME]).expect("interface exists");
    // A second device with the same name in the same namespace is refused, errno kept.
    let err = lab
        .run_in(ns, || {
            let mut c = DeviceConfig::new(IFNAME, PrivateKey::generate());
            c.uapi_dir = dir.path().join("other");
            c.listen_port = 0;
            Device::create(c)
        })
        .unwrap()
        .expect_err("the interface is busy");
    assert!(err.io_error().is_some(), "{err}");
    dev.shutdown();
    assert!(!sock.exists());
    let out = lab.exec_output(ns, &["ip", "link", "show", IFNAME]).unwrap();
    assert!(!out.status.success(), "interface still there");
}
