//! Looking inside IP-in-IP, GRE, VXLAN and Geneve to the packet they carry.

use etherparse::LaxSlicedPacket;

use super::findings::Encapsulation;

/// VXLAN's UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// Geneve's UDP port.
pub const GENEVE_PORT: u16 = 6081;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
/// The fixed part of an ICMP or ICMPv6 error message before the quoted packet.
const ICMP_ERROR_HEADER: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_TEB: u16 = 0x6558; // transparent Ethernet bridging

/// The packet found inside an encapsulation.
pub(crate) struct Inner<'a> {
    /// What it was wrapped in.
    pub encapsulation: Encapsulation,
    /// The inner packet, parsed.
    pub packet: LaxSlicedPacket<'a>,
}

/// Looks inside an IP payload of protocol `protocol` (ports and UDP payload when UDP).
pub(crate) fn decapsulate<'a>(
    protocol: u8,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    ip_payload: &'a [u8],
    udp_payload: Option<&'a [u8]>,
) -> Option<Inner<'a>> {
    let on = |port| src_port == Some(port) || dst_port == Some(port);
    let (encapsulation, packet) = match protocol {
        4 => (Encapsulation::Ipv4InIp, LaxSlicedPacket::from_ip(ip_payload).ok()?),
        41 => (Encapsulation::Ipv6InIp, LaxSlicedPacket::from_ip(ip_payload).ok()?),
        47 => (Encapsulation::Gre, gre(ip_payload)?),
        ICMP | ICMPV6 => (
            Encapsulation::IcmpError,
            LaxSlicedPacket::from_ip(icmp_error_quote(protocol, ip_payload)?).ok()?,
        ),
        17 => {
            // Without a parsed UDP header (truncated), skip the 8 header bytes by hand.
            let payload = match udp_payload {
                Some(p) => p,
                None => ip_payload.get(8..)?,
            };
            if on(VXLAN_PORT) {
                (Encapsulation::Vxlan, vxlan(payload)?)
            } else if on(GENEVE_PORT) {
                (Encapsulation::Geneve, geneve(payload)?)
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Inner { encapsulation, packet })
}

fn by_ethertype(ethertype: u16, payload: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => LaxSlicedPacket::from_ip(payload).ok(),
        ETHERTYPE_TEB => LaxSlicedPacket::from_ethernet(payload).ok(),
        _ => None,
    }
}

/// GRE (RFC 2784/2890): flags C (checksum), K (key), S (sequence) each add 4 bytes; version 0 only.
fn gre(p: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    let flags = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    if flags & 0x7 != 0 {
        return None; // version 1 (PPTP) carries PPP, not IP
    }
    let ethertype = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
    let mut len = 4;
    for bit in [0x8000, 0x2000, 0x1000] {
        if flags & bit != 0 {
            len += 4;
        }
    }
    by_ethertype(ethertype, p.get(len..)?)
}

/// VXLAN (RFC 7348): 8-byte header, then an Ethernet frame.
fn vxlan(p: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    LaxSlicedPacket::from_ethernet(p.get(8..)?).ok()
}

/// Geneve (RFC 8926): 8 bytes plus options (length in 4-byte words), then the protocol type's payload.
fn geneve(p: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    let opt_words = usize::from(*p.first()? & 0x3f);
    let ethertype = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
    by_ethertype(ethertype, p.get(8 + opt_words * 4..)?)
}

/// The packet an ICMP error quotes: after the 8-byte header of an ICMPv4 destination unreachable
/// (3), source quench (4), redirect (5), time exceeded (11) or parameter problem (12) (RFC 792),
/// or an ICMPv6 destination unreachable (1), packet too big (2), time exceeded (3) or parameter
/// problem (4) (RFC 4443). `None` for other messages (echo, neighbour discovery, …).
fn icmp_error_quote(protocol: u8, p: &[u8]) -> Option<&[u8]> {
    let is_error = match protocol {
        ICMP => matches!(p.first()?, 3 | 4 | 5 | 11 | 12),
        _ => (1..=4).contains(p.first()?),
    };
    if is_error { p.get(ICMP_ERROR_HEADER..) } else { None }
}
