//! The cluster harness's error type.

use meshcrypt_netlab::lab::LabError;
use meshcrypt_test_apiserver::ApiServerError;

/// What can go wrong setting up or driving a lab cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The network lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The test API server failed.
    #[error(transparent)]
    Api(#[from] ApiServerError),
    /// A file or socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// There is no lab node (or agent) of that name.
    #[error("no node {0} in the lab")]
    NoSuchNode(String),
    /// There is no lab cluster of that id.
    #[error("no cluster {0} in the lab")]
    NoSuchCluster(String),
    /// The clusters asked for do not fit the lab.
    #[error("clusters do not fit the lab: {0}")]
    Invalid(String),
    /// The meshcrypt binary could not be found.
    #[error("meshcrypt binary not found at {0} (build it, or set MESHCRYPT_BIN)")]
    NoBinary(String),
    /// A command run against the lab failed.
    #[error("command failed: {0}")]
    Command(String),
    /// A condition polled for did not hold before its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
}
