//! Gathering a pass's inputs: every read a pass makes (settings, Nodes, Pods, the key files, the
//! device, the kernel, the pre-shared key files), before any decision and without changing anything on the node (the first
//! pod-IP pass starts the Pod watcher and waits for its first list).

use std::sync::Arc;

use meshcrypt_dataplane::WireGuardBackend;
use meshcrypt_keyexchange::mesh::{PeerSet, PodView};
use meshcrypt_routing::Kernel;

use super::config_source::Reading;
use super::decide::{Inputs, KeyFiles, Params, View};
use super::io::Io;
use super::last_known::LastKnown;
use super::routing_input::MAIN_TABLE;
use super::slim_node::SlimNode;
use super::state::LoopState;
use crate::cli::PeerSource;
use crate::config::settings::Addressing;
use crate::error::AgentError;

/// Where a pass takes its peers from (see [`View`]).
#[derive(Debug, Clone)]
pub enum Source {
    /// The Node store (and the Pod store in pod-IP mode).
    Api,
    /// This node's own Node only (bootstrap).
    LocalOnly(Box<SlimNode>),
    /// A restored snapshot and its checked peers.
    LastKnown(Box<LastKnown>, PeerSet),
}

/// Reads everything a pass decides on, at `now`. Fails when a read the pass cannot do without
/// fails (the kernel, the device, the key files, the Pod store); nothing has changed then.
pub async fn gather<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    params: &Params,
    state: &LoopState,
    source: &Source,
    now: jiff::Timestamp,
) -> Result<Inputs, AgentError> {
    let reading = io.config.read();
    let in_force = match &reading {
        Reading::Valid(settings) => Some(settings),
        Reading::Rejected(_) => state.settings.as_ref(),
    };
    let pod_ip = !matches!(source, Source::LastKnown(..))
        && in_force.is_some_and(|s| s.enabled && s.addressing == Addressing::PodIp);
    let view = match source {
        Source::Api => {
            let listed = io.node_list(&params.node);
            let nodes = io.node_views.refresh(&listed);
            let mut pods = if pod_ip { pod_views(io, &params.node).await? } else { Vec::new() };
            if pod_ip && io.peer_source == PeerSource::MeshPeers {
                pods.extend(io.node_views.offered_pods(&listed));
            }
            let remotes = io.remotes.state().iter().map(|r| r.view()).collect();
            View::Complete { nodes, pods, remotes }
        }
        Source::LocalOnly(node) => View::LocalOnly(node.view()),
        Source::LastKnown(last, peers) => View::LastKnown { last: (**last).clone(), peers: peers.clone() },
    };
    let underlay_ip = match &view {
        View::Complete { nodes, .. } => {
            nodes.iter().find(|n| n.name == params.node).and_then(|n| n.internal_ips.first().copied())
        }
        View::LocalOnly(local) => local.internal_ips.first().copied(),
        // A restored snapshot runs with its saved (fixed) MTU; it needs no underlay lookup.
        View::LastKnown { .. } => None,
    };
    let (underlay_mtu, underlay_index) = match underlay_ip {
        Some(ip) => (io.kernel.mtu_of_address(ip).await?, io.kernel.index_of_address(ip).await?),
        None => (None, None),
    };
    let host_routes = if pod_ip { io.kernel.host_routes(MAIN_TABLE).await? } else { Vec::new() };
    // The records hold the private keys: only their public annotations leave this block, and
    // the records are zeroized as they drop.
    let key_files = KeyFiles {
        current: io.keys.load()?.map(|r| r.annotations()),
        pending: io.keys.pending()?.map(|r| r.annotations()),
    };
    let device = match io.device() {
        Some(device) => Some(device.observe()?),
        None => None,
    };
    let handshakes = device.as_ref().map(|d| io.handshakes.observe(d)).unwrap_or_default();
    let kernel = io.kernel.observe(&params.ifname, params.table, params.rule_priority).await?;
    let preshared_keys = super::preshared::read_dir(&io.psk_dir);
    Ok(Inputs {
        now,
        reading,
        view,
        key_files,
        device,
        kernel_wireguard: io.kernel_wireguard,
        kernel,
        underlay_mtu,
        underlay_index,
        host_routes,
        preshared_keys,
        handshakes,
    })
}

/// Every Pod holding pod-network addresses (with MeshPeers: this node's), as the views made when
/// each Pod arrived; starts the Pod watcher the first time and waits for its first complete list
/// (so no address is pruned before it is known).
async fn pod_views<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    node: &str,
) -> Result<Vec<Arc<PodView>>, AgentError> {
    let store = io
        .pods
        .get_or_init(|| match io.peer_source {
            PeerSource::Nodes => {
                tracing::info!("pod-IP mode: watching Pods");
                super::pods::watch(io.client.clone(), io.wake.clone())
            }
            PeerSource::MeshPeers => {
                tracing::info!("pod-IP mode: watching this node's Pods; the others' come on MeshPeers");
                super::pods::watch_own(io.client.clone(), io.wake.clone(), node)
            }
        })
        .clone();
    store.wait_until_ready().await.map_err(|source| AgentError::StoreClosed { what: "pods", source })?;
    Ok(store.state().iter().filter_map(|p| p.view.clone()).collect())
}
