//! The rtnetlink executor: reads back what meshcrypt owns (its link, its table, its rule priority)
//! and applies planned operations. It never reads or writes another table or priority.
//!
//! "Already exists" on an add and "not found" on a delete mean the kernel already holds the
//! intended state: they are treated as success, so applying a plan twice is harmless.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::AsyncSocket as _;
use rtnetlink::{Handle, IpVersion, LinkUnspec, RouteMessageBuilder};

use crate::error::Error;
use crate::model::{HostRoute, ObservedLink, ObservedState, Op, Route, RouteKind, Rule};
use crate::route_view::{Cached, RouteView};

/// Applies routing operations in the network namespace of the thread that connected it.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    /// A socket with strict checking of dump requests (`NETLINK_GET_STRICT_CHK`), for route dumps
    /// of one table: the kernel then dumps that table alone instead of every table.
    table_dumps: Handle,
    /// meshcrypt's table as last read, kept current from route notifications.
    view: Arc<RouteView>,
}

impl Netlink {
    /// Opens three rtnetlink sockets, one for requests, one for table dumps and one for route
    /// notifications, and drives them on the current tokio runtime.
    pub fn connect() -> Result<Self, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        tokio::spawn(connection);
        let (mut connection, table_dumps, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        connection.socket_mut().socket_mut().set_netlink_get_strict_chk(true).map_err(Error::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle, table_dumps, view: Arc::new(RouteView::open()?) })
    }

    /// How many times `observe` read meshcrypt's table whole: its first read, and again after
    /// route notifications were lost or the device link changed; every other read applies the
    /// notifications since the previous one.
    pub fn route_dumps(&self) -> u64 {
        self.view.dumps()
    }

    /// Reads the link named `ifname`, every route of `table` (from the route notifications since
    /// the previous read, or a dump: [`Netlink::route_dumps`]) and every rule at `priority`.
    pub async fn observe(&self, ifname: &str, table: u32, priority: u32) -> Result<ObservedState, Error> {
        let link = self.observe_link(ifname).await?;
        let index = link.as_ref().map(|l| l.index);
        let routes = match self.view.current(table, &link).await {
            Some(routes) => routes,
            None => {
                let mut routes = BTreeSet::new();
                for version in [IpVersion::V4, IpVersion::V6] {
                    for msg in self.table_routes(version, table).await? {
                        routes.extend(route_from(&msg, index));
                    }
                }
                self.view.store(Cached::new(table, link.clone(), routes.iter().copied()));
                routes
            }
        };
        let mut rules = BTreeSet::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let mut dump = self.handle.rule().get(version).execute();
            while let Some(msg) = dump.try_next().await.map_err(|e| Error::from_rtnetlink("dump rules", e))? {
                rules.extend(rule_from(&msg).filter(|r| r.priority == priority));
            }
        }
        Ok(ObservedState { link, routes, rules })
    }

    /// The link named `ifname`, with its index, MTU, state, addresses and kind, if one exists.
    pub async fn observe_link(&self, ifname: &str) -> Result<Option<ObservedLink>, Error> {
        let mut links = self.handle.link().get().match_name(ifname.to_owned()).execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) => {
                let e = Error::from_rtnetlink(format!("get link {ifname}"), e);
                return if e.errno() == Some(libc::ENODEV) { Ok(None) } else { Err(e) };
            }
        };
        let index = msg.header.index;
        let mtu =
            msg.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None });
        let up = msg.header.flags.contains(LinkFlags::Up);
        let kind = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(kind) => Some(kind.to_string()),
                _ => None,
            }),
            _ => None,
        });
        let mut addresses = BTreeSet::new();
        let mut dump = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(addr) =
            dump.try_next().await.map_err(|e| Error::from_rtnetlink("dump addresses", e))?
        {
            for attr in &addr.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && let Ok(net) = IpNet::new(*ip, addr.header.prefix_len)
                {
                    addresses.insert(net);
                }
            }
        }
        Ok(Some(ObservedLink { index, mtu: mtu.unwrap_or(0), up, addresses, kind }))
    }

    /// The MTU of the interface that holds `address` (the node's underlay address), if any does.
    pub async fn mtu_of_address(&self, address: IpAddr) -> Result<Option<u32>, Error> {
        let Some(index) = self.index_of_address(address).await? else { return Ok(None) };
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg =
            links.try_next().await.map_err(|e| Error::from_rtnetlink(format!("get link {index}"), e))?;
        Ok(msg.and_then(|m| {
            m.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None })
        }))
    }

    /// The index of the interface that holds `address` (the node's underlay address), if any does.
    pub async fn index_of_address(&self, address: IpAddr) -> Result<Option<u32>, Error> {
        let mut dump = self.handle.address().get().set_address_filter(address).execute();
        let mut index = None;
        while let Some(msg) = dump.try_next().await.map_err(|e| Error::from_rtnetlink("dump addresses", e))? {
            if msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == address)) {
                index = Some(msg.header.index);
            }
        }
        Ok(index)
    }

    /// Every route of `table` in `version`'s family, as the kernel sends them.
    /// Every route of `table` in `version`'s family. The request goes on the strict-checking
    /// socket, so the kernel dumps that table alone (Linux 4.20 and later: `ip_valid_fib_dump_req`
    /// in net/ipv4/fib_frontend.c filters on the header's table, and on its protocol and type
    /// unless they are zero, so they are); in pod-IP mode meshcrypt's table holds a route per
    /// remote pod, which a dump of the main table no longer walks. An older kernel dumps every
    /// table, and other tables' routes are dropped here. A table that does not exist in the family
    /// (yet) reads as empty: the kernel ends such a dump with `ENOENT` in its `NLMSG_DONE`, which
    /// netlink-proto takes for the end of the dump.
    async fn table_routes(&self, version: IpVersion, table: u32) -> Result<Vec<RouteMessage>, Error> {
        let mut query = match version {
            IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().table_id(table).build(),
            IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().table_id(table).build(),
        };
        query.header.protocol = RouteProtocol::Unspec;
        query.header.kind = RouteType::Unspec;
        let mut dump = self.table_dumps.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(msg) = dump.try_next().await.map_err(|e| Error::from_rtnetlink("dump routes", e))? {
            if route_table(&msg) == table {
                out.push(msg);
            }
        }
        Ok(out)
    }

    /// Every host route (/32, /128) of `table`, both families: what a CNI installs in the main
    /// table (254) for the pods it wired on this node, among others.
    pub async fn host_routes(&self, table: u32) -> Result<Vec<HostRoute>, Error> {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            for msg in self.table_routes(version, table).await? {
                if msg.header.kind == RouteType::Unicast {
                    out.extend(host_route_from(&msg));
                }
            }
        }
        Ok(out)
    }

    /// Calls `wake` whenever a host route (/32, /128) of the main table is added or removed, e.g.
    /// when a CNI wires or unwires a pod here, for as long as the runtime runs. Needs a runtime.
    pub fn watch_host_routes(wake: impl Fn() + Send + 'static) -> Result<(), Error> {
        use futures::StreamExt as _;
        use rtnetlink::sys::{AsyncSocket as _, SocketAddr};
        let (mut connection, _, mut messages) = rtnetlink::new_connection().map_err(Error::Connect)?;
        let groups = rtnetlink::constants::RTMGRP_IPV4_ROUTE | rtnetlink::constants::RTMGRP_IPV6_ROUTE;
        connection.socket_mut().socket_mut().bind(&SocketAddr::new(0, groups)).map_err(Error::Connect)?;
        tokio::spawn(connection);
        tokio::spawn(async move {
            while let Some((message, _)) = messages.next().await {
                let route = match message.payload {
                    NetlinkPayload::InnerMessage(
                        RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m),
                    ) => m,
                    _ => continue,
                };
                if route_table(&route) == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && host_route_from(&route).is_some()
                {
                    wake();
                }
            }
        });
        Ok(())
    }

    /// Applies `ops` in order to the link `link_index` (needed by link, address and device-route
    /// operations) and `table`. Stops at the first real failure.
    pub async fn apply(&self, link_index: Option<u32>, table: u32, ops: &[Op]) -> Result<(), Error> {
        for op in ops {
            tracing::debug!(%op, "netlink");
            let result = self.apply_one(link_index, table, op).await;
            match result {
                Err(e) if is_benign(op, &e) => {
                    tracing::debug!(%op, error = %e, "already in the intended state")
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn apply_one(&self, link: Option<u32>, table: u32, op: &Op) -> Result<(), Error> {
        let need_link = || {
            link.ok_or_else(|| Error::Kernel {
                op: op.to_string(),
                errno: libc::ENODEV,
                message: "no device".into(),
            })
        };
        let fail = |e| Error::from_rtnetlink(op.to_string(), e);
        match *op {
            Op::SetMtu(mtu) => {
                let msg = LinkUnspec::new_with_index(need_link()?).mtu(mtu).build();
                self.handle.link().set(msg).execute().await.map_err(fail)
            }
            Op::SetUp => {
                let msg = LinkUnspec::new_with_index(need_link()?).up().build();
                self.handle.link().set(msg).execute().await.map_err(fail)
            }
            Op::AddAddress(net) => self
                .handle
                .address()
                .add(need_link()?, net.addr(), net.prefix_len())
                .execute()
                .await
                .map_err(fail),
            Op::DelAddress(net) => {
                let mut dump = self.handle.address().get().set_link_index_filter(need_link()?).execute();
                while let Some(msg) = dump.try_next().await.map_err(fail)? {
                    let matches = msg.header.prefix_len == net.prefix_len()
                        && msg
                            .attributes
                            .iter()
                            .any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == net.addr()));
                    if matches {
                        return self.handle.address().del(msg).execute().await.map_err(fail);
                    }
                }
                Ok(())
            }
            Op::ReplaceRoute(route) => {
                let oif = if route.kind == RouteKind::Device { Some(need_link()?) } else { None };
                let msg = route_message(op, &route, table, oif)?;
                self.handle.route().add(msg).replace().execute().await.map_err(fail)
            }
            Op::DelRoute(route) => {
                let mut msg = route_message(op, &route, table, None)?;
                // Match the route whoever added it: any protocol (ours are "static", one added by
                // `ip route` is "boot") and any scope (fib_table_delete compares them if set).
                msg.header.protocol = RouteProtocol::Unspec;
                msg.header.scope = RouteScope::NoWhere;
                self.handle.route().del(msg).execute().await.map_err(fail)
            }
            Op::AddRule(rule) => {
                let mut req = self.handle.rule().add();
                *req.message_mut() = rule_message(&rule);
                req.execute().await.map_err(fail)
            }
            Op::DelRule(rule) => self.handle.rule().del(rule_message(&rule)).execute().await.map_err(fail),
        }
    }
}

/// "Exists" on an add and "not found" on a delete: the kernel already holds what was intended.
fn is_benign(op: &Op, e: &Error) -> bool {
    matches!(
        (op, e.errno()),
        (Op::AddAddress(_) | Op::AddRule(_), Some(libc::EEXIST))
            | (
                Op::DelAddress(_) | Op::DelRoute(_) | Op::DelRule(_),
                Some(libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
            )
    )
}

pub(crate) fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(msg.header.table))
}

/// The kernel's route as meshcrypt models it; `None` for what cannot be a destination prefix.
pub(crate) fn route_from(msg: &RouteMessage, link_index: Option<u32>) -> Option<Route> {
    let len = msg.header.destination_prefix_length;
    let addr: IpAddr = match msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    }) {
        Some(RouteAddress::Inet(a)) => (*a).into(),
        Some(RouteAddress::Inet6(a)) => (*a).into(),
        Some(_) => return None,
        None if msg.header.address_family == AddressFamily::Inet => std::net::Ipv4Addr::UNSPECIFIED.into(),
        None => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let dst = IpNet::new(addr, len).ok()?;
    let metric =
        msg.attributes.iter().find_map(|a| if let RouteAttribute::Priority(p) = a { Some(*p) } else { None });
    let oif =
        msg.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
    let kind = match msg.header.kind {
        RouteType::Unicast if oif.is_some() && oif == link_index => RouteKind::Device,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Throw => RouteKind::Throw,
        other => RouteKind::Foreign(u8::from(other)),
    };
    Some(Route { dst, metric: metric.unwrap_or(0), kind })
}

/// A host route's destination, output interface and whether it has a gateway; `None` for a route
/// to more than one address.
fn host_route_from(msg: &RouteMessage) -> Option<HostRoute> {
    let dst = match msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    })? {
        RouteAddress::Inet(a) if msg.header.destination_prefix_length == 32 => IpNet::from(IpAddr::from(*a)),
        RouteAddress::Inet6(a) if msg.header.destination_prefix_length == 128 => {
            IpNet::from(IpAddr::from(*a))
        }
        _ => return None,
    };
    let oif =
        msg.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
    let via_gateway =
        msg.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Via(_)));
    Some(HostRoute { dst, oif, via_gateway })
}

fn route_message(op: &Op, route: &Route, table: u32, oif: Option<u32>) -> Result<RouteMessage, Error> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|_| Error::InvalidPrefix(*op))?
        .table_id(table)
        .priority(route.metric);
    builder = match route.kind {
        RouteKind::Device => builder.kind(RouteType::Unicast).scope(RouteScope::Link),
        RouteKind::Blackhole => builder.kind(RouteType::BlackHole),
        RouteKind::Throw => builder.kind(RouteType::Throw),
        RouteKind::Foreign(kind) => builder.kind(RouteType::from(kind)),
    };
    if let Some(index) = oif {
        builder = builder.output_interface(index);
    }
    Ok(builder.build())
}

fn rule_from(msg: &RuleMessage) -> Option<Rule> {
    if msg.header.action != RuleAction::ToTable {
        return None;
    }
    let mut priority = 0;
    let mut table = u32::from(msg.header.table);
    let (mut addr, mut src) = (None, None);
    let (mut mark, mut mask) = (0, 0);
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Destination(a) => addr = Some(*a),
            RuleAttribute::Source(a) => src = Some(*a),
            RuleAttribute::FwMark(m) => mark = *m,
            RuleAttribute::FwMask(m) => mask = *m,
            _ => {}
        }
    }
    // An inverted rule or one matching a set mark is not a shape meshcrypt installs: it reads
    // back as "unmarked 0", which meshcrypt never wants, so the planner removes it.
    let foreign = msg.header.flags.contains(RuleFlags::Invert) || mark != 0;
    let unmarked = if foreign { Some(0) } else { (mask != 0).then_some(mask) };
    let unspecified: IpAddr = match msg.header.family {
        AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    Some(Rule {
        priority,
        src: IpNet::new(src.unwrap_or(unspecified), msg.header.src_len).ok()?,
        dst: IpNet::new(addr.unwrap_or(unspecified), msg.header.dst_len).ok()?,
        unmarked,
        table,
    })
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = if rule.dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    msg.header.dst_len = rule.dst.prefix_len();
    msg.header.src_len = rule.src.prefix_len();
    msg.header.action = RuleAction::ToTable;
    msg.header.table =
        u8::try_from(rule.table).ok().filter(|t| *t != 0).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RuleAttribute::Table(rule.table));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some(mask) = rule.unmarked {
        msg.attributes.push(RuleAttribute::FwMark(0));
        msg.attributes.push(RuleAttribute::FwMask(mask));
    }
    if rule.dst.prefix_len() > 0 {
        msg.attributes.push(RuleAttribute::Destination(rule.dst.addr()));
    }
    if rule.src.prefix_len() > 0 {
        msg.attributes.push(RuleAttribute::Source(rule.src.addr()));
    }
    msg
}

#[cfg(test)]
mod tests {
    //! Route and rule messages through their wire form and back, without a kernel: what the
    //! executor sends is what the observer reads.

    use rtnetlink::packet_core::Parseable as _;

    use super::*;

    fn wire<M: rtnetlink::packet_core::Emitable>(msg: &M) -> Vec<u8> {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[test]
    fn routes_survive_the_wire() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let route = |dst: &str, metric, kind| Route { dst: net(dst), metric, kind };
        let table = 51_820;
        for (route, oif) in [
            (route("10.244.1.0/24", 1000, RouteKind::Device), Some(7)),
            (route("10.244.0.0/16", 4_000_000, RouteKind::Blackhole), None),
            (route("10.244.0.0/24", 1000, RouteKind::Throw), None),
            (route("198.18.0.12/32", 1000, RouteKind::Device), Some(7)),
            (route("0.0.0.0/0", 0, RouteKind::Blackhole), None),
            (route("fd00:10:244:1::/64", 1000, RouteKind::Device), Some(7)),
            (route("fd00:10:244::/56", 4_000_000, RouteKind::Blackhole), None),
            (route("fd00:10:244::/64", 1000, RouteKind::Throw), None),
            (route("10.9.0.0/16", 5, RouteKind::Foreign(u8::from(RouteType::Unreachable))), None),
        ] {
            let op = Op::ReplaceRoute(route);
            let sent = route_message(&op, &route, table, oif).expect("a message");
            let received = RouteMessage::parse(&wire(&sent)).expect("parses");
            assert_eq!(route_table(&received), table, "{route}");
            assert_eq!(route_from(&received, oif), Some(route), "{route}");
        }
    }

    #[test]
    fn a_unicast_route_through_another_interface_reads_back_as_foreign() {
        let route = Route { dst: "10.244.1.0/24".parse().unwrap(), metric: 1000, kind: RouteKind::Device };
        let sent = route_message(&Op::ReplaceRoute(route), &route, 51_820, Some(9)).unwrap();
        let received = RouteMessage::parse(&wire(&sent)).unwrap();
        assert_eq!(
            route_from(&received, Some(7)).map(|r| r.kind),
            Some(RouteKind::Foreign(u8::from(RouteType::Unicast)))
        );
    }

    #[test]
    fn rules_survive_the_wire() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        for rule in [
            Rule::to(100, net("10.244.0.0/16"), Some(0x20_0000), 51_820),
            Rule::from(100, net("10.244.0.0/16"), Some(0x20_0000), 51_820),
            Rule::to(100, net("198.18.0.12/32"), None, 51_820),
            Rule::to(100, net("fd00:10:244::/56"), Some(0x20_0000), 51_820),
            Rule::from(100, net("fd00:10:244::/56"), None, 51_820),
            Rule::to(511, net("10.0.0.0/8"), Some(0xffff_ffff), 200),
            Rule {
                priority: 100,
                src: net("10.1.0.0/16"),
                dst: net("10.2.0.0/16"),
                unmarked: None,
                table: 7,
            },
        ] {
            let received = RuleMessage::parse(&wire(&rule_message(&rule))).expect("parses");
            assert_eq!(rule_from(&received), Some(rule), "{rule}");
        }
    }

    #[test]
    fn a_rule_meshcrypt_never_installs_reads_back_as_one_to_remove() {
        let rule = Rule::to(100, "10.244.0.0/16".parse().unwrap(), None, 51_820);
        let mut inverted = rule_message(&rule);
        inverted.header.flags |= RuleFlags::Invert;
        let read = rule_from(&RuleMessage::parse(&wire(&inverted)).unwrap()).unwrap();
        assert_eq!(read.unmarked, Some(0), "an inverted rule is not ours");
        let mut marked = rule_message(&rule);
        marked.attributes.push(RuleAttribute::FwMark(0x20_0000));
        let read = rule_from(&RuleMessage::parse(&wire(&marked)).unwrap()).unwrap();
        assert_ne!(read, rule, "a rule for marked packets is not ours");
        let mut goto = rule_message(&rule);
        goto.header.action = RuleAction::Goto;
        assert_eq!(rule_from(&RuleMessage::parse(&wire(&goto)).unwrap()), None);
    }
}
