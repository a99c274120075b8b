//! One reconcile pass: read the settings and the Node store, compute the peer set and the routing
//! plan (pure), then apply them to the device and the kernel — or, when the mesh is switched off,
//! remove all of it. The loop owns all of the agent's state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use meshcrypt_dataplane::{Change, Device, DeviceConfig};
use meshcrypt_keyexchange::mesh::{
    AllowedIpsFrom, LocalNode, MeshConfig, NodeProblem, NodeView, PeerSet, PodView, desired_peers,
};
use meshcrypt_keyexchange::{KeyStore, NodeKeyAnnotations, rotation, write_private};
use meshcrypt_routing::{DesiredState, LinkSpec, Netlink, mtu::tunnel_mtu, plan::plan};
use tracing::Instrument as _;

use super::config_source::{ConfigSource, Reading};
use super::events::{EventReporter, EventType, configmap_ref};
use super::http::Health;
use super::last_known::{self, LastKnown, Snapshot};
use super::metrics::{DeviceSlot, LoopMetrics, PeerNames};
use super::peer_ops::{handshake_targets, peer_ops, to_changes};
use super::publish::{STARTUP_TAINT, publish_key, remove_startup_taint, withdraw_key};
use super::routing_input::{MAIN_TABLE, RoutingSettings, routing_input, wired_local_pods};
use crate::config::settings::{Addressing, KeyError, Mtu, Settings};
use crate::error::AgentError;
use crate::logging::LogControl;

/// Everything a pass reads and writes.
pub struct Reconciler {
    /// This node's name.
    pub node: String,
    /// The key file.
    pub keys: KeyStore,
    /// What this node publishes about its key.
    pub key: NodeKeyAnnotations,
    /// The WireGuard interface.
    pub ifname: String,
    /// The UAPI socket directory.
    pub uapi_dir: PathBuf,
    /// Data-path workers of the device.
    pub workers: usize,
    /// meshcrypt's routing table.
    pub table: u32,
    /// meshcrypt's rule priority.
    pub rule_priority: u32,
    /// The firewall mark on the device's UDP packets.
    pub fwmark: u32,
    /// Where settings come from.
    pub config: ConfigSource,
    /// The watched ConfigMap as (namespace, name), for Events.
    pub config_ref: Option<(String, String)>,
    /// The settings in force (the last good ones).
    pub settings: Option<Settings>,
    /// The last rejection reported, so each is reported once.
    pub rejected: Option<Vec<KeyError>>,
    /// The device, while the mesh is on.
    pub device: DeviceSlot,
    /// The Kubernetes client (to publish and withdraw the key).
    pub client: kube::Client,
    /// Every Node, after the first complete list.
    pub nodes: Store<Node>,
    /// Every Pod, once pod-IP mode has been asked for.
    pub pods: Option<Store<Pod>>,
    /// Wakes the loop (handed to watchers started later).
    pub wake: Arc<tokio::sync::Notify>,
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
    /// The live log filter.
    pub log: LogControl,
    /// Passes run so far.
    pub passes: u64,
    /// The state directory (the key files, the last known peer set).
    pub state_dir: PathBuf,
    /// The last known peer set as saved (or restored).
    pub last_known: Option<LastKnown>,
}

impl Reconciler {
    /// Before the first complete Node list: programs the fail-closed floor from this node's own
    /// Node alone (its pod prefixes stay local, everything else in the pod network is dropped), so
    /// that no pod packet leaves in plaintext while the agent waits for the full list. No peers
    /// are configured and readiness is not claimed.
    pub async fn bootstrap(&mut self, local: &Node) -> Result<(), AgentError> {
        let Some(settings) = self.current_settings().await else { return Ok(()) };
        if !settings.enabled {
            return Ok(());
        }
        let span = tracing::info_span!("bootstrap", node = %self.node);
        let now = jiff::Timestamp::now();
        self.reconcile(vec![NodeView::from_node(local)], &settings, now).instrument(span).await.map(|_| ())
    }

    /// Runs one pass over the Node store inside its own span, recording the outcome; true if it
    /// succeeded.
    pub async fn pass(&mut self) -> bool {
        self.passes += 1;
        let span = tracing::info_span!("reconcile", pass = self.passes, node = %self.node);
        let Some(settings) = self.current_settings().instrument(span.clone()).await else {
            self.health.tick();
            return false;
        };
        let result = if settings.enabled {
            let nodes: Vec<NodeView> = self.nodes.state().iter().map(|n| NodeView::from_node(n)).collect();
            self.reconcile(nodes, &settings, jiff::Timestamp::now()).instrument(span.clone()).await
        } else {
            self.disable().instrument(span.clone()).await
        };
        self.metrics.reconciles.inc();
        self.health.tick();
        match result {
            Ok(summary) => {
                let reason = if settings.enabled {
                    format!("mesh programmed: {} peers configured, handshakes initiated", summary.peers)
                } else {
                    "mesh switched off by its ConfigMap".to_owned()
                };
                let first = !self.health.set_ready(true, reason);
                self.metrics.ready.set(1);
                span.in_scope(|| {
                    tracing::debug!(
                        peers = summary.peers,
                        device_ops = summary.device_ops,
                        kernel_ops = summary.kernel_ops,
                        "reconciled"
                    )
                });
                if first && settings.enabled {
                    tracing::info!(peers = summary.peers, "mesh programmed: device and routes in place");
                    let note = format!("{} peers; key {}", summary.peers, self.key.public_key.fingerprint());
                    self.events.normal(&self.node, "MeshReady", &note).await;
                }
                if settings.enabled {
                    self.untaint().instrument(span.clone()).await;
                }
                true
            }
            Err(e) => {
                self.metrics.reconcile_errors.inc();
                self.health.set_ready(false, format!("the last reconcile pass failed: {e}"));
                self.metrics.ready.set(0);
                span.in_scope(|| tracing::warn!(error = %e, "reconcile failed; the last programmed state stays in force"));
                false
            }
        }
    }

    /// The settings to act on: the ConfigMap's if valid (reporting what changed), else the last
    /// good ones (reporting the rejection once). `None` before any valid settings exist.
    async fn current_settings(&mut self) -> Option<Settings> {
        let reading = match self.config.read() {
            Reading::Valid(settings) => match self.underlay_misfit(&settings).await {
                Some(error) => Reading::Rejected(vec![error]),
                None => Reading::Valid(settings),
            },
            rejected => rejected,
        };
        match reading {
            Reading::Valid(settings) => {
                self.rejected = None;
                if self.settings.as_ref() != Some(&settings) {
                    if let Some(previous) = &self.settings {
                        tracing::info!(?previous, current = ?settings, "configuration changed");
                        self.config_event(EventType::Normal, "ConfigApplied", "configuration applied").await;
                    }
                    self.log.set(&settings.log_level);
                    self.settings = Some(settings);
                }
            }
            Reading::Rejected(errors) => {
                if self.rejected.as_ref() != Some(&errors) {
                    for e in &errors {
                        tracing::warn!(key = %e.key, reason = %e.reason, "configuration rejected; the last good configuration stays in force");
                    }
                    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    let note = format!("rejected, last good configuration kept: {}", listed.join("; "));
                    self.config_event(EventType::Warning, "ConfigRejected", &note).await;
                    self.rejected = Some(errors);
                }
            }
        }
        self.settings.clone()
    }

    /// Why `settings` do not fit this node's underlay (a fixed `mtu` it cannot carry), if they do
    /// not; `None` when they fit or the underlay is not known yet (the pass then reports it).
    async fn underlay_misfit(&self, settings: &Settings) -> Option<KeyError> {
        if !matches!(settings.mtu, Mtu::Fixed(_)) {
            return None;
        }
        let local = self.nodes.get(&ObjectRef::new(&self.node))?;
        let ip = *NodeView::from_node(&local).internal_ips.first()?;
        let underlay = self.netlink.mtu_of_address(ip).await.ok().flatten()?;
        settings.check_underlay(underlay, ip.is_ipv6()).err()
    }

    /// Removes this node's startup taint once the mesh is in place (a failure is a WARN; the next
    /// pass tries again).
    async fn untaint(&self) {
        let Some(local) = self.nodes.get(&ObjectRef::new(&self.node)) else { return };
        if let Err(e) = remove_startup_taint(&self.client, &local).await {
            tracing::warn!(error = %e, taint = STARTUP_TAINT, "cannot remove the startup taint yet");
        }
    }

    async fn config_event(&self, type_: EventType, reason: &str, note: &str) {
        if let Some((namespace, name)) = &self.config_ref {
            self.events.publish(configmap_ref(namespace, name), type_, reason, note).await;
        }
    }

    fn device(&self) -> Option<Arc<Device>> {
        self.device.read().ok().and_then(|d| d.clone())
    }

    /// The device, created (or moved to the configured port) as needed. A link that already has
    /// the device's name is taken over only if it is a TUN no other process holds (one left by a
    /// crashed agent); anything else is an error that names it and what to do.
    async fn ensure_device(&mut self, settings: &Settings) -> Result<Arc<Device>, AgentError> {
        if let Some(device) = self.device() {
            if device.listen_port() != settings.port {
                tracing::info!(from = device.listen_port(), to = settings.port, "moving the mesh port");
                device.apply(&[Change::SetListenPort(settings.port)])?;
            }
            return Ok(device);
        }
        if let Some(link) = self.netlink.observe_link(&self.ifname).await?
            && link.kind.as_deref() != Some("tun")
        {
            return Err(AgentError::ForeignLink {
                ifname: self.ifname.clone(),
                kind: link.kind.unwrap_or_else(|| "unknown".into()),
            });
        }
        let record =
            self.keys.load()?.ok_or_else(|| AgentError::Config("the node key file vanished".into()))?;
        self.key = record.annotations();
        let mut config = DeviceConfig::new(self.ifname.clone(), record.key);
        config.listen_port = settings.port;
        config.uapi_dir = self.uapi_dir.clone();
        config.fwmark = Some(self.fwmark);
        config.workers = self.workers;
        // The routing step sets the tunnel MTU for this node's underlay, in this same pass.
        config.mtu = None;
        let device = Arc::new(Device::create(config).map_err(|e| {
            if e.io_error().and_then(std::io::Error::raw_os_error) == Some(nix::errno::Errno::EBUSY as i32) {
                AgentError::TunBusy { ifname: self.ifname.clone(), source: e }
            } else {
                e.into()
            }
        })?);
        tracing::info!(interface = %self.ifname, port = settings.port, "wireguard device up");
        if let Ok(mut slot) = self.device.write() {
            *slot = Some(device.clone());
        }
        Ok(device)
    }

    async fn reconcile(
        &mut self,
        nodes: Vec<NodeView>,
        settings: &Settings,
        now: jiff::Timestamp,
    ) -> Result<Summary, AgentError> {
        let local = nodes.iter().find(|n| n.name == self.node).ok_or_else(|| AgentError::LocalNode {
            node: self.node.clone(),
            reason: "not found in the API".into(),
        })?;
        let underlay_ip = *local.internal_ips.first().ok_or_else(|| AgentError::LocalNode {
            node: self.node.clone(),
            reason: "no InternalIP in status.addresses".into(),
        })?;
        let published = NodeKeyAnnotations::parse(&local.annotations).ok().flatten();
        let (allowed_ips, pods) = match settings.addressing {
            Addressing::PodCidr => (AllowedIpsFrom::PodCidrs, Vec::new()),
            Addressing::PodIp => (AllowedIpsFrom::PodIps, self.pod_views().await?),
        };
        let local_node = LocalNode { name: self.node.clone(), public_key: self.key.public_key, underlay_ip };
        let mut peers =
            desired_peers(&nodes, &pods, &local_node, &MeshConfig { port: settings.port, allowed_ips });
        self.events.problems(&peers.problems).await;
        self.record_problems(&peers.problems);
        if settings.addressing == Addressing::PodIp {
            // Pods the CNI wired here that the API has not shown yet are delivered locally too.
            let routes = self.netlink.host_routes(MAIN_TABLE).await?;
            let underlay = self.netlink.index_of_address(underlay_ip).await?;
            let not_local: Vec<u32> =
                underlay.into_iter().chain(self.device().map(|d| d.ifindex())).collect();
            let wired = wired_local_pods(&routes, &settings.pod_networks, &peers.local_prefixes, &not_local);
            if !wired.is_empty() {
                tracing::debug!(?wired, "pods wired on this node that the API has not shown yet");
                peers.local_prefixes.extend(wired);
                peers.local_prefixes.sort();
            }
        }

        let mtu = match settings.mtu {
            Mtu::Fixed(mtu) => mtu,
            Mtu::Auto => {
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
        let node_ips: Vec<std::net::IpAddr> =
            nodes.iter().flat_map(|n| n.internal_ips.iter().copied()).collect();
        let node = self.node.clone();
        let mesh = Snapshot {
            node: &node,
            port: settings.port,
            mtu,
            strict: settings.strict,
            host_encryption: settings.host_encryption,
            pod_networks: &settings.pod_networks,
            node_ips: &node_ips,
        };
        let device = match self.ensure_device(settings).await {
            Ok(device) => device,
            Err(e) => {
                // No device: still fail closed. The rules and the blackhole floor need no device.
                let desired = meshcrypt_routing::desired::build(&routing_input(
                    &self.routing_settings(mesh),
                    mtu,
                    &node_ips,
                    &peers,
                ));
                self.converge(&desired, None).await?;
                return Err(e);
            }
        };
        let own_key_changed = self.sync_key(&device, settings, published.as_ref(), now).await?;
        // The published key must be the device's key before any peer relies on it.
        if !own_key_changed && published.as_ref() != Some(&self.key) {
            publish_key(&self.client, &self.node, &self.key).await?;
        }
        let (device_ops, kernel_ops) = self.program(&device, &peers, own_key_changed, mesh).await?;
        self.remember(LastKnown::of(mesh, &peers, now));
        Ok(Summary { peers: peers.peers.len(), device_ops, kernel_ops })
    }

    /// Programs `device` with `peers` (starting handshakes with the new ones, or with all of them
    /// when this node's key changed) and the kernel with the routes and rules `mesh` asks for.
    /// Returns how many device and kernel operations that took.
    async fn program(
        &mut self,
        device: &Device,
        peers: &PeerSet,
        own_key_changed: bool,
        mesh: Snapshot<'_>,
    ) -> Result<(usize, usize), AgentError> {
        let ops = peer_ops(peers, &device.observe());
        if !ops.is_empty() {
            tracing::info!(?ops, "updating wireguard peers");
            device.apply(&to_changes(&ops))?;
        }
        let targets = handshake_targets(peers, &ops, own_key_changed);
        if !targets.is_empty() {
            let sent = device.initiate_handshakes(&targets);
            tracing::info!(peers = targets.len(), sent, "handshakes initiated");
        }
        if let Ok(mut names) = self.names.lock() {
            *names = peers.peers.values().map(|p| (p.public_key, p.node.clone())).collect();
        }
        let desired = meshcrypt_routing::desired::build(&routing_input(
            &self.routing_settings(mesh),
            mesh.mtu,
            mesh.node_ips,
            peers,
        ));
        let kernel_ops = self.converge(&desired, Some(device.ifindex())).await?;
        Ok((ops.len(), kernel_ops))
    }

    /// The routing crate's settings for `mesh`.
    fn routing_settings(&self, mesh: Snapshot<'_>) -> RoutingSettings {
        RoutingSettings {
            ifname: self.ifname.clone(),
            table: self.table,
            rule_priority: self.rule_priority,
            pod_networks: mesh.pod_networks.to_vec(),
            strict: mesh.strict,
            host_encryption: mesh.host_encryption,
            fwmark: self.fwmark,
        }
    }

    /// Programs the device and the kernel from the last known peer set, before the API server
    /// has answered (an agent restarted during a control-plane outage carries traffic at once).
    /// Readiness stays false, with the reason, until a pass with the API server's list succeeds;
    /// that pass replaces everything restored here. Returns the number of peers restored.
    pub async fn restore(&mut self, last: LastKnown) -> Result<usize, AgentError> {
        let peers = last.peer_set().map_err(|e| AgentError::Config(format!("last known peer set: {e}")))?;
        let settings = Settings {
            port: last.port,
            mtu: Mtu::Fixed(last.mtu),
            strict: last.strict,
            host_encryption: last.host_encryption,
            pod_networks: last.pod_networks.clone(),
            ..Settings::default()
        };
        let device = self.ensure_device(&settings).await?;
        let mesh = Snapshot {
            node: &last.node,
            port: last.port,
            mtu: last.mtu,
            strict: last.strict,
            host_encryption: last.host_encryption,
            pod_networks: &last.pod_networks,
            node_ips: &last.node_ips,
        };
        self.program(&device, &peers, false, mesh).await?;
        self.health.set_ready(
            false,
            format!(
                "carrying traffic from the last known peer set (saved {}); waiting for the API server",
                last.saved
            ),
        );
        self.last_known = Some(last);
        Ok(peers.peers.len())
    }

    /// Saves `snapshot` as the last known peer set when it differs from the one saved, at most
    /// every [`last_known::SAVE_EVERY`] (a later pass saves what a skipped one did not). A failure
    /// to save is a WARN, never a failed pass.
    fn remember(&mut self, snapshot: LastKnown) {
        if !last_known::save_due(self.last_known.as_ref(), &snapshot) {
            return;
        }
        let path = last_known::path(&self.state_dir);
        match write_private(&self.state_dir, &path, snapshot.encode().as_bytes()) {
            Ok(()) => self.last_known = Some(snapshot),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot save the last known peer set")
            }
        }
    }

    /// Every Pod holding pod-network addresses; starts the Pod watcher the first time and waits
    /// for its first complete list (so no address is pruned before it is known).
    async fn pod_views(&mut self) -> Result<Vec<PodView>, AgentError> {
        let store = match &self.pods {
            Some(store) => store.clone(),
            None => {
                tracing::info!("pod-IP mode: watching Pods");
                let store = super::pods::watch(self.client.clone(), self.wake.clone());
                self.pods = Some(store.clone());
                store
            }
        };
        store.wait_until_ready().await.map_err(|e| AgentError::Config(format!("pod store: {e}")))?;
        Ok(store.state().iter().filter_map(|p| PodView::from_pod(p)).collect())
    }

    /// Brings the node key up to date, publishing before using: a scheduled rotation that is due
    /// (at `now`) is staged; a staged key (scheduled, or `meshcrypt keys rotate`) is published on
    /// this Node first, and the device switches to it only once that succeeded, so peers can
    /// always learn the key the device runs. While the API cannot take the publish the rotation
    /// stays pending (`meshcrypt_key_rotation_pending` 1, one WARN) and the old key keeps
    /// working. A key in use that changed on disk (restored from a backup) is followed. Returns
    /// true when the device's key changed (every session restarts: handshakes follow).
    async fn sync_key(
        &mut self,
        device: &Device,
        settings: &Settings,
        published: Option<&NodeKeyAnnotations>,
        now: jiff::Timestamp,
    ) -> Result<bool, AgentError> {
        if rotation::due(self.key.created, settings.key_rotation_interval, now) {
            tracing::info!(created = %self.key.created, "scheduled key rotation due");
            self.keys.stage_rotation()?;
        }
        if let Some(pending) = self.keys.pending()? {
            let next = pending.annotations();
            if published != Some(&next)
                && let Err(e) = publish_key(&self.client, &self.node, &next).await
            {
                if self.metrics.key_rotation_pending.set(1) == 0 {
                    tracing::warn!(error = %e, fingerprint = %next.public_key.fingerprint(), epoch = next.epoch, "key rotation pending: the new key cannot be published yet; the current key stays in use");
                }
                return Ok(false);
            }
            tracing::info!(from = %self.key.public_key.fingerprint(), to = %next.public_key.fingerprint(), epoch = next.epoch, "switching to the new node key, now published");
            device.apply(&[Change::SetPrivateKey(pending.key)])?;
            self.keys.promote_pending()?;
            self.key = next;
            self.metrics.key_rotation_pending.set(0);
            let note = format!("epoch {}, key {}", self.key.epoch, self.key.public_key.fingerprint());
            self.events.normal(&self.node, "KeyRotated", &note).await;
            return Ok(true);
        }
        let record =
            self.keys.load()?.ok_or_else(|| AgentError::Config("the node key file vanished".into()))?;
        let stored = record.annotations();
        if stored != self.key {
            tracing::info!(from = %self.key.public_key.fingerprint(), to = %stored.public_key.fingerprint(), epoch = stored.epoch, "the key file changed: switching to it");
            device.apply(&[Change::SetPrivateKey(record.key)])?;
            self.key = stored;
            return Ok(true);
        }
        Ok(false)
    }

    /// Brings the kernel to `desired` through the device with interface index `device` (none: no
    /// device, the rules and floors only); returns how many operations that took. A link with the
    /// device's name but another index (a leftover, or ours deleted and the name reused) is never
    /// routed through or changed.
    async fn converge(&self, desired: &DesiredState, device: Option<u32>) -> Result<usize, AgentError> {
        let mut observed = self.netlink.observe(&self.ifname, self.table, self.rule_priority).await?;
        if observed.link.as_ref().is_some_and(|l| Some(l.index) != device) {
            observed.link = None;
        }
        let ops = plan(desired, &observed);
        if !ops.is_empty() {
            let listed: Vec<String> = ops.iter().map(ToString::to_string).collect();
            tracing::info!(ops = ?listed, "updating routes and rules");
            let index = observed.link.as_ref().map(|l| l.index);
            self.netlink.apply(index, self.table, &ops).await?;
        }
        if device.is_some() && observed.link.is_none() {
            // Deleted from outside (`ip link del`): the device behind it is dead. Dropping it
            // lets the next pass create a new one; until then the fail-closed floor drops.
            if let Ok(mut slot) = self.device.write()
                && slot.take().is_some()
            {
                tracing::warn!(interface = %self.ifname, "the WireGuard interface was deleted; recreating the device");
            }
            return Err(AgentError::LocalNode {
                node: self.node.clone(),
                reason: "the WireGuard interface is gone".into(),
            });
        }
        Ok(ops.len())
    }

    /// The mesh switched off: the device, every route and rule, and the published key go.
    async fn disable(&mut self) -> Result<Summary, AgentError> {
        let had_device = self.device.write().ok().and_then(|mut d| d.take()).is_some();
        let empty = DesiredState {
            link: LinkSpec { name: self.ifname.clone(), mtu: 0, addresses: Default::default() },
            table: self.table,
            routes: Default::default(),
            rules: Default::default(),
        };
        let kernel_ops = self.converge(&empty, None).await?;
        // Switched off: nothing may come back from the last known peer set at the next start.
        let saved = last_known::path(&self.state_dir);
        match std::fs::remove_file(&saved) {
            Ok(()) => self.last_known = None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.last_known = None,
            Err(source) => {
                return Err(AgentError::Io { what: format!("remove {}", saved.display()), source });
            }
        }
        let nodes = self.nodes.state();
        let published = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.node.as_str()))
            .and_then(|n| NodeKeyAnnotations::parse(&NodeView::from_node(n).annotations).ok().flatten())
            .is_some();
        if published {
            withdraw_key(&self.client, &self.node).await?;
        }
        if had_device || kernel_ops > 0 || published {
            tracing::info!(
                kernel_ops,
                "mesh switched off: device, routes, rules and the published key removed"
            );
            self.events.normal(&self.node, "MeshDisabled", "meshcrypt switched off by its ConfigMap").await;
            self.names.lock().map(|mut n| n.clear()).ok();
        }
        Ok(Summary { peers: 0, device_ops: 0, kernel_ops })
    }

    fn record_problems(&self, problems: &[NodeProblem]) {
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
