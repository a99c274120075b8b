//! A lab cluster: the network lab, the test API server inside it (on the underlay's services
//! address, and on loopback for the test itself), one Node object per lab node, and a real
//! `meshcrypt agent` process in each node's namespace. A lab may also hold several clusters on
//! one underlay ([`Cluster::start_clusters`]): each with its own API server and nodes, as EKS
//! clusters in peered VPCs are.

mod agent;
mod error;
pub mod exchange;
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

/// One cluster's control plane in the lab: its API server and where its agents reach it.
struct ControlPlane {
    /// The cluster's id.
    id: String,
    api: TestApiServer,
    /// Where agents reach the API server (inside the underlay).
    endpoint: SocketAddr,
}

/// The lab, the API server(s) and the agents; everything stops and is removed on drop.
pub struct Cluster {
    /// The control planes, one per cluster (shut down first: they run on `runtime`).
    planes: Vec<ControlPlane>,
    /// Which plane each node belongs to (an index into `planes`).
    home: BTreeMap<String, usize>,
    runtime: tokio::runtime::Runtime,
    agents: BTreeMap<String, LabProcess>,
    options: AgentOptions,
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
        let nodes = lab.nodes().len();
        Self::start_clusters(lab, options, &[("lab", nodes)])
    }

    /// Several clusters on one lab: `clusters` lists each cluster's id and how many of the lab's
    /// nodes (taken in order) belong to it. Each cluster gets its own API server (with its own
    /// Node, Pod and ConfigMap objects) and its agents talk only to it, as EKS clusters in peered
    /// VPCs do. [`Cluster::api`] and the methods that take no cluster id act on the first one.
    pub fn start_clusters(
        lab: Lab,
        options: AgentOptions,
        clusters: &[(&str, usize)],
    ) -> Result<Self, ClusterError> {
        let total: usize = clusters.iter().map(|(_, n)| n).sum();
        if clusters.is_empty() || total != lab.nodes().len() {
            return Err(ClusterError::Invalid(format!(
                "the clusters' {total} nodes must be the lab's {} (and there must be a cluster)",
                lab.nodes().len()
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let mut planes = Vec::new();
        for (id, _) in clusters {
            let services = lab.services_addr();
            let inside = lab.run_in(lab.underlay_ns(), move || TcpListener::bind((services, 0)))??;
            let endpoint = inside.local_addr()?;
            let loopback = TcpListener::bind(("127.0.0.1", 0))?;
            let api = runtime.block_on(TestApiServer::serve_listeners(
                // https, as a real API server: kubectl sends tokens over nothing else.
                ApiServerConfig { tls: true, ..ApiServerConfig::default() },
                vec![loopback, inside],
            ))?;
            api.create(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": CONFIG_NAMESPACE},
            }))?;
            planes.push(ControlPlane { id: (*id).to_owned(), api, endpoint });
        }
        let names: Vec<String> = lab.nodes().iter().map(|n| n.name.clone()).collect();
        let home = names
            .iter()
            .zip(clusters.iter().enumerate().flat_map(|(i, (_, n))| std::iter::repeat_n(i, *n)))
            .map(|(name, plane)| (name.clone(), plane))
            .collect();
        let mut cluster = Self {
            planes,
            home,
            runtime,
            agents: BTreeMap::new(),
            options,
            dir: tempfile::Builder::new().prefix("meshcrypt-cluster-").tempdir()?,
            lab,
        };
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
            for plane in &cluster.planes {
                plane.api.create(serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": CONFIG_MAP, "namespace": CONFIG_NAMESPACE},
                    "data": data,
                }))?;
            }
        }
        for name in &names {
            cluster.start_agent(name)?;
        }
        Ok(cluster)
    }

    /// The (first cluster's) API server.
    pub fn api(&self) -> &TestApiServer {
        &self.planes[0].api
    }

    /// Cluster `id`'s API server.
    pub fn api_of(&self, id: &str) -> Result<&TestApiServer, ClusterError> {
        Ok(&self.planes[self.plane_index(id)?].api)
    }

    /// The clusters' ids, in the order they were given.
    pub fn cluster_ids(&self) -> Vec<&str> {
        self.planes.iter().map(|p| p.id.as_str()).collect()
    }

    /// The id of the cluster node `node` belongs to.
    pub fn cluster_of(&self, node: &str) -> Result<&str, ClusterError> {
        Ok(&self.planes[self.home_of(node)?].id)
    }

    /// The names of cluster `id`'s nodes.
    pub fn nodes_of(&self, id: &str) -> Result<Vec<String>, ClusterError> {
        let plane = self.plane_index(id)?;
        Ok(self.home.iter().filter(|(_, p)| **p == plane).map(|(n, _)| n.clone()).collect())
    }

    /// Where agents reach the (first cluster's) API server (inside the underlay).
    pub fn api_endpoint(&self) -> SocketAddr {
        self.planes[0].endpoint
    }

    /// Starts a leak detector on the underlay that knows the agents' API traffic is expected.
    pub fn leak_detector(&self) -> Result<LeakDetector, LeakError> {
        let config = self
            .planes
            .iter()
            .fold(LeakConfig::for_lab(&self.lab), |config, plane| config.with_api_endpoint(plane.endpoint));
        LeakDetector::start_for_lab(&self.lab, config)
    }

    fn plane_index(&self, id: &str) -> Result<usize, ClusterError> {
        self.planes.iter().position(|p| p.id == id).ok_or_else(|| ClusterError::NoSuchCluster(id.to_owned()))
    }

    /// The plane node `node` belongs to: its cluster's, or the first for a lab node added
    /// directly (through [`Cluster::lab`]), as the methods that take no cluster id do.
    fn home_of(&self, node: &str) -> Result<usize, ClusterError> {
        match self.home.get(node) {
            Some(plane) => Ok(*plane),
            None if self.lab.node(node).is_some() => Ok(0),
            None => Err(ClusterError::NoSuchNode(node.to_owned())),
        }
    }

    /// Node `node`'s API server and where its agent reaches it.
    fn plane_of(&self, node: &str) -> Result<(&TestApiServer, SocketAddr), ClusterError> {
        let plane = &self.planes[self.home_of(node)?];
        Ok((&plane.api, plane.endpoint))
    }

    /// A directory for this cluster's files (keys, kubeconfigs), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a future on the runtime that hosts the API server (for kube-rs clients in tests).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Creates the Node object for lab node `name` (in its cluster's API server): its pod CIDR(s)
    /// and InternalIP(s).
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
        Ok(self.plane_of(name)?.0.create(object)?)
    }

    /// The lab's pod networks, as agents are told them.
    pub fn pod_networks(&self) -> Vec<String> {
        let mut out = vec![self.lab.cluster_pod_cidr().to_string()];
        out.extend(self.lab.cluster_pod_cidr6().map(|c| c.to_string()));
        out
    }

    /// Changes keys of the (first cluster's) agents' ConfigMap (a merge patch, as `kubectl patch`
    /// would).
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

    /// The (first cluster's) events.k8s.io Events with `reason`, newest last.
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

    /// Creates the Pod object for lab pod `pod` (in its node's cluster, namespace `default`, label
    /// `app: <pod name>`): scheduled to its node, running, with its addresses (what the VPC CNI
    /// reports, and what pod-IP mode reads).
    pub fn register_pod(&self, pod: &Pod) -> Result<Value, ClusterError> {
        let ips: Vec<Value> = std::iter::once(pod.address.to_string())
            .chain(pod.address6.map(|a| a.to_string()))
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        Ok(self.plane_of(&pod.node)?.0.create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": "default", "labels": {"app": pod.name}},
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
        let node = self.lab.pods().iter().find(|p| p.name == name).map(|p| p.node.clone());
        let node = node.ok_or_else(|| ClusterError::Command(format!("no pod {name}")))?;
        self.plane_of(&node)?.0.delete("v1", "Pod", Some("default"), name)?;
        self.lab.remove_pod(name)?;
        Ok(())
    }

    /// Starts (or restarts) the agent on `node`, keeping its state directory (and so its key).
    pub fn start_agent(&mut self, node: &str) -> Result<&LabProcess, ClusterError> {
        self.start_agent_with(node, &[])
    }

    /// Like [`Cluster::start_agent`], with `extra` flags for this agent alone after the common
    /// ones (e.g. `--strict=false` on one node).
    pub fn start_agent_with(&mut self, node: &str, extra: &[&str]) -> Result<&LabProcess, ClusterError> {
        let process = agent::spawn(self, node, &self.options.binary, extra)?;
        self.agents.insert(node.to_owned(), process);
        Ok(&self.agents[node])
    }

    /// Replaces the flags `node`'s agent alone gets ([`AgentOptions::node_args`]) from its next
    /// start on, as a node group's own DaemonSet changed would.
    pub fn set_agent_args(&mut self, node: &str, args: &[&str]) {
        self.options.node_args.insert(node.to_owned(), args.iter().map(|a| (*a).to_owned()).collect());
    }

    /// Like [`Cluster::start_agent`], running `binary` instead of [`AgentOptions::binary`]: one
    /// node's agent upgraded (or downgraded) to another build, as a DaemonSet's rolling update does.
    pub fn start_agent_from(&mut self, node: &str, binary: &Path) -> Result<&LabProcess, ClusterError> {
        let process = agent::spawn(self, node, binary, &[])?;
        self.agents.insert(node.to_owned(), process);
        Ok(&self.agents[node])
    }

    /// Makes `node`'s key record say its key was created `age` ago (the `created=` line the agent
    /// publishes as `meshcrypt.dev/key-created`); a running agent takes it at its next pass.
    pub fn age_key(&self, node: &str, age: std::time::Duration) -> Result<(), ClusterError> {
        let created = jiff::Timestamp::try_from(std::time::SystemTime::now() - age)
            .map_err(|e| ClusterError::Command(format!("a time {age:?} ago: {e}")))?;
        let key_file = self.state_dir(node).join("private.key");
        let record = std::fs::read_to_string(&key_file)?;
        if !record.lines().any(|l| l.starts_with("created=")) {
            return Err(ClusterError::Command(format!("{}: no created= line", key_file.display())));
        }
        let aged: String = record
            .lines()
            .map(
                |l| if l.starts_with("created=") { format!("created={created}\n") } else { format!("{l}\n") },
            )
            .collect();
        std::fs::write(&key_file, aged)?;
        Ok(())
    }

    /// Takes the (first cluster's) API server away (listeners closed, watches cut), keeping its
    /// objects.
    pub fn pause_api(&mut self) {
        self.runtime.block_on(self.planes[0].api.pause());
    }

    /// Brings the (first cluster's) API server back on the same addresses, with its watch history
    /// gone.
    pub fn resume_api(&mut self) -> Result<(), ClusterError> {
        let loopback = TcpListener::bind(self.api().local_addrs()[0])?;
        let endpoint = self.planes[0].endpoint;
        let inside = self.lab.run_in(self.lab.underlay_ns(), move || TcpListener::bind(endpoint))??;
        let _guard = self.runtime.enter();
        self.planes[0].api.resume(vec![loopback, inside])?;
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

    /// Adds a lab node, its Node object and its agent (in the first cluster), while everything
    /// else runs.
    pub fn add_node(&mut self) -> Result<String, ClusterError> {
        self.add_node_with(|_, _| Ok(()))
    }

    /// Adds a lab node to cluster `id`: its Node object and its agent.
    pub fn add_node_in(&mut self, id: &str) -> Result<String, ClusterError> {
        let plane = self.plane_index(id)?;
        self.add_node_to(plane, |_, _| Ok(()))
    }

    /// Like [`Cluster::add_node`], with `prepare` run on the new Node's name after its object is
    /// created and before its agent starts (to taint it, say, as a kubelet registering with
    /// `--register-with-taints` would).
    pub fn add_node_with(
        &mut self,
        prepare: impl FnOnce(&Self, &str) -> Result<(), ClusterError>,
    ) -> Result<String, ClusterError> {
        self.add_node_to(0, prepare)
    }

    fn add_node_to(
        &mut self,
        plane: usize,
        prepare: impl FnOnce(&Self, &str) -> Result<(), ClusterError>,
    ) -> Result<String, ClusterError> {
        let name = self.lab.add_node()?.name.clone();
        self.home.insert(name.clone(), plane);
        self.register_node(&name)?;
        prepare(self, &name)?;
        self.start_agent(&name)?;
        Ok(name)
    }

    /// Stops the agent on `name`, deletes its Node object and removes it from the lab.
    pub fn remove_node(&mut self, name: &str) -> Result<(), ClusterError> {
        self.stop_agent(name)?;
        self.plane_of(name)?.0.delete("v1", "Node", None, name)?;
        self.lab.remove_node(name)?;
        self.home.remove(name);
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

    /// Every pod talks to every pod on another node: a ping answered within `deadline` (polled),
    /// then `payload` echoed over TCP. The error names the first pair that did not, with the tail
    /// of every agent's log.
    pub fn cross_node_pods_talk(
        &self,
        deadline: std::time::Duration,
        payload: &[u8],
    ) -> Result<(), ClusterError> {
        let pods = self.lab.pods();
        for a in pods {
            for b in pods.iter().filter(|b| b.node != a.node) {
                let reached = poll(deadline, || {
                    if self.lab.ping(a, b.address.into()).unwrap_or(false) {
                        Ok(())
                    } else {
                        Err("no reply".into())
                    }
                });
                let talked =
                    reached.and_then(|()| self.lab.tcp_exchange(a, b, payload).map_err(|e| e.to_string()));
                if let Err(e) = talked {
                    return Err(ClusterError::Timeout(format!(
                        "{} -> {}: {e}\n{}",
                        a.name,
                        b.name,
                        self.agent_logs_tail(20)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every agent's log, for failure messages.
    pub fn agent_logs_tail(&self, lines: usize) -> String {
        self.agents.iter().map(|(node, process)| log_tail(node, &process.log, lines)).collect()
    }

    /// Where the agent on `node` writes flow records (when the ConfigMap turns them on).
    pub fn flow_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("flows.log")
    }

    /// The agent's state directory on `node` (its key files and its status socket).
    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("state")
    }

    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }
}

/// The last `lines` lines of the log file `path`, headed by `label`, for failure messages.
fn log_tail(label: &str, path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    let mut out = format!("--- {label} ({})\n", path.display());
    for line in tail.into_iter().rev() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, process) in std::mem::take(&mut self.agents) {
            // A paused agent (a test that failed before resuming it) would only see SIGKILL.
            let group = nix::unistd::Pid::from_raw(-(process.pid as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGCONT);
            let _ = self.lab.stop_process(process.pid);
        }
        for plane in std::mem::take(&mut self.planes) {
            self.runtime.block_on(plane.api.shutdown());
        }
    }
}
