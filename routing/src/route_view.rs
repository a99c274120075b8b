//! meshcrypt's routing table as last read, kept current from the kernel's route notifications: a
//! pass reads what changed since the previous one instead of dumping the whole table (5,000
//! routes at 5,000 nodes, 150,000 in pod-IP mode, each parsed into a message on every pass).
//!
//! The notifications come on a socket of their own, subscribed to the IPv4 and IPv6 route groups.
//! A request on that socket is the barrier: the kernel queues a notification on every subscribed
//! socket before it acknowledges the change, and netlink-proto forwards a socket's notifications
//! before the replies read with them, so once the reply is in, every change made before the read
//! is in the channel. The view is read again from a full dump when it cannot be trusted: at the
//! first read, after the socket overran (`NLMSG_OVERRUN`: notifications were lost), and whenever
//! the device link changed (the kernel drops an IPv4 route whose device goes down without a
//! notification).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt as _;
use futures::channel::mpsc::{TryRecvError, UnboundedReceiver};
use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::Handle;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::{AsyncSocket as _, SocketAddr};

use crate::error::Error;
use crate::model::{ObservedLink, Route, RouteKind};

/// The loopback interface's index: every network namespace has it, so asking for it is a request
/// that always has one small reply.
const LOOPBACK_INDEX: u32 = 1;

/// What a notification socket delivers.
type Notifications = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// The table's routes, and what they were read for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cached {
    /// The table read.
    pub(crate) table: u32,
    /// The device link at the read (a route's kind depends on its index).
    pub(crate) link: Option<ObservedLink>,
    /// Each route by its identity in the table (destination, metric).
    pub(crate) routes: BTreeMap<(IpNet, u32), RouteKind>,
}

impl Cached {
    /// The view of a full dump of `table`, read with `link`.
    pub(crate) fn new(
        table: u32,
        link: Option<ObservedLink>,
        routes: impl IntoIterator<Item = Route>,
    ) -> Self {
        Self { table, link, routes: routes.into_iter().map(|r| ((r.dst, r.metric), r.kind)).collect() }
    }

    /// The routes as the kernel model has them.
    pub(crate) fn routes(&self) -> BTreeSet<Route> {
        self.routes.iter().map(|(&(dst, metric), &kind)| Route { dst, metric, kind }).collect()
    }

    /// Takes in one notification: `false` when the view can no longer be trusted (the socket
    /// overran). Notifications of other tables, and what is no destination prefix, change nothing.
    pub(crate) fn apply(&mut self, message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        let index = self.link.as_ref().map(|l| l.index);
        match &message.payload {
            NetlinkPayload::Overrun(_) => return false,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))
                if crate::netlink::route_table(m) == self.table =>
            {
                if let Some(r) = crate::netlink::route_from(m, index) {
                    self.routes.insert((r.dst, r.metric), r.kind);
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m))
                if crate::netlink::route_table(m) == self.table =>
            {
                if let Some(r) = crate::netlink::route_from(m, index) {
                    self.routes.remove(&(r.dst, r.metric));
                }
            }
            _ => {}
        }
        true
    }
}

/// The notification socket and the view it keeps.
#[derive(Debug)]
pub(crate) struct RouteView {
    handle: Handle,
    notifications: Mutex<Notifications>,
    cached: Mutex<Option<Cached>>,
    /// Full reads stored ([`RouteView::store`]).
    dumps: AtomicU64,
}

impl RouteView {
    /// Opens the notification socket (IPv4 and IPv6 route groups) and drives it on the current
    /// tokio runtime.
    pub(crate) fn open() -> Result<Self, Error> {
        let (mut connection, handle, notifications) = rtnetlink::new_connection().map_err(Error::Connect)?;
        let groups = rtnetlink::constants::RTMGRP_IPV4_ROUTE | rtnetlink::constants::RTMGRP_IPV6_ROUTE;
        connection.socket_mut().socket_mut().bind(&SocketAddr::new(0, groups)).map_err(Error::Connect)?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            notifications: Mutex::new(notifications),
            cached: Mutex::new(None),
            dumps: AtomicU64::new(0),
        })
    }

    /// The routes of `table` read with `link`, brought up to date: every notification up to now
    /// applied. `None` when they must be read again from a dump (then [`RouteView::store`]): no
    /// view yet, another table or link, lost notifications, or a barrier that failed (logged; the
    /// dump is then the answer every time).
    pub(crate) async fn current(&self, table: u32, link: &Option<ObservedLink>) -> Option<BTreeSet<Route>> {
        let mut barrier = self.handle.link().get().match_index(LOOPBACK_INDEX).execute();
        let reached = loop {
            match barrier.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => break true,
                Err(e) => {
                    let e = Error::from_rtnetlink("read the route notifications", e);
                    tracing::warn!(error = %e, "route notifications unavailable: dumping the table instead");
                    break false;
                }
            }
        };
        let mut notifications = self.notifications.lock().unwrap_or_else(|p| p.into_inner());
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let mut trusted = reached && cached.as_ref().is_some_and(|c| c.table == table && c.link == *link);
        loop {
            match notifications.try_recv() {
                Ok((message, _)) => {
                    if trusted && let Some(view) = cached.as_mut() {
                        trusted = view.apply(&message);
                    }
                }
                Err(TryRecvError::Empty) => break,
                // No notification will come again.
                Err(TryRecvError::Closed) => {
                    trusted = false;
                    break;
                }
            }
        }
        if !trusted {
            *cached = None;
        }
        cached.as_ref().map(Cached::routes)
    }

    /// Keeps `view`, just read from a full dump.
    pub(crate) fn store(&self, view: Cached) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
        self.dumps.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the table was read whole ([`crate::Netlink::route_dumps`]).
    pub(crate) fn dumps(&self) -> u64 {
        self.dumps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
    use rtnetlink::packet_core::NetlinkHeader;

    use super::*;

    const TABLE: u32 = 2_000;
    const LINK: u32 = 7;

    /// A route notification: `new` or deleted, `dst` in `table` at `metric`, through the device
    /// (`oif`) or of `kind`.
    fn note(
        new: bool,
        dst: &str,
        table: u32,
        metric: u32,
        kind: RouteType,
        oif: Option<u32>,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let dst: IpNet = dst.parse().unwrap();
        let mut m = RouteMessage::default();
        m.header.address_family =
            if dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        m.header.destination_prefix_length = dst.prefix_len();
        m.header.kind = kind;
        let address = match dst.addr() {
            std::net::IpAddr::V4(a) => RouteAddress::Inet(a),
            std::net::IpAddr::V6(a) => RouteAddress::Inet6(a),
        };
        m.attributes = vec![
            RouteAttribute::Table(table),
            RouteAttribute::Destination(address),
            RouteAttribute::Priority(metric),
        ];
        m.attributes.extend(oif.map(RouteAttribute::Oif));
        NetlinkMessage::from(if new {
            RouteNetlinkMessage::NewRoute(m)
        } else {
            RouteNetlinkMessage::DelRoute(m)
        })
    }

    fn overrun() -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Overrun(Vec::new()))
    }

    fn link() -> ObservedLink {
        ObservedLink {
            index: LINK,
            mtu: 1440,
            up: true,
            addresses: BTreeSet::new(),
            kind: Some("tun".into()),
        }
    }

    fn view(routes: &[(&str, u32, RouteKind)]) -> Cached {
        Cached::new(
            TABLE,
            Some(link()),
            routes.iter().map(|(dst, metric, kind)| Route {
                dst: dst.parse().unwrap(),
                metric: *metric,
                kind: *kind,
            }),
        )
    }

    #[test]
    fn notifications_table() {
        use RouteKind::{Blackhole, Device, Throw};
        use RouteType::{BlackHole, Throw as ThrowType, Unicast};
        let floor = ("10.244.0.0/16", 4_000, Blackhole);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<NetlinkMessage<RouteNetlinkMessage>>,
            bool,
            Vec<(&str, u32, RouteKind)>,
        )> = vec![
            ("nothing", vec![], true, vec![floor]),
            (
                "a device route added",
                vec![note(true, "10.244.1.0/24", TABLE, 0, Unicast, Some(LINK))],
                true,
                vec![("10.244.1.0/24", 0, Device), floor],
            ),
            (
                "an IPv6 one",
                vec![note(true, "fd00:10:244:1::/64", TABLE, 0, Unicast, Some(LINK))],
                true,
                vec![floor, ("fd00:10:244:1::/64", 0, Device)],
            ),
            (
                "another table's: nothing",
                vec![note(true, "10.244.1.0/24", 254, 0, Unicast, Some(LINK))],
                true,
                vec![floor],
            ),
            (
                "replaced at the same metric: the new kind",
                vec![
                    note(true, "10.244.1.0/24", TABLE, 0, Unicast, Some(LINK)),
                    note(true, "10.244.1.0/24", TABLE, 0, ThrowType, None),
                ],
                true,
                vec![("10.244.1.0/24", 0, Throw), floor],
            ),
            (
                "the floor deleted",
                vec![note(false, "10.244.0.0/16", TABLE, 4_000, BlackHole, None)],
                true,
                vec![],
            ),
            (
                "a delete at another metric: nothing",
                vec![note(false, "10.244.0.0/16", TABLE, 0, BlackHole, None)],
                true,
                vec![floor],
            ),
            (
                "added then deleted: gone",
                vec![
                    note(true, "10.244.2.0/24", TABLE, 0, Unicast, Some(LINK)),
                    note(false, "10.244.2.0/24", TABLE, 0, Unicast, Some(LINK)),
                ],
                true,
                vec![floor],
            ),
            (
                "an overrun: no longer trusted",
                vec![note(true, "10.244.1.0/24", TABLE, 0, Unicast, Some(LINK)), overrun()],
                false,
                vec![("10.244.1.0/24", 0, Device), floor],
            ),
        ];
        for (name, notes, trusted, want) in cases {
            let mut got = view(&[floor]);
            let mut still = true;
            for n in &notes {
                still = got.apply(n) && still;
            }
            assert_eq!(still, trusted, "{name}");
            assert_eq!(got.routes(), view(&want).routes(), "{name}");
        }
    }
}
