//! The underlay capture: one AF_PACKET socket, opened inside the underlay namespace, bound to no
//! interface, so it sees every interface there (the bridge and every node's port, including ports
//! of nodes added after the capture started).
//!
//! A bridged frame shows up several times on such a socket: as received on the port it entered by,
//! as sent (`PACKET_OUTGOING`) on each port it leaves by, and as received on `br0` if it is for the
//! underlay's own stack. To count each frame exactly once, a frame is kept where it enters the
//! bridge: received on a port (not `br0`), or sent by `br0` itself (the services address's own
//! traffic, e.g. the test API server's replies).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, recvfrom, setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::error::LeakError;
use crate::lab::netns;

/// `PACKET_OUTGOING`: a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

/// The capture socket's receive buffer (frames arriving faster than they are classified wait here).
pub const CAPTURE_BUFFER_BYTES: usize = 16 << 20;

/// How long one receive waits before checking whether to stop.
pub const POLL_INTERVAL_MS: i64 = 50;

/// A packet socket inside the underlay namespace.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    bridge_ifindex: usize,
}

fn sys(call: &str) -> impl FnOnce(Errno) -> LeakError + '_ {
    move |errno| LeakError::Sys { call: call.to_string(), errno }
}

impl PacketSocket {
    /// Opens the socket inside namespace `ns`, where `bridge` is the bridge's name.
    pub(crate) fn open(ns: &str, bridge: &str) -> Result<Self, LeakError> {
        let (fd, bridge_ifindex) = netns::run_in(ns, || -> Result<_, LeakError> {
            let fd =
                socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)
                    .map_err(sys("socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)"))?;
            let idx = nix::net::if_::if_nametoindex(bridge).map_err(sys("if_nametoindex(bridge)"))?;
            Ok((fd, idx as usize))
        })??;
        if setsockopt(&fd, sockopt::RcvBufForce, &CAPTURE_BUFFER_BYTES).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &CAPTURE_BUFFER_BYTES).map_err(sys("setsockopt(SO_RCVBUF)"))?;
        }
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(POLL_INTERVAL_MS))
            .map_err(sys("setsockopt(SO_RCVTIMEO)"))?;
        Ok(PacketSocket { fd, bridge_ifindex })
    }

    /// Receives one frame into `buf`: its length and whether it is the one copy to count, or
    /// `None` if nothing arrived within the poll interval.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Result<Option<(usize, bool)>, LeakError> {
        match recvfrom::<LinkAddr>(self.fd.as_fd().as_raw_fd(), buf) {
            Ok((n, addr)) => {
                let counted = addr.is_some_and(|a| {
                    let outgoing = a.pkttype() == PACKET_OUTGOING;
                    if a.ifindex() == self.bridge_ifindex { outgoing } else { !outgoing }
                });
                Ok(Some((n, counted)))
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(None),
            Err(errno) => Err(LeakError::Sys { call: "recvfrom(AF_PACKET)".into(), errno }),
        }
    }

    /// Frames the kernel dropped for this socket since the last call (`PACKET_STATISTICS`).
    pub(crate) fn take_drops(&self) -> u64 {
        let mut stats = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` and `len` are valid for writes and `len` is the size of `stats`, which
        // is the structure the kernel fills for PACKET_STATISTICS on a TPACKET_V1 socket.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if rc == 0 { u64::from(stats.tp_drops) } else { 0 }
    }
}
