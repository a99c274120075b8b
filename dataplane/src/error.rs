//! The one error type of the data plane, keeping the operating system's errno where there is one.

use std::io;
use std::path::PathBuf;

use meshcrypt_keyexchange::PublicKey;

/// Everything that can go wrong creating, configuring or serving a WireGuard device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface name is empty, too long (15 bytes at most) or holds `/`, whitespace or NUL.
    #[error("invalid interface name {0:?}")]
    InvalidIfname(String),
    /// Creating or opening the TUN interface failed (errno kept: EEXIST, EPERM, EBUSY, …).
    #[error("TUN interface {ifname}: {source}")]
    Tun {
        /// The interface asked for.
        ifname: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Creating, binding or configuring the UDP socket failed (EADDRINUSE when the port is taken).
    #[error("UDP socket on port {port}: {source}")]
    Socket {
        /// The port asked for (0: any).
        port: u16,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Creating or serving the UAPI unix socket (or its directory) failed.
    #[error("UAPI socket {path}: {source}")]
    Uapi {
        /// The socket or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A worker thread could not be started.
    #[error("starting thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A change names a peer the device does not have.
    #[error("no such peer {0}")]
    PeerNotFound(PublicKey),
    /// A key is malformed or a low-order point.
    #[error("key: {0}")]
    Key(#[from] meshcrypt_keyexchange::Error),
    /// A netlink request to the kernel failed (the kernel backend; errno kept: `EOPNOTSUPP` or
    /// `ENOENT` without the WireGuard module, `EPERM` without `CAP_NET_ADMIN`, `ENODEV` for a
    /// link gone, `EADDRINUSE` for a taken port).
    #[error("netlink: {what}: {source}")]
    Netlink {
        /// What was asked of the kernel.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The interface exists and is not a `wireguard` link, so the kernel backend cannot adopt it.
    #[error("{ifname} exists and is a {} link, not wireguard", kind.as_deref().unwrap_or("plain"))]
    NotWireGuard {
        /// The interface asked for.
        ifname: String,
        /// Its kind (`IFLA_INFO_KIND`), if it has one.
        kind: Option<String>,
    },
    /// The kernel's answer lacks something it always carries, or holds what does not parse.
    #[error("unexpected answer from the kernel: {0}")]
    UnexpectedReply(&'static str),
    /// A UAPI request is malformed: unknown key, bad hex, bad number, key outside a peer section.
    #[error("invalid UAPI request: {0}")]
    InvalidUapi(String),
}

impl Error {
    /// The operating system error underneath, if any, so callers can tell "exists" from "not
    /// found" (`io::ErrorKind`) or read the raw errno.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Tun { source, .. }
            | Error::Socket { source, .. }
            | Error::Uapi { source, .. }
            | Error::Thread { source, .. }
            | Error::Netlink { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The errno a UAPI reply carries for this error (`errno=N`), following wireguard-go: EINVAL
    /// for a bad request, EADDRINUSE for a taken port, the raw errno otherwise, EIO as a fallback.
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidUapi(_) | Error::Key(_) | Error::InvalidIfname(_) => libc::EINVAL,
            Error::PeerNotFound(_) => libc::ENOENT,
            other => other.io_error().and_then(io::Error::raw_os_error).unwrap_or(libc::EIO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_kept() {
        let e = Error::Socket { port: 1, source: io::Error::from_raw_os_error(libc::EADDRINUSE) };
        assert_eq!(e.errno(), libc::EADDRINUSE);
        assert_eq!(e.io_error().map(io::Error::kind), Some(io::ErrorKind::AddrInUse));
        assert_eq!(Error::InvalidUapi("x".into()).errno(), libc::EINVAL);
    }
}
