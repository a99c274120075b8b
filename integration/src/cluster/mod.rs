//! A lab cluster: the network lab, the test API server inside it (on the underlay's services
//! address, and on loopback for the test itself), one Node object per lab node, and a real
//! `meshcrypt agent` process in each node's namespace.

mod agent;
mod error;
mod probe;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use serde_json::Value;

use meshcrypt_netlab::lab::{Lab, LabProcess, Pod};
use meshcrypt_netlab::leak::{LeakConfig, LeakDetector, LeakError};
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};

pub use agent::{AgentOptions, meshcrypt_bin};
pub use error::ClusterError;
pub use meshcrypt_netlab::wait::poll;
pub use probe::http_get;

/// The namespace of the agents' ConfigMap (as in `deploy/`).
pub const CONFIG_NAMESPACE: &str = "meshcrypt-system";
/// The name of the agents' ConfigMap (as in `deploy/`).
pub const CONFIG_MAP: &str = "meshcrypt";

/// The port every agent serves `/healthz`, `/readyz` and `/metrics` on, inside its node.
pub const METRICS_PORT: u16 = 9476;

/// The lab, the API server and the agents; everything stops and is removed on drop.
pub struct Cluster {
    /// The API server (dropped first: it runs on `runtime`).
    api: Option<TestApiServer>,
    runtime: tokio::runtime::Runtime,
    agents: BTreeMap<String, LabProcess>,
    options: AgentOptions,
    api_endpoint: SocketAddr,
    dir: tempfile::TempDir,
    /// The network lab (dropped last: it stops the agents and removes the namespaces).
    pub lab: Lab,
}

impl Cluster {
    /// Builds a lab of `nodes` × `pods_per_node`, starts the API server with a Node object per
    /// node, and starts an agent on every node with `options`.
    pub fn start(nodes: usize, pods_per_node: usize, options: AgentOptions) -> Result<Self, ClusterError> {
        let lab = Lab::builder().nodes(nodes).pods_per_node(pods_per_node).build()?;
        Self::start_in(lab, options)
    }

    /// Like [`Cluster::start`], on a lab the caller built.
    pub fn start_in(lab: Lab, options: AgentOptions) -> Result<Self, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let services = lab.services_addr();
        let inside = lab.run_in(lab.underlay_ns(), move || TcpListener::bind((services, 0)))??;
        let api_endpoint = inside.local_addr()?;
        let loopback = TcpListener::bind(("127.0.0.1", 0))?;
        let api = runtime
            .block_on(TestApiServer::serve_listeners(ApiServerConfig::default(), vec![loopback, inside]))?;
        let mut cluster = Self {
            api: Some(api),
            runtime,
            agents: BTreeMap::new(),
            options,
            api_endpoint,
            dir: tempfile::Builder::new().prefix("meshcrypt-cluster-").tempdir()?,
            lab,
        };
        let names: Vec<String> = cluster.lab.nodes().iter().map(|n| n.name.clone()).collect();
        for name in &names {
            cluster.register_node(name)?;
        }
        if cluster.lab.is_vpc_cni() {
            for pod in cluster.lab.pods().to_vec() {
                cluster.register_pod(&pod)?;
            }
        }
        if let Some(data) = cluster.options.config_map.clone() {
            let mut data = data;
            data.entry("pod-networks".into()).or_insert_with(|| cluster.pod_networks().join(","));
            cluster.api().create(serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CONFIG_MAP, "namespace": CONFIG_NAMESPACE},
                "data": data,
            }))?;
        }
        for name in &names {
            cluster.start_agent(name)?;
        }
        Ok(cluster)
    }

    /// The API server.
    pub fn api(&self) -> &TestApiServer {
        self.api.as_ref().expect("the API server runs until drop")
    }

    /// Where agents reach the API server (inside the underlay).
    pub fn api_endpoint(&self) -> SocketAddr {
        self.api_endpoint
    }

    /// Starts a leak detector on the underlay that knows the agents' API traffic is expected.
    pub fn leak_detector(&self) -> Result<LeakDetector, LeakError> {
        let config = LeakConfig::for_lab(&self.lab).with_api_endpoint(self.api_endpoint);
        LeakDetector::start_for_lab(&self.lab, config)
    }

    /// A directory for this cluster's files (keys, kubeconfigs), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a future on the runtime that hosts the API server (for kube-rs clients in tests).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Creates the Node object for lab node `name`: its pod CIDR(s) and InternalIP(s).
    pub fn register_node(&self, name: &str) -> Result<Value, ClusterError> {
        let node = self.lab.node(name).ok_or_else(|| ClusterError::NoSuchNode(name.to_owned()))?;
        let mut object =
            TestApiServer::node_object(name, &node.pod_cidr.to_string(), &node.underlay_addr.to_string());
        if let (Some(cidr6), Some(addr6)) = (&node.pod_cidr6, node.underlay_addr6) {
            object["spec"]["podCIDRs"].as_array_mut().expect("podCIDRs").push(cidr6.to_string().into());
            object["status"]["addresses"]
                .as_array_mut()
                .expect("addresses")
                .push(serde_json::json!({"type": "InternalIP", "address": addr6.to_string()}));
        }
        Ok(self.api().create(object)?)
    }

    /// The lab's pod networks, as agents are told them.
    pub fn pod_networks(&self) -> Vec<String> {
        let mut out = vec![self.lab.cluster_pod_cidr().to_string()];
        out.extend(self.lab.cluster_pod_cidr6().map(|c| c.to_string()));
        out
    }

    /// Changes keys of the agents' ConfigMap (a merge patch, as `kubectl patch` would).
    pub fn set_config(&self, pairs: &[(&str, &str)]) -> Result<(), ClusterError> {
        self.patch_config(pairs.iter().map(|(k, v)| (*k, Value::String((*v).to_owned()))))
    }

    /// Removes keys from the agents' ConfigMap.
    pub fn unset_config(&self, keys: &[&str]) -> Result<(), ClusterError> {
        self.patch_config(keys.iter().map(|k| (*k, Value::Null)))
    }

    fn patch_config<'a>(&self, data: impl Iterator<Item = (&'a str, Value)>) -> Result<(), ClusterError> {
        let data: serde_json::Map<String, Value> = data.map(|(k, v)| (k.to_owned(), v)).collect();
        let patch = serde_json::json!({"data": data});
        self.api().merge_patch("v1", "ConfigMap", Some(CONFIG_NAMESPACE), CONFIG_MAP, &patch, false)?;
        Ok(())
    }

    /// The events.k8s.io Events with `reason`, newest last.
    pub fn events(&self, reason: &str) -> Vec<Value> {
        let mut events: Vec<Value> = self
            .api()
            .list("events.k8s.io/v1", "Event")
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect();
        events.sort_by_key(|e| e["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse::<u64>().ok()));
        events
    }

    /// Creates the Pod object for lab pod `pod`: scheduled to its node, running, with its
    /// addresses (what the VPC CNI reports, and what pod-IP mode reads).
    pub fn register_pod(&self, pod: &Pod) -> Result<Value, ClusterError> {
        let ips: Vec<Value> = std::iter::once(pod.address.to_string())
            .chain(pod.address6.map(|a| a.to_string()))
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        Ok(self.api().create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": "default"},
            "spec": {"nodeName": pod.node, "containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "podIP": pod.address.to_string(), "podIPs": ips},
        }))?)
    }

    /// Adds a pod on `node` in the lab and as a Pod object.
    pub fn add_pod(&mut self, node: &str) -> Result<Pod, ClusterError> {
        let pod = self.lab.add_pod(node)?;
        self.register_pod(&pod)?;
        Ok(pod)
    }

    /// Deletes Pod object `name`, then removes the pod from the lab.
    pub fn remove_pod(&mut self, name: &str) -> Result<(), ClusterError> {
        self.api().delete("v1", "Pod", Some("default"), name)?;
        self.lab.remove_pod(name)?;
        Ok(())
    }

    /// Starts (or restarts) the agent on `node`, keeping its state directory (and so its key).
    pub fn start_agent(&mut self, node: &str) -> Result<&LabProcess, ClusterError> {
        let process = agent::spawn(self, node)?;
        self.agents.insert(node.to_owned(), process);
        Ok(&self.agents[node])
    }

    /// Takes the API server away (listeners closed, watches cut), keeping its objects.
    pub fn pause_api(&mut self) {
        let api = self.api.as_mut().expect("the API server runs until drop");
        self.runtime.block_on(api.pause());
    }

    /// Brings the API server back on the same addresses, with its watch history gone.
    pub fn resume_api(&mut self) -> Result<(), ClusterError> {
        let loopback = TcpListener::bind(self.api().local_addrs()[0])?;
        let endpoint = self.api_endpoint;
        let inside = self.lab.run_in(self.lab.underlay_ns(), move || TcpListener::bind(endpoint))??;
        let api = self.api.as_mut().expect("the API server runs until drop");
        let _guard = self.runtime.enter();
        api.resume(vec![loopback, inside])?;
        Ok(())
    }

    /// Stops the agent on `node` with SIGTERM (SIGKILL after a grace period).
    pub fn stop_agent(&mut self, node: &str) -> Result<(), ClusterError> {
        if let Some(process) = self.agents.remove(node) {
            self.lab.stop_process(process.pid)?;
        }
        Ok(())
    }

    /// Kills the agent on `node` with SIGKILL (no chance to clean up), then reaps it.
    pub fn kill_agent(&mut self, node: &str) -> Result<(), ClusterError> {
        if let Some(process) = self.agents.remove(node) {
            let group = nix::unistd::Pid::from_raw(-(process.pid as i32));
            nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| ClusterError::Command(format!("kill -KILL -{}: {e}", process.pid)))?;
            self.lab.stop_process(process.pid)?;
        }
        Ok(())
    }

    /// Freezes the agent on `node` (SIGSTOP to its process group): its watches, reconcile loop
    /// and data path stand still, as a busy or descheduled agent's would, until
    /// [`Cluster::resume_agent`]. Datagrams to it wait in its socket's receive queue.
    pub fn pause_agent(&self, node: &str) -> Result<(), ClusterError> {
        self.signal_agent(node, nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused agent run again (SIGCONT).
    pub fn resume_agent(&self, node: &str) -> Result<(), ClusterError> {
        self.signal_agent(node, nix::sys::signal::Signal::SIGCONT)
    }

    fn signal_agent(&self, node: &str, signal: nix::sys::signal::Signal) -> Result<(), ClusterError> {
        let process = self.agents.get(node).ok_or_else(|| ClusterError::NoSuchNode(node.to_owned()))?;
        let group = nix::unistd::Pid::from_raw(-(process.pid as i32));
        nix::sys::signal::kill(group, signal)
            .map_err(|e| ClusterError::Command(format!("kill -{signal} -{}: {e}", process.pid)))
    }

    /// The agent process on `node`, if one runs.
    pub fn agent(&self, node: &str) -> Option<&LabProcess> {
        self.agents.get(node)
    }

    /// Adds a lab node, its Node object and its agent, while everything else runs.
    pub fn add_node(&mut self) -> Result<String, ClusterError> {
        self.add_node_with(|_, _| Ok(()))
    }

    /// Like [`Cluster::add_node`], with `prepare` run on the new Node's name after its object is
    /// created and before its agent starts (to taint it, say, as a kubelet registering with
    /// `--register-with-taints` would).
    pub fn add_node_with(
        &mut self,
        prepare: impl FnOnce(&Self, &str) -> Result<(), ClusterError>,
    ) -> Result<String, ClusterError> {
        let name = self.lab.add_node()?.name.clone();
        self.register_node(&name)?;
        prepare(self, &name)?;
        self.start_agent(&name)?;
        Ok(name)
    }

    /// Stops the agent on `name`, deletes its Node object and removes it from the lab.
    pub fn remove_node(&mut self, name: &str) -> Result<(), ClusterError> {
        self.stop_agent(name)?;
        self.api().delete("v1", "Node", None, name)?;
        self.lab.remove_node(name)?;
        Ok(())
    }

    /// Polls each node's `/readyz` until all answer 200, or fails at `deadline` naming the
    /// laggards and the tail of their logs.
    pub fn wait_ready(&self, deadline: std::time::Duration) -> Result<(), ClusterError> {
        let nodes: Vec<String> = self.agents.keys().cloned().collect();
        poll(deadline, || {
            let pending: Vec<&String> = nodes.iter().filter(|n| !self.is_ready(n)).collect();
            if pending.is_empty() { Ok(()) } else { Err(format!("not ready: {pending:?}")) }
        })
        .map_err(|why| ClusterError::Timeout(format!("{why}\n{}", self.agent_logs_tail(20))))
    }

    /// Polls until every agent's device has a peer for every other agent's node (the mesh is
    /// complete, as each agent sees it), or fails at `deadline` naming the laggards.
    pub fn wait_converged(&self, deadline: std::time::Duration) -> Result<(), ClusterError> {
        let want = self.agents.len().saturating_sub(1);
        poll(deadline, || {
            let short: Vec<String> = self
                .agents
                .keys()
                .filter_map(|node| {
                    let peers = self.wg(node, &["show", "meshcrypt0", "peers"]).unwrap_or_default();
                    let have = peers.lines().filter(|l| !l.trim().is_empty()).count();
                    (have != want).then(|| format!("{node}: {have} of {want} peers"))
                })
                .collect();
            if short.is_empty() { Ok(()) } else { Err(short.join(", ")) }
        })
        .map_err(|why| ClusterError::Timeout(format!("{why}\n{}", self.agent_logs_tail(20))))
    }

    /// True when `node`'s agent answers `/readyz` with 200.
    pub fn is_ready(&self, node: &str) -> bool {
        self.http(node, "/readyz").map(|(status, _)| status == 200).unwrap_or(false)
    }

    /// `GET path` against `node`'s agent: status code and body.
    pub fn http(&self, node: &str, path: &str) -> Result<(u16, String), ClusterError> {
        let ns =
            self.lab.node(node).ok_or_else(|| ClusterError::NoSuchNode(node.to_owned()))?.namespace.clone();
        let path = path.to_owned();
        Ok(self
            .lab
            .run_in(&ns, move || http_get(SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)), &path))??)
    }

    /// Runs `wg ARGS` against `node`'s agent, through its UAPI socket in its private
    /// `/run/wireguard`.
    pub fn wg(&self, node: &str, args: &[&str]) -> Result<String, ClusterError> {
        let process = self.agents.get(node).ok_or_else(|| ClusterError::NoSuchNode(node.to_owned()))?;
        Ok(meshcrypt_netlab::lab::wg_via(process.pid, args)?)
    }

    /// The last `lines` lines of every agent's log, for failure messages.
    pub fn agent_logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (node, process) in &self.agents {
            let text = std::fs::read_to_string(&process.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {node} ({})\n", process.log.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, process) in std::mem::take(&mut self.agents) {
            // A paused agent (a test that failed before resuming it) would only see SIGKILL.
            let group = nix::unistd::Pid::from_raw(-(process.pid as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGCONT);
            let _ = self.lab.stop_process(process.pid);
        }
        if let Some(api) = self.api.take() {
            self.runtime.block_on(api.shutdown());
        }
    }
}
