//! The agent's IO handles: everything a pass reads from or acts on, apart from the state the loop
//! owns ([`super::state::LoopState`]). The kernel and the WireGuard backend are generic, so tests
//! run the pass against the fakes of the routing and data-plane crates.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::Store;
use meshcrypt_dataplane::{WireGuardBackend, WireGuardDevice};
use meshcrypt_keyexchange::KeyStore;
use meshcrypt_routing::Kernel;
use tokio::sync::Notify;

use super::config_source::ConfigSource;
use super::device_view::Handshakes;
use super::events::EventReporter;
use super::http::Health;
use super::metrics::{DeviceSlot, LoopMetrics, PeerNames};
use super::node_views::NodeViews;
use super::slim_node::SlimNode;
use crate::cli::PeerSource;
use crate::config::settings::FlowSettings;
use crate::flows::{ClusterPods, SignalRecord};
use crate::logging::LogControl;
use crate::remote_cluster::RemoteCluster;
use crate::status::PassView;

/// The handles.
pub struct Io<K: Kernel, B: WireGuardBackend> {
    /// The Kubernetes client (publish and withdraw the key, remove the startup taint, watch Pods).
    pub client: kube::Client,
    /// Every Node, after the first complete list: the Nodes themselves, or with `--peer-source
    /// mesh-peers` every MeshPeer joined with its Node ([`super::mesh_peers`]).
    pub nodes: Store<SlimNode>,
    /// This node's own Node (also in `nodes` when that holds the Nodes themselves).
    pub own_node: Store<SlimNode>,
    /// Where `nodes` comes from.
    pub peer_source: PeerSource,
    /// The Nodes' views, made once per change.
    pub node_views: NodeViews,
    /// Every peer cluster's nodes (RemoteCluster objects).
    pub remotes: Store<RemoteCluster>,
    /// Every Pod, once pod-IP mode has been asked for (shared with the flow records).
    pub pods: ClusterPods,
    /// Wakes the loop (handed to watchers started later).
    pub wake: Arc<Notify>,
    /// Where settings come from.
    pub config: ConfigSource,
    /// The kernel's routing state.
    pub kernel: K,
    /// What creates the WireGuard device.
    pub backend: B,
    /// This node's kernel has WireGuard (read once, at start).
    pub kernel_wireguard: bool,
    /// The device, while the mesh is on (shared with the metrics collector).
    pub device: DeviceSlot,
    /// Where a new device's UAPI socket goes.
    pub uapi_dir: PathBuf,
    /// The peer clusters' pre-shared keys, one file each (see [`super::preshared`]).
    pub psk_dir: PathBuf,
    /// Data-path workers of a new device.
    pub workers: usize,
    /// The key files.
    pub keys: KeyStore,
    /// The state directory (the key files, the last known peer set).
    pub state_dir: PathBuf,
    /// Events.
    pub events: EventReporter,
    /// Probe state.
    pub health: Arc<Health>,
    /// Counters.
    pub metrics: Arc<LoopMetrics>,
    /// Peer names for metric labels.
    pub names: PeerNames,
    /// Each peer's latest handshake, kept past its session (shared with the metrics).
    pub handshakes: Handshakes,
    /// What the latest pass knew, for the status socket.
    pub status_view: Arc<Mutex<PassView>>,
    /// The live log filter.
    pub log: LogControl,
    /// The flow records' settings in force, for the exporter.
    pub flow_settings: tokio::sync::watch::Sender<FlowSettings>,
    /// Signals for the flow log (see [`crate::flows::SignalRecord`]).
    pub signals: tokio::sync::mpsc::Sender<SignalRecord>,
}

impl<K: Kernel, B: WireGuardBackend> Io<K, B> {
    /// The Nodes a pass reads: the store's, this node's own Node from its own watch (with
    /// MeshPeers, the store has this node only once it has written its MeshPeer, and then
    /// without the key its Node publishes, which is the one this agent checks).
    pub fn node_list(&self, node: &str) -> Vec<Arc<SlimNode>> {
        let mut nodes = self.nodes.state();
        if self.peer_source == PeerSource::MeshPeers {
            nodes.retain(|n| n.metadata.name.as_deref() != Some(node));
            nodes.extend(self.local_node(node));
        }
        nodes
    }

    /// This node's own Node, once listed.
    pub fn local_node(&self, node: &str) -> Option<Arc<SlimNode>> {
        self.own_node.get(&kube::runtime::reflector::ObjectRef::new(node))
    }

    /// The device held, if any.
    pub fn device(&self) -> Option<Arc<dyn WireGuardDevice>> {
        self.device.read().ok().and_then(|d| d.clone())
    }
}
