//! Path MTU: what the underlay path to a peer carries (learned from a send the kernel refused as
//! too large), and the ICMP "too big" message that tells an inner sender to use smaller packets,
//! as a router or a kernel tunnel interface would (RFC 1191, RFC 8201).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use socket2::{Domain, Socket, Type};

/// WireGuard's bytes around an inner packet: UDP (8) + its header and tag (32); the outer IP
/// header (20 for IPv4, 40 for IPv6) comes on top.
const WIREGUARD_UDP_OVERHEAD: u32 = 8 + 32;
/// The most an ICMPv4 error quotes (its whole message within 576 bytes: RFC 1812 §4.3.2.3).
const ICMPV4_ERROR_MAX: usize = 576;
/// The most an ICMPv6 error may be (the IPv6 minimum MTU: RFC 4443 §2.4 (c)).
const ICMPV6_ERROR_MAX: usize = 1280;
/// IPv4 header + ICMP header: what an ICMPv4 error adds before its quote.
const ICMPV4_ERROR_HEADERS: usize = 20 + 8;
/// IPv6 header + ICMPv6 header.
const ICMPV6_ERROR_HEADERS: usize = 40 + 8;
/// The TTL / hop limit of the messages we originate (Linux's default).
const HOP_LIMIT: u8 = 64;

/// The largest inner packet a path of `path_mtu` bytes to `endpoint` carries through WireGuard.
pub(crate) fn inner_mtu(path_mtu: u32, endpoint: &SocketAddr) -> u32 {
    let ip = if endpoint.is_ipv4() || is_v4_mapped(endpoint) { 20 } else { 40 };
    path_mtu.saturating_sub(ip + WIREGUARD_UDP_OVERHEAD)
}

fn is_v4_mapped(endpoint: &SocketAddr) -> bool {
    matches!(endpoint.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// The kernel's path MTU towards `endpoint` for packets carrying `fwmark` (so the same policy
/// routes apply as to the device's own socket): the `IP_MTU` / `IPV6_MTU` of a UDP socket connected
/// there (ip(7), ipv6(7)). Sends nothing.
pub(crate) fn path_mtu(endpoint: SocketAddr, fwmark: Option<u32>) -> io::Result<u32> {
    let endpoint = match endpoint.ip() {
        IpAddr::V6(v6) => {
            v6.to_ipv4_mapped().map_or(endpoint, |v4| SocketAddr::new(v4.into(), endpoint.port()))
        }
        IpAddr::V4(_) => endpoint,
    };
    let socket = Socket::new(Domain::for_address(endpoint), Type::DGRAM, None)?;
    if let Some(mark) = fwmark {
        socket.set_mark(mark)?;
    }
    socket.connect(&endpoint.into())?;
    let (level, name) = if endpoint.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `mtu` and `len` are valid for writes of the sizes given, for the call's duration.
    let rc =
        unsafe { libc::getsockopt(socket.as_raw_fd(), level, name, (&raw mut mtu).cast(), &raw mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The ICMP message telling the sender of `packet` (a bare inner IP packet, as read from the
/// TUN) that it is larger than `mtu`: for IPv4 with Don't Fragment set, a destination
/// unreachable / fragmentation needed carrying `mtu` as the next-hop MTU (RFC 1191 §4); for IPv6,
/// a packet too big (RFC 4443 §3.2). It comes from the packet's destination address (the tunnel
/// stands in for the path to it) and quotes as much of the packet as the message may hold.
///
/// `None` when no such message is due: an IPv4 packet without Don't Fragment (it may be
/// fragmented; it is dropped and counted instead), an ICMP error itself (never answered with one:
/// RFC 1122 §3.2.2), or something that does not parse as IP.
pub(crate) fn too_big(packet: &[u8], mtu: u32) -> Option<Vec<u8>> {
    let sliced = etherparse::SlicedPacket::from_ip(packet).ok()?;
    match sliced.net? {
        etherparse::NetSlice::Ipv4(ip) => {
            let h = ip.header();
            if !h.dont_fragment() || is_icmp_error(&sliced.transport) {
                return None;
            }
            let quote = &packet[..packet.len().min(ICMPV4_ERROR_MAX - ICMPV4_ERROR_HEADERS)];
            let next_hop_mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
            let builder = PacketBuilder::ipv4(h.destination(), h.source(), HOP_LIMIT).icmpv4(
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu,
                }),
            );
            let mut out = Vec::with_capacity(builder.size(quote.len()));
            builder.write(&mut out, quote).ok()?;
            Some(out)
        }
        etherparse::NetSlice::Ipv6(ip) => {
            let h = ip.header();
            if is_icmp_error(&sliced.transport) {
                return None;
            }
            let quote = &packet[..packet.len().min(ICMPV6_ERROR_MAX - ICMPV6_ERROR_HEADERS)];
            let builder = PacketBuilder::ipv6(h.destination(), h.source(), HOP_LIMIT)
                .icmpv6(Icmpv6Type::PacketTooBig { mtu });
            let mut out = Vec::with_capacity(builder.size(quote.len()));
            builder.write(&mut out, quote).ok()?;
            Some(out)
        }
        etherparse::NetSlice::Arp(_) => None,
    }
}

fn is_icmp_error(transport: &Option<etherparse::TransportSlice<'_>>) -> bool {
    match transport {
        Some(etherparse::TransportSlice::Icmpv4(i)) => matches!(
            i.icmp_type(),
            Icmpv4Type::DestinationUnreachable(_)
                | Icmpv4Type::Redirect(_)
                | Icmpv4Type::TimeExceeded(_)
                | Icmpv4Type::ParameterProblem(_)
        ),
        Some(etherparse::TransportSlice::Icmpv6(i)) => i.type_u8() < 128,
        _ => false,
    }
}

/// The IP total length an inner packet declares (its header, not the padded buffer), or `None`
/// for something that is not IPv4 or IPv6.
pub(crate) fn ip_len(packet: &[u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => Some(usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))),
        6 => Some(40 + usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, SlicedPacket, TransportSlice};

    const A: [u8; 4] = [10, 244, 1, 10];
    const B: [u8; 4] = [10, 244, 2, 10];

    fn v4(df: bool, len: usize) -> Vec<u8> {
        let mut ip = etherparse::Ipv4Header::new(0, 64, IpNumber::TCP, A, B).unwrap();
        ip.dont_fragment = df;
        let mut out = Vec::new();
        PacketBuilder::ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(40000, 80, 1, 65535)
            .write(&mut out, &vec![7u8; len])
            .unwrap();
        out
    }

    fn v6(len: usize) -> Vec<u8> {
        let (a, b) = (
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        );
        let mut out = Vec::new();
        PacketBuilder::ipv6(a, b, 64).udp(5000, 53).write(&mut out, &vec![1u8; len]).unwrap();
        out
    }

    fn v4_icmp_error() -> Vec<u8> {
        let inner = v4(true, 10);
        let mut out = Vec::new();
        PacketBuilder::ipv4(A, B, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port))
            .write(&mut out, &inner)
            .unwrap();
        // An ICMP error with DF set, as Linux sends them.
        out[6] |= 0x40;
        let sum = etherparse::Ipv4HeaderSlice::from_slice(&out).unwrap().to_header().calc_header_checksum();
        out[10..12].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// What an ICMP message says: type, code, the MTU it carries and how many bytes it quotes.
    type Said = (u8, u8, u32, usize);

    /// An IP packet's (source, destination).
    fn addresses(packet: &[u8]) -> (IpAddr, IpAddr) {
        match SlicedPacket::from_ip(packet).unwrap().net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => {
                (ip.header().source_addr().into(), ip.header().destination_addr().into())
            }
            etherparse::NetSlice::Ipv6(ip) => {
                (ip.header().source_addr().into(), ip.header().destination_addr().into())
            }
            etherparse::NetSlice::Arp(_) => unreachable!("not IP"),
        }
    }

    /// Parses an ICMP message built by [`too_big`].
    fn said(icmp: &[u8]) -> Said {
        match SlicedPacket::from_ip(icmp).unwrap().transport {
            Some(TransportSlice::Icmpv4(i)) => {
                assert_eq!(internet_checksum(i.slice()), 0, "ICMPv4 checksum");
                let mtu = u32::from(u16::from_be_bytes([i.bytes5to8()[2], i.bytes5to8()[3]]));
                (i.type_u8(), i.code_u8(), mtu, i.payload().len())
            }
            Some(TransportSlice::Icmpv6(i)) => {
                (i.type_u8(), i.code_u8(), u32::from_be_bytes(i.bytes5to8()), i.payload().len())
            }
            other => panic!("not ICMP: {other:?}"),
        }
    }

    #[test]
    fn too_big_table() {
        let cases: Vec<(&str, Vec<u8>, u32, Option<Said>)> = vec![
            ("IPv4 with DF: fragmentation needed", v4(true, 1460), 1440, Some((3, 4, 1440, 548))),
            ("IPv4 small, with DF: quoted whole", v4(true, 100), 1440, Some((3, 4, 1440, 140))),
            ("IPv4 without DF: none (dropped and counted)", v4(false, 1460), 1440, None),
            ("IPv6: packet too big", v6(1452), 1420, Some((2, 0, 1420, 1232))),
            ("an ICMP error is never answered", v4_icmp_error(), 1440, None),
            ("not IP", vec![0x10; 64], 1440, None),
        ];
        for (name, packet, mtu, want) in cases {
            let icmp = too_big(&packet, mtu);
            if let Some(icmp) = &icmp {
                let (src, dst) = addresses(&packet);
                assert_eq!(addresses(icmp), (dst, src), "{name}: from the destination back to the source");
            }
            assert_eq!(icmp.as_deref().map(said), want, "{name}");
        }
    }

    /// RFC 1071's one's complement sum; 0 over a message with a valid checksum field.
    fn internet_checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 =
            bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn inner_mtu_table() {
        let v4: SocketAddr = "198.18.0.11:51820".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.18.0.11]:51820".parse().unwrap();
        let v6: SocketAddr = "[fd00::11]:51820".parse().unwrap();
        for (path, endpoint, want) in
            [(1500, v4, 1440), (1500, mapped, 1440), (1500, v6, 1420), (9001, v4, 8941), (40, v6, 0)]
        {
            assert_eq!(inner_mtu(path, &endpoint), want, "{path} {endpoint}");
        }
    }

    #[test]
    fn ip_len_reads_the_header_not_the_buffer() {
        let mut p = v4(true, 100);
        let real = p.len();
        p.extend_from_slice(&[0; 12]);
        assert_eq!(ip_len(&p), Some(real));
        assert_eq!(ip_len(&v6(10)), Some(40 + 8 + 10));
        assert_eq!(ip_len(&[0x10]), None);
        assert_eq!(ip_len(&[]), None);
    }
}
