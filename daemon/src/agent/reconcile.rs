//! One reconcile pass: read the Node store, compute the peer set and the routing plan (pure), then
//! apply them to the device and the kernel. The loop owns all of the agent's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use meshcrypt_dataplane::Device;
use meshcrypt_keyexchange::NodeKeyAnnotations;
use meshcrypt_keyexchange::mesh::{LocalNode, MeshConfig, NodeView, desired_peers};
use meshcrypt_routing::{Netlink, mtu::tunnel_mtu, plan::plan};
use tracing::Instrument as _;

use super::events::EventReporter;
use super::http::Health;
use super::metrics::{LoopMetrics, PeerNames};
use super::peer_ops::{peer_ops, to_changes};
use super::publish::publish_key;
use super::routing_input::{RoutingSettings, routing_input};
use crate::error::AgentError;

/// Everything a pass reads and writes.
pub struct Reconciler {
    /// This node's name.
    pub node: String,
    /// What this node publishes about its key.
    pub key: NodeKeyAnnotations,
    /// The mesh port.
    pub port: u16,
    /// A fixed tunnel MTU, or `None` to derive it from the underlay.
    pub mtu: Option<u32>,
    /// Routing settings.
    pub routing: RoutingSettings,
    /// The Kubernetes client (to republish the key).
    pub client: kube::Client,
    /// Every Node, after the first complete list.
    pub nodes: Store<Node>,
    /// The WireGuard device.
    pub device: Arc<Device>,
    /// The kernel.
    pub netlink: Netlink,
    /// Events.
    pub events: EventReporter,
    /// Probe state.
    pub health: Arc<Health>,
    /// Counters.
    pub metrics: Arc<LoopMetrics>,
    /// Peer names for metric labels.
    pub names: PeerNames,
    /// Passes run so far.
    pub passes: u64,
}

impl Reconciler {
    /// Before the first complete Node list: programs the fail-closed floor from this node's own
    /// Node alone (its pod prefixes stay local, everything else in the pod network is dropped), so
    /// that no pod packet leaves in plaintext while the agent waits for the full list. No peers
    /// are configured and readiness is not claimed.
    pub async fn bootstrap(&mut self, local: &Node) -> Result<(), AgentError> {
        let span = tracing::info_span!("bootstrap", node = %self.node);
        self.reconcile(vec![NodeView::from_node(local)]).instrument(span).await.map(|_| ())
    }

    /// Runs one pass over the Node store inside its own span, recording the outcome.
    pub async fn pass(&mut self) {
        self.passes += 1;
        let span = tracing::info_span!("reconcile", pass = self.passes, node = %self.node);
        let nodes: Vec<NodeView> = self.nodes.state().iter().map(|n| NodeView::from_node(n)).collect();
        let result = self.reconcile(nodes).instrument(span.clone()).await;
        self.metrics.reconciles.inc();
        self.health.tick();
        match result {
            Ok(summary) => {
                let first = !self.health.ready.swap(true, Ordering::Relaxed);
                self.metrics.ready.set(1);
                span.in_scope(|| {
                    tracing::debug!(
                        peers = summary.peers,
                        device_ops = summary.device_ops,
                        kernel_ops = summary.kernel_ops,
                        "reconciled"
                    )
                });
                if first {
                    tracing::info!(peers = summary.peers, "mesh programmed: device and routes in place");
                    let note = format!("{} peers; key {}", summary.peers, self.key.public_key.fingerprint());
                    self.events.normal(&self.node, "MeshReady", &note).await;
                }
            }
            Err(e) => {
                self.metrics.reconcile_errors.inc();
                span.in_scope(|| tracing::warn!(error = %e, "reconcile failed; the last programmed state stays in force"));
            }
        }
    }

    async fn reconcile(&mut self, nodes: Vec<NodeView>) -> Result<Summary, AgentError> {
        let local = nodes.iter().find(|n| n.name == self.node).ok_or_else(|| AgentError::LocalNode {
            node: self.node.clone(),
            reason: "not found in the API".into(),
        })?;
        let underlay_ip = *local.internal_ips.first().ok_or_else(|| AgentError::LocalNode {
            node: self.node.clone(),
            reason: "no InternalIP in status.addresses".into(),
        })?;

        // The published key must be the device's key before any peer relies on it.
        if NodeKeyAnnotations::parse(&local.annotations).ok().flatten().as_ref() != Some(&self.key) {
            publish_key(&self.client, &self.node, &self.key).await?;
        }

        let local_node = LocalNode { name: self.node.clone(), public_key: self.key.public_key, underlay_ip };
        let peers = desired_peers(&nodes, &local_node, &MeshConfig { port: self.port });
        self.events.problems(&peers.problems).await;
        self.record_problems(&peers.problems);

        let ops = peer_ops(&peers, &self.device.observe());
        if !ops.is_empty() {
            tracing::info!(?ops, "updating wireguard peers");
            self.device.apply(&to_changes(&ops))?;
        }
        if let Ok(mut names) = self.names.lock() {
            *names = peers.peers.values().map(|p| (p.public_key, p.node.clone())).collect();
        }

        let mtu = match self.mtu {
            Some(mtu) => mtu,
            None => {
                let underlay =
                    self.netlink.mtu_of_address(underlay_ip).await?.ok_or_else(|| AgentError::LocalNode {
                        node: self.node.clone(),
                        reason: format!("no interface holds {underlay_ip}"),
                    })?;
                tunnel_mtu(underlay, underlay_ip.is_ipv6()).ok_or_else(|| {
                    AgentError::Config(format!("underlay MTU {underlay} is too small for a tunnel"))
                })?
            }
        };
        let local_prefixes: Vec<IpNet> = local
            .pod_cidrs
            .iter()
            .filter_map(|c| c.parse::<IpNet>().ok())
            .filter(|n| n.trunc() == *n)
            .collect();
        let desired =
            meshcrypt_routing::desired::build(&routing_input(&self.routing, mtu, &local_prefixes, &peers));
        let observed = self
            .netlink
            .observe(&self.routing.ifname, self.routing.table, self.routing.rule_priority)
            .await?;
        let kernel_ops = plan(&desired, &observed);
        if !kernel_ops.is_empty() {
            let listed: Vec<String> = kernel_ops.iter().map(ToString::to_string).collect();
            tracing::info!(ops = ?listed, "updating routes and rules");
            let index = observed.link.as_ref().map(|l| l.index);
            self.netlink.apply(index, self.routing.table, &kernel_ops).await?;
        }
        if observed.link.is_none() {
            return Err(AgentError::LocalNode {
                node: self.node.clone(),
                reason: "the WireGuard interface is gone".into(),
            });
        }
        Ok(Summary { peers: peers.peers.len(), device_ops: ops.len(), kernel_ops: kernel_ops.len() })
    }

    fn record_problems(&self, problems: &[meshcrypt_keyexchange::mesh::NodeProblem]) {
        let mut by_reason: BTreeMap<&'static str, i64> = BTreeMap::new();
        for p in problems {
            *by_reason.entry(p.problem.reason()).or_default() += 1;
        }
        self.metrics.node_problems.clear();
        for (reason, count) in by_reason {
            self.metrics.node_problems.get_or_create(&vec![("reason", reason.to_owned())]).set(count);
        }
    }
}

struct Summary {
    peers: usize,
    device_ops: usize,
    kernel_ops: usize,
}
