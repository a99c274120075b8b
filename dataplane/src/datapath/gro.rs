//! Coalescing the decrypted packets of one TUN batch into super-packets (receive offload done
//! here): consecutive TCP segments of a flow, and UDP datagrams where the TUN takes USO, leave
//! in one `writev` each, headed by a virtio-net header that hands them to the kernel as one GSO
//! packet.
//!
//! [`Gro::plan`] decides, from the packets alone, which packets join which write; [`finish`]
//! rewrites a super-packet's head (lengths, the IPv4 header checksum, PSH, the pseudo-header
//! sum) and [`Write::vnet_header`] gives the header. The write gathers the head and its
//! members' payloads where they lie: nothing is copied here (the kernel copies once into its
//! skb).
//!
//! What may join follows Linux's own GRO (`tcp_gro_receive` in net/ipv4/tcp_offload.c,
//! `inet_gro_receive` in net/ipv4/af_inet.c): the same addresses, ports and IP header fields
//! (IPv4: no options, no fragment, same TOS, TTL and DF; IPv6: same traffic class, flow label
//! and hop limit, no extension header); TCP: the same ACK number and options, only ACK (and
//! PSH) set, the next sequence number, a payload no larger than the first's; a shorter payload
//! or PSH ends the super-packet. A packet joins only its flow's latest write, so within a flow
//! the order of arrival is the order of writing.
//!
//! Checksums are not verified again: every packet here was authenticated by its session's
//! ChaCha20-Poly1305 tag. A super-packet goes with `VIRTIO_NET_HDR_F_NEEDS_CSUM` and the
//! pseudo-header sum, which the kernel takes as verified (CHECKSUM_PARTIAL) and completes if the
//! packet is forwarded; the kernel's own WireGuard marks every packet it decrypts
//! CHECKSUM_UNNECESSARY for the same reason (drivers/net/wireguard/receive.c,
//! `wg_packet_consume_data_done`). A packet written alone keeps its checksum and a zero header.

use std::ops::Range;

use etherparse::checksum::Sum16BitWords;
use tun_rs::VIRTIO_NET_HDR_LEN;

use super::offload::{
    TCP, TCP_ACK, TCP_PSH, UDP, UDP_HEADER, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VnetHeader,
};

/// Most packets in one super-packet: Linux's UDP GSO limit (`UDP_MAX_SEGMENTS`, 64 before
/// 6.10), used for TCP too; a write gathers at most this many payloads after its header.
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Largest IP packet (the IPv4 total length, the IPv6 payload length are 16 bits).
const MAX_LEN: usize = 65_535;

/// The transport a super-packet carries, as the virtio-net header names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// A flow: IP version, transport, addresses (IPv4's in the first 8 bytes) and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    v6: bool,
    transport: Transport,
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// What a packet is to the planner: its flow, its headers' sizes and, for TCP, its sequence.
#[derive(Clone, Copy, Debug)]
struct Segment {
    flow: Flow,
    /// IP header length (20 or 40).
    ip_len: usize,
    /// IP plus transport header length.
    header_len: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// Parses a packet that could be part of a super-packet; `None` for everything else (written
/// alone). `udp`: whether UDP may be coalesced (the TUN takes USO).
fn segment(p: &[u8], udp: bool) -> Option<Segment> {
    let (v6, ip_len, proto, addrs) = match p.first()? >> 4 {
        4 if p.len() >= 20 && p[0] & 0x0f == 5 => {
            let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
            if fragment || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
                return None;
            }
            (false, 20, p[9], 12..20)
        }
        6 if p.len() >= 40 => {
            if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
                return None;
            }
            (true, 40, p[6], 8..40)
        }
        _ => return None,
    };
    let mut flow_addrs = [0u8; 32];
    flow_addrs[..addrs.len()].copy_from_slice(&p[addrs.clone()]);
    let l4 = &p[ip_len..];
    let (transport, header_len, seq, psh) = match proto {
        TCP if l4.len() >= 20 => {
            let len = usize::from(l4[12] >> 4) * 4;
            let flags = l4[13];
            if len < 20 || l4.len() < len || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
                return None;
            }
            (
                Transport::Tcp,
                ip_len + len,
                u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                flags & TCP_PSH != 0,
            )
        }
        UDP if udp && l4.len() >= UDP_HEADER => {
            if usize::from(u16::from_be_bytes([l4[4], l4[5]])) != l4.len() {
                return None;
            }
            (Transport::Udp, ip_len + UDP_HEADER, 0, false)
        }
        _ => return None,
    };
    let flow = Flow { v6, transport, addrs: flow_addrs, ports: [l4[0], l4[1], l4[2], l4[3]] };
    let payload = p.len() - header_len;
    (payload > 0).then_some(Segment { flow, ip_len, header_len, payload, seq, psh })
}

/// Whether the IP and transport headers of `p` let it follow `head` (the fields that must
/// match beyond the flow; the flow, sequence and sizes are checked by the caller).
fn headers_match(head: &[u8], p: &[u8], s: &Segment) -> bool {
    let ip = if s.flow.v6 {
        // Version, traffic class, flow label; next header; hop limit.
        head[..4] == p[..4] && head[6..8] == p[6..8]
    } else {
        // TOS; DF; TTL and protocol.
        head[1] == p[1] && head[6] & 0x40 == p[6] & 0x40 && head[8..10] == p[8..10]
    };
    ip && match s.flow.transport {
        // The ACK number, data offset and options (the header less ports, seq, flags, window,
        // checksum and urgent pointer are these).
        Transport::Tcp => {
            let (h, q) = (&head[s.ip_len..s.header_len], &p[s.ip_len..s.header_len]);
            h[8..13] == q[8..13] && h[20..] == q[20..]
        }
        Transport::Udp => true,
    }
}

/// One TUN write: a packet alone, or a head and the packets whose payloads follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    /// The head's index in the batch.
    pub(crate) head: usize,
    /// The packets after the head, as a range of [`Gro::members`].
    members: Range<usize>,
    /// The IP and transport header length of every packet in it (0: not coalescable).
    header_len: usize,
    /// The head's payload length: every later payload is at most this.
    segment: usize,
    /// The super-packet's length: the head's headers and every payload.
    len: usize,
    /// The flow's next TCP sequence number.
    next_seq: u32,
    psh: bool,
    /// Nothing more joins (a short payload, PSH, or the segment limit).
    closed: bool,
    /// The flow, for a packet that may be coalesced.
    flow: Option<Flow>,
}

impl Write {
    /// A write of packet `i` (`len` bytes, parsed as `s` if it could be coalesced).
    fn new(i: usize, len: usize, s: Option<&Segment>) -> Self {
        Self {
            head: i,
            members: 0..0,
            header_len: s.map_or(0, |s| s.header_len),
            segment: s.map_or(0, |s| s.payload),
            len,
            next_seq: s.map_or(0, |s| s.seq.wrapping_add(s.payload as u32)),
            psh: s.is_some_and(|s| s.psh),
            closed: s.is_none_or(|s| s.psh),
            flow: s.map(|s| s.flow),
        }
    }

    /// How many packets the write carries.
    pub(crate) fn segments(&self) -> usize {
        1 + self.members.len()
    }

    /// The virtio-net header the write starts with (`struct virtio_net_hdr` of
    /// include/uapi/linux/virtio_net.h, [`VIRTIO_NET_HDR_LEN`] bytes, in the host's byte order as
    /// a TUN takes it unless told otherwise): all zero for a packet alone; for a super-packet
    /// `NEEDS_CSUM`, the GSO type, the header length, the segment size (payload bytes) and where
    /// the transport checksum starts and lies.
    pub(crate) fn vnet_header(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let Some(flow) = self.flow.filter(|_| self.segments() > 1) else {
            return VnetHeader::default().encode();
        };
        VnetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: match (flow.transport, flow.v6) {
                (Transport::Tcp, false) => VIRTIO_NET_HDR_GSO_TCPV4,
                (Transport::Tcp, true) => VIRTIO_NET_HDR_GSO_TCPV6,
                (Transport::Udp, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            },
            // Both fit: headers are at most 100 bytes, a segment at most 64 KiB.
            hdr_len: self.header_len as u16,
            gso_size: self.segment as u16,
            csum_start: if flow.v6 { 40 } else { 20 },
            csum_offset: if flow.transport == Transport::Tcp { 16 } else { 6 },
        }
        .encode()
    }

    /// The part of packet `p` (a member) that goes after the head: its payload.
    pub(crate) fn payload<'a>(&self, p: &'a [u8]) -> &'a [u8] {
        &p[self.header_len..]
    }
}

/// The planner's reusable state (no allocation per batch once warm).
#[derive(Default)]
pub(crate) struct Gro {
    writes: Vec<Write>,
    /// Every write's members, write by write once [`Gro::plan`] is done.
    members: Vec<usize>,
    /// While planning: each packet's successor in its write (`usize::MAX`: none), and each
    /// write's last packet.
    next: Vec<usize>,
    last: Vec<usize>,
    /// While planning: the latest write of each flow.
    open: Vec<(Flow, usize)>,
}

impl Gro {
    /// Plans the writes for `packets` (a batch in arrival order, each an IP packet), read back
    /// with [`Gro::writes`]: every packet is in exactly one write, and the writes are in the
    /// order of their heads. `udp`: whether UDP datagrams may be coalesced (the TUN takes USO).
    pub(crate) fn plan<B: AsRef<[u8]>>(&mut self, packets: &[B], udp: bool) {
        self.writes.clear();
        self.members.clear();
        self.open.clear();
        self.next.clear();
        self.next.resize(packets.len(), usize::MAX);
        self.last.clear();
        for (i, p) in packets.iter().enumerate() {
            let p = p.as_ref();
            let s = segment(p, udp);
            if let Some(s) = s
                && let Some(w) = self.joinable(packets, p, &s)
            {
                let write = &mut self.writes[w];
                write.len += s.payload;
                write.members.end += 1;
                write.next_seq = write.next_seq.wrapping_add(s.payload as u32);
                write.psh |= s.psh;
                write.closed = s.psh || s.payload < write.segment || write.segments() == MAX_SEGMENTS;
                self.next[self.last[w]] = i;
                self.last[w] = i;
                continue;
            }
            let w = self.writes.len();
            self.writes.push(Write::new(i, p.len(), s.as_ref()));
            self.last.push(i);
            if let Some(s) = s {
                match self.open.iter_mut().find(|(flow, _)| *flow == s.flow) {
                    Some(open) => open.1 = w,
                    None => self.open.push((s.flow, w)),
                }
            }
        }
        // Lay the members out write by write.
        for write in &mut self.writes {
            let count = write.members.len();
            let start = self.members.len();
            let mut j = self.next[write.head];
            while j != usize::MAX {
                self.members.push(j);
                j = self.next[j];
            }
            debug_assert_eq!(self.members.len() - start, count);
            write.members = start..self.members.len();
        }
    }

    /// The writes of the last [`Gro::plan`].
    pub(crate) fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// The open write packet `p` (parsed as `s`) may join, if any.
    fn joinable<B: AsRef<[u8]>>(&self, packets: &[B], p: &[u8], s: &Segment) -> Option<usize> {
        let &(_, w) = self.open.iter().find(|(flow, _)| *flow == s.flow)?;
        let write = &self.writes[w];
        let head = packets[write.head].as_ref();
        let fits = !write.closed
            && write.header_len == s.header_len
            && s.payload <= write.segment
            && write.len + s.payload <= MAX_LEN
            && (s.flow.transport == Transport::Udp || s.seq == write.next_seq)
            && headers_match(head, p, s);
        fits.then_some(w)
    }

    /// The packets that follow `write`'s head, in order.
    pub(crate) fn members(&self, write: &Write) -> &[usize] {
        &self.members[write.members.clone()]
    }
}

/// Rewrites the head of a super-packet (`head`: the head packet's bytes) for `write`: the IP
/// length (and the IPv4 header checksum), PSH if a member had it, the transport length (UDP)
/// and, in the checksum field, the pseudo-header sum the kernel completes (RFC 1071
/// one's-complement sum, not inverted, as Linux keeps it for CHECKSUM_PARTIAL). A packet alone
/// is left as it is. (`Sum16BitWords` adds native-endian words, so its result's native bytes
/// are the bytes on the wire.)
pub(crate) fn finish(write: &Write, head: &mut [u8]) {
    let Some(Flow { v6, transport, .. }) = write.flow else { return };
    if write.segments() == 1 {
        return;
    }
    let len = write.len as u16;
    let (ip_len, addrs) = if v6 { (40, 8..40) } else { (20, 12..20) };
    let l4_len = len - ip_len as u16;
    if v6 {
        head[4..6].copy_from_slice(&l4_len.to_be_bytes());
    } else {
        head[2..4].copy_from_slice(&len.to_be_bytes());
        head[10..12].fill(0);
        let sum = Sum16BitWords::new().add_slice(&head[..20]).ones_complement();
        head[10..12].copy_from_slice(&sum.to_ne_bytes());
    }
    let (proto, check) = match transport {
        Transport::Tcp => {
            if write.psh {
                head[ip_len + 13] |= TCP_PSH;
            }
            (TCP, ip_len + 16)
        }
        Transport::Udp => {
            head[ip_len + 4..ip_len + 6].copy_from_slice(&l4_len.to_be_bytes());
            (UDP, ip_len + 6)
        }
    };
    let pseudo = Sum16BitWords::new()
        .add_slice(&head[addrs])
        .add_2bytes([0, proto])
        .add_2bytes(l4_len.to_be_bytes())
        .ones_complement();
    head[check..check + 2].copy_from_slice(&(!pseudo).to_ne_bytes());
}

#[cfg(test)]
pub(super) mod tests;
