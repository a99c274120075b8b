//! The leak detector's error type.

/// What can go wrong while capturing on the underlay.
#[derive(Debug, thiserror::Error)]
pub enum LeakError {
    /// Entering the underlay namespace failed.
    #[error("entering the capture namespace: {0}")]
    Namespace(#[from] crate::lab::LabError),
    /// A socket call failed.
    #[error("{call} failed: {errno}")]
    Sys {
        /// The call, e.g. `socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)`.
        call: String,
        /// The errno it returned.
        errno: nix::errno::Errno,
    },
    /// The capture thread panicked.
    #[error("the capture thread panicked: {0}")]
    CaptureThread(String),
}
