//! Splitting the TUN's super-packets in place (send offload done here): a TCP or UDP GSO frame
//! is cut into packets of the payload size the kernel asked for, each packet's headers written
//! just before its payload, over the end of the packet before it, which has been sealed by then.
//! No payload is copied before the seal (boringtun copies each packet once, into the datagram it
//! seals); before, `tun-rs` copied every packet into a slot of its own first.
//!
//! [`plan`] checks a frame's virtio-net header against the packet and completes the checksum of
//! a packet that is not a super-packet; [`Frame::packet`] lays out packet `i`. What each packet
//! gets follows Linux's own segmentation (`tcp_gso_segment` in net/ipv4/tcp_offload.c,
//! `__udp_gso_segment` in net/ipv4/udp_offload.c, `inet_gso_segment` in net/ipv4/af_inet.c), as
//! wireguard-go's `gsoSplit` (tun/offload_linux.go) and `tun-rs` do: the IPv4 total length, an
//! ID one higher per packet and the header checksum, or the IPv6 payload length; TCP sequence
//! numbers, CWR on the first packet only, FIN and PSH on the last only; the UDP length; and a
//! whole transport checksum, which any receiver checks (the kernel's WireGuard computes it
//! before sealing too). The sums are `tun-rs`'s (AVX2 where the CPU has it; its sum is public
//! though left out of its docs, and Cargo.lock pins the version).

use std::ops::Range;

use super::offload::{
    TCP, TCP_CWR, TCP_FIN, TCP_PSH, UDP, UDP_HEADER, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
    VnetHeader,
};

/// A frame read from the TUN, checked: a packet alone, or a super-packet to cut into packets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Frame {
    /// One packet of this many bytes, its checksum complete.
    Packet(usize),
    /// A super-packet.
    Super(Split),
}

/// How a super-packet is cut. Packet `i`'s headers are packet `i - 1`'s with the fields that
/// differ set from the super-packet's own (kept here: packet 0's are rewritten in place).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Split {
    /// The super-packet's IPv4 ID (packet `i` gets it plus `i`).
    id: u16,
    /// The super-packet's TCP sequence number and flags.
    seq: u32,
    flags: u8,
    /// The IP header's length (with IPv6's extension headers): where the transport header starts.
    ip_len: usize,
    /// The IP and transport headers' length.
    header_len: usize,
    /// Payload bytes per packet (the last may have fewer).
    gso_size: usize,
    /// The super-packet's length.
    len: usize,
    count: usize,
    v6: bool,
    tcp: bool,
}

impl Frame {
    /// How many packets the frame holds.
    pub(crate) fn count(&self) -> usize {
        match self {
            Frame::Packet(_) => 1,
            Frame::Super(split) => split.count,
        }
    }

    /// Lays out packet `i` (of [`Frame::count`]) in `buf`, the frame's packet bytes as [`plan`]
    /// saw them, and returns where it lies. Packets are to be taken in order, each once the one
    /// before is no longer needed: packet `i`'s headers are written over the end of packet
    /// `i - 1`.
    pub(crate) fn packet(&self, buf: &mut [u8], i: usize) -> Range<usize> {
        match self {
            Frame::Packet(len) => 0..*len,
            Frame::Super(split) => split.packet(buf, i),
        }
    }
}

impl Split {
    fn packet(&self, buf: &mut [u8], i: usize) -> Range<usize> {
        let Self { ip_len, header_len, gso_size, len, v6, tcp, .. } = *self;
        let start = header_len + i * gso_size;
        let payload = gso_size.min(len - start);
        let at = start - header_len;
        let total = header_len + payload;
        let last = start + payload == len;
        if i > 0 {
            // The headers of the packet before, which may overlap these when packets are small.
            buf.copy_within(at - gso_size..at - gso_size + header_len, at);
        }
        let p = &mut buf[at..at + total];
        // Both fit in 16 bits: the super-packet's lengths did.
        if v6 {
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&self.id.wrapping_add(i as u16).to_be_bytes());
            p[10..12].fill(0);
            let sum = !tun_rs::checksum(&p[..ip_len], 0);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let l4_len = total - ip_len;
        let check = if tcp {
            let seq = self.seq.wrapping_add((i * gso_size) as u32);
            p[ip_len + 4..ip_len + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = self.flags;
            if i > 0 {
                flags &= !TCP_CWR;
            }
            if !last {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            p[ip_len + 13] = flags;
            ip_len + 16
        } else {
            p[ip_len + 4..ip_len + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip_len + 6
        };
        p[check..check + 2].fill(0);
        let addrs = if v6 { &p[8..40] } else { &p[12..20] };
        let proto = if tcp { TCP } else { UDP };
        let pseudo = tun_rs::checksum_no_fold(addrs, u64::from(proto) + l4_len as u64);
        let mut sum = !tun_rs::checksum(&p[ip_len..], pseudo);
        if !tcp && sum == 0 {
            // A UDP checksum of 0 means none (RFC 768); all ones stands for zero.
            sum = 0xffff;
        }
        p[check..check + 2].copy_from_slice(&sum.to_be_bytes());
        at..at + total
    }
}

/// Checks frame `packet` (the bytes after the virtio-net header `vnet`) and plans its split;
/// completes the transport checksum of a packet alone when the header asks for it. `None` for a
/// frame the header does not fit (dropped by the caller): an unknown GSO type, a GSO type for
/// the other IP version or transport, no payload, headers past the packet's end, a checksum
/// field outside the packet.
pub(crate) fn plan(vnet: &VnetHeader, packet: &mut [u8]) -> Option<Frame> {
    let len = packet.len();
    let csum_start = usize::from(vnet.csum_start);
    let csum_at = csum_start + usize::from(vnet.csum_offset);
    let gso_type = vnet.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    if gso_type == VIRTIO_NET_HDR_GSO_NONE {
        if vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            if csum_at + 2 > len {
                return None;
            }
            // The field holds the pseudo-header's sum (CHECKSUM_PARTIAL); the sum from
            // `csum_start` on completes it.
            let partial = u16::from_be_bytes([packet[csum_at], packet[csum_at + 1]]);
            packet[csum_at..csum_at + 2].fill(0);
            let sum = !tun_rs::checksum(&packet[csum_start..], u64::from(partial));
            packet[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        return Some(Frame::Packet(len));
    }
    let v6 = match packet.first()? >> 4 {
        4 => false,
        6 => true,
        _ => return None,
    };
    let tcp = match (gso_type, v6) {
        (VIRTIO_NET_HDR_GSO_TCPV4, false) | (VIRTIO_NET_HDR_GSO_TCPV6, true) => true,
        (VIRTIO_NET_HDR_GSO_UDP_L4, _) => false,
        _ => return None,
    };
    let ip_len = csum_start;
    let ip_ok = if v6 { ip_len >= 40 } else { ip_len == usize::from(packet[0] & 0x0f) * 4 && ip_len >= 20 };
    let (transport_len, csum_offset) = if tcp {
        let offset = *packet.get(ip_len + 12)?;
        (usize::from(offset >> 4) * 4, 16)
    } else {
        (UDP_HEADER, 6)
    };
    let header_len = ip_len + transport_len;
    let gso_size = usize::from(vnet.gso_size);
    if !ip_ok
        || transport_len < if tcp { 20 } else { UDP_HEADER }
        || usize::from(vnet.csum_offset) != csum_offset
        || header_len >= len
        || gso_size == 0
    {
        return None;
    }
    let id = u16::from_be_bytes([packet[4], packet[5]]);
    let (seq, flags) = if tcp {
        let t = &packet[ip_len..];
        (u32::from_be_bytes([t[4], t[5], t[6], t[7]]), t[13])
    } else {
        (0, 0)
    };
    let count = (len - header_len).div_ceil(gso_size);
    Some(Frame::Super(Split { id, seq, flags, ip_len, header_len, gso_size, len, count, v6, tcp }))
}

#[cfg(test)]
mod tests;
