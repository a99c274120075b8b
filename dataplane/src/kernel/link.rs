//! The kernel's `wireguard` link: created, or adopted when it exists (an agent restarting finds
//! the one its previous run left, with its peers and sessions), over `NETLINK_ROUTE`.

use std::io;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::error::Error;
use crate::kernel::netlink::NetlinkSocket;

/// A `wireguard` link as found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its interface index.
    pub(crate) ifindex: u32,
    /// Whether it existed before (adopted) or was created now.
    pub(crate) adopted: bool,
}

/// Creates the `wireguard` link `ifname` with `mtu`, or adopts it if one exists (its MTU left
/// as it is: changing it would disturb the traffic it carries). Errors: [`Error::Netlink`] with
/// the kernel's errno (`EOPNOTSUPP`: the kernel has no WireGuard module; `EPERM`: no
/// `CAP_NET_ADMIN`), [`Error::NotWireGuard`] when `ifname` is a link of another kind.
pub(crate) fn create_or_adopt(ifname: &str, mtu: Option<u16>) -> Result<Link, Error> {
    let mut socket = NetlinkSocket::open(NETLINK_ROUTE).map_err(netlink("open a NETLINK_ROUTE socket"))?;
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(ifname.to_string()));
    if let Some(mtu) = mtu {
        message.attributes.push(LinkAttribute::Mtu(u32::from(mtu)));
    }
    message.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Wireguard)]));
    let adopted = match socket.request(RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL) {
        Ok(_) => false,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => true,
        Err(e) => return Err(netlink("create the wireguard link")(e)),
    };
    let (ifindex, kind) = find(&mut socket, ifname)?;
    if kind != Some(InfoKind::Wireguard) {
        return Err(Error::NotWireGuard { ifname: ifname.to_string(), kind: kind.map(|k| k.to_string()) });
    }
    Ok(Link { ifindex, adopted })
}

/// Deletes the link with index `ifindex` (the kernel removes its routes with it). Errors:
/// [`Error::Netlink`] (`ENODEV`: no such link).
pub(crate) fn delete(ifindex: u32) -> Result<(), Error> {
    let mut socket = NetlinkSocket::open(NETLINK_ROUTE).map_err(netlink("open a NETLINK_ROUTE socket"))?;
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    socket.request(RouteNetlinkMessage::DelLink(message), 0).map_err(netlink("delete the wireguard link"))?;
    Ok(())
}

/// The index and kind of link `ifname`.
fn find(socket: &mut NetlinkSocket, ifname: &str) -> Result<(u32, Option<InfoKind>), Error> {
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(ifname.to_string()));
    let replies =
        socket.request(RouteNetlinkMessage::GetLink(message), 0).map_err(netlink("read the link"))?;
    let Some(RouteNetlinkMessage::NewLink(link)) = replies.into_iter().next() else {
        return Err(Error::UnexpectedReply("no answer to RTM_GETLINK"));
    };
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    });
    Ok((link.header.index, kind))
}

/// Wraps an `io::Error` of a netlink request as [`Error::Netlink`].
pub(crate) fn netlink(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Netlink { what, source }
}
