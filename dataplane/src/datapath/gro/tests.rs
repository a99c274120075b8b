//! The planner as a table of batches, and super-packets checked against tun-rs's own GSO split.

use etherparse::checksum::Sum16BitWords;
use tun_rs::{VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

use super::{Gro, MAX_SEGMENTS, finish};
use crate::datapath::offload::{TCP_ACK as ACK, TCP_FIN as FIN, TCP_PSH as PSH};

const SYN: u8 = 0x02;

/// A packet of the table: which flow, what it carries.
#[derive(Clone, Copy)]
pub(in crate::datapath) struct P {
    pub(in crate::datapath) v6: bool,
    /// 0, 1, …: the flow's source port is 40000 + flow.
    pub(in crate::datapath) flow: u16,
    /// 6 (TCP), 17 (UDP) or 1 (ICMP).
    pub(in crate::datapath) proto: u8,
    pub(in crate::datapath) seq: u32,
    pub(in crate::datapath) len: usize,
    pub(in crate::datapath) flags: u8,
    pub(in crate::datapath) ack: u32,
    pub(in crate::datapath) tos: u8,
    pub(in crate::datapath) ttl: u8,
    /// TCP options (a multiple of 4 bytes).
    pub(in crate::datapath) options: &'static [u8],
    /// IPv4 flags and fragment offset (bytes 6..8).
    pub(in crate::datapath) frag: u16,
    pub(in crate::datapath) id: u16,
}

pub(in crate::datapath) const fn seg(seq: u32, len: usize) -> P {
    P {
        v6: false,
        flow: 0,
        proto: 6,
        seq,
        len,
        flags: ACK,
        ack: 7000,
        tos: 0,
        ttl: 64,
        options: &[],
        frag: 0x4000,
        id: 0,
    }
}

/// Builds `p` with valid checksums; the payload's bytes follow from the flow and sequence.
pub(in crate::datapath) fn build(p: P) -> Vec<u8> {
    let l4_header = match p.proto {
        6 => 20 + p.options.len(),
        _ => 8,
    };
    let ip_len = if p.v6 { 40 } else { 20 };
    let total = ip_len + l4_header + p.len;
    let mut b = vec![0u8; total];
    let (src, dst): (&[u8], &[u8]) = if p.v6 {
        (
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 244, 1, 2],
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 244, 2, 3],
        )
    } else {
        (&[10, 244, 1, 2], &[10, 244, 2, 3])
    };
    if p.v6 {
        b[0] = 0x60 | (p.tos >> 4);
        b[1] = p.tos << 4;
        b[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        b[6] = p.proto;
        b[7] = p.ttl;
        b[8..24].copy_from_slice(src);
        b[24..40].copy_from_slice(dst);
    } else {
        b[0] = 0x45;
        b[1] = p.tos;
        b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        b[4..6].copy_from_slice(&p.id.to_be_bytes());
        b[6..8].copy_from_slice(&p.frag.to_be_bytes());
        b[8] = p.ttl;
        b[9] = p.proto;
        b[12..16].copy_from_slice(src);
        b[16..20].copy_from_slice(dst);
        let sum = Sum16BitWords::new().add_slice(&b[..20]).ones_complement();
        b[10..12].copy_from_slice(&sum.to_ne_bytes());
    }
    let l4 = &mut b[ip_len..];
    l4[0..2].copy_from_slice(&(40000 + p.flow).to_be_bytes());
    l4[2..4].copy_from_slice(&5201u16.to_be_bytes());
    let check = match p.proto {
        6 => {
            l4[4..8].copy_from_slice(&p.seq.to_be_bytes());
            l4[8..12].copy_from_slice(&p.ack.to_be_bytes());
            l4[12] = ((l4_header / 4) as u8) << 4;
            l4[13] = p.flags;
            l4[14..16].copy_from_slice(&512u16.to_be_bytes());
            l4[20..l4_header].copy_from_slice(p.options);
            Some(16)
        }
        17 => {
            l4[4..6].copy_from_slice(&((l4_header + p.len) as u16).to_be_bytes());
            Some(6)
        }
        _ => None,
    };
    for (k, byte) in l4[l4_header..].iter_mut().enumerate() {
        *byte = (p.seq as usize + k + usize::from(p.flow) * 7) as u8;
    }
    if let Some(at) = check {
        let sum = pseudo(src, dst, p.proto, l4.len()).add_slice(l4).ones_complement();
        l4[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
    }
    b
}

fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_slice(src)
        .add_slice(dst)
        .add_2bytes([0, proto])
        .add_2bytes((len as u16).to_be_bytes())
}

/// The writes `plan` makes of `packets`, each as its head then its members.
fn plan(packets: &[P], udp: bool) -> Vec<Vec<usize>> {
    let bufs: Vec<Vec<u8>> = packets.iter().copied().map(build).collect();
    let mut gro = Gro::default();
    gro.plan(&bufs, udp);
    gro.writes().iter().map(|w| [&[w.head][..], gro.members(w)].concat()).collect()
}

/// A row of the plan table: its name, the batch, whether UDP may be coalesced, and the writes
/// (each its head, then its members).
type Row = (&'static str, Vec<P>, bool, Vec<Vec<usize>>);

#[test]
fn plan_table() {
    let full = 1000;
    let v6 = |p: P| P { v6: true, ..p };
    let flow = |f: u16, p: P| P { flow: f, ..p };
    let with = |flags: u8, p: P| P { flags, ..p };
    let ts: &'static [u8] = &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let ts2: &'static [u8] = &[1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 2];
    let udp = |len: usize| P { proto: 17, ..seg(0, len) };
    let many: Vec<P> = (0..70).map(|k| seg(k * 10, 10)).collect();
    let long: Vec<P> = (0..50).map(|k| seg(k * 1400, 1400)).collect();
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("three in sequence", vec![seg(0, full), seg(1000, full), seg(2000, full)], false, vec![vec![0, 1, 2]]),
        ("a shorter last one joins and ends it", vec![seg(0, full), seg(1000, 500), seg(1500, full)], false, vec![vec![0, 1], vec![2]]),
        ("PSH joins and ends it", vec![seg(0, full), with(ACK | PSH, seg(1000, full)), seg(2000, full)], false, vec![vec![0, 1], vec![2]]),
        ("a head with PSH is alone", vec![with(ACK | PSH, seg(0, full)), seg(1000, full)], false, vec![vec![0], vec![1]]),
        ("a gap in the sequence", vec![seg(0, full), seg(2000, full)], false, vec![vec![0], vec![1]]),
        ("out of order stays in order", vec![seg(0, full), seg(2000, full), seg(1000, full)], false, vec![vec![0], vec![1], vec![2]]),
        ("a larger one after a smaller", vec![seg(0, 500), seg(500, full)], false, vec![vec![0], vec![1]]),
        ("two flows interleaved", vec![seg(0, full), flow(1, seg(0, full)), seg(1000, full), flow(1, seg(1000, full))], false, vec![vec![0, 2], vec![1, 3]]),
        ("another ACK number", vec![seg(0, full), P { ack: 7001, ..seg(1000, full) }], false, vec![vec![0], vec![1]]),
        ("SYN, FIN and a bare ACK are alone", vec![with(SYN, seg(0, 0)), with(ACK | FIN, seg(0, full)), seg(0, 0), seg(0, full), seg(1000, full)], false, vec![vec![0], vec![1], vec![2], vec![3, 4]]),
        ("ECN CE marks one (TOS differs)", vec![seg(0, full), P { tos: 3, ..seg(1000, full) }], false, vec![vec![0], vec![1]]),
        ("another TTL", vec![seg(0, full), P { ttl: 63, ..seg(1000, full) }], false, vec![vec![0], vec![1]]),
        ("the same options", vec![P { options: ts, ..seg(0, full) }, P { options: ts, ..seg(1000, full) }], false, vec![vec![0, 1]]),
        ("other options", vec![P { options: ts, ..seg(0, full) }, P { options: ts2, ..seg(1000, full) }], false, vec![vec![0], vec![1]]),
        ("an IPv4 fragment is alone", vec![seg(0, full), P { frag: 0x2000, ..seg(1000, full) }], false, vec![vec![0], vec![1]]),
        ("the IPv4 ID may differ", vec![seg(0, full), P { id: 9, ..seg(1000, full) }], false, vec![vec![0, 1]]),
        ("IPv6", vec![v6(seg(0, full)), v6(seg(1000, full)), seg(2000, full)], false, vec![vec![0, 1], vec![2]]),
        ("IPv6 traffic class differs", vec![v6(seg(0, full)), v6(P { tos: 1, ..seg(1000, full) })], false, vec![vec![0], vec![1]]),
        ("UDP where the TUN takes USO", vec![udp(full), udp(full), udp(300), udp(full)], true, vec![vec![0, 1, 2], vec![3]]),
        ("UDP where it does not", vec![udp(full), udp(full)], false, vec![vec![0], vec![1]]),
        ("ICMP", vec![P { proto: 1, ..seg(0, 56) }, P { proto: 1, ..seg(0, 56) }], true, vec![vec![0], vec![1]]),
        ("at most MAX_SEGMENTS", many, false, vec![(0..MAX_SEGMENTS).collect(), (MAX_SEGMENTS..70).collect()]),
        ("at most 64 KiB", long, false, vec![(0..46).collect(), (46..50).collect()]),
    ];
    for (name, packets, udp, want) in rows {
        assert_eq!(plan(&packets, udp), want, "{name}");
    }
}

/// The super-packet of a write as the kernel reads it: the head, rewritten, then every
/// member's payload.
pub(in crate::datapath) fn coalesce(bufs: &mut [Vec<u8>]) -> Vec<(VirtioNetHdr, Vec<u8>)> {
    let mut gro = Gro::default();
    gro.plan(bufs, true);
    let writes = gro.writes().to_vec();
    writes
        .iter()
        .map(|w| {
            finish(w, &mut bufs[w.head]);
            let mut packet = bufs[w.head].clone();
            for &m in gro.members(w) {
                packet.extend_from_slice(w.payload(&bufs[m]));
            }
            let header = w.vnet_header();
            (VirtioNetHdr::decode(&header).expect("header"), packet)
        })
        .collect()
}

/// Completes a CHECKSUM_PARTIAL packet as the kernel would (sums from `csum_start` over the
/// pseudo-header sum left in the field) and says whether the result is a valid checksum.
fn completes_to_a_valid_checksum(hdr: &VirtioNetHdr, packet: &[u8], v6: bool) -> bool {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    let mut p = packet.to_vec();
    let sum = Sum16BitWords::new().add_slice(&p[start..]).ones_complement();
    p[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
    let (addrs, proto) = if v6 { (8..40, p[6]) } else { (12..20, p[9]) };
    let whole = Sum16BitWords::new()
        .add_slice(&p[addrs])
        .add_2bytes([0, proto])
        .add_2bytes(((p.len() - start) as u16).to_be_bytes())
        .add_slice(&p[start..]);
    whole.ones_complement() == 0
}

#[test]
fn a_super_packet_splits_back_into_the_packets_it_was_made_of() {
    for (v6, proto, sizes, psh_last) in [
        (false, 6, vec![1000, 1000, 1000, 400], true),
        (true, 6, vec![1380; 20], false),
        (false, 17, vec![1200, 1200, 80], false),
        (true, 17, vec![1200; 5], false),
    ] {
        let name = format!("v6 {v6}, proto {proto}, {} packets", sizes.len());
        let mut seq = 0;
        let packets: Vec<P> = sizes
            .iter()
            .enumerate()
            .map(|(k, &len)| {
                let last = k + 1 == sizes.len();
                let p = P {
                    v6,
                    proto,
                    id: 100 + k as u16,
                    flags: if last && psh_last { ACK | PSH } else { ACK },
                    ..seg(seq, len)
                };
                seq += len as u32;
                p
            })
            .collect();
        let originals: Vec<Vec<u8>> = packets.iter().copied().map(build).collect();
        let mut bufs = originals.clone();
        let written = coalesce(&mut bufs);
        assert_eq!(written.len(), 1, "{name}: one write");
        let (hdr, mut packet) = written.into_iter().next().expect("a write");
        assert!(completes_to_a_valid_checksum(&hdr, &packet, v6), "{name}: the pseudo-header sum");
        let mut out = vec![vec![0u8; 2000]; sizes.len()];
        let mut lens = vec![0usize; sizes.len()];
        let n = gso_split(&mut packet, hdr, &mut out, &mut lens, 0, v6).expect("tun-rs splits it");
        assert_eq!(n, sizes.len(), "{name}");
        for (k, original) in originals.iter().enumerate() {
            assert_eq!(&out[k][..lens[k]], &original[..], "{name}: packet {k}");
        }
    }
}

#[test]
fn a_packet_alone_is_written_as_it_came_with_a_zero_header() {
    let mut bufs = vec![build(seg(0, 1000)), build(P { proto: 1, ..seg(0, 56) })];
    let originals = bufs.clone();
    for (k, (hdr, packet)) in coalesce(&mut bufs).into_iter().enumerate() {
        assert_eq!(packet, originals[k]);
        let mut zero = [0u8; VIRTIO_NET_HDR_LEN];
        hdr.encode(&mut zero).expect("encode");
        assert_eq!(zero, [0u8; VIRTIO_NET_HDR_LEN]);
    }
}
