//! The UDP socket carrying encrypted traffic: dual-stack when the host has IPv6, `SO_MARK` when
//! asked, and address mapping between the IPv6 socket and IPv4 endpoints.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// How long a receive blocks before the worker rechecks for shutdown or a rebind.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_millis(200);

/// The bound socket and what it was bound with.
pub(crate) struct Bound {
    pub(crate) socket: UdpSocket,
    pub(crate) port: u16,
    /// True for an `[::]` socket that also carries IPv4 (as IPv4-mapped addresses).
    pub(crate) dual_stack: bool,
}

/// Binds `[::]:port` (IPv4 too), falling back to `0.0.0.0:port` where IPv6 is unavailable.
pub(crate) fn bind(port: u16, fwmark: Option<u32>) -> Result<Bound, Error> {
    let err = |source| Error::Socket { port, source };
    let (socket, dual_stack) = match open(Domain::IPV6, port, fwmark) {
        Ok(s) => (s, true),
        Err(e) if is_no_ipv6(&e) => (open(Domain::IPV4, port, fwmark).map_err(err)?, false),
        Err(e) => return Err(err(e)),
    };
    let socket: UdpSocket = socket.into();
    let port = socket.local_addr().map_err(err)?.port();
    Ok(Bound { socket, port, dual_stack })
}

fn is_no_ipv6(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT))
}

fn open(domain: Domain, port: u16, fwmark: Option<u32>) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        socket.set_only_v6(false)?;
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from(([0, 0, 0, 0], port))
    };
    if let Some(mark) = fwmark {
        socket.set_mark(mark)?;
    }
    socket.set_read_timeout(Some(RECV_TIMEOUT))?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Sets or clears `SO_MARK` on a bound socket.
pub(crate) fn set_mark(socket: &UdpSocket, fwmark: Option<u32>) -> io::Result<()> {
    socket2::SockRef::from(socket).set_mark(fwmark.unwrap_or(0))
}

/// The address to pass to `send_to`: IPv4 endpoints become IPv4-mapped on a dual-stack socket.
pub(crate) fn to_socket_addr(dual_stack: bool, addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    }
}

/// The peer's address as WireGuard shows it: IPv4-mapped addresses back to IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips() {
        let v4: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let mapped = to_socket_addr(true, v4);
        assert_eq!(mapped.to_string(), "[::ffff:198.18.0.1]:51820");
        assert_eq!(canonical(mapped), v4);
        assert_eq!(to_socket_addr(false, v4), v4);
        let v6: SocketAddr = "[fd00::1]:5".parse().unwrap();
        assert_eq!(canonical(to_socket_addr(true, v6)), v6);
    }

    #[test]
    fn binds_an_ephemeral_port_on_loopback_capable_hosts() {
        let bound = bind(0, None).unwrap();
        assert_ne!(bound.port, 0);
    }
}
