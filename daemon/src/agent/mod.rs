//! `meshcrypt agent`: the per-node daemon. Loads the key, watches its ConfigMap and the Nodes, and
//! runs the one reconcile loop that owns all state (device, routes, rules, published key).
//!
//! A pass (`reconcile`): `gather` reads, `decide` plans (pure; with `peer_ops`, `routing_input`
//! and `last_known`'s rules), `execute` applies; `state` is the loop's memory, `io` its handles.
//! Sources: `config_source` (the ConfigMap), `nodes` (or `mesh_peers`), `pods`, `remotes` (peer
//! clusters' nodes), `watch` (the reflector they share).
//! Edges: `publish` (the key and the startup taint on the Node), `events`, `http` (probes and
//! `/metrics`), `metrics`, `kube_client`.

mod abridged;
mod config_source;
mod decide;
pub(crate) mod device_view;
mod events;
mod execute;
mod gather;
mod heap;
pub(crate) mod http;
mod io;
pub(crate) mod kube_client;
mod last_known;
mod mesh_peers;
pub(crate) mod metrics;
pub(crate) mod node_views;
pub(crate) mod nodes;
#[cfg(test)]
mod pass_tests;
mod peer_ops;
pub(crate) mod pods;
mod preshared;
mod publish;
mod reconcile;
mod remotes;
mod report;
mod routing_input;
pub mod slim_node;
pub mod slim_pod;
mod state;
pub(crate) mod watch;

pub use last_known::Refused;
pub use publish::FIELD_MANAGER;

use std::sync::Arc;
use std::time::Duration;

use meshcrypt_dataplane::Native;
use meshcrypt_keyexchange::KeyStore;
use meshcrypt_routing::Netlink;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::cli::{AgentArgs, PeerSource};
use crate::config::settings::{Mtu, Settings};
use crate::error::AgentError;
use crate::logging::LogControl;
use slim_node::SlimNode;

/// The settings the flags describe; the ConfigMap's keys replace them.
fn flag_settings(args: &AgentArgs, log: &LogControl) -> Settings {
    Settings {
        strict: args.strict,
        backend: args.backend,
        port: args.port,
        mtu: args.mtu.map(Mtu::Fixed).unwrap_or(Mtu::Auto),
        pod_networks: args.pod_networks.clone(),
        log_level: log.current(),
        ..Settings::default()
    }
}

/// How long the agent waits at start for the first RemoteCluster list before going on without it.
const REMOTES_FIRST_LIST: Duration = Duration::from_secs(5);

/// The first retry after a failed pass.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// How long the loop waits for a change before its next pass: `resync` after a successful pass;
/// after `failures` failed passes in a row, 250 ms doubling each time up to `resync`, so that a
/// transient failure (the API, the kernel) is retried at once and a lasting one costs little.
fn next_pass_after(failures: u32, resync: Duration) -> Duration {
    match failures {
        0 => resync,
        n => FIRST_RETRY.saturating_mul(1 << (n - 1).min(16)).min(resync),
    }
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// It serves its node's status on a Unix socket in the state directory (`meshcrypt status`) and
/// reports it on its MeshNode (`meshcrypt status --cluster`); stopping, it reports that.
///
/// On exit a userspace device goes away with the process, and with it the routes through it; the
/// policy rules and the blackhole floor stay, so pod traffic is dropped, not sent in plaintext,
/// until the agent is back. A kernel device stays with its peers, sessions and routes, so traffic
/// goes on; the next run adopts it.
pub async fn run(args: AgentArgs, log: LogControl) -> Result<(), AgentError> {
    let keys = KeyStore::open(&args.state.state_dir)?;
    let (record, created) = keys.load_or_create()?;
    let key = record.annotations();
    drop(record);
    tracing::info!(node = %args.node_name, fingerprint = %key.public_key.fingerprint(), epoch = key.epoch, new = created, "node key ready");

    let netlink = Netlink::connect()?;
    let client = kube_client::client(args.kubeconfig.as_deref()).await?;
    let health = Arc::new(http::Health::default());
    let loop_metrics = Arc::new(metrics::LoopMetrics::default());
    let names = metrics::PeerNames::default();
    let device = metrics::DeviceSlot::default();
    let handshakes = device_view::Handshakes::default();
    let mut registry = metrics::registry(&loop_metrics, device.clone(), names.clone(), handshakes.clone());
    // Every signal's series exists from the start at 0: `increase()` sees a first signal (a series
    // born at 1 shows no increase), and a one-off such as DuplicateKey still alerts.
    for reason in crate::flows::SIGNAL_REASONS {
        let _created = loop_metrics.signals.get_or_create(&vec![("reason", (*reason).to_owned())]);
    }
    let flow_metrics = Arc::new(crate::flows::FlowMetrics::default());
    flow_metrics.register(&mut registry);
    let resync = Duration::from_secs(args.resync_seconds.max(1));
    http::serve(args.metrics_addr, health.clone(), registry, resync * 6).await?;

    let wake = Arc::new(Notify::new());
    let base = flag_settings(&args, &log);
    let config = match &args.config_map {
        Some(name) => config_source::ConfigSource::watch(
            client.clone(),
            &args.config_namespace,
            name,
            base,
            wake.clone(),
        ),
        None => config_source::ConfigSource::flags_only(base),
    };
    let own_node = nodes::watch_own(client.clone(), wake.clone(), &args.node_name);
    let nodes = match args.peer_source {
        PeerSource::Nodes => nodes::watch(client.clone(), wake.clone()),
        PeerSource::MeshPeers => mesh_peers::watch(client.clone(), wake.clone()),
    };
    tracing::info!(source = ?args.peer_source, "learning the other nodes");
    let cluster_pods = crate::flows::ClusterPods::default();
    let (flow_settings, flow_settings_rx) = tokio::sync::watch::channel(Default::default());
    let (signals, signals_rx) = tokio::sync::mpsc::channel(crate::flows::SIGNAL_QUEUE);
    let exporter = crate::flows::Exporter {
        device: device.clone(),
        names: names.clone(),
        nodes: nodes.clone(),
        cluster_pods: cluster_pods.clone(),
        client: client.clone(),
        node: args.node_name.clone(),
        sink: crate::flows::Sink::open(
            &args.flow_log,
            args.flow_log_max_bytes,
            &args.node_name,
            args.flow_log_region.as_deref(),
            args.flow_log_endpoint_url.as_deref(),
        )
        .await?,
        settings: flow_settings_rx,
        signals: signals_rx,
        metrics: flow_metrics,
    };
    tokio::spawn(exporter.run());
    let remotes = remotes::watch(client.clone(), wake.clone());
    // A pod wired (or unwired) here by the CNI wakes the loop: local delivery follows the kernel.
    let on_route = wake.clone();
    if let Err(e) = Netlink::watch_host_routes(move || on_route.notify_one()) {
        tracing::warn!(error = %e, "cannot watch the kernel's routes; pods wired here wait for the next pass");
    }
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|source| AgentError::Io { what: "install the SIGTERM handler".into(), source })?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|source| AgentError::Io { what: "install the SIGINT handler".into(), source })?;

    let params = decide::Params {
        node: args.node_name.clone(),
        ifname: args.interface.clone(),
        table: args.table,
        rule_priority: args.rule_priority,
        fwmark: args.fwmark,
        config_map: args.config_map.clone().map(|name| (args.config_namespace.clone(), name)),
        no_handshake_after: jiff::SignedDuration::from_secs(i64::from(args.no_handshake_after)),
    };
    let io = io::Io {
        events: events::EventReporter::new(client.clone(), &args.node_name, nodes.clone()),
        client,
        nodes,
        own_node,
        peer_source: args.peer_source,
        node_views: Default::default(),
        remotes,
        pods: cluster_pods.clone(),
        wake: wake.clone(),
        config,
        kernel: netlink,
        backend: Native,
        kernel_wireguard: meshcrypt_dataplane::Kernel::available(),
        device,
        uapi_dir: args.uapi_dir.clone(),
        psk_dir: args.psk_dir.clone(),
        workers: usize::from(args.dataplane_workers),
        keys,
        state_dir: args.state.state_dir.clone(),
        health,
        metrics: loop_metrics,
        names,
        handshakes,
        status_view: Arc::default(),
        log,
        flow_settings,
        signals,
    };
    let mut reconciler = reconcile::Reconciler {
        params,
        io,
        state: state::LoopState::new(key),
        peer_index: Default::default(),
        report_interval: Duration::from_secs(args.status_interval),
    };
    let socket = crate::status::socket_path(&args.state.state_dir);
    crate::status::serve(&socket, reconciler.status_source())?;

    // The last known peer set carries traffic at once, before (or without) the API server; the
    // first complete list replaces it. It also puts the fail-closed floor in place.
    let restored = match last_known::load(&args.state.state_dir, &args.node_name) {
        Ok(Some(last)) => {
            let saved = last.saved;
            match reconciler.restore(last, jiff::Timestamp::now()).await {
                Ok(peers) => {
                    tracing::info!(peers, %saved, "restored the last known peer set; the API server's list will replace it");
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot restore the last known peer set");
                    false
                }
            }
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the saved last known peer set");
            false
        }
    };

    // Fail closed from the start: once the settings are read, the floor goes in as soon as this
    // node's own Node is known, while the full list (and with it every peer) is on its way.
    let wait_for_list = async {
        reconciler.io.config.ready().await?;
        let api: kube::Api<SlimNode> = kube::Api::all(reconciler.io.client.clone());
        match api.get(&args.node_name).await {
            // Restored peers stay until the complete list: the floor is already in place.
            Ok(_) if restored => {}
            Ok(local) => match reconciler.bootstrap(&local, jiff::Timestamp::now()).await {
                Ok(()) => tracing::info!(
                    "settings read; fail-closed floor in place; waiting for the complete node list"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot program the fail-closed floor yet"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read this node's Node yet"),
        }
        for (what, store) in [("nodes", &reconciler.io.nodes), ("own node", &reconciler.io.own_node)] {
            store.wait_until_ready().await.map_err(|source| AgentError::StoreClosed { what, source })?;
        }
        // Peer clusters' nodes: their first list, unless the CRD is not installed (a single
        // cluster), which must not keep the mesh from starting.
        if tokio::time::timeout(REMOTES_FIRST_LIST, reconciler.io.remotes.wait_until_ready()).await.is_err() {
            tracing::warn!(
                "no RemoteCluster list yet (is the CRD installed?); going on without peer clusters"
            );
        }
        Ok::<(), AgentError>(())
    };
    tokio::select! {
        result = wait_for_list => result?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    }
    tracing::info!(nodes = reconciler.io.nodes.state().len(), "first complete node list received");

    let mut failures = 0u32;
    loop {
        // SIGTERM cancels a pass where it waits (on the API server or the kernel). Every step of
        // a pass leaves the node fail-closed (the plan's order), so stopping between two is safe.
        tokio::select! {
            ok = reconciler.pass(jiff::Timestamp::now()) => {
                failures = if ok { 0 } else { failures.saturating_add(1) };
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(next_pass_after(failures, resync)) => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    match reconciler.io.device().map(|d| d.kind()) {
        Some(meshcrypt_dataplane::BackendKind::Kernel) => tracing::info!(
            "stopping: the kernel device, its peers, sessions and routes stay; the data path runs on"
        ),
        _ => tracing::info!(
            "stopping: routes through the device go with it; rules and the blackhole floor stay (fail closed)"
        ),
    }
    reconciler.report_stopped(jiff::Timestamp::now()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pass_after_table() {
        let resync = Duration::from_secs(10);
        let ms = Duration::from_millis;
        for (failures, want) in [
            (0, resync),
            (1, ms(250)),
            (2, ms(500)),
            (3, ms(1000)),
            (6, ms(8000)),
            (7, resync),
            (u32::MAX, resync),
        ] {
            assert_eq!(next_pass_after(failures, resync), want, "{failures} failures");
        }
    }
}
