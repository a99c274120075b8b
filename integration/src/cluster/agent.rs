//! Starting a real `meshcrypt agent` in a lab node: its own state directory and kubeconfig (with
//! a token that may change only its own Node), and a private `/run/wireguard` for its UAPI socket.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Cluster, ClusterError, METRICS_PORT};
use meshcrypt_netlab::lab::{LabProcess, SpawnOptions};

/// How agents are started.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The `meshcrypt` binary.
    pub binary: PathBuf,
    /// Extra flags for `meshcrypt agent`.
    pub extra_args: Vec<String>,
    /// Extra flags for one node's agent only, by node name (after `extra_args`).
    pub node_args: std::collections::BTreeMap<String, Vec<String>>,
    /// The agent's log filter.
    pub log_level: String,
    /// Run agents from a ConfigMap (`meshcrypt-system/meshcrypt`) with this data instead of flags;
    /// a missing `pod-networks` key is filled in with the lab's pod networks.
    pub config_map: Option<std::collections::BTreeMap<String, String>>,
    /// `--resync-seconds`: 2 in the lab (faults are found fast), the agent's default (10) in a
    /// scale run.
    pub resync_seconds: u64,
}

impl AgentOptions {
    /// Defaults: the workspace's built binary, no extra flags, debug logs for meshcrypt, a resync
    /// every 2 s.
    pub fn new() -> Result<Self, ClusterError> {
        Ok(Self {
            binary: meshcrypt_bin()?,
            extra_args: Vec::new(),
            node_args: std::collections::BTreeMap::new(),
            log_level: "info,meshcrypt=debug".into(),
            config_map: None,
            resync_seconds: 2,
        })
    }
}

/// The `meshcrypt` binary: `$MESHCRYPT_BIN`, else beside the running test (cargo puts test
/// binaries in `target/<profile>/deps/` and the workspace's binaries in `target/<profile>/`).
pub fn meshcrypt_bin() -> Result<PathBuf, ClusterError> {
    if let Some(path) = std::env::var_os("MESHCRYPT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let candidates = exe.ancestors().skip(1).take(3).map(|dir| dir.join("meshcrypt"));
    let mut tried = Vec::new();
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(ClusterError::NoBinary(tried.join(", ")))
}

/// Starts `binary` as `node`'s agent, with the cluster's options and then `extra` flags.
pub(super) fn spawn(
    cluster: &Cluster,
    node: &str,
    binary: &Path,
    extra: &[&str],
) -> Result<LabProcess, ClusterError> {
    let lab_node = cluster.lab.node(node).ok_or_else(|| ClusterError::NoSuchNode(node.to_owned()))?;
    let dir = cluster.node_dir(node);
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    let (api, endpoint) = cluster.plane_of(node)?;
    let token = api.add_node_token(node);
    // The lab's API servers speak TLS with the test certificate, which names localhost, not the
    // address agents reach them at inside the lab: they check it against that name.
    let url = format!("https://{endpoint}");
    std::fs::write(
        &kubeconfig,
        meshcrypt_test_apiserver::kubeconfig_yaml_via(&url, &token, Some("localhost")),
    )?;
    let opts = &cluster.options;
    let mut cmd = Command::new(binary);
    cmd.args(["agent", "--node-name", node])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(cluster.state_dir(node))
        .arg("--flow-log")
        .arg(cluster.flow_log(node))
        .args(["--uapi-dir", "/run/wireguard", "--metrics-addr"])
        .arg(format!("0.0.0.0:{METRICS_PORT}"))
        .arg("--resync-seconds")
        .arg(opts.resync_seconds.to_string())
        .args(["--log-level", &opts.log_level]);
    if opts.config_map.is_some() {
        cmd.args(["--config-map", super::CONFIG_MAP, "--config-namespace", super::CONFIG_NAMESPACE]);
    } else {
        for network in cluster.pod_networks() {
            cmd.arg("--pod-network").arg(network);
        }
    }
    cmd.args(&opts.extra_args).args(opts.node_args.get(node).into_iter().flatten()).args(extra);
    let options = SpawnOptions { private_dirs: vec![PathBuf::from("/run/wireguard")] };
    Ok(cluster.lab.spawn_with(&lab_node.namespace, &cmd, &options)?)
}
