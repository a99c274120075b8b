//! Flow accounting's tables: parsing packets of each shape, summing runs, the cap and the drain.

use std::net::IpAddr;

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};

use super::*;

fn v4(src: [u8; 4], dst: [u8; 4]) -> PacketBuilderStep<IpHeaders> {
    PacketBuilder::ipv4(src, dst, 64)
}

fn tcp4(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let b = v4([10, 244, 1, 2], [10, 244, 2, 3]).tcp(sport, dport, 1, 1000);
    let mut out = Vec::new();
    b.write(&mut out, &vec![0u8; payload]).unwrap();
    out
}

fn udp6(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let src: [u8; 16] = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let dst: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, 64).udp(sport, dport).write(&mut out, &vec![0u8; payload]).unwrap();
    out
}

fn key(protocol: u8, src: &str, src_port: u16, dst: &str, dst_port: u16) -> FlowKey {
    FlowKey {
        direction: FlowDirection::Outbound,
        protocol,
        src: src.parse::<IpAddr>().unwrap(),
        src_port,
        dst: dst.parse::<IpAddr>().unwrap(),
        dst_port,
    }
}

/// A name, a packet, and what parsing it gives.
type Case = (&'static str, Vec<u8>, Option<(FlowKey, u64)>);

#[test]
fn parse_table() {
    let icmp = {
        let mut out = Vec::new();
        v4([10, 244, 1, 2], [10, 244, 2, 3]).icmpv4_echo_request(7, 1).write(&mut out, &[0u8; 56]).unwrap();
        out
    };
    let later_fragment = {
        let mut p = tcp4(40000, 80, 100);
        p[6] = 0x00;
        p[7] = 0x10; // fragment offset 16 × 8 bytes: no transport header here
        p
    };
    let v6_extension = {
        let mut p = udp6(53, 5353, 10);
        p[6] = 0; // hop-by-hop options first: ports not read
        p
    };
    let mut padded = tcp4(40000, 80, 3);
    padded.resize(padded.len().next_multiple_of(16), 0);
    let cases: Vec<Case> = vec![
        ("TCP/IPv4", tcp4(40000, 80, 100), Some((key(6, "10.244.1.2", 40000, "10.244.2.3", 80), 140))),
        ("padded: the IP length counts", padded, Some((key(6, "10.244.1.2", 40000, "10.244.2.3", 80), 43))),
        ("ICMP: no ports", icmp, Some((key(1, "10.244.1.2", 0, "10.244.2.3", 0), 84))),
        ("later fragment: no ports", later_fragment, Some((key(6, "10.244.1.2", 0, "10.244.2.3", 0), 140))),
        ("UDP/IPv6", udp6(53, 5353, 10), Some((key(17, "fd00::1", 53, "fd00::2", 5353), 58))),
        ("IPv6 extension header", v6_extension, Some((key(0, "fd00::1", 0, "fd00::2", 0), 58))),
        ("IPv4 too short", vec![0x45; 19], None),
        ("IPv6 too short", vec![0x60; 39], None),
        ("not IP", vec![0x00; 64], None),
        ("empty", vec![], None),
    ];
    for (name, packet, want) in cases {
        assert_eq!(parse(&packet, FlowDirection::Outbound), want, "{name}");
    }
}

fn peer(n: u8) -> Option<PublicKey> {
    Some(meshcrypt_keyexchange::PrivateKey::from_bytes(zeroize::Zeroizing::new([n; 32])).public_key())
}

#[test]
fn runs_of_one_flow_sum_and_the_table_sums_across_batches() {
    let table = FlowTable::default();
    table.set_max(Some(16));
    let mut batch = BatchFlows::default();
    let enc = FlowOutcome::Encrypted;
    for _ in 0..3 {
        batch.add(&tcp4(40000, 80, 1000), FlowDirection::Outbound, enc, peer(1));
    }
    batch.add(&tcp4(40001, 80, 10), FlowDirection::Outbound, enc, peer(1));
    batch.add(&tcp4(40000, 80, 1000), FlowDirection::Outbound, enc, peer(1));
    assert_eq!(batch.runs.len(), 3, "a run breaks when the flow changes");
    batch.flush(&table);
    batch.add(
        &tcp4(40000, 80, 1000),
        FlowDirection::Outbound,
        FlowOutcome::Dropped(DropReason::NoEndpoint),
        peer(1),
    );
    batch.flush(&table);
    let got = table.take();
    let summary: Vec<(u16, FlowOutcome, u64, u64)> =
        got.flows.iter().map(|f| (f.key.src_port, f.outcome, f.packets, f.bytes)).collect();
    assert_eq!(
        summary,
        vec![
            (40000, enc, 4, 4 * 1040),
            (40000, FlowOutcome::Dropped(DropReason::NoEndpoint), 1, 1040),
            (40001, enc, 1, 50),
        ]
    );
    assert!(got.flows.iter().all(|f| f.first_seen <= f.last_seen));
    assert_eq!(table.take(), FlowHarvest::default(), "a drain empties the table");
}

#[test]
fn a_full_table_counts_the_overflow_and_off_counts_nothing() {
    let table = FlowTable::default();
    let mut batch = BatchFlows::default();
    batch.add(&tcp4(1, 80, 0), FlowDirection::Inbound, FlowOutcome::Encrypted, peer(2));
    batch.flush(&table);
    assert_eq!(table.take(), FlowHarvest::default(), "off: nothing counted");

    table.set_max(Some(2));
    for port in 1..=5 {
        batch.add(&tcp4(port, 80, 0), FlowDirection::Inbound, FlowOutcome::Encrypted, peer(2));
    }
    batch.add(&tcp4(1, 80, 0), FlowDirection::Inbound, FlowOutcome::Encrypted, peer(2));
    batch.flush(&table);
    let got = table.take();
    let ports: Vec<(u16, u64)> = got.flows.iter().map(|f| (f.key.src_port, f.packets)).collect();
    assert_eq!(ports, vec![(1, 2), (2, 1)], "flows already held still count when full");
    assert_eq!((got.overflow_packets, got.overflow_bytes), (3, 3 * 40));
}
