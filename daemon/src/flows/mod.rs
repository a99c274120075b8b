//! Flow records (docs/flows.md): every `flow-interval`, the flows the device counted, named with
//! the pods, namespaces, labels and nodes the agent knows, written as JSON lines
//! (`meshcrypt.dev/flow/v1`) for a log shipper.
//!
//! The device counts (`meshcrypt_dataplane::Flow`); the reconcile pass turns its accounting on
//! and off with the settings; this exporter drains it on its own clock, so a slow write never
//! holds up a pass. Each drain: take the flows, index the stores (`directory`, pure), build the
//! records (`record`, pure, time passed in), write them (`sink`). This node's Pods, with their
//! labels, come from a watch of `spec.nodeName=<node>` started when records are first asked for;
//! a peer's Pods are named only in pod-IP mode (where the agent watches every Pod, without labels),
//! so a flow between two nodes is named in full by the two nodes' records together.

mod cloudwatch;
mod directory;
mod record;
mod sink;

pub use directory::Directory;
pub use record::{SIGNAL_REASONS, SignalRecord, Window, records};
pub use sink::Sink;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc, watch};

use crate::agent::metrics::{DeviceSlot, PeerNames};
use crate::agent::slim_node::SlimNode;
use crate::agent::slim_pod::SlimPod;
use crate::config::settings::FlowSettings;

/// The Pod store of pod-IP mode, once the loop has started it.
pub type ClusterPods = Arc<OnceLock<Store<SlimPod>>>;

/// The exporter's counters (`meshcrypt_flow_*`).
#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// Flow records written.
    pub records: Counter,
    /// Packets of flows the table had no room for.
    pub overflow_packets: Counter,
    /// Drains whose records could not be written (the records are lost; the error is logged).
    pub write_errors: Counter,
    /// Signal lines written.
    pub signals: Counter,
}

impl FlowMetrics {
    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("meshcrypt_flow_records", "Flow records written", self.records.clone());
        registry.register(
            "meshcrypt_flow_overflow_packets",
            "Packets of flows the node's flow table had no room for (flow-max): counted, not recorded per flow",
            self.overflow_packets.clone(),
        );
        registry.register(
            "meshcrypt_flow_signals",
            "Suspicious-activity signals written to the flow log (each is also a Warning Event)",
            self.signals.clone(),
        );
        registry.register(
            "meshcrypt_flow_write_errors",
            "Drains whose flow records could not be written (that interval's records are lost)",
            self.write_errors.clone(),
        );
    }
}

/// What the exporter reads and where it writes.
pub struct Exporter {
    /// The device, while the mesh is on.
    pub device: DeviceSlot,
    /// Peer keys to node names, as the latest pass left them.
    pub names: PeerNames,
    /// Every Node.
    pub nodes: Store<SlimNode>,
    /// Every Pod, in pod-IP mode.
    pub cluster_pods: ClusterPods,
    /// For this node's Pod watch.
    pub client: kube::Client,
    /// This node.
    pub node: String,
    /// Where records go.
    pub sink: Sink,
    /// The settings in force (from the reconcile pass).
    pub settings: watch::Receiver<FlowSettings>,
    /// Signals raised by the reconcile pass, written as they come while records are on.
    pub signals: mpsc::Receiver<SignalRecord>,
    /// Counters.
    pub metrics: Arc<FlowMetrics>,
}

/// How long until the next drain: the interval while records are on; an hour while off (a drain
/// then only empties what was counted before they were turned off).
fn interval(settings: &FlowSettings) -> Duration {
    if settings.enabled { settings.interval } else { Duration::from_secs(3600) }
}

/// How many signals may wait for the exporter; more are dropped (each is also an Event).
pub const SIGNAL_QUEUE: usize = 256;

impl Exporter {
    /// Runs until the settings' sender goes (the agent stops).
    pub async fn run(mut self) {
        let mut local_pods: Option<Store<SlimPod>> = None;
        let mut since = jiff::Timestamp::now();
        let mut settings = self.settings.borrow_and_update().clone();
        // A deadline, not a sleep per turn: signals arrive in between and must not put the next
        // drain off.
        let mut due = tokio::time::Instant::now() + interval(&settings);
        loop {
            if settings.enabled && local_pods.is_none() {
                local_pods = Some(self.watch_local_pods());
            }
            tokio::select! {
                changed = self.settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Turned on or off, or a new interval: drain what the old settings counted.
                    if settings.enabled {
                        since = self.export(&settings, local_pods.as_ref(), since).await;
                    }
                    settings = self.settings.borrow_and_update().clone();
                    due = tokio::time::Instant::now() + interval(&settings);
                }
                _ = tokio::time::sleep_until(due) => {
                    since = self.export(&settings, local_pods.as_ref(), since).await;
                    due = tokio::time::Instant::now() + interval(&settings);
                }
                Some(signal) = self.signals.recv() => {
                    if settings.enabled {
                        self.write_signal(&signal).await;
                    }
                }
            }
        }
    }

    async fn write_signal(&self, signal: &SignalRecord) {
        let Ok(line) = serde_json::to_string(signal) else { return };
        match self.sink.write(&[line]).await {
            Ok(()) => {
                self.metrics.signals.inc();
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                tracing::warn!(error = %e, reason = %signal.reason, sink = %self.sink, "cannot write a signal to the flow log");
            }
        }
    }

    fn watch_local_pods(&self) -> Store<SlimPod> {
        tracing::info!(node = %self.node, "flow records: watching this node's Pods");
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let api = kube::Api::all(self.client.clone());
        crate::agent::watch::reflect(
            api,
            config,
            "local pods".into(),
            Arc::new(Notify::new()),
            crate::agent::pods::keep_labels,
        )
    }

    /// Drains the device and writes its records; returns the end of the interval written.
    async fn export(
        &self,
        settings: &FlowSettings,
        local_pods: Option<&Store<SlimPod>>,
        since: jiff::Timestamp,
    ) -> jiff::Timestamp {
        let now = jiff::Timestamp::now();
        let Some(device) = self.device.read().ok().and_then(|d| d.clone()) else { return now };
        let harvest = device.take_flows();
        if harvest.flows.is_empty() && harvest.overflow_packets == 0 {
            return now;
        }
        let names = self.names.lock().map(|n| Arc::clone(&n)).unwrap_or_default();
        let cluster = self.cluster_pods.get().map(Store::state).unwrap_or_default();
        let local = local_pods.map(Store::state).unwrap_or_default();
        let nodes = self.nodes.state();
        let dir = Directory::build(
            cluster.iter().chain(&local).map(AsRef::as_ref),
            nodes.iter().map(AsRef::as_ref),
            &names,
            &settings.labels,
        );
        let (flows, overflow) = records(&harvest, &dir, &self.node, Window { start: since, end: now });
        let mut lines: Vec<String> = flows.iter().filter_map(|r| serde_json::to_string(r).ok()).collect();
        lines.extend(overflow.iter().filter_map(|r| serde_json::to_string(r).ok()));
        match self.sink.write(&lines).await {
            Ok(()) => {
                self.metrics.records.inc_by(flows.len() as u64);
                self.metrics.overflow_packets.inc_by(harvest.overflow_packets);
                tracing::debug!(
                    records = flows.len(),
                    overflow_packets = harvest.overflow_packets,
                    "flow records written"
                );
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                tracing::warn!(error = %e, records = flows.len(), sink = %self.sink, "cannot write flow records; this interval's are lost");
            }
        }
        now
    }
}
