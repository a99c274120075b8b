//! Classifying one captured Ethernet frame: plaintext pod addresses at every layer it can read, and
//! underlay traffic that is neither the mesh nor the API server.

use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::config::LeakConfig;
use super::encap::{self, Inner};
use super::findings::{Allowed, Encapsulation, Finding, FrameVerdict, Layer, LeakKind, PacketSummary};
use super::wireguard::looks_like_wireguard;

/// How many encapsulations deep the detector looks.
pub const MAX_DEPTH: u8 = 4;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Classifies one Ethernet frame (as captured on the underlay).
pub fn classify_frame(frame: &[u8], config: &LeakConfig) -> FrameVerdict {
    let mut verdict = FrameVerdict::default();
    match LaxSlicedPacket::from_ethernet(frame) {
        Ok(packet) => inspect(&packet, Layer::Outer, config, &mut verdict),
        Err(_) => verdict.unparsable = true,
    }
    verdict
}

/// Classifies one bare IP packet (no Ethernet header), e.g. from a TUN device.
pub fn classify_ip_packet(packet: &[u8], config: &LeakConfig) -> FrameVerdict {
    let mut verdict = FrameVerdict::default();
    match LaxSlicedPacket::from_ip(packet) {
        Ok(packet) => inspect(&packet, Layer::Outer, config, &mut verdict),
        Err(_) => verdict.unparsable = true,
    }
    verdict
}

/// One IP layer's facts, read from a lax slice.
struct IpView<'a> {
    summary: PacketSummary,
    /// The IP payload (possibly truncated).
    payload: &'a [u8],
    /// The payload starts at the transport header (not a later fragment).
    first_fragment: bool,
    /// The UDP payload, when the UDP header was parsed.
    udp_payload: Option<&'a [u8]>,
    /// The ICMPv6 type, when the ICMPv6 header was parsed.
    icmpv6_type: Option<u8>,
}

fn view<'a>(packet: &LaxSlicedPacket<'a>) -> Option<IpView<'a>> {
    let (src, dst, ip_payload, first_fragment): (IpAddr, IpAddr, _, bool) = match packet.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => {
            let h = s.header();
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                s.payload().clone(),
                h.fragments_offset().value() == 0,
            )
        }
        LaxNetSlice::Ipv6(s) => {
            let h = s.header();
            let p = s.payload().clone();
            // The lax parser stops at a fragment header of a later fragment; treat a fragmented
            // IPv6 payload as unreadable beyond its addresses.
            let first = !p.fragmented;
            (h.source_addr().into(), h.destination_addr().into(), p, first)
        }
        LaxNetSlice::Arp(_) => return None,
    };
    let protocol = ip_payload.ip_number.0;
    let (mut src_port, mut dst_port, mut udp_payload, mut icmpv6_type) = (None, None, None, None);
    match &packet.transport {
        Some(TransportSlice::Udp(u)) => {
            src_port = Some(u.source_port());
            dst_port = Some(u.destination_port());
            udp_payload = Some(u.payload());
        }
        Some(TransportSlice::Icmpv6(i)) => icmpv6_type = Some(i.type_u8()),
        Some(TransportSlice::Tcp(t)) => {
            src_port = Some(t.source_port());
            dst_port = Some(t.destination_port());
        }
        _ => {
            let p = ip_payload.payload;
            if (protocol == TCP || protocol == UDP) && first_fragment && p.len() >= 4 {
                src_port = Some(u16::from_be_bytes([p[0], p[1]]));
                dst_port = Some(u16::from_be_bytes([p[2], p[3]]));
            }
        }
    }
    Some(IpView {
        summary: PacketSummary { src, dst, protocol, src_port, dst_port },
        payload: ip_payload.payload,
        first_fragment,
        udp_payload,
        icmpv6_type,
    })
}

/// True if `ip` is an ICMP error that quotes a UDP packet on the mesh port between two underlay
/// hosts (what a host answers when a WireGuard packet reaches a port nobody listens on).
fn quotes_mesh_packet(ip: &IpView<'_>, config: &LeakConfig) -> bool {
    let s = &ip.summary;
    let Some(Inner { encapsulation: Encapsulation::IcmpError, packet }) =
        encap::decapsulate(s.protocol, s.src_port, s.dst_port, ip.payload, ip.udp_payload)
    else {
        return false;
    };
    view(&packet).is_some_and(|quoted| {
        let q = quoted.summary;
        q.protocol == UDP
            && (q.src_port == Some(config.mesh_port) || q.dst_port == Some(config.mesh_port))
            && config.is_underlay(q.src)
            && config.is_underlay(q.dst)
    })
}

fn inspect(packet: &LaxSlicedPacket<'_>, layer: Layer, config: &LeakConfig, verdict: &mut FrameVerdict) {
    let Some(ip) = view(packet) else {
        return;
    };
    let s = ip.summary;
    if layer == Layer::Outer {
        verdict.ip = true;
    }
    // Neighbour discovery (router/neighbour solicitation and advertisement, redirect) is IPv6's ARP.
    if ip.icmpv6_type.is_some_and(|t| (133..=137).contains(&t)) {
        return;
    }
    if config.is_pod(s.src) || config.is_pod(s.dst) {
        verdict.findings.push(Finding { kind: LeakKind::PodPlaintext, layer, packet: s });
    }
    let on_port = |port: u16| s.src_port == Some(port) || s.dst_port == Some(port);
    let is_mesh = s.protocol == UDP && on_port(config.mesh_port);
    if layer == Layer::Outer && config.is_underlay(s.src) && config.is_underlay(s.dst) {
        let is_api = s.protocol == TCP
            && config.api_endpoints.iter().any(|api| {
                (s.dst == api.ip() && s.dst_port == Some(api.port()))
                    || (s.src == api.ip() && s.src_port == Some(api.port()))
            });
        if is_mesh {
            verdict.allowed = Some(Allowed::Mesh);
            // A later fragment or a truncated capture cannot be checked; a readable one must look
            // like WireGuard.
            if let Some(payload) = ip.udp_payload
                && !looks_like_wireguard(payload)
            {
                verdict.findings.push(Finding { kind: LeakKind::MeshNotWireGuard, layer, packet: s });
            }
        } else if is_api {
            verdict.allowed = Some(Allowed::Api);
        } else if quotes_mesh_packet(&ip, config) {
            verdict.allowed = Some(Allowed::MeshIcmpError);
        } else {
            verdict.findings.push(Finding { kind: LeakKind::StrayUnderlay, layer, packet: s });
        }
    }
    // WireGuard payloads are ciphertext: nothing to look inside.
    if is_mesh || !ip.first_fragment {
        return;
    }
    let depth = match layer {
        Layer::Outer => 0,
        Layer::Inner { depth, .. } => depth,
    };
    if depth >= MAX_DEPTH {
        return;
    }
    let inner = encap::decapsulate(s.protocol, s.src_port, s.dst_port, ip.payload, ip.udp_payload);
    if let Some(Inner { encapsulation, packet }) = inner {
        let layer = Layer::Inner { encapsulation, depth: depth + 1 };
        inspect(&packet, layer, config, verdict);
    }
}
