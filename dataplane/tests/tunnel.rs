//! Two meshcrypt devices in two network namespaces joined by a veth: ping and TCP through the
//! tunnel, statistics, fail-closed drops, and live allowed-IP changes that keep the session.
//! Needs root, `ip` (iproute2) and `ping` (iputils-ping).

mod common;

use std::time::{Duration, SystemTime};

use common::pair::{Pair, device_in, nets};
use common::{Netns, eventually, ping_eventually, tcp_echo, unique};
use meshcrypt_dataplane::{Change, Device, DeviceConfig, PrivateKey};
use tempfile::TempDir;

fn close(x: SystemTime, y: SystemTime) -> bool {
    let d = x.duration_since(y).unwrap_or_else(|e| e.duration());
    d < Duration::from_millis(100)
}

#[test]
fn ping_and_tcp_cross_the_tunnel_and_unrouted_traffic_is_dropped() {
    let p = Pair::new(1);
    assert!(ping_eventually(&p.net.a, "10.244.2.1"), "a → b ping");
    assert!(ping_eventually(&p.net.b, "10.244.1.1"), "b → a ping");
    tcp_echo(&p.net.b, "10.244.2.1", 7001, &p.net.a, 1 << 20);
    tcp_echo(&p.net.a, "10.244.1.1", 7002, &p.net.b, 256 << 10);

    for (dev, peer) in [(&p.a, &p.key_b), (&p.b, &p.key_a)] {
        let state = dev.observe();
        assert_eq!(state.ifname, p.ifname);
        assert!(state.ifindex > 0);
        let ps = state.peer(peer).expect("peer configured");
        let age = SystemTime::now().duration_since(ps.last_handshake.expect("handshake")).unwrap_or_default();
        assert!(age < Duration::from_secs(60), "handshake {age:?} ago");
        assert!(ps.rx_bytes > 1 << 18 && ps.tx_bytes > 1 << 18, "{ps:?}");
        assert!(ps.endpoint.is_some());
    }

    // Fail closed: a destination no peer covers is dropped and counted, never sent anywhere.
    let before = p.a.observe().counters.dropped_no_route;
    assert!(!p.net.a.ping("10.244.77.1"));
    assert!(eventually(Duration::from_secs(5), || p.a.observe().counters.dropped_no_route > before));

    // A peer may only send from its allowed IPs: b sources a packet from 10.244.9.1.
    p.net.b.ip(&["addr", "add", "10.244.9.1/24", "dev", &p.ifname]);
    let before = p.a.observe().counters.dropped_bad_source;
    assert!(
        !p.net
            .b
            .exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", "10.244.9.1", "10.244.1.1"])
            .status
            .success()
    );
    assert!(eventually(Duration::from_secs(5), || p.a.observe().counters.dropped_bad_source > before));
}

#[test]
fn changing_allowed_ips_keeps_the_session() {
    let p = Pair::new(2);
    assert!(ping_eventually(&p.net.a, "10.244.2.1"));
    let h0 = p.handshake_a();

    p.net.b.ip(&["addr", "add", "10.244.3.1/24", "dev", &p.ifname]);
    p.a.apply(&[Change::ReplaceAllowedIps {
        public_key: p.key_b,
        allowed_ips: nets(&["10.244.2.0/24", "10.244.3.0/24"]),
    }])
    .unwrap();
    assert!(close(p.handshake_a(), h0), "the session survived the change");
    assert_eq!(p.a.observe().peer(&p.key_b).unwrap().allowed_ips, nets(&["10.244.2.0/24", "10.244.3.0/24"]));
    assert!(p.net.a.ping("10.244.3.1"), "the new prefix works at once");
    assert!(close(p.handshake_a(), h0), "no new handshake was needed");

    // Dropping a prefix closes it at once: fail closed, counted.
    p.a.apply(&[Change::ReplaceAllowedIps { public_key: p.key_b, allowed_ips: nets(&["10.244.3.0/24"]) }])
        .unwrap();
    let before = p.a.observe().counters.dropped_no_route;
    assert!(!p.net.a.ping("10.244.2.1"));
    assert!(p.a.observe().counters.dropped_no_route > before);
    assert!(p.net.a.ping("10.244.3.1"));
    assert!(close(p.handshake_a(), h0));
}

#[test]
fn the_endpoint_is_learned_from_an_authenticated_peer() {
    let p = Pair::with(3, false);
    // B cannot reach A before A has spoken: dropped and counted, not sent anywhere.
    assert!(!p.net.b.ping("10.244.1.1"));
    assert!(p.b.observe().counters.dropped_no_endpoint > 0);
    assert_eq!(p.b.observe().peer(&p.key_a).unwrap().endpoint, None);
    assert!(ping_eventually(&p.net.a, "10.244.2.1"));
    let learned = p.b.observe().peer(&p.key_a).unwrap().endpoint;
    assert_eq!(learned, Some((p.net.a_ip, 51820).into()));
    assert!(p.net.b.ping("10.244.1.1"));
}

#[test]
fn shutdown_removes_the_interface_and_socket() {
    let ns = Netns::new("s");
    let dir = TempDir::new().unwrap();
    let ifname = unique("wg");
    let dev = device_in(&ns, &ifname, PrivateKey::generate(), &dir);
    let sock = dev.uapi_path().unwrap().to_path_buf();
    assert!(sock.exists());
    ns.ip(&["link", "show", &ifname]);
    // A second device with the same name in the same namespace is refused, errno kept.
    let err = ns
        .run(|| {
            let mut c = DeviceConfig::new(ifname.clone(), PrivateKey::generate());
            c.uapi_dir = dir.path().join("other");
            c.listen_port = 0;
            Device::create(c)
        })
        .expect_err("the interface is busy");
    assert!(err.io_error().is_some(), "{err}");
    dev.shutdown();
    assert!(!sock.exists());
    let out = ns.exec(&["ip", "link", "show", &ifname]);
    assert!(!out.status.success(), "interface still there");
}
