//! The one error type of the routing crate.

use crate::model::Op;

/// Everything that can go wrong talking to the kernel's routing tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The kernel refused an operation; `errno` is the kernel's error number.
    #[error("{op}: {message} (errno {errno})")]
    Kernel {
        /// What was attempted.
        op: String,
        /// The kernel's positive error number (`EEXIST`, `ENOENT`, …).
        errno: i32,
        /// The error as the kernel explains it.
        message: String,
    },
    /// rtnetlink failed without a kernel error number (a decoding or transport failure).
    #[error("{op}: {message}")]
    Netlink {
        /// What was attempted.
        op: String,
        /// rtnetlink's description.
        message: String,
    },
    /// A prefix cannot be expressed in a route or rule message.
    #[error("invalid prefix in {0}")]
    InvalidPrefix(Op),
}

impl Error {
    /// The kernel's error number, if the kernel refused the operation.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub(crate) fn from_rtnetlink(op: impl Into<String>, e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(msg) if msg.code.is_some() => {
                let io = msg.to_io();
                Self::Kernel { op: op.into(), errno: io.raw_os_error().unwrap_or(0), message: io.to_string() }
            }
            other => Self::Netlink { op: op.into(), message: other.to_string() },
        }
    }
}
