//! The virtio-net header a TUN with offloads puts before every frame it hands over and takes
//! before every frame written to it, and the header fields both offloads ([`super::gso`],
//! [`super::gro`]) read and write.

use tun_rs::VIRTIO_NET_HDR_LEN;

// From include/uapi/linux/virtio_net.h.
/// `flags`: the transport checksum is to be completed from `csum_start` (CHECKSUM_PARTIAL).
pub(crate) const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a super-packet.
pub(crate) const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: an IPv4 TCP super-packet (TSO).
pub(crate) const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: an IPv6 TCP super-packet.
pub(crate) const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: a UDP super-packet, IPv4 or IPv6 (USO).
pub(crate) const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-packet has ECN (CWR) set.
pub(crate) const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// IP protocol numbers.
pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
/// TCP flags (byte 13 of the TCP header).
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK: u8 = 0x10;
pub(crate) const TCP_CWR: u8 = 0x80;
/// A UDP header's length (bytes).
pub(crate) const UDP_HEADER: usize = 8;

/// `struct virtio_net_hdr` ([`VIRTIO_NET_HDR_LEN`] bytes; its 16-bit fields in the host's byte
/// order, as a TUN uses them unless told otherwise with `TUNSETVNETLE`/`TUNSETVNETBE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VnetHeader {
    pub(crate) flags: u8,
    pub(crate) gso_type: u8,
    /// The IP and transport headers' length (bytes). Linux may set it to the whole first packet
    /// on a forwarding path, so a splitter works it out from the packet instead.
    pub(crate) hdr_len: u16,
    /// Payload bytes per packet of a super-packet.
    pub(crate) gso_size: u16,
    /// Where the transport header starts: the IP header's length (with IPv6's extension headers).
    pub(crate) csum_start: u16,
    /// Where in the transport header its checksum lies (16 for TCP, 6 for UDP).
    pub(crate) csum_offset: u16,
}

impl VnetHeader {
    /// The header at the start of `frame`; `None` if `frame` is shorter than one.
    pub(crate) fn decode(frame: &[u8]) -> Option<Self> {
        let h = frame.get(..VIRTIO_NET_HDR_LEN)?;
        let u16_at = |at: usize| u16::from_ne_bytes([h[at], h[at + 1]]);
        Some(Self {
            flags: h[0],
            gso_type: h[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes.
    pub(crate) fn encode(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut out = [0u8; VIRTIO_NET_HDR_LEN];
        out[0] = self.flags;
        out[1] = self.gso_type;
        for (at, value) in
            [(2, self.hdr_len), (4, self.gso_size), (6, self.csum_start), (8, self.csum_offset)]
        {
            out[at..at + 2].copy_from_slice(&value.to_ne_bytes());
        }
        out
    }
}
