//! The shapes of kernel state meshcrypt manages: its link, the routes of its own table and the
//! policy rules at its own priority. Nothing outside those is ever modelled, planned or touched.

use std::collections::BTreeSet;
use std::fmt;

use ipnet::IpNet;

/// What a route in meshcrypt's table does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// Into meshcrypt's WireGuard device, which encrypts it for a peer or drops and counts it.
    Device,
    /// Dropped by the kernel: the fail-closed floor that stays even when the device is gone.
    Blackhole,
    /// Not ours to route: lookup continues with the next policy rule (local pods, for example).
    Throw,
    /// Anything meshcrypt never installs (a unicast route through another device, `unreachable`,
    /// `prohibit`, …), found in its table: it is replaced or deleted. Holds the kernel's route type.
    Foreign(u8),
}

/// One route in meshcrypt's own table. Routes are identified by `(dst, metric)`; two routes to
/// one destination at different metrics coexist (a device route over a blackhole floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The destination prefix.
    pub dst: IpNet,
    /// The route's metric (kernel "priority"); lower wins.
    pub metric: u32,
    /// What the route does.
    pub kind: RouteKind,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Device => write!(f, "{} dev <mesh> metric {}", self.dst, self.metric),
            RouteKind::Blackhole => write!(f, "blackhole {} metric {}", self.dst, self.metric),
            RouteKind::Throw => write!(f, "throw {} metric {}", self.dst, self.metric),
            RouteKind::Foreign(kind) => write!(f, "type-{kind} {} metric {}", self.dst, self.metric),
        }
    }
}

/// One policy rule at meshcrypt's priority: "to `dst`, unless the packet carries the mesh's
/// firewall mark, look up meshcrypt's table". The mark keeps the mesh's own encrypted UDP out of
/// the mesh when a peer's node address is steered into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// The rule's priority (lower is consulted first).
    pub priority: u32,
    /// The source selector (`from`); a /0 prefix matches every source.
    pub src: IpNet,
    /// The destination selector (`to`); a /0 prefix matches every destination.
    pub dst: IpNet,
    /// Match only packets with none of these mark bits (`fwmark 0/MASK`); `None` for any mark.
    pub unmarked: Option<u32>,
    /// The table looked up.
    pub table: u32,
}

impl Rule {
    /// A rule for packets to `dst`, from anywhere.
    pub fn to(priority: u32, dst: IpNet, unmarked: Option<u32>, table: u32) -> Self {
        Self { priority, src: any(&dst), dst, unmarked, table }
    }

    /// A rule for packets from `src`, to anywhere.
    pub fn from(priority: u32, src: IpNet, unmarked: Option<u32>, table: u32) -> Self {
        Self { priority, src, dst: any(&src), unmarked, table }
    }
}

/// The /0 prefix of `net`'s family: every address.
fn any(net: &IpNet) -> IpNet {
    match net {
        IpNet::V4(_) => IpNet::V4(Default::default()),
        IpNet::V6(_) => IpNet::V6(Default::default()),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.priority)?;
        if self.src.prefix_len() > 0 {
            write!(f, " from {}", self.src)?;
        }
        if self.dst.prefix_len() > 0 || self.src.prefix_len() == 0 {
            write!(f, " to {}", self.dst)?;
        }
        if let Some(mask) = self.unmarked {
            write!(f, " fwmark 0/{mask:#x}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

/// The device as meshcrypt wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Interface name (`meshcrypt0` by default).
    pub name: String,
    /// Tunnel MTU.
    pub mtu: u32,
    /// Addresses on the device (may be empty: forwarded pod traffic needs none).
    pub addresses: BTreeSet<IpNet>,
}

/// Everything meshcrypt wants the kernel to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// The device.
    pub link: LinkSpec,
    /// meshcrypt's routing table.
    pub table: u32,
    /// Every route of that table.
    pub routes: BTreeSet<Route>,
    /// Every rule at meshcrypt's priority.
    pub rules: BTreeSet<Rule>,
}

/// The device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    /// The kernel's interface index.
    pub index: u32,
    /// Current MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Addresses on the device.
    pub addresses: BTreeSet<IpNet>,
    /// The link's kind (`IFLA_INFO_KIND`: "tun", "veth", "wireguard", ...), if the kernel says.
    pub kind: Option<String>,
}

/// What the kernel holds of the things meshcrypt owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedState {
    /// The device, if it exists.
    pub link: Option<ObservedLink>,
    /// Every route in meshcrypt's table (of any kind, whoever added it).
    pub routes: BTreeSet<Route>,
    /// Every rule at meshcrypt's priority.
    pub rules: BTreeSet<Rule>,
}

/// One change to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Set the device's MTU.
    SetMtu(u32),
    /// Bring the device up.
    SetUp,
    /// Add an address to the device.
    AddAddress(IpNet),
    /// Remove an address from the device.
    DelAddress(IpNet),
    /// Add the route, or replace the one with the same destination and metric, atomically.
    ReplaceRoute(Route),
    /// Delete the route.
    DelRoute(Route),
    /// Add the rule.
    AddRule(Rule),
    /// Delete the rule.
    DelRule(Rule),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SetMtu(mtu) => write!(f, "set mtu {mtu}"),
            Self::SetUp => f.write_str("set link up"),
            Self::AddAddress(a) => write!(f, "add address {a}"),
            Self::DelAddress(a) => write!(f, "delete address {a}"),
            Self::ReplaceRoute(r) => write!(f, "replace route {r}"),
            Self::DelRoute(r) => write!(f, "delete route {r}"),
            Self::AddRule(r) => write!(f, "add rule {r}"),
            Self::DelRule(r) => write!(f, "delete rule {r}"),
        }
    }
}

/// A host route (a /32 or /128) read from a table of the kernel's, e.g. one a CNI installed in the
/// main table for a pod on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostRoute {
    /// The destination.
    pub dst: IpNet,
    /// The output interface's index, if the route has one.
    pub oif: Option<u32>,
    /// The route goes through a gateway (a next hop beyond the link), not straight onto the link.
    pub via_gateway: bool,
}
