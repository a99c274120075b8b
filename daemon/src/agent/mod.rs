//! `meshcrypt agent`: the per-node daemon. Loads the key, creates the device, watches Nodes and
//! runs the one reconcile loop that owns all state.

mod events;
mod http;
mod kube_client;
mod metrics;
mod nodes;
mod peer_ops;
mod publish;
mod reconcile;
mod routing_input;

use std::sync::Arc;
use std::time::Duration;

use meshcrypt_dataplane::{Device, DeviceConfig};
use meshcrypt_keyexchange::{KeyStore, NodeKeyAnnotations};
use meshcrypt_routing::Netlink;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::cli::AgentArgs;
use crate::error::AgentError;

/// Runs the agent until SIGTERM or SIGINT.
///
/// On exit the device goes away with the process, and with it the routes through it; the policy
/// rules and the blackhole floor stay, so pod traffic is dropped, not sent in plaintext, until the
/// agent is back.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let store = KeyStore::open(&args.state.state_dir)?;
    let (private_key, created) = store.load_or_create()?;
    let key =
        NodeKeyAnnotations { public_key: private_key.public_key(), epoch: 0, created: store.created()? };
    tracing::info!(node = %args.node_name, fingerprint = %key.public_key.fingerprint(), new = created, "node key ready");

    let mut config = DeviceConfig::new(args.interface.clone(), private_key);
    config.listen_port = args.port;
    config.uapi_dir = args.uapi_dir.clone();
    let device = Arc::new(Device::create(config)?);
    tracing::info!(interface = %args.interface, port = args.port, "wireguard device up");

    let netlink = Netlink::connect()?;
    let client = kube_client::client(args.kubeconfig.as_deref()).await?;
    let health = Arc::new(http::Health::default());
    let loop_metrics = Arc::new(metrics::LoopMetrics::default());
    let names = metrics::PeerNames::default();
    let registry = metrics::registry(&loop_metrics, device.clone(), names.clone());
    let resync = Duration::from_secs(args.resync_seconds.max(1));
    http::serve(args.metrics_addr, health.clone(), registry, resync * 6).await?;

    if let Err(e) = publish::publish_key(&client, &args.node_name, &key).await {
        tracing::warn!(error = %e, "cannot publish the node key yet; the reconcile loop retries");
    }

    let wake = Arc::new(Notify::new());
    let (nodes, _watcher) = nodes::watch(client.clone(), wake.clone());
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|source| AgentError::Io { what: "install the SIGTERM handler".into(), source })?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|source| AgentError::Io { what: "install the SIGINT handler".into(), source })?;

    let mut reconciler = reconcile::Reconciler {
        node: args.node_name.clone(),
        key,
        port: args.port,
        mtu: args.mtu,
        routing: routing_input::RoutingSettings {
            ifname: args.interface.clone(),
            table: args.table,
            rule_priority: args.rule_priority,
            pod_networks: args.pod_networks.clone(),
            strict: args.strict,
        },
        events: events::EventReporter::new(client.clone(), &args.node_name),
        client,
        nodes,
        device,
        netlink,
        health,
        metrics: loop_metrics,
        names,
        passes: 0,
    };

    // Fail closed from the start: the floor goes in as soon as this node's own Node is known,
    // while the full list (and with it every peer) is still on its way.
    let wait_for_list = async {
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(reconciler.client.clone());
        match api.get(&args.node_name).await {
            Ok(local) => match reconciler.bootstrap(&local).await {
                Ok(()) => tracing::info!("fail-closed floor in place; waiting for the complete node list"),
                Err(e) => tracing::warn!(error = %e, "cannot program the fail-closed floor yet"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read this node's Node yet"),
        }
        reconciler.nodes.wait_until_ready().await
    };
    tokio::select! {
        result = wait_for_list => result.map_err(|e| AgentError::Config(format!("node store: {e}")))?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    }
    tracing::info!(nodes = reconciler.nodes.state().len(), "first complete node list received");

    let mut ticker = tokio::time::interval(resync);
    loop {
        reconciler.pass().await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = ticker.tick() => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!(
        "stopping: routes through the device go with it; rules and the blackhole floor stay (fail closed)"
    );
    Ok(())
}
