//! `meshcrypt registry`: the one process of a cluster that talks to AWS (the agents hold no AWS
//! credentials). The active replica (a `coordination.k8s.io` Lease elects it) publishes this
//! cluster's nodes as a signed bundle to Secrets Manager, reads each peer cluster's bundle, and
//! hands its nodes to the agents as a `RemoteCluster` object. A peer whose bundle cannot be read or
//! is refused keeps its last good nodes; the object's status says since when it is stale and why.
//!
//! `plan` holds the decisions (the bundle, its generation, the publish pace, when to poll);
//! `publisher` writes this cluster's bundle, `poller` reads a peer's, `aws` makes the clients,
//! `metrics` counts. This module runs the loop, in one order per tick: on taking the Lease, read
//! back what was published and what each peer's RemoteCluster accepted (and remove the
//! RemoteClusters of peers no longer configured); then publish if due; then poll the peers that
//! are due.

mod aws;
mod metrics;
mod pace;
pub(crate) mod plan;
mod poller;
mod publisher;
pub mod signing_key;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use kube::api::{Api, DeleteParams, ListParams};
use kube_lease_manager::LeaseManagerBuilder;
use meshcrypt_keyexchange::mesh::MeshConfig;
use meshcrypt_registry::{Names, SecretsManager};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::agent::http::{self, Health};
use crate::agent::{kube_client, nodes, pods};
use crate::cli::RegistryArgs;
use crate::config::settings::Addressing;
use crate::error::AgentError;
use crate::events::EventRecorder;
use crate::remote_cluster::RemoteCluster;
use metrics::RegistryMetrics;
use pace::PublishPace;
use poller::Peer;
use publisher::{Members, Publisher};

/// The field manager the registry writes RemoteCluster objects with, and the value of their
/// [`MANAGED_BY`] label.
const FIELD_MANAGER: &str = "meshcrypt-registry";
/// The label on the RemoteClusters the registry writes: only those are removed when their peer
/// is no longer configured.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Runs the registry until SIGTERM or SIGINT.
pub async fn run(args: RegistryArgs) -> Result<(), AgentError> {
    let signing = signing_key::load(&args.signing_key)?;
    let own_key = signing.verifying_key();
    tracing::info!(cluster = %args.cluster_id, signing_key = %STANDARD.encode(own_key.as_bytes()), "registry: this cluster's signing key (peers pin it with --peer <cluster>=<key>)");
    let peer_keys = check_peers(&args)?;
    let health = Arc::new(Health::default());
    health.set_ready(false, "listing this cluster's Nodes (and Pods)".into());
    let metrics = Arc::new(RegistryMetrics::default());
    // The loop ticks every second. A tick that fails waits at most one timed-out call per peer
    // and for this cluster's bundle; one that succeeds reads and writes whole bundles (up to
    // ~60 shards each) and the Kubernetes API: /healthz fails only after five minutes more.
    let calls = u32::try_from(args.peers.len()).unwrap_or(u32::MAX).saturating_add(1);
    let stalled_after = Duration::from_secs(300) + aws::OPERATION_TIMEOUT * calls;
    http::serve(args.metrics_addr, health.clone(), metrics.registry(), stalled_after).await?;
    let client = kube_client::client(args.kubeconfig.as_deref()).await?;

    // One Secrets Manager client per region the secrets live in.
    let mut stores: BTreeMap<Option<String>, SecretsManager> = BTreeMap::new();
    let region_of = |peer: &crate::cli::PeerCluster| peer.region.clone().or_else(|| args.region.clone());
    let regions = std::iter::once(args.region.clone()).chain(args.peers.iter().map(region_of));
    for region in regions {
        if let std::collections::btree_map::Entry::Vacant(slot) = stores.entry(region) {
            let sdk = aws::client(slot.key().as_deref(), args.endpoint_url.as_deref()).await?;
            slot.insert(SecretsManager::new(sdk).with_kms_key(args.kms_key_id.clone()));
        }
    }
    let now = Instant::now();
    let mut peers = Vec::new();
    for (p, key) in args.peers.iter().zip(peer_keys) {
        let prefix = p.prefix.clone().unwrap_or_else(|| args.secret_prefix.clone());
        let names = Names { prefix, cluster: p.name.clone() };
        peers.push(Peer::new(names, key, stores[&region_of(p)].clone(), now));
    }
    let pace = PublishPace {
        min_interval: Duration::from_secs(args.publish_interval),
        per_day: args.publishes_per_day,
    };
    let mut publisher = Publisher::new(
        signing,
        stores[&args.region].clone(),
        Names { prefix: args.secret_prefix.clone(), cluster: args.cluster_id.clone() },
        pace,
        MeshConfig { port: args.port, allowed_ips: args.addressing.allowed_ips_from() },
    );

    let wake = Arc::new(Notify::new());
    let members = Members {
        nodes: nodes::watch(client.clone(), wake.clone()),
        pods: (args.addressing == Addressing::PodIp).then(|| pods::watch(client.clone(), wake.clone())),
    };
    members
        .nodes
        .wait_until_ready()
        .await
        .map_err(|source| AgentError::StoreClosed { what: "nodes", source })?;
    if let Some(pods) = &members.pods {
        pods.wait_until_ready().await.map_err(|source| AgentError::StoreClosed { what: "pods", source })?;
    }
    let lease = LeaseManagerBuilder::new(client.clone(), &args.lease)
        .with_namespace(&args.namespace)
        .with_identity(&args.identity)
        .with_duration(args.lease_seconds)
        .with_grace((args.lease_seconds / 3).max(1))
        .build()
        .await?;
    let (mut leading, _lease_task) = lease.watch().await;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|source| AgentError::Io { what: "install the SIGTERM handler".into(), source })?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|source| AgentError::Io { what: "install the SIGINT handler".into(), source })?;
    let api: Api<RemoteCluster> = Api::all(client.clone());
    let recorder = EventRecorder::new(client.clone(), FIELD_MANAGER, &args.identity);
    let mut was_leading = false;
    // The stores changed since the members were last computed.
    let mut changed = true;
    health.set_ready(true, "standby".into());
    loop {
        health.tick();
        tokio::select! {
            _ = leading.changed() => {}
            _ = wake.notified() => changed = true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let is_leading = *leading.borrow();
        let now = Instant::now();
        if is_leading != was_leading {
            tracing::info!(identity = %args.identity, leading = is_leading, "registry leadership changed");
            was_leading = is_leading;
            metrics.leader.set(i64::from(is_leading));
            health.set_ready(true, if is_leading { "leading" } else { "standby" }.into());
            if is_leading {
                publisher.take_over(now).await;
                for peer in &mut peers {
                    peer.resume(&api).await;
                }
                remove_unconfigured(&api, &peers).await;
            } else {
                metrics.clear_peers();
            }
        }
        if !is_leading {
            continue;
        }
        publisher.step(&members, std::mem::take(&mut changed), &metrics, now, jiff::Timestamp::now()).await;
        for peer in peers.iter_mut().filter(|p| p.next_poll <= now) {
            peer.poll(&api, &recorder, &metrics).await;
            let jitter = f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng)) / f64::from(u32::MAX)
                * 2.0
                - 1.0;
            peer.next_poll = plan::next_poll(now, Duration::from_secs(args.poll_interval), jitter);
        }
    }
    tracing::info!("registry stopping; the Lease is released for the standby");
    Ok(())
}

/// Refuses a configuration an operator cannot have meant, before anything is reached: this
/// cluster's id or a peer's that is no DNS label, a peer named twice or this cluster among its
/// peers, a pinned key that is no Ed25519 public key, a partial ARN in another region or one
/// Secrets Manager could misread. Returns each peer's pinned key.
fn check_peers(args: &RegistryArgs) -> Result<Vec<VerifyingKey>, AgentError> {
    let refuse = |peer: &str, reason: &str| AgentError::PeerConfig {
        peer: peer.to_owned(),
        reason: reason.to_owned(),
    };
    if !plan::is_dns_label(&args.cluster_id) {
        return Err(AgentError::ClusterId { id: args.cluster_id.clone() });
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut keys = Vec::new();
    for p in &args.peers {
        if !plan::is_dns_label(&p.name) {
            return Err(refuse(&p.name, "not a DNS label (RFC 1123)"));
        }
        if p.name == args.cluster_id {
            return Err(refuse(&p.name, "this cluster's own id"));
        }
        if !seen.insert(&p.name) {
            return Err(refuse(&p.name, "named twice"));
        }
        let key = parse_verifying_key(&p.key).map_err(|why| {
            refuse(
                &p.name,
                &format!("the signing key is not an Ed25519 public key, base64 of 32 bytes ({why})"),
            )
        })?;
        keys.push(key);
        let Some(prefix) = &p.prefix else { continue };
        if let Some(arn_region) = plan::arn_region(prefix) {
            let region = p.region.as_ref().or(args.region.as_ref());
            if region.map(String::as_str) != Some(arn_region) {
                return Err(refuse(&p.name, &format!("prefix is in {arn_region}: say region={arn_region}")));
            }
            let names = Names { prefix: prefix.clone(), cluster: p.name.clone() };
            let all = std::iter::once(names.manifest()).chain((0..1000).map(|n| names.shard(n)));
            if let Some(name) = plan::partial_arn_trap(all) {
                return Err(refuse(
                    &p.name,
                    &format!(
                        "{name} ends in a hyphen and six characters, which Secrets Manager takes for a full ARN's suffix: choose a cluster id without a hyphen there"
                    ),
                ));
            }
        }
    }
    Ok(keys)
}

/// Deletes the RemoteClusters this registry wrote (labelled [`MANAGED_BY`]) of peers no longer
/// configured: their nodes leave the agents' mesh (an operator who removes a `--peer` means to
/// stop meshing with it). Objects written by anyone else stay.
async fn remove_unconfigured(api: &Api<RemoteCluster>, peers: &[Peer]) {
    let mine = ListParams::default().labels(&format!("{MANAGED_BY}={FIELD_MANAGER}"));
    let listed = match api.list(&mine).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list RemoteClusters; those of removed peers stay");
            return;
        }
    };
    for remote in listed {
        let Some(name) = remote.metadata.name else { continue };
        if peers.iter().any(|p| p.names.cluster == name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::warn!(peer = %name, "removed the RemoteCluster of a peer no longer configured: its nodes leave the mesh")
            }
            Err(e) => {
                tracing::warn!(peer = %name, error = %e, "cannot remove the RemoteCluster of a peer no longer configured")
            }
        }
    }
}

fn parse_verifying_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = STANDARD
        .decode(text.trim())
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "not 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    /// Each row: the `--cluster-id` and `--peer` flags, and the error's text (empty: accepted).
    #[test]
    fn check_peers_table() {
        let key = STANDARD.encode(ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key().as_bytes());
        let arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:meshcrypt";
        let rows: Vec<(&str, Vec<String>, &str)> = vec![
            ("prod-a", vec![format!("prod-b={key}")], ""),
            ("prod-a", vec![], ""),
            ("Prod-A", vec![], "cluster id \"Prod-A\": not a DNS label"),
            ("prod-a", vec![format!("Prod-B={key}")], "peer cluster Prod-B: not a DNS label"),
            ("prod-a", vec![format!("prod-a={key}")], "this cluster's own id"),
            ("prod-a", vec![format!("prod-b={key}"), format!("prod-b={key}")], "named twice"),
            ("prod-a", vec!["prod-b=CHANGE-ME".into()], "not an Ed25519 public key"),
            ("prod-a", vec![format!("prod-b={key},prefix={arn},region=eu-west-1")], ""),
            ("prod-a", vec![format!("prod-b={key},prefix={arn},region=us-east-1")], "say region=eu-west-1"),
            ("prod-a", vec![format!("prod-abcdef={key},prefix={arn},region=eu-west-1")], "full ARN's suffix"),
        ];
        for (id, peers, want) in rows {
            let mut argv = vec!["meshcrypt".to_owned(), "registry".into(), "--identity=r-0".into()];
            argv.push(format!("--cluster-id={id}"));
            argv.extend(peers.iter().map(|p| format!("--peer={p}")));
            let Command::Registry(args) = Cli::try_parse_from(&argv).expect("flags parse").command else {
                panic!("the registry subcommand");
            };
            match check_peers(&args) {
                Ok(keys) => assert!(want.is_empty() && keys.len() == peers.len(), "{argv:?}: accepted"),
                Err(e) => assert!(!want.is_empty() && e.to_string().contains(want), "{argv:?}: {e}"),
            }
        }
    }
}
