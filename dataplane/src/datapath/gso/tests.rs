//! The split checked against tun-rs's own GSO split and as the inverse of our coalescing, a
//! table of what each packet keeps of the flags, and a table of the frames it refuses.

use tun_rs::{VirtioNetHdr, gso_split};

use super::{Frame, plan};
use crate::datapath::gro::tests::{P, build, coalesce, seg};
use crate::datapath::offload::{
    TCP_ACK as ACK, TCP_CWR as CWR, TCP_FIN as FIN, TCP_PSH as PSH, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
    VnetHeader,
};

/// Splits `packet` (a frame's bytes after its virtio-net header) in place as the data path does,
/// copying each packet out before laying out the next; `None` if [`plan`] refuses it.
fn split(vnet: &VnetHeader, packet: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut buf = packet.to_vec();
    let frame = plan(vnet, &mut buf)?;
    Some(
        (0..frame.count())
            .map(|i| {
                let at = frame.packet(&mut buf, i);
                buf[at].to_vec()
            })
            .collect(),
    )
}

/// tun-rs's split of the same frame, into buffers of its own.
fn tun_rs_split(vnet: &VnetHeader, packet: &[u8], v6: bool) -> Vec<Vec<u8>> {
    let hdr = VirtioNetHdr::decode(&vnet.encode()).expect("header");
    let mut input = packet.to_vec();
    let count = (packet.len() - usize::from(vnet.hdr_len)).div_ceil(usize::from(vnet.gso_size));
    let mut out = vec![vec![0u8; usize::from(vnet.hdr_len) + usize::from(vnet.gso_size)]; count];
    let mut lens = vec![0usize; count];
    let n = gso_split(&mut input, hdr, &mut out, &mut lens, 0, v6).expect("tun-rs splits it");
    out.iter().zip(&lens).take(n).map(|(b, &len)| b[..len].to_vec()).collect()
}

/// A super-packet as a TUN hands it over: the packet `p` (its payload `p.len` bytes in all) and
/// a header asking for packets of `gso_size` payload bytes.
fn super_packet(p: P, gso_size: u16) -> (VnetHeader, Vec<u8>) {
    let packet = build(p);
    let ip_len: u16 = if p.v6 { 40 } else { 20 };
    let (transport, gso_type, csum_offset) = match (p.proto, p.v6) {
        (6, false) => (20 + p.options.len() as u16, VIRTIO_NET_HDR_GSO_TCPV4, 16),
        (6, true) => (20 + p.options.len() as u16, VIRTIO_NET_HDR_GSO_TCPV6, 16),
        _ => (8, VIRTIO_NET_HDR_GSO_UDP_L4, 6),
    };
    let vnet = VnetHeader {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: ip_len + transport,
        gso_size,
        csum_start: ip_len,
        csum_offset,
    };
    (vnet, packet)
}

const TIMESTAMPS: &[u8] = &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

#[test]
fn splits_as_tun_rs_does() {
    let mut shapes = 0;
    for v6 in [false, true] {
        for (proto, options) in [(6, &[][..]), (6, TIMESTAMPS), (17, &[][..])] {
            for gso_size in [1368u16, 1000, 7] {
                for len in [1, 6, 7, 8, 999, 1000, 1001, 1368, 2736, 3 * 1368 + 5, 44 * 1368 + 17] {
                    for (flags, id, seq) in
                        [(ACK, 0, 1), (ACK | PSH | FIN, 0xfffe, u32::MAX - 3000), (ACK | CWR | PSH, 77, 5)]
                    {
                        let p = P { v6, proto, options, len, flags, id, seq, ..seg(seq, len) };
                        let (vnet, packet) = super_packet(p, gso_size);
                        let ours = split(&vnet, &packet).expect("a valid super-packet");
                        let theirs = tun_rs_split(&vnet, &packet, v6);
                        assert_eq!(
                            ours,
                            theirs,
                            "v6 {v6}, proto {proto}, options {}, gso_size {gso_size}, payload {len}, flags {flags:#x}",
                            options.len()
                        );
                        shapes += 1;
                    }
                }
            }
        }
    }
    assert_eq!(shapes, 2 * 3 * 3 * 11 * 3);
}

#[test]
fn splitting_undoes_our_coalescing() {
    for (v6, proto, sizes, psh_last) in [
        (false, 6, vec![1368; 44], true),
        (true, 6, vec![1368, 1368, 1368, 200], false),
        (false, 17, vec![1200, 1200, 80], false),
        (true, 17, vec![1200; 5], false),
    ] {
        let mut seq = 9;
        let packets: Vec<P> = sizes
            .iter()
            .enumerate()
            .map(|(k, &len)| {
                let last = k + 1 == sizes.len();
                let flags = if psh_last && last { ACK | PSH } else { ACK };
                // Linux gives each packet of a TCP super-packet the next IPv4 ID.
                let p = P { v6, proto, flags, id: 300 + k as u16, ..seg(seq, len) };
                seq += len as u32;
                p
            })
            .collect();
        let mut bufs: Vec<Vec<u8>> = packets.iter().copied().map(build).collect();
        let originals = bufs.clone();
        let writes = coalesce(&mut bufs);
        assert_eq!(writes.len(), 1, "one super-packet");
        let (hdr, packet) = &writes[0];
        let mut header = [0u8; tun_rs::VIRTIO_NET_HDR_LEN];
        hdr.encode(&mut header).expect("encodes");
        let vnet = VnetHeader::decode(&header).expect("header");
        let split = split(&vnet, packet).expect("our own super-packet splits");
        assert_eq!(split, originals, "v6 {v6}, proto {proto}, {} packets", sizes.len());
    }
}

/// Each packet's TCP flags (byte 13), from super-packets with these flags.
#[test]
fn flags_table() {
    // (the super-packet's flags, whether the header marks ECN, packets) → each packet's flags.
    #[rustfmt::skip]
    let rows: [(u8, bool, usize, Vec<u8>); 5] = [
        (ACK, false, 3, vec![ACK, ACK, ACK]),
        (ACK | PSH, false, 3, vec![ACK, ACK, ACK | PSH]),
        (ACK | PSH | FIN, false, 2, vec![ACK, ACK | PSH | FIN]),
        (ACK | CWR, true, 3, vec![ACK | CWR, ACK, ACK]),
        (ACK | CWR | PSH, true, 1, vec![ACK | CWR | PSH]),
    ];
    for (flags, ecn, count, want) in rows {
        let p = P { flags, ..seg(1, 100 * count) };
        let (mut vnet, packet) = super_packet(p, 100);
        if ecn {
            vnet.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
        }
        let got: Vec<u8> = split(&vnet, &packet).expect("splits").iter().map(|q| q[20 + 13]).collect();
        assert_eq!(got, want, "flags {flags:#x}");
    }
}

#[test]
fn a_packet_alone_gets_its_checksum_completed_when_asked() {
    for proto in [6u8, 17] {
        let p = P { proto, ..seg(5, 300) };
        let whole = build(p);
        let check = if proto == 6 { 20 + 16 } else { 20 + 6 };
        // As a TUN hands it over with CHECKSUM_PARTIAL: the pseudo-header's sum in the field.
        let mut partial = whole.clone();
        partial[check..check + 2].copy_from_slice(&partial_sum(&whole, proto).to_be_bytes());
        let vnet = VnetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: check as u16 - 20,
            ..Default::default()
        };
        assert_eq!(split(&vnet, &partial), Some(vec![whole.clone()]), "proto {proto}: completed");
        // Without NEEDS_CSUM the packet is left as it is.
        assert_eq!(
            split(&VnetHeader::default(), &partial),
            Some(vec![partial.clone()]),
            "proto {proto}: untouched"
        );
    }
}

/// The pseudo-header's sum of IPv4 packet `p`, folded and not inverted, as Linux leaves it in the
/// checksum field of a CHECKSUM_PARTIAL packet.
fn partial_sum(p: &[u8], proto: u8) -> u16 {
    let len = (p.len() - 20) as u16;
    tun_rs::checksum(&p[12..20], u64::from(proto) + u64::from(len))
}

#[test]
fn frames_the_header_does_not_fit_are_refused() {
    let (tcp, packet) = super_packet(seg(1, 3000), 1000);
    let (_, packet_v6) = super_packet(P { v6: true, ..seg(1, 3000) }, 1000);
    let (udp, udp_packet) = super_packet(P { proto: 17, ..seg(1, 3000) }, 1000);
    let mut bad_offset = packet.clone();
    bad_offset[20 + 12] = 4 << 4;
    let with_options = {
        let mut p = packet.clone();
        p[0] = 0x46;
        p
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, VnetHeader, Vec<u8>)> = vec![
        ("UFO (GSO type 3)", VnetHeader { gso_type: 3, ..tcp }, packet.clone()),
        ("an unknown GSO type", VnetHeader { gso_type: 9, ..tcp }, packet.clone()),
        ("TCPV4 with an IPv6 packet", tcp, packet_v6.clone()),
        ("TCPV6 with an IPv4 packet", VnetHeader { gso_type: VIRTIO_NET_HDR_GSO_TCPV6, ..tcp }, packet.clone()),
        ("no IP version", tcp, vec![0x15; 100]),
        ("an empty frame", tcp, vec![]),
        ("a GSO size of 0", VnetHeader { gso_size: 0, ..tcp }, packet.clone()),
        ("headers only", tcp, packet[..40].to_vec()),
        ("csum_start is not the IPv4 header's length", VnetHeader { csum_start: 24, ..tcp }, packet.clone()),
        ("the IPv4 header claims options it lacks", tcp, with_options),
        ("a TCP data offset under 20 bytes", tcp, bad_offset),
        ("a TCP checksum offset of UDP's", VnetHeader { csum_offset: 6, ..tcp }, packet.clone()),
        ("a UDP checksum offset of TCP's", VnetHeader { csum_offset: 16, ..udp }, udp_packet.clone()),
        ("a packet alone whose checksum field is past its end", VnetHeader { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..Default::default() }, packet[..37].to_vec()),
    ];
    for (name, vnet, frame) in rows {
        assert!(split(&vnet, &frame).is_none(), "{name}");
    }
    // The same frames with their own headers split.
    assert_eq!(split(&tcp, &packet).map(|p| p.len()), Some(3));
    assert_eq!(split(&udp, &udp_packet).map(|p| p.len()), Some(3));
}

#[test]
fn a_frame_counts_its_packets() {
    let (vnet, packet) = super_packet(seg(1, 2501), 1000);
    let mut buf = packet;
    let frame = plan(&vnet, &mut buf).expect("splits");
    assert!(matches!(frame, Frame::Super(_)));
    assert_eq!(frame.count(), 3);
    assert_eq!(plan(&VnetHeader::default(), &mut buf).map(|f| f.count()), Some(1));
}
