//! Table tests of the frame classifier with hand-built frames.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpNumber, PacketBuilder};

use super::classify::classify_frame;
use super::config::LeakConfig;
use super::findings::{Allowed, Encapsulation, Layer, LeakKind};
use super::report::LeakReport;
use ipnet::IpNet;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const NODE0: [u8; 4] = [198, 18, 0, 10];
const NODE1: [u8; 4] = [198, 18, 0, 11];
const SERVICES: [u8; 4] = [198, 18, 0, 1];
const POD0: [u8; 4] = [10, 244, 0, 10];
const POD1: [u8; 4] = [10, 244, 1, 10];
const API_PORT: u16 = 6443;

fn config() -> LeakConfig {
    LeakConfig::new(
        vec!["10.244.0.0/16".parse().unwrap(), "fd00:10:244::/56".parse::<IpNet>().unwrap()],
        vec!["198.18.0.0/15".parse().unwrap(), "fd00:198:18::/64".parse().unwrap()],
    )
    .with_api_endpoint(SocketAddr::from((SERVICES, API_PORT)))
}

fn udp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).udp(sp, dp).write(&mut v, payload).unwrap();
    v
}

fn tcp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sp, dp, 1, 65535)
        .write(&mut v, b"GET / HTTP/1.1\r\n")
        .unwrap();
    v
}

fn icmp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut v, b"ping")
        .unwrap();
    v
}

/// An IP packet (no Ethernet) from pod 0 to pod 1.
fn bare_pod_ip() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(POD0, POD1, 64).tcp(40000, 80, 1, 65535).write(&mut v, b"secret").unwrap();
    v
}

fn ip_in_ip(proto: u8, inner: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(NODE0, NODE1, 64)
        .write(&mut v, IpNumber(proto), inner)
        .unwrap();
    v
}

fn vxlan_pod() -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(POD0, POD1, 64)
        .udp(5000, 53)
        .write(&mut inner, b"query")
        .unwrap();
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    payload.extend_from_slice(&inner);
    udp4(NODE0, NODE1, 33000, 4789, &payload)
}

fn geneve_pod() -> Vec<u8> {
    // 1 option word, protocol type IPv4.
    let mut payload = vec![0x01, 0, 0x08, 0x00, 0, 0, 7, 0, 0xde, 0xad, 0xbe, 0xef];
    payload.extend_from_slice(&bare_pod_ip());
    udp4(NODE0, NODE1, 33000, 6081, &payload)
}

fn gre_key_pod() -> Vec<u8> {
    // Flags: K (key present); protocol IPv4; key 0x01020304.
    let mut payload = vec![0x20, 0x00, 0x08, 0x00, 1, 2, 3, 4];
    payload.extend_from_slice(&bare_pod_ip());
    ip_in_ip(47, &payload)
}

fn ipv6_pod() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "fd00:10:244::10".parse().unwrap();
    let dst: std::net::Ipv6Addr = "fd00:10:244:1::10".parse().unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(1234, 5678)
        .write(&mut v, b"v6")
        .unwrap();
    v
}

fn ipv6_in_ipv4_pod() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "fd00:10:244::10".parse().unwrap();
    let dst: std::net::Ipv6Addr = "fd00:10:244:1::10".parse().unwrap();
    let mut inner = Vec::new();
    PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(1, 2).write(&mut inner, b"x").unwrap();
    ip_in_ip(41, &inner)
}

fn wireguard_data(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 4;
    p[4..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 | 1);
    p
}

/// An ICMPv4 port unreachable from `src` to `dst` quoting `quoted` (a bare IP packet), cut to
/// `quote_len` bytes as a host cuts its quote.
fn icmp4_unreachable(src: [u8; 4], dst: [u8; 4], quoted: &[u8], quote_len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut v, &quoted[..quote_len.min(quoted.len())])
        .unwrap();
    v
}

/// A bare UDP packet between two IPv4 hosts.
fn bare_udp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64).udp(sp, dp).write(&mut v, payload).unwrap();
    v
}

/// An ICMPv6 packet too big between two underlay hosts quoting a WireGuard packet.
fn icmpv6_too_big_about_mesh() -> Vec<u8> {
    let a: std::net::Ipv6Addr = "fd00:198:18::10".parse().unwrap();
    let b: std::net::Ipv6Addr = "fd00:198:18::11".parse().unwrap();
    let mut quoted = Vec::new();
    PacketBuilder::ipv6(a.octets(), b.octets(), 64)
        .udp(51820, 51820)
        .write(&mut quoted, &wireguard_data(1440))
        .unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(b.octets(), a.octets(), 64)
        .icmpv6_raw(2, 0, 1280u32.to_be_bytes())
        .write(&mut v, &quoted[..1232])
        .unwrap();
    v
}

fn arp() -> Vec<u8> {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&MAC_A);
    v.extend_from_slice(&[0x08, 0x06]);
    v.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&MAC_A);
    v.extend_from_slice(&NODE0);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&NODE1);
    v
}

fn ipv6_link_local_ndp() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let dst: std::net::Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, [0x33, 0x33, 0xff, 0, 0, 2])
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut v, &[0u8; 16])
        .unwrap();
    v
}

fn ndp_advertisement_between_nodes() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "fd00:198:18::11".parse().unwrap();
    let dst: std::net::Ipv6Addr = "fd00:198:18::10".parse().unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6_raw(136, 0, [0x60, 0, 0, 0])
        .write(&mut v, &src.octets())
        .unwrap();
    v
}

fn icmpv6_echo_between_nodes() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "fd00:198:18::11".parse().unwrap();
    let dst: std::net::Ipv6Addr = "fd00:198:18::10".parse().unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src.octets(), dst.octets(), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut v, b"ping")
        .unwrap();
    v
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    ip: bool,
    allowed: Option<Allowed>,
    kinds: &'static [LeakKind],
    /// For pod plaintext: the layer that showed it.
    pod_layer: Option<Layer>,
}

fn inner(encapsulation: Encapsulation) -> Option<Layer> {
    Some(Layer::Inner { encapsulation, depth: 1 })
}

#[test]
fn classification_table() {
    use LeakKind::*;
    let cases = vec![
        Case {
            name: "plaintext pod ICMP (host-gw)",
            frame: icmp4(POD0, POD1),
            ip: true,
            allowed: None,
            kinds: &[PodPlaintext],
            pod_layer: Some(Layer::Outer),
        },
        Case {
            name: "plaintext pod TCP",
            frame: tcp4(POD0, POD1, 40000, 80),
            ip: true,
            allowed: None,
            kinds: &[PodPlaintext],
            pod_layer: Some(Layer::Outer),
        },
        Case {
            name: "WireGuard data between nodes",
            frame: udp4(NODE0, NODE1, 51820, 51820, &wireguard_data(96)),
            ip: true,
            allowed: Some(Allowed::Mesh),
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "WireGuard handshake initiation",
            frame: udp4(NODE1, NODE0, 40001, 51820, &{
                let mut p = vec![0u8; 148];
                p[0] = 1;
                p
            }),
            ip: true,
            allowed: Some(Allowed::Mesh),
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "plaintext on the mesh port",
            frame: udp4(NODE0, NODE1, 51820, 51820, &bare_pod_ip()),
            ip: true,
            allowed: Some(Allowed::Mesh),
            kinds: &[MeshNotWireGuard],
            pod_layer: None,
        },
        Case {
            name: "VXLAN-wrapped pod packet",
            frame: vxlan_pod(),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay, PodPlaintext],
            pod_layer: inner(Encapsulation::Vxlan),
        },
        Case {
            name: "Geneve-wrapped pod packet",
            frame: geneve_pod(),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay, PodPlaintext],
            pod_layer: inner(Encapsulation::Geneve),
        },
        Case {
            name: "GRE (with key) wrapped pod packet",
            frame: gre_key_pod(),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay, PodPlaintext],
            pod_layer: inner(Encapsulation::Gre),
        },
        Case {
            name: "IP-in-IP pod packet",
            frame: ip_in_ip(4, &bare_pod_ip()),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay, PodPlaintext],
            pod_layer: inner(Encapsulation::Ipv4InIp),
        },
        Case {
            name: "IPv6-in-IPv4 pod packet",
            frame: ipv6_in_ipv4_pod(),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay, PodPlaintext],
            pod_layer: inner(Encapsulation::Ipv6InIp),
        },
        Case {
            name: "API-server TCP, node to server",
            frame: tcp4(NODE0, SERVICES, 45000, API_PORT),
            ip: true,
            allowed: Some(Allowed::Api),
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "API-server TCP, server to node",
            frame: tcp4(SERVICES, NODE1, API_PORT, 45000),
            ip: true,
            allowed: Some(Allowed::Api),
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "stray TCP between nodes",
            frame: tcp4(NODE0, NODE1, 45000, 22),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay],
            pod_layer: None,
        },
        Case {
            name: "UDP on the API port is not API traffic",
            frame: udp4(NODE0, SERVICES, 45000, API_PORT, b"x"),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay],
            pod_layer: None,
        },
        Case {
            name: "IPv6 pod packet",
            frame: ipv6_pod(),
            ip: true,
            allowed: None,
            kinds: &[PodPlaintext],
            pod_layer: Some(Layer::Outer),
        },
        Case {
            name: "ARP between nodes",
            frame: arp(),
            ip: false,
            allowed: None,
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "IPv6 NDP on link-local",
            frame: ipv6_link_local_ndp(),
            ip: true,
            allowed: None,
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "IPv6 neighbour advertisement between nodes",
            frame: ndp_advertisement_between_nodes(),
            ip: true,
            allowed: None,
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "port unreachable about a WireGuard packet (agent down) is its own category",
            frame: icmp4_unreachable(
                NODE1,
                NODE0,
                &bare_udp4(NODE0, NODE1, 51820, 51820, &wireguard_data(64)),
                28,
            ),
            ip: true,
            allowed: Some(Allowed::MeshIcmpError),
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "packet too big about a WireGuard packet (IPv6) is its own category",
            frame: icmpv6_too_big_about_mesh(),
            ip: true,
            allowed: Some(Allowed::MeshIcmpError),
            kinds: &[],
            pod_layer: None,
        },
        Case {
            name: "an ICMP error quoting a plaintext pod packet is a pod leak",
            frame: icmp4_unreachable(NODE1, NODE0, &bare_pod_ip(), 576),
            ip: true,
            allowed: None,
            kinds: &[PodPlaintext, StrayUnderlay],
            pod_layer: inner(Encapsulation::IcmpError),
        },
        Case {
            name: "an ICMP error about other UDP between nodes is stray",
            frame: icmp4_unreachable(NODE1, NODE0, &bare_udp4(NODE0, NODE1, 4000, 53, b"dns"), 576),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay],
            pod_layer: None,
        },
        Case {
            name: "an ICMP error about mesh-port UDP from outside the underlay is stray",
            frame: icmp4_unreachable(NODE1, NODE0, &bare_udp4(POD0, NODE1, 51820, 51820, b"x"), 576),
            ip: true,
            allowed: None,
            kinds: &[PodPlaintext, StrayUnderlay],
            pod_layer: inner(Encapsulation::IcmpError),
        },
        Case {
            name: "IPv6 echo between nodes is stray",
            frame: icmpv6_echo_between_nodes(),
            ip: true,
            allowed: None,
            kinds: &[StrayUnderlay],
            pod_layer: None,
        },
    ];
    let cfg = config();
    for c in cases {
        let v = classify_frame(&c.frame, &cfg);
        assert!(!v.unparsable, "{}: unparsable", c.name);
        assert_eq!(v.ip, c.ip, "{}: ip", c.name);
        assert_eq!(v.allowed, c.allowed, "{}: allowed", c.name);
        let mut got: Vec<LeakKind> = v.findings.iter().map(|f| f.kind).collect();
        let mut want = c.kinds.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}: findings {:?}", c.name, v.findings);
        let pod_layer = v.findings.iter().find(|f| f.kind == PodPlaintext).map(|f| f.layer);
        assert_eq!(pod_layer, c.pod_layer, "{}: pod layer", c.name);
    }
}

#[test]
fn pod_finding_carries_ports_and_protocol() {
    let v = classify_frame(&vxlan_pod(), &config());
    let f = v.findings.iter().find(|f| f.kind == LeakKind::PodPlaintext).unwrap();
    assert_eq!(f.packet.src, IpAddr::from(POD0));
    assert_eq!(f.packet.dst, IpAddr::from(POD1));
    assert_eq!(f.packet.protocol, 17);
    assert_eq!((f.packet.src_port, f.packet.dst_port), (Some(5000), Some(53)));
}

#[test]
fn truncated_frames_are_unparsable_not_leaks() {
    let v = classify_frame(&[0u8; 6], &config());
    assert!(v.unparsable);
    assert!(!v.is_leak());
}

#[test]
fn report_counts_flows_and_bounds_samples() {
    let cfg = config().with_max_samples(2);
    let mut r = LeakReport::new(cfg.max_samples);
    for _ in 0..3 {
        r.record(&classify_frame(&icmp4(POD0, POD1), &cfg));
    }
    r.record(&classify_frame(&icmp4(POD1, POD0), &cfg));
    r.record(&classify_frame(&tcp4(NODE0, NODE1, 1, 2), &cfg));
    r.record(&classify_frame(&udp4(NODE0, NODE1, 51820, 51820, &wireguard_data(32)), &cfg));
    r.record(&classify_frame(&arp(), &cfg));
    assert_eq!(r.frames, 7);
    assert_eq!(r.non_ip_frames, 1);
    assert_eq!(r.leaking_packets, 5);
    assert_eq!(r.pod_plaintext, 4);
    assert_eq!(r.stray_underlay, 1);
    assert_eq!(r.mesh_packets, 1);
    assert_eq!(r.pod_flow(POD0.into(), POD1.into()), 3);
    assert_eq!(r.pod_flow(POD1.into(), POD0.into()), 1);
    assert_eq!(r.samples.len(), 2);
    assert_eq!(r.samples[0].count, 3);
    assert_eq!(r.unsampled_findings, 1);
    assert!(!r.is_clean());
    let text = r.to_string();
    assert!(text.contains("10.244.0.10"), "{text}");
    assert!(text.contains("plaintext-pod at outer"), "{text}");
    let clean = LeakReport::new(4);
    assert!(clean.is_clean());
    assert!(clean.to_string().contains("LEAKS: none"));
}

#[test]
fn bare_ip_packets_are_classified_too() {
    let v = super::classify::classify_ip_packet(&bare_pod_ip(), &config());
    assert!(v.ip && v.has(LeakKind::PodPlaintext));
    assert_eq!(v.findings[0].layer, Layer::Outer);
    assert_eq!(v.findings[0].packet.dst_port, Some(80));
}
