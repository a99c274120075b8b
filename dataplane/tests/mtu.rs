//! MTU is never silent (issue 11, behaviour 8): a new device fits a 1500-byte underlay, and a
//! packet too large for the path to its peer is answered with ICMP to its sender and counted, never
//! dropped in a silent batch. Needs root, `ip` (iproute2) and `ping` (iputils-ping).

mod common;

use std::time::Duration;

use common::{IFNAME, Pair, device_in, lab, nets, ping_eventually};
use meshcrypt_dataplane::{Change, DEFAULT_MTU, DeviceConfig, PeerConfig, PrivateKey};
use tempfile::TempDir;

const TCP_TIMEOUT: Duration = Duration::from_secs(30);

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

fn link_mtu(lab: &meshcrypt_netlab::lab::Lab, ns: &str) -> u32 {
    lab.exec(ns, &["cat", &format!("/sys/class/net/{IFNAME}/mtu")]).unwrap().trim().parse().unwrap()
}

/// Two devices made with the defaults on a 1500-byte underlay, brought up without an MTU of the
/// test's own (as `meshcrypt device` is used with wg-quick-less scripts): the interface has 1420,
/// and 8 MiB of TCP arrive intact with no send errors.
#[test]
fn a_new_device_fits_a_1500_byte_underlay_and_bulk_tcp_arrives_intact() {
    let lab = lab(2);
    let (a, b) = (lab.nodes()[0].clone(), lab.nodes()[1].clone());
    let dirs = TempDir::new().unwrap();
    let (sk_a, sk_b) = (PrivateKey::generate(), PrivateKey::generate());
    let (key_a, key_b) = (sk_a.public_key(), sk_b.public_key());
    let config = |key, side: &str| {
        let mut config = DeviceConfig::new(IFNAME, key);
        config.uapi_dir = dirs.path().join(side);
        config
    };
    let dev_a = device_in(&lab, &a.namespace, config(sk_a, "a"));
    let dev_b = device_in(&lab, &b.namespace, config(sk_b, "b"));
    let peer = |public_key, node: &meshcrypt_netlab::lab::Node, allowed: &str| {
        Change::UpsertPeer(PeerConfig {
            public_key,
            endpoint: Some((node.underlay_addr, 51820).into()),
            allowed_ips: nets(&[allowed]),
            persistent_keepalive: None,
            preshared_key: None,
        })
    };
    dev_a.apply(&[peer(key_b, &b, "10.244.20.0/24")]).unwrap();
    dev_b.apply(&[peer(key_a, &a, "10.244.10.0/24")]).unwrap();
    for (ns, cidr) in [(&a.namespace, "10.244.10.1/24"), (&b.namespace, "10.244.20.1/24")] {
        lab.exec(ns, &["ip", "addr", "add", cidr, "dev", IFNAME]).unwrap();
        lab.exec(ns, &["ip", "link", "set", IFNAME, "up"]).unwrap();
        lab.exec(ns, &["ip", "route", "add", "10.244.0.0/16", "dev", IFNAME]).unwrap();
        assert_eq!(link_mtu(&lab, ns), u32::from(DEFAULT_MTU), "the device's MTU in {ns}");
    }
    ping_eventually(&lab, &a.namespace, "10.244.20.1").expect("a → b ping");
    let to_b = "10.244.20.1".parse().unwrap();
    lab.tcp_exchange_ns(&a.namespace, &b.namespace, to_b, &payload(8 << 20), TCP_TIMEOUT).expect("a → b TCP");
    for dev in [&dev_a, &dev_b] {
        let c = dev.observe().counters;
        assert_eq!((c.dropped_send_error, c.dropped_too_big), (0, 0), "{c:?}");
    }
}

/// A's tunnel MTU set to 1500 over a 1500-byte underlay (a misconfiguration the agent refuses,
/// but `ip link set mtu` can do). The device knows the path to B carries 1440-byte inner packets:
/// a larger packet with Don't Fragment is answered with ICMP fragmentation-needed carrying 1440
/// (ping reports it) and counted; TCP adapts and 4 MiB arrive intact; a larger packet that may be
/// fragmented still arrives (the kernel fragments its datagram).
#[test]
fn a_packet_too_big_for_the_path_gets_icmp_back_and_is_counted() {
    let p = Pair::new();
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    p.lab.exec(na, &["ip", "link", "set", IFNAME, "mtu", "1500"]).unwrap();

    // 1472 bytes of ICMP payload: a 1500-byte packet.
    let ping = |df: &str| {
        let out = p
            .lab
            .exec_output(
                na,
                &["ping", "-n", "-M", df, "-s", "1472", "-c", "2", "-i", "0.3", "-W", "1", "10.244.20.1"],
            )
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (_, told) = ping("do");
    assert!(
        told.contains("mtu = 1440") || told.contains("mtu=1440"),
        "ping was not told the path MTU:\n{told}"
    );
    let c = p.a.observe().counters;
    assert!(c.dropped_too_big >= 1, "no packet was answered as too big: {c:?}");

    let (fragmented, text) = ping("dont");
    assert!(fragmented, "a packet that may be fragmented did not arrive:\n{text}");

    let to_b = "10.244.20.1".parse().unwrap();
    p.lab
        .tcp_exchange_ns(na, nb, to_b, &payload(4 << 20), TCP_TIMEOUT)
        .expect("a → b TCP after PMTU discovery");
    assert_eq!(p.a.observe().counters.dropped_send_error, 0);
}

/// A send the kernel refuses (here: no route to the peer's endpoint any more) is counted as a
/// drop with its reason (and logged as a WARN), never lost silently.
#[test]
fn a_send_error_is_counted_never_silent() {
    let p = Pair::new();
    let na = &p.node_a.namespace;
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");
    let before = p.a.observe().counters.dropped_send_error;
    let peer = format!("{}/32", p.node_b.underlay_addr);
    p.lab.exec(na, &["ip", "route", "add", "unreachable", &peer]).unwrap();
    assert!(!p.ping(&p.node_a, "10.244.20.1"), "a ping went through without a route to the peer");
    let c = p.a.observe().counters;
    assert!(c.dropped_send_error > before, "the refused sends were not counted: {c:?}");
}
