//! The running lab: its namespaces, nodes, pods and processes, and their teardown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use super::addressing::{self, BRIDGE, MAX_INDEX, UNDERLAY_PREFIX_LEN, UNDERLAY_PREFIX_LEN6};
use super::command::{self, ip_in};
use super::error::LabError;
use super::model::{Node, Pod};
use super::naming;
use super::netns;
use super::options::LabOptions;
use super::processes::{LabProcess, ProcessTable, SpawnOptions};
use super::vpc_cni::{self, MAX_VPC_CNI_NODES, PodPool};
use ipnet::IpNet;

/// A running lab. Dropping it (also while unwinding from a panic) stops its processes and removes
/// all its namespaces, which removes every veth and the bridge with them.
///
/// Nothing is ever created in the root namespace: every veth is created with both ends already in
/// lab namespaces.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    underlay_ns: String,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    options: LabOptions,
    next_index: usize,
    namespaces: Vec<String>,
    processes: Mutex<ProcessTable>,
    log_dir: PathBuf,
    /// Keep the logs at teardown (a failed run), as after a panic.
    keep_logs: bool,
    torn_down: bool,
    /// The VPC-CNI address pool, in a VPC-CNI lab.
    pool: Option<PodPool>,
}

impl Lab {
    /// Sweeps stale namespaces, then creates the underlay namespace with its bridge, and no nodes.
    pub(crate) fn create_empty(options: LabOptions) -> Result<Lab, LabError> {
        naming::sweep_stale();
        let prefix = naming::new_run_prefix();
        let log_dir = naming::log_root().join(prefix.trim_end_matches('-'));
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| LabError::io(format!("create {}", log_dir.display()), e))?;
        let pool = options.vpc_cni.then(|| PodPool::new(options.vpc_cni_seed));
        let mut lab = Lab {
            underlay_ns: format!("{prefix}underlay"),
            prefix,
            nodes: Vec::new(),
            pods: Vec::new(),
            options,
            next_index: 0,
            namespaces: Vec::new(),
            processes: Mutex::new(ProcessTable::default()),
            log_dir,
            keep_logs: false,
            torn_down: false,
            pool,
        };
        let ul = lab.underlay_ns.clone();
        lab.create_ns(&ul)?;
        let mtu = lab.options.underlay_mtu.to_string();
        ip_in(&ul, &["link", "add", BRIDGE, "mtu", &mtu, "type", "bridge", "forward_delay", "0"])?;
        let services = format!("{}/{UNDERLAY_PREFIX_LEN}", addressing::services_addr());
        ip_in(&ul, &["addr", "add", &services, "dev", BRIDGE])?;
        if lab.options.ipv6 {
            let services6 = format!("{}/{UNDERLAY_PREFIX_LEN6}", addressing::services_addr6());
            ip_in(&ul, &["-6", "addr", "add", &services6, "dev", BRIDGE, "nodad"])?;
        }
        ip_in(&ul, &["link", "set", BRIDGE, "up"])?;
        tracing::info!(prefix = %lab.prefix, "lab underlay created");
        Ok(lab)
    }

    fn create_ns(&mut self, ns: &str) -> Result<(), LabError> {
        // Record first: a half-created namespace is still removed on teardown.
        self.namespaces.push(ns.to_string());
        netns::create(ns)?;
        if self.options.ipv6 {
            // No duplicate address detection: it would hold link-local addresses (and with them
            // neighbour discovery towards the pods' gateway) tentative for a second or more.
            for conf in ["all", "default"] {
                netns::set_sysctl(ns, &format!("net/ipv6/conf/{conf}/accept_dad"), "0")?;
            }
        }
        Ok(())
    }

    /// Adds a node (with `pods_per_node` pods) while the lab runs, and the host-gateway routes
    /// between it and every other node (per pod `/32` in a VPC-CNI lab). Indices are never reused.
    /// If it fails, whatever it created is removed again and the lab is as before.
    pub fn add_node(&mut self) -> Result<&Node, LabError> {
        let created_before = self.namespaces.len();
        let index = self.next_index;
        let mut new_pods = Vec::new();
        match self.try_add_node(&mut new_pods) {
            Ok(node) => {
                tracing::info!(node = %node.name, namespace = %node.namespace, "lab node added");
                self.pods.extend(new_pods);
                self.nodes.push(node);
                Ok(self.nodes.last().expect("just pushed"))
            }
            Err(e) => {
                if let Some(pool) = &mut self.pool {
                    // Routes other nodes may already have to the half-built node's pods.
                    for other in &self.nodes {
                        for pod in &new_pods {
                            let _ = vpc_cni::del_remote_pod_routes(&other.namespace, pod);
                        }
                    }
                    for pod in &new_pods {
                        pool.release(pod.address);
                    }
                } else if self.next_index > index {
                    // Routes other nodes may already have to the half-built node's pods.
                    let i = index as u8;
                    let mut cidrs = vec![addressing::node_pod_cidr(i)];
                    cidrs.extend(self.options.ipv6.then(|| addressing::node_pod_cidr6(i)));
                    for other in &self.nodes {
                        for cidr in &cidrs {
                            let _ = ip_in(&other.namespace, &["route", "del", &cidr.to_string()]);
                        }
                    }
                }
                for ns in self.namespaces.split_off(created_before).iter().rev() {
                    let _ = remove_ns(ns);
                }
                Err(e)
            }
        }
    }

    /// Builds the next node; pushes each pod it creates onto `pods` as soon as it exists.
    fn try_add_node(&mut self, pods: &mut Vec<Pod>) -> Result<Node, LabError> {
        let i = self.next_index;
        let max = if self.pool.is_some() { MAX_VPC_CNI_NODES } else { MAX_INDEX };
        if i >= max {
            return Err(LabError::Invalid(format!("no address left for node {i}")));
        }
        self.next_index += 1;
        let i = i as u8;
        let name = format!("node-{i}");
        let node = Node {
            namespace: format!("{}{name}", self.prefix),
            name,
            index: i,
            underlay_iface: "eth0".into(),
            underlay_addr: addressing::node_underlay_addr(i),
            underlay_prefix_len: UNDERLAY_PREFIX_LEN,
            pod_cidr: addressing::node_pod_cidr(i),
            pod_gateway: addressing::pod_gateway(i),
            underlay_addr6: self.options.ipv6.then(|| addressing::node_underlay_addr6(i)),
            pod_cidr6: self.options.ipv6.then(|| addressing::node_pod_cidr6(i)),
            underlay_mtu: self.options.underlay_mtu,
        };
        let ns = node.namespace.clone();
        let ul = self.underlay_ns.clone();
        let port = format!("node{i}");
        self.create_ns(&ns)?;
        let mtu = self.options.underlay_mtu.to_string();
        ip_in(
            &ns,
            &["link", "add", "eth0", "mtu", &mtu, "type", "veth"]
                .into_iter()
                .chain(["peer", "name", &port, "mtu", &mtu, "netns", &ul])
                .collect::<Vec<_>>(),
        )?;
        ip_in(&ul, &["link", "set", &port, "master", BRIDGE, "up"])?;
        let addr = format!("{}/{UNDERLAY_PREFIX_LEN}", node.underlay_addr);
        ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"])?;
        if let Some(a6) = node.underlay_addr6 {
            let addr6 = format!("{a6}/{UNDERLAY_PREFIX_LEN6}");
            ip_in(&ns, &["-6", "addr", "add", &addr6, "dev", "eth0", "nodad"])?;
            netns::set_sysctl(&ns, "net/ipv6/conf/all/forwarding", "1")?;
        }
        ip_in(&ns, &["link", "set", "eth0", "up"])?;
        netns::set_sysctl(&ns, "net/ipv4/ip_forward", "1")?;
        if self.pool.is_some() {
            vpc_cni::install_eni_table(&node)?;
        }

        for j in 0..self.options.pods_per_node {
            pods.push(self.create_pod(&node, j as u8)?);
        }
        for other in &self.nodes {
            if self.pool.is_some() {
                for p in self.pods.iter().filter(|p| p.node == other.name) {
                    vpc_cni::add_remote_pod_routes(&ns, p, other)?;
                }
                for p in pods.iter() {
                    vpc_cni::add_remote_pod_routes(&other.namespace, p, &node)?;
                }
            } else {
                host_gw_route(&ns, other)?;
                host_gw_route(&other.namespace, &node)?;
            }
        }
        Ok(node)
    }

    /// Creates pod `j` of `node` (its namespace, veth, addresses, the node's route and, in a
    /// VPC-CNI lab, the CNI's rules); routes on other nodes are the caller's. On failure the
    /// pod's address goes back to the pool; its namespace is left for the caller to remove.
    fn create_pod(&mut self, node: &Node, j: u8) -> Result<Pod, LabError> {
        let i = node.index;
        let address = match &mut self.pool {
            Some(pool) => pool
                .allocate()
                .ok_or_else(|| LabError::Invalid(format!("no address left in {}", vpc_cni::pod_range())))?,
            None => addressing::pod_addr(i, j),
        };
        let name = format!("pod-{i}-{j}");
        let pod = Pod {
            namespace: format!("{}{name}", self.prefix),
            name,
            node: node.name.clone(),
            address,
            address6: self.options.ipv6.then(|| addressing::pod_addr6(i, j)),
            iface: "eth0".into(),
            node_iface: format!("pod{j}"),
        };
        match self.setup_pod(node, &pod) {
            Ok(()) => Ok(pod),
            Err(e) => {
                if let Some(pool) = &mut self.pool {
                    // Rules (if any) must not outlive the half-created pod.
                    let _ = vpc_cni::del_pod_rules(&node.namespace, &pod);
                    pool.release(address);
                }
                Err(e)
            }
        }
    }

    fn setup_pod(&mut self, node: &Node, pod: &Pod) -> Result<(), LabError> {
        let (pns, nns) = (pod.namespace.clone(), node.namespace.clone());
        let gw = node.pod_gateway.to_string();
        self.create_ns(&pns)?;
        let mtu = self.options.pod_mtu.to_string();
        ip_in(
            &nns,
            &["link", "add", &pod.node_iface, "mtu", &mtu, "type", "veth"]
                .into_iter()
                .chain(["peer", "name", "eth0", "mtu", &mtu, "netns", &pns])
                .collect::<Vec<_>>(),
        )?;
        ip_in(&nns, &["addr", "add", &format!("{gw}/32"), "dev", &pod.node_iface])?;
        ip_in(&nns, &["link", "set", &pod.node_iface, "up"])?;
        let host = format!("{}/32", pod.address);
        ip_in(&nns, &["route", "replace", &host, "dev", &pod.node_iface, "scope", "link"])?;
        ip_in(&pns, &["addr", "add", &host, "dev", "eth0"])?;
        ip_in(&pns, &["link", "set", "eth0", "up"])?;
        ip_in(&pns, &["route", "add", &gw, "dev", "eth0", "scope", "link"])?;
        ip_in(&pns, &["route", "add", "default", "via", &gw, "dev", "eth0"])?;
        if let Some(a6) = pod.address6 {
            let gw6 = addressing::pod_gateway6().to_string();
            let host6 = format!("{a6}/128");
            let gw6_addr = format!("{gw6}/64");
            ip_in(&nns, &["-6", "addr", "add", &gw6_addr, "dev", &pod.node_iface, "nodad"])?;
            ip_in(&nns, &["-6", "route", "replace", &host6, "dev", &pod.node_iface])?;
            ip_in(&pns, &["-6", "addr", "add", &host6, "dev", "eth0", "nodad"])?;
            ip_in(&pns, &["-6", "route", "add", "default", "via", &gw6, "dev", "eth0"])?;
        }
        if self.pool.is_some() {
            vpc_cni::add_pod_rules(&nns, pod)?;
        }
        Ok(())
    }

    /// Removes a node: stops the lab's processes in it and its pods, deletes the other nodes' routes
    /// to its pod CIDR, and deletes its namespaces (which removes its veths and bridge port).
    pub fn remove_node(&mut self, name: &str) -> Result<(), LabError> {
        let idx = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| LabError::Unknown { kind: "node", name: name.to_string() })?;
        let node = self.nodes.remove(idx);
        let (gone, kept): (Vec<Pod>, Vec<Pod>) =
            std::mem::take(&mut self.pods).into_iter().partition(|p| p.node == node.name);
        self.pods = kept;
        let mut doomed: Vec<String> = gone.iter().map(|p| p.namespace.clone()).collect();
        doomed.push(node.namespace.clone());

        let mut errors = self.lock_processes().stop_where(|p| doomed.contains(&p.namespace));
        for other in self.nodes.iter().filter(|_| self.pool.is_some()) {
            for pod in &gone {
                errors.extend(vpc_cni::del_remote_pod_routes(&other.namespace, pod));
            }
        }
        for other in self.nodes.iter().filter(|_| self.pool.is_none()) {
            let cidrs = std::iter::once(node.pod_cidr).chain(node.pod_cidr6);
            for cidr in cidrs.map(|c| c.to_string()) {
                if let Err(e) = ip_in(&other.namespace, &["route", "del", &cidr]) {
                    errors.push(e.to_string());
                }
            }
        }
        for ns in &doomed {
            errors.extend(remove_ns(ns).err());
            self.namespaces.retain(|n| n != ns);
        }
        if let Some(pool) = &mut self.pool {
            for pod in &gone {
                pool.release(pod.address);
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(LabError::Teardown(errors)) }
    }

    /// Adds a pod to node `node` while the lab runs and returns it: its namespace and veth, the
    /// node's `/32` route to it and, in a VPC-CNI lab, the CNI's rules on its node and a
    /// host-gateway `/32` route to it on every other node (main table and table 2). It takes the
    /// lowest free pod slot `j` of the node (name `pod-<node index>-<j>`, node-side veth `pod<j>`),
    /// so names of removed pods are reused; so are addresses (from the pool in a VPC-CNI lab, the
    /// slot's `10.244.<i>.<10+j>` otherwise, which the node's pod CIDR routes already cover). If
    /// it fails, whatever it created is removed again. Named namespaces cannot be moved, so a pod
    /// never changes node: remove it and add another.
    pub fn add_pod(&mut self, node: &str) -> Result<Pod, LabError> {
        let node = self
            .node(node)
            .cloned()
            .ok_or_else(|| LabError::Unknown { kind: "node", name: node.to_string() })?;
        let used: Vec<u8> = self.pods_on(&node.name).iter().filter_map(|p| pod_slot(p)).collect();
        let j = (0..MAX_INDEX as u8)
            .find(|j| !used.contains(j))
            .ok_or_else(|| LabError::Invalid(format!("no pod slot left on {}", node.name)))?;
        let created_before = self.namespaces.len();
        let result = self.create_pod(&node, j).and_then(|pod| {
            let wired = self
                .nodes
                .iter()
                .filter(|other| self.pool.is_some() && other.name != node.name)
                .try_for_each(|other| vpc_cni::add_remote_pod_routes(&other.namespace, &pod, &node));
            match wired {
                Ok(()) => Ok(pod),
                Err(e) => {
                    let _ = self.unwire_pod(&pod, &node);
                    Err(e)
                }
            }
        });
        match result {
            Ok(pod) => {
                tracing::info!(pod = %pod.name, node = %node.name, address = %pod.address, "lab pod added");
                // Keep the pods grouped by node.
                let at =
                    self.pods.iter().rposition(|p| p.node == node.name).map_or(self.pods.len(), |k| k + 1);
                self.pods.insert(at, pod.clone());
                Ok(pod)
            }
            Err(e) => {
                for ns in self.namespaces.split_off(created_before).iter().rev() {
                    let _ = remove_ns(ns);
                }
                Err(e)
            }
        }
    }

    /// Removes pod `name` while the lab runs: stops the lab's processes in it, deletes the CNI's
    /// rules and the node's route (with its veth), every other node's route to it (in a VPC-CNI
    /// lab) and its namespace. Its address becomes free again.
    pub fn remove_pod(&mut self, name: &str) -> Result<(), LabError> {
        let idx = self
            .pods
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| LabError::Unknown { kind: "pod", name: name.to_string() })?;
        let pod = self.pods.remove(idx);
        let mut errors = self.lock_processes().stop_where(|p| p.namespace == pod.namespace);
        match self.node(&pod.node).cloned() {
            Some(node) => errors.extend(self.unwire_pod(&pod, &node)),
            None => errors.push(format!("pod {} has no node {}", pod.name, pod.node)),
        }
        errors.extend(remove_ns(&pod.namespace).err());
        self.namespaces.retain(|n| *n != pod.namespace);
        tracing::info!(pod = %pod.name, node = %pod.node, "lab pod removed");
        if errors.is_empty() { Ok(()) } else { Err(LabError::Teardown(errors)) }
    }

    /// Undoes everything outside the pod's namespace that wires pod `pod` in: every other node's
    /// routes to it and the CNI's rules (VPC-CNI lab), its node-side veth (and with it the node's
    /// route); then returns its address to the pool. Returns the failures.
    fn unwire_pod(&mut self, pod: &Pod, node: &Node) -> Vec<String> {
        let mut errors = Vec::new();
        if self.pool.is_some() {
            for other in self.nodes.iter().filter(|n| n.name != node.name) {
                errors.extend(vpc_cni::del_remote_pod_routes(&other.namespace, pod));
            }
            errors.extend(vpc_cni::del_pod_rules(&node.namespace, pod));
        }
        let link = ip_in(&node.namespace, &["link", "del", &pod.node_iface]);
        if let Err(e) = link
            && !matches!(&e, LabError::CommandFailed { stderr, .. } if stderr.contains("Cannot find device"))
        {
            errors.push(e.to_string());
        }
        if let Some(pool) = &mut self.pool {
            pool.release(pod.address);
        }
        errors
    }

    /// The per-run prefix every namespace name of this lab starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name` (e.g. `node-0`).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// All pods, grouped by node.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The pod called `name` (e.g. `pod-0-1`).
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The pods that run on node `node`.
    pub fn pods_on(&self, node: &str) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.node == node).collect()
    }

    /// The node a pod runs on.
    pub fn node_of(&self, pod: &Pod) -> Option<&Node> {
        self.node(&pod.node)
    }

    /// The underlay namespace (holds the bridge and the services address).
    pub fn underlay_ns(&self) -> &str {
        &self.underlay_ns
    }

    /// The underlay bridge's name inside the underlay namespace.
    pub fn underlay_bridge(&self) -> &str {
        BRIDGE
    }

    /// The services address on the underlay bridge, for the test API server.
    pub fn services_addr(&self) -> Ipv4Addr {
        addressing::services_addr()
    }

    /// The underlay subnet.
    pub fn underlay_cidr(&self) -> IpNet {
        addressing::underlay_cidr()
    }

    /// The IPv6 services address, in a dual-stack lab.
    pub fn services_addr6(&self) -> Option<Ipv6Addr> {
        self.options.ipv6.then(addressing::services_addr6)
    }

    /// The IPv6 underlay subnet, in a dual-stack lab.
    pub fn underlay_cidr6(&self) -> Option<IpNet> {
        self.options.ipv6.then(addressing::underlay_cidr6)
    }

    /// The IPv6 cluster pod CIDR, in a dual-stack lab.
    pub fn cluster_pod_cidr6(&self) -> Option<IpNet> {
        self.options.ipv6.then(addressing::cluster_pod_cidr6)
    }

    /// The options every node is built with.
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// The cluster's pod CIDR (every node's pod CIDR lies in it): `10.244.0.0/16`; in a VPC-CNI
    /// lab the shared range every pod address comes from, `10.244.128.0/17` (the nominal per-node
    /// CIDRs lie outside it there).
    pub fn cluster_pod_cidr(&self) -> IpNet {
        if self.pool.is_some() { vpc_cni::pod_range() } else { addressing::cluster_pod_cidr() }
    }

    /// True if this is a VPC-CNI lab ([`LabBuilder::vpc_cni`](super::LabBuilder::vpc_cni)).
    pub fn is_vpc_cni(&self) -> bool {
        self.pool.is_some()
    }

    /// Every pod address (IPv4, then IPv6 in a dual-stack lab) of the pods on node `node`, in pod
    /// order: what meshcrypt's pod-IP mode would take as that node's allowed IPs.
    pub fn pod_ips_on(&self, node: &str) -> Vec<IpAddr> {
        let pods = self.pods_on(node);
        let v4 = pods.iter().map(|p| IpAddr::V4(p.address));
        let v6 = pods.iter().filter_map(|p| p.address6.map(IpAddr::V6));
        v4.chain(v6).collect()
    }

    /// The pod that has address `ip`, if any.
    pub fn pod_by_address(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods.iter().find(|p| IpAddr::V4(p.address) == ip || p.address6.map(IpAddr::V6) == Some(ip))
    }

    /// Every namespace of this lab that currently exists, underlay first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The directory holding the logs of processes this lab spawned.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Keeps the logs when the lab is torn down (they go otherwise, unless the thread panics):
    /// for a run that failed without panicking.
    pub fn keep_logs(&mut self) {
        self.keep_logs = true;
    }

    fn check_ns(&self, ns: &str) -> Result<(), LabError> {
        if self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            Err(LabError::Unknown { kind: "namespace", name: ns.to_string() })
        }
    }

    /// Runs `argv` inside lab namespace `ns` and returns its stdout; fails with its stderr unless
    /// it exits successfully.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Result<String, LabError> {
        let out = self.exec_output(ns, argv)?;
        command::check(format!("ip netns exec {ns} {}", argv.join(" ")), out)
    }

    /// Runs `argv` inside lab namespace `ns` and returns its raw output whatever its exit status.
    pub fn exec_output(&self, ns: &str, argv: &[&str]) -> Result<Output, LabError> {
        self.check_ns(ns)?;
        if argv.is_empty() {
            return Err(LabError::Invalid("exec needs a program".into()));
        }
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(argv);
        command::output("ip", &full)
    }

    /// Runs `f` on a thread inside lab namespace `ns` (see [`netns::run_in`]): sockets it creates
    /// live in `ns`.
    pub fn run_in<T, F>(&self, ns: &str, f: F) -> Result<T, LabError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        self.check_ns(ns)?;
        netns::run_in(ns, f)
    }

    /// Starts `argv` as a long-running process inside `ns`; the lab stops it on drop.
    pub fn spawn(&self, ns: &str, argv: &[&str]) -> Result<LabProcess, LabError> {
        let (program, args) =
            argv.split_first().ok_or_else(|| LabError::Invalid("spawn needs a program".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.spawn_command(ns, &cmd)
    }

    /// Starts `cmd` (program, arguments, environment and working directory are used) inside `ns`;
    /// the lab stops it on drop.
    pub fn spawn_command(&self, ns: &str, cmd: &Command) -> Result<LabProcess, LabError> {
        self.spawn_with(ns, cmd, &SpawnOptions::default())
    }

    /// Like [`Lab::spawn_command`], with [`SpawnOptions`] (e.g. private directories such as
    /// `/run/wireguard`, so that agents on different nodes do not share UAPI sockets).
    pub fn spawn_with(
        &self,
        ns: &str,
        cmd: &Command,
        options: &SpawnOptions,
    ) -> Result<LabProcess, LabError> {
        self.check_ns(ns)?;
        self.lock_processes().spawn(ns, cmd, options, &self.log_dir)
    }

    /// The processes the lab owns and has not stopped yet.
    pub fn processes(&self) -> Vec<LabProcess> {
        self.lock_processes().list()
    }

    /// True if the lab's process `pid` is still running.
    pub fn process_running(&self, pid: u32) -> bool {
        self.lock_processes().running(pid)
    }

    /// Stops (TERM, then KILL after a grace period) and reaps the lab's process `pid`.
    pub fn stop_process(&self, pid: u32) -> Result<(), LabError> {
        self.lock_processes().stop(pid)
    }

    fn lock_processes(&self) -> MutexGuard<'_, ProcessTable> {
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every process, then deletes every namespace. Safe to call twice and while unwinding;
    /// reports everything it could not remove. Logs are kept if the thread is panicking or
    /// [`Self::keep_logs`] asked for it.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = self.lock_processes().stop_where(|_| true);
        for ns in self.namespaces.drain(..).rev() {
            errors.extend(remove_ns(&ns).err());
        }
        self.nodes.clear();
        self.pods.clear();
        if std::thread::panicking() || self.keep_logs {
            eprintln!("lab {}: logs kept in {}", self.prefix, self.log_dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.log_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("remove {}: {e}", self.log_dir.display()));
        }
        if errors.is_empty() {
            tracing::info!(prefix = %self.prefix, "lab torn down");
            Ok(())
        } else {
            Err(LabError::Teardown(errors))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "lab teardown");
            eprintln!("lab teardown: {e}");
        }
    }
}

/// `route replace <to.pod_cidr> via <to.underlay_addr>` inside namespace `ns` (and the same for
/// IPv6 in a dual-stack lab).
fn host_gw_route(ns: &str, to: &Node) -> Result<(), LabError> {
    let cidr = to.pod_cidr.to_string();
    let via = to.underlay_addr.to_string();
    ip_in(ns, &["route", "replace", &cidr, "via", &via, "dev", "eth0"])?;
    if let (Some(cidr6), Some(via6)) = (to.pod_cidr6, to.underlay_addr6) {
        let (cidr6, via6) = (cidr6.to_string(), via6.to_string());
        ip_in(ns, &["-6", "route", "replace", &cidr6, "via", &via6, "dev", "eth0"])?;
    }
    Ok(())
}

/// The slot `j` of a pod (its node-side veth is `pod<j>`).
fn pod_slot(pod: &Pod) -> Option<u8> {
    pod.node_iface.strip_prefix("pod")?.parse().ok()
}

/// Kills any process still inside `ns` (other than this one), then deletes it.
fn remove_ns(ns: &str) -> Result<(), String> {
    if !netns::exists(ns) {
        return Ok(());
    }
    let me = std::process::id();
    for pid in netns::pids(ns) {
        if pid != me {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    netns::delete(ns).map_err(|e| e.to_string())
}
