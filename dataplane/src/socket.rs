//! The UDP socket carrying encrypted traffic: dual-stack when the host has IPv6, `SO_MARK` when
//! asked, address mapping between the IPv6 socket and IPv4 endpoints, and the batched IO state
//! (`quinn-udp`: UDP GSO on send, UDP GRO and `recvmmsg` on receive, probed at bind time).
//!
//! The socket is non-blocking: the workers wait for it in `poll(2)`, and a send that finds the
//! buffer full waits briefly for room (see [`wait`]).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use quinn_udp::UdpSocketState;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Socket buffer size asked for (with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` when privileged): a
/// burst of GSO batches must not overflow the receive queue (drops there become TCP
/// retransmits inside the tunnel).
const SOCKET_BUFFER: usize = 8 << 20;

/// The bound socket and what it was bound with.
pub(crate) struct Bound {
    pub(crate) socket: UdpSocket,
    /// The batched-IO state (GSO/GRO support found at bind time).
    pub(crate) state: UdpSocketState,
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
    let state = UdpSocketState::new((&socket).into()).map_err(err)?;
    // quinn-udp sets "don't fragment" (PMTUDISC_PROBE); WireGuard leaves that to the kernel's
    // default, so an oversized tunnel MTU degrades to fragments rather than to drops.
    restore_pmtu_default(&socket, dual_stack);
    drop_unused_ancillary_data(&socket, dual_stack);
    grow_buffers(&socket);
    tracing::debug!(
        port,
        gso_segments = state.max_gso_segments(),
        gro_segments = state.gro_segments(),
        "UDP socket bound"
    );
    Ok(Bound { socket, state, port, dual_stack })
}

fn setsockopt_int(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is open for the socket's lifetime and `value` is a valid c_int of that size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn restore_pmtu_default(socket: &UdpSocket, dual_stack: bool) {
    let _ = setsockopt_int(socket, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT);
    if dual_stack {
        let _ = setsockopt_int(socket, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_WANT);
    }
}

/// `quinn-udp` asks the kernel for each datagram's arrival time, destination address and ECN
/// bits; the data path uses none of them, and building those control messages is per-packet work.
/// (GRO segment sizes are still reported: receive batching needs them.)
fn drop_unused_ancillary_data(socket: &UdpSocket, dual_stack: bool) {
    let _ = setsockopt_int(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
    let _ = setsockopt_int(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 0);
    let _ = setsockopt_int(socket, libc::IPPROTO_IP, libc::IP_RECVTOS, 0);
    if dual_stack {
        let _ = setsockopt_int(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 0);
        let _ = setsockopt_int(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 0);
    }
}

fn grow_buffers(socket: &UdpSocket) {
    let size = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
    let sock = socket2::SockRef::from(socket);
    if setsockopt_int(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt_int(socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    }
}

/// Waits up to `timeout` until the socket is readable (`POLLIN`) or writable (`POLLOUT`).
pub(crate) fn wait(socket: &UdpSocket, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd: socket.as_raw_fd(), events, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    match rc {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
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

    fn getsockopt_int(socket: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live and sized for a c_int.
        let rc = unsafe {
            libc::getsockopt(socket.as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut len)
        };
        assert_eq!(rc, 0, "getsockopt({level}, {name})");
        value
    }

    #[test]
    fn receive_keeps_gro_and_drops_unused_ancillary_data() {
        let bound = bind(0, None).unwrap();
        let s = &bound.socket;
        assert_eq!(getsockopt_int(s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS), 0, "timestamps");
        assert_eq!(getsockopt_int(s, libc::IPPROTO_IP, libc::IP_PKTINFO), 0, "IPv4 pktinfo");
        assert_eq!(getsockopt_int(s, libc::IPPROTO_IP, libc::IP_RECVTOS), 0, "IPv4 TOS");
        if bound.dual_stack {
            assert_eq!(getsockopt_int(s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO), 0, "IPv6 pktinfo");
            assert_eq!(getsockopt_int(s, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS), 0, "IPv6 class");
        }
        if bound.state.gro_segments() > 1 {
            assert_eq!(getsockopt_int(s, libc::SOL_UDP, libc::UDP_GRO), 1, "GRO stays on");
        }
    }

    #[test]
    fn binds_an_ephemeral_port_on_loopback_capable_hosts() {
        let bound = bind(0, None).unwrap();
        assert_ne!(bound.port, 0);
    }
}
