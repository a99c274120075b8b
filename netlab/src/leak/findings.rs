//! What the detector says about one packet: which rule it breaks, at which layer, and its headers.

use std::fmt;
use std::net::IpAddr;

/// Which rule a packet breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeakKind {
    /// A pod address is readable in an IP header (outer, or inside an encapsulation).
    PodPlaintext,
    /// Traffic between underlay hosts that is neither the mesh's UDP port nor the API server.
    StrayUnderlay,
    /// UDP on the mesh port whose payload does not have the shape of a WireGuard message.
    MeshNotWireGuard,
}

impl fmt::Display for LeakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeakKind::PodPlaintext => "plaintext-pod",
            LeakKind::StrayUnderlay => "stray-underlay",
            LeakKind::MeshNotWireGuard => "mesh-not-wireguard",
        })
    }
}

/// An encapsulation the detector looks inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encapsulation {
    /// IPv4 in IP (IP protocol 4).
    Ipv4InIp,
    /// IPv6 in IP (IP protocol 41).
    Ipv6InIp,
    /// GRE (IP protocol 47) carrying IP or Ethernet.
    Gre,
    /// VXLAN (UDP 4789) carrying Ethernet.
    Vxlan,
    /// Geneve (UDP 6081) carrying Ethernet or IP.
    Geneve,
    /// The packet an ICMP or ICMPv6 error quotes (destination unreachable, time exceeded,
    /// parameter problem, packet too big): RFC 792 and RFC 4443 quote the offending packet's
    /// headers, so a plaintext pod packet can show up there too.
    IcmpError,
}

impl fmt::Display for Encapsulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encapsulation::Ipv4InIp => "ipip",
            Encapsulation::Ipv6InIp => "ip6in4",
            Encapsulation::Gre => "gre",
            Encapsulation::Vxlan => "vxlan",
            Encapsulation::Geneve => "geneve",
            Encapsulation::IcmpError => "icmp-error",
        })
    }
}

/// Where in a frame a header was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// The frame's own IP header.
    Outer,
    /// An IP header inside an encapsulation.
    Inner {
        /// The innermost encapsulation around this header.
        encapsulation: Encapsulation,
        /// How many encapsulations deep (1 = directly inside the outer packet).
        depth: u8,
    },
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Outer => f.write_str("outer"),
            Layer::Inner { encapsulation, depth } => write!(f, "inner({encapsulation}, depth {depth})"),
        }
    }
}

/// The headers of one IP packet, as far as they could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketSummary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (the last next-header for IPv6).
    pub protocol: u8,
    /// TCP/UDP source port, if readable.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port, if readable.
    pub dst_port: Option<u16>,
}

/// The name of an IP protocol number.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        4 => "IPIP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        41 => "IPv6".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("proto-{n}"),
    }
}

impl fmt::Display for PacketSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = protocol_name(self.protocol);
        match (self.src_port, self.dst_port) {
            (Some(sp), Some(dp)) => write!(
                f,
                "{proto} {} -> {}",
                std::net::SocketAddr::new(self.src, sp),
                std::net::SocketAddr::new(self.dst, dp)
            ),
            _ => write!(f, "{proto} {} -> {}", self.src, self.dst),
        }
    }
}

/// One rule broken by one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Finding {
    /// The rule.
    pub kind: LeakKind,
    /// Where the offending header was read.
    pub layer: Layer,
    /// The offending header.
    pub packet: PacketSummary,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.kind, self.layer, self.packet)
    }
}

/// Traffic that is allowed on the underlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Allowed {
    /// WireGuard on the mesh port between underlay hosts.
    Mesh,
    /// TCP to or from the API server.
    Api,
    /// An ICMP error between underlay hosts about a mesh packet (it quotes UDP on the mesh port
    /// between underlay hosts), e.g. port unreachable while a node's agent is down: it carries
    /// only the quoted WireGuard header, never plaintext.
    MeshIcmpError,
}

/// Everything the detector concluded about one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameVerdict {
    /// The frame could not be parsed as Ethernet at all.
    pub unparsable: bool,
    /// The frame carries IPv4 or IPv6 (otherwise ARP or another non-IP protocol: never a leak).
    pub ip: bool,
    /// The outer packet is allowed underlay traffic.
    pub allowed: Option<Allowed>,
    /// The rules it breaks (empty: not a leak).
    pub findings: Vec<Finding>,
}

impl FrameVerdict {
    /// True if the frame breaks at least one rule.
    pub fn is_leak(&self) -> bool {
        !self.findings.is_empty()
    }

    /// True if the frame breaks rule `kind`.
    pub fn has(&self, kind: LeakKind) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }
}
