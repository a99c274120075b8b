//! The cross-cluster exchange of a lab with several clusters: moto's Secrets Manager on loopback,
//! a signing key per cluster (made by `meshcrypt signing-key`), and real `meshcrypt registry`
//! processes on the host, each talking to its cluster's API server and to moto over loopback only.
//! Every registry pins every other cluster's signing key.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use meshcrypt_registry::testing::{CREDENTIALS, MotoServer, REGION};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::{Cluster, ClusterError, http_get};

/// How the registries run.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    /// `--publish-interval`, seconds.
    pub publish_interval: u64,
    /// `--poll-interval`, seconds (±20% jitter).
    pub poll_interval: u64,
    /// `--lease-seconds`.
    pub lease_seconds: u64,
    /// `--addressing` (`pod-cidr` or `pod-ip`), as the agents'.
    pub addressing: String,
    /// `--publishes-per-day`: a lab's churn comes within minutes, not over a day.
    pub publishes_per_day: u32,
}

impl Default for ExchangeOptions {
    /// Quick, for tests: publish at most every second (a burst of 180), poll every 3 s, a 3 s
    /// Lease, pod-CIDR.
    fn default() -> Self {
        Self {
            publish_interval: 1,
            poll_interval: 3,
            lease_seconds: 3,
            addressing: "pod-cidr".into(),
            publishes_per_day: 1440,
        }
    }
}

/// One registry process, killed on drop.
struct Registry {
    child: Child,
    /// Where it serves `/healthz`, `/readyz` and `/metrics` (loopback).
    metrics: SocketAddr,
    log: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster's part in the exchange.
struct Member {
    kubeconfig: PathBuf,
    signing_key: PathBuf,
    /// The public half, base64, as peers pin it.
    public: String,
}

/// moto and the registries; stopped on drop (drop it before the [`Cluster`]).
pub struct Exchange {
    registries: BTreeMap<String, Registry>,
    members: BTreeMap<String, Member>,
    options: ExchangeOptions,
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// moto's Secrets Manager (dropped last).
    pub moto: MotoServer,
}

impl Exchange {
    /// Starts moto, makes a signing key per cluster of `cluster`, and starts one registry per
    /// cluster (identity `<cluster>-0`).
    pub fn start(cluster: &Cluster, options: ExchangeOptions) -> Result<Self, ClusterError> {
        let moto = MotoServer::start();
        let dir = tempfile::Builder::new().prefix("meshcrypt-exchange-").tempdir()?;
        let binary = cluster.options.binary.clone();
        let mut members = BTreeMap::new();
        for id in cluster.cluster_ids() {
            let api = cluster.api_of(id)?;
            let kubeconfig = dir.path().join(format!("{id}.kubeconfig"));
            api.write_kubeconfig(&kubeconfig, api.admin_token())?;
            let signing_key = dir.path().join(format!("{id}.signing.key"));
            let out = Command::new(&binary).arg("signing-key").arg("--out").arg(&signing_key).output()?;
            if !out.status.success() {
                return Err(ClusterError::Command(format!(
                    "meshcrypt signing-key: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            members.insert(id.to_owned(), Member { kubeconfig, signing_key, public });
        }
        let mut exchange = Self { registries: BTreeMap::new(), members, options, binary, dir, moto };
        for id in cluster.cluster_ids() {
            exchange.start_registry(id, &format!("{id}-0"))?;
        }
        Ok(exchange)
    }

    /// Starts a registry replica of cluster `id` named `identity` (another replica of the same
    /// cluster stands by until the Lease is free).
    pub fn start_registry(&mut self, id: &str, identity: &str) -> Result<(), ClusterError> {
        let me = self.members.get(id).ok_or_else(|| ClusterError::NoSuchCluster(id.to_owned()))?;
        let metrics = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let log = self.dir.path().join(format!("{identity}.log"));
        let o = &self.options;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["registry", "--cluster-id", id, "--identity", identity])
            .arg("--signing-key")
            .arg(&me.signing_key)
            .arg("--kubeconfig")
            .arg(&me.kubeconfig)
            .args(["--endpoint-url", &self.moto.url, "--region", REGION, "--addressing", &o.addressing])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--publish-interval", &o.publish_interval.to_string()])
            .args(["--poll-interval", &o.poll_interval.to_string()])
            .args(["--lease-seconds", &o.lease_seconds.to_string()])
            .args(["--publishes-per-day", &o.publishes_per_day.to_string()]);
        for (peer, member) in self.members.iter().filter(|(peer, _)| *peer != id) {
            cmd.arg("--peer").arg(format!("{peer}={}", member.public));
        }
        let child = cmd
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", CREDENTIALS.0)
            .env("AWS_SECRET_ACCESS_KEY", CREDENTIALS.1)
            .env("MESHCRYPT_LOG", "info,meshcrypt=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        self.registries.insert(identity.to_owned(), Registry { child, metrics, log });
        Ok(())
    }

    /// Kills registry `identity` with SIGKILL (it cannot release its Lease).
    pub fn kill_registry(&mut self, identity: &str) {
        self.registries.remove(identity);
    }

    /// Stops moto with SIGSTOP: Secrets Manager accepts connections and never answers.
    pub fn pause_secrets_manager(&self) -> Result<(), ClusterError> {
        self.signal_moto(Signal::SIGSTOP)
    }

    /// Lets moto answer again (SIGCONT), with everything it held.
    pub fn resume_secrets_manager(&self) -> Result<(), ClusterError> {
        self.signal_moto(Signal::SIGCONT)
    }

    fn signal_moto(&self, signal: Signal) -> Result<(), ClusterError> {
        let pid = Pid::from_raw(i32::try_from(self.moto.pid()).unwrap_or(i32::MAX));
        kill(pid, signal).map_err(|e| ClusterError::Command(format!("kill -{signal} moto: {e}")))
    }

    /// `GET path` against registry `identity`'s HTTP endpoint: status and body.
    pub fn http(&self, identity: &str, path: &str) -> Result<(u16, String), ClusterError> {
        let registry =
            self.registries.get(identity).ok_or_else(|| ClusterError::NoSuchNode(identity.to_owned()))?;
        Ok(http_get(registry.metrics, path)?)
    }

    /// The value of metric `name` with exactly the labels `labels` (`k="v"` pairs, comma-joined
    /// as the exposition writes them) from registry `identity`, if it has one.
    pub fn metric(&self, identity: &str, name: &str, labels: &str) -> Option<f64> {
        let (_, body) = self.http(identity, "/metrics").ok()?;
        let series = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
        body.lines().find_map(|l| l.strip_prefix(&series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Cluster `on`'s RemoteCluster `peer` (`Null` while there is none).
    pub fn remote_cluster(cluster: &Cluster, on: &str, peer: &str) -> Value {
        cluster
            .api_of(on)
            .ok()
            .and_then(|api| api.get("meshcrypt.dev/v1alpha1", "RemoteCluster", None, peer).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of every registry's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let tail = |(identity, registry): (&String, &Registry)| {
            super::log_tail(&format!("registry {identity}"), &registry.log, lines)
        };
        self.registries.iter().map(tail).collect()
    }
}
