//! The agent's status socket: a Unix socket in the state directory (`status.sock`, 0600, root
//! only, never on the network). A client connects and reads one JSON document ([`NodeStatus`])
//! until the agent closes the connection; it sends nothing. `meshcrypt status` is that client, so
//! on EKS the node check is `kubectl exec` into the agent's pod, with no kubeconfig and no `wg`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use super::document::NodeStatus;
use crate::error::AgentError;

/// The socket's file name in the state directory.
pub const SOCKET_NAME: &str = "status.sock";

/// How long a client waits for the whole document.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket's path under `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Binds the socket at `path` (a stale file from an earlier run is replaced), mode 0600, and
/// answers every connection with `status()` until the process ends.
pub fn serve(
    path: &Path,
    status: Arc<dyn Fn() -> NodeStatus + Send + Sync>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| AgentError::Io { what, source }
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove the stale status socket")(e));
        }
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(io("bind the status socket"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restrict the status socket"))?;
    tracing::info!(socket = %path.display(), "serving the status (`meshcrypt status`)");
    Ok(tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "status socket: accept failed");
                    continue;
                }
            };
            let status = status.clone();
            tokio::spawn(async move {
                let body = match serde_json::to_vec(&status()) {
                    Ok(body) => body,
                    Err(e) => {
                        tracing::warn!(error = %e, "status socket: cannot encode the status");
                        return;
                    }
                };
                if let Err(e) = stream.write_all(&body).await {
                    tracing::debug!(error = %e, "status socket: client went away");
                }
                let _ = stream.shutdown().await;
            });
        }
    }))
}

/// Reads the status from the agent's socket at `path`.
pub async fn fetch(path: &Path) -> Result<NodeStatus, AgentError> {
    let io = |what: &str| {
        let what =
            format!("{what} {} (is the agent running on this node, with this --state-dir?)", path.display());
        move |source| AgentError::Io { what, source }
    };
    let read = async {
        let mut stream =
            UnixStream::connect(path).await.map_err(io("connect to the agent's status socket"))?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await.map_err(io("read the agent's status from"))?;
        Ok::<_, AgentError>(body)
    };
    let body = tokio::time::timeout(CLIENT_TIMEOUT, read)
        .await
        .map_err(|_| io("no answer in 10 s from")(std::io::ErrorKind::TimedOut.into()))??;
    serde_json::from_slice(&body)
        .map_err(|source| AgentError::StatusDocument { socket: path.to_owned(), source })
}
