//! The lab's error type: every failure keeps the command or system call, and its stderr or errno.

use std::io;
use std::time::Duration;

/// What can go wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program could not be started at all (e.g. `ip` or `ping` is not installed).
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line that was attempted.
        command: String,
        /// Why the program could not be started.
        #[source]
        source: io::Error,
    },
    /// A program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line that failed.
        command: String,
        /// Its exit status, as printed by the standard library.
        status: String,
        /// What it wrote on stderr (trimmed).
        stderr: String,
    },
    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Sys {
        /// The call and its argument, e.g. `setns(/run/netns/x)`.
        call: String,
        /// The errno it returned.
        errno: nix::errno::Errno,
    },
    /// File or socket I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error (carries the errno).
        #[source]
        source: io::Error,
    },
    /// The builder or a call was given an unusable value.
    #[error("invalid lab request: {0}")]
    Invalid(String),
    /// No node, pod or namespace of that name belongs to this lab.
    #[error("unknown {kind} `{name}`")]
    Unknown {
        /// "node", "pod", "namespace" or "process".
        kind: &'static str,
        /// The name (or pid) that was asked for.
        name: String,
    },
    /// A TCP exchange between two namespaces did not complete.
    #[error("TCP exchange {from} -> {to} failed: {reason}")]
    Tcp {
        /// The client's namespace.
        from: String,
        /// The server's address and port.
        to: String,
        /// What went wrong (the I/O error or the mismatch).
        reason: String,
    },
    /// Something did not happen before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// Teardown could not remove everything; each entry is one failure.
    #[error("teardown incomplete: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

impl LabError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io { context: context.into(), source }
    }
}
