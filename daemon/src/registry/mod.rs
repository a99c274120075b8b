//! `meshcrypt registry`: the one process of a cluster that talks to AWS (the agents hold no AWS
//! credentials). The active replica (a `coordination.k8s.io` Lease elects it) publishes this
//! cluster's nodes as a signed bundle to Secrets Manager, reads each peer cluster's bundle, and
//! hands its nodes to the agents as a `RemoteCluster` object. A peer whose bundle cannot be read or
//! is refused keeps its last good nodes; the object's status says since when it is stale and why.
//!
//! `plan` holds the decisions (the bundle, its generation, when to publish and poll); this module
//! does the IO, in one order per tick: publish this cluster's bundle if due, then poll the peers
//! that are due.

mod metrics;
mod plan;
pub mod signing_key;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube_lease_manager::LeaseManagerBuilder;
use meshcrypt_keyexchange::mesh::{AllowedIpsFrom, MeshConfig, NodeView, PodView, cluster_members};
use meshcrypt_registry::{Bundle, Fetched, Manifest, Names, SecretsManager, Trust, fetch, publish, seal};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::agent::http::{self, Health};
use crate::agent::{kube_client, nodes, pods};
use crate::cli::RegistryArgs;
use crate::config::settings::Addressing;
use crate::error::AgentError;
use crate::remote_cluster::{RemoteCluster, RemoteClusterSpec, RemoteNode};
use metrics::RegistryMetrics;

/// The field manager the registry writes RemoteCluster objects with.
const FIELD_MANAGER: &str = "meshcrypt-registry";

/// A peer cluster as the registry tracks it.
struct Peer {
    names: Names,
    key: VerifyingKey,
    /// The manifest version id read last.
    seen: Option<String>,
    /// The last generation accepted.
    generation: Option<u64>,
    next_poll: Instant,
    /// Since when reads fail (RFC 3339), while they do.
    stale_since: Option<String>,
    /// The failure last reported as an Event (each distinct one is reported once).
    reported: Option<String>,
}

/// What this replica published last.
#[derive(Default)]
struct Published {
    bundle: Option<Bundle>,
    manifest: Option<Manifest>,
    at: Option<Instant>,
}

/// How long one Secrets Manager call may take, retries included, before the tick goes on (an
/// unreachable endpoint must not stall the loop: the peers' last good nodes stay either way).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt of a call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// The cluster's Nodes, and its Pods when its agents run in pod-IP mode.
struct Members {
    nodes: Store<Node>,
    pods: Option<Store<k8s_openapi::api::core::v1::Pod>>,
}

/// Runs the registry until SIGTERM or SIGINT.
pub async fn run(args: RegistryArgs) -> Result<(), AgentError> {
    let signing = signing_key::load(&args.signing_key)?;
    let own_key = signing.verifying_key();
    tracing::info!(cluster = %args.cluster_id, signing_key = %STANDARD.encode(own_key.as_bytes()), "registry: this cluster's signing key (peers pin it with --peer <cluster>=<key>)");
    let health = Arc::new(Health::default());
    let metrics = Arc::new(RegistryMetrics::default());
    // The loop ticks every second; a tick waits at most two Secrets Manager calls per peer.
    let stalled_after =
        OPERATION_TIMEOUT * 2 * (u32::try_from(args.peers.len()).unwrap_or(u32::MAX).max(1) + 1);
    http::serve(args.metrics_addr, health.clone(), metrics.registry(), stalled_after).await?;
    let client = kube_client::client(args.kubeconfig.as_deref()).await?;
    let store = SecretsManager::new(secrets_manager_client(&args).await?);
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

    let mut peers = Vec::new();
    for p in &args.peers {
        let key = parse_verifying_key(&p.key)
            .map_err(|reason| AgentError::PeerKey { peer: p.name.clone(), reason })?;
        let names = Names { prefix: args.secret_prefix.clone(), cluster: p.name.clone() };
        peers.push(Peer {
            names,
            key,
            seen: None,
            generation: None,
            next_poll: Instant::now(),
            stale_since: None,
            reported: None,
        });
    }
    let own = Names { prefix: args.secret_prefix.clone(), cluster: args.cluster_id.clone() };
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
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(args.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let mut published = Published::default();
    let mut was_leading = false;
    health.set_ready(true, "standby".into());
    loop {
        health.tick();
        tokio::select! {
            _ = leading.changed() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let is_leading = *leading.borrow();
        if is_leading != was_leading {
            tracing::info!(identity = %args.identity, leading = is_leading, "registry leadership changed");
            was_leading = is_leading;
            metrics.leader.set(i64::from(is_leading));
            health.set_ready(true, if is_leading { "leading" } else { "standby" }.into());
            if is_leading {
                // Take over where the last writer (maybe another replica) left off.
                published = Published::default();
                let trust = Trust { cluster: &args.cluster_id, key: &own_key, last_generation: None };
                match fetch(&store, &own, &trust, None).await {
                    Ok(Fetched::Bundle { manifest, bundle, .. }) => {
                        published.manifest = Some(manifest);
                        published.bundle = Some(bundle);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read this cluster's published bundle; publishing anew")
                    }
                }
            }
        }
        if !is_leading {
            continue;
        }
        let now = Instant::now();
        if let Err(e) =
            publish_step(&args, &signing, &store, &own, &members, &mut published, &metrics, now).await
        {
            metrics.publish_errors.inc();
            tracing::warn!(error = %e, "cannot publish this cluster's bundle; retrying");
        }
        for peer in peers.iter_mut().filter(|p| p.next_poll <= now) {
            poll_step(&api, &recorder, &store, peer, &metrics).await;
            let jitter = f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng)) / f64::from(u32::MAX)
                * 2.0
                - 1.0;
            peer.next_poll = plan::next_poll(now, Duration::from_secs(args.poll_interval), jitter);
        }
    }
    tracing::info!("registry stopping; the Lease is released for the standby");
    Ok(())
}

/// Publishes this cluster's nodes if they changed and the last publish is old enough.
#[allow(clippy::too_many_arguments)]
async fn publish_step(
    args: &RegistryArgs,
    signing: &SigningKey,
    store: &SecretsManager,
    own: &Names,
    members: &Members,
    published: &mut Published,
    metrics: &RegistryMetrics,
    now: Instant,
) -> Result<(), AgentError> {
    let views: Vec<NodeView> = members.nodes.state().iter().map(|n| NodeView::from_node(n)).collect();
    let pods: Vec<PodView> = members
        .pods
        .as_ref()
        .map(|store| store.state().iter().filter_map(|p| PodView::from_pod(p)).collect())
        .unwrap_or_default();
    let allowed_ips = match args.addressing {
        Addressing::PodCidr => AllowedIpsFrom::PodCidrs,
        Addressing::PodIp => AllowedIpsFrom::PodIps,
    };
    let config = MeshConfig { port: args.port, allowed_ips };
    let members = cluster_members(&views, &pods, true, &config);
    let last_generation = published.bundle.as_ref().map(|b| b.generation);
    let candidate = plan::bundle_of(&args.cluster_id, last_generation.unwrap_or(0), &members);
    let changed = published.bundle.as_ref().is_none_or(|b| b.nodes != candidate.nodes);
    if !plan::publish_due(changed, published.at, Duration::from_secs(args.publish_interval), now) {
        return Ok(());
    }
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let bundle = Bundle { generation: plan::next_generation(last_generation, now_ms), ..candidate };
    let sealed = seal(&bundle, signing)?;
    let wrote = publish(store, own, &sealed, published.manifest.as_ref()).await?;
    tracing::info!(
        generation = bundle.generation,
        nodes = bundle.nodes.len(),
        shards = sealed.shards.len(),
        written = wrote.written,
        unchanged = wrote.unchanged,
        "published this cluster's bundle"
    );
    metrics.publishes.inc();
    metrics.published_generation.set(i64::try_from(bundle.generation).unwrap_or(i64::MAX));
    metrics.published_nodes.set(i64::try_from(bundle.nodes.len()).unwrap_or(i64::MAX));
    published.bundle = Some(bundle);
    published.manifest = Some(sealed.signed);
    published.at = Some(now);
    Ok(())
}

/// Reads one peer cluster's bundle and writes its RemoteCluster (spec and status); a failure is
/// written to the status and the nodes listed stay.
async fn poll_step(
    api: &Api<RemoteCluster>,
    recorder: &Recorder,
    store: &SecretsManager,
    peer: &mut Peer,
    metrics: &RegistryMetrics,
) {
    let name = peer.names.cluster.clone();
    let trust = Trust { cluster: &name, key: &peer.key, last_generation: peer.generation };
    let at = jiff::Timestamp::now();
    let now = at.to_string();
    let label = RegistryMetrics::peer(&name);
    let status = match fetch(store, &peer.names, &trust, peer.seen.as_deref()).await {
        Ok(Fetched::Unchanged) => {
            metrics.peer_last_success.get_or_create(&label).set(at.as_second());
            if peer.stale_since.is_none() {
                return;
            }
            // Reads work again and the bundle accepted last is still the current one.
            tracing::info!(peer = %name, "peer cluster's bundle readable again; unchanged");
            peer.stale_since = None;
            peer.reported = None;
            metrics.peer_stale.get_or_create(&label).set(0);
            serde_json::json!({"fetched": now, "staleSince": null, "message": null})
        }
        Ok(Fetched::Missing) => {
            failure(
                recorder,
                peer,
                &now,
                "BundleMissing",
                "the peer cluster has published no bundle yet".into(),
                metrics,
            )
            .await
        }
        Ok(Fetched::Bundle { version, bundle, .. }) => {
            let spec = RemoteClusterSpec {
                generation: bundle.generation,
                nodes: bundle
                    .nodes
                    .iter()
                    .map(|n| RemoteNode {
                        name: n.name.clone(),
                        public_key: n.public_key.to_string(),
                        key_epoch: n.key_epoch,
                        endpoint: n.endpoint.to_string(),
                        allowed_ips: n.allowed_ips.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            };
            let object = serde_json::json!({
                "apiVersion": "meshcrypt.dev/v1alpha1",
                "kind": "RemoteCluster",
                "metadata": {"name": name},
                "spec": spec,
            });
            if let Err(e) =
                api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object)).await
            {
                tracing::warn!(peer = %name, error = %e, "cannot write the RemoteCluster; reading again next poll");
                return;
            }
            tracing::info!(peer = %name, generation = bundle.generation, nodes = bundle.nodes.len(), "peer cluster's nodes updated");
            peer.seen = Some(version);
            peer.generation = Some(bundle.generation);
            peer.stale_since = None;
            peer.reported = None;
            metrics.peer_last_success.get_or_create(&label).set(at.as_second());
            metrics.peer_stale.get_or_create(&label).set(0);
            metrics
                .peer_generation
                .get_or_create(&label)
                .set(i64::try_from(bundle.generation).unwrap_or(i64::MAX));
            metrics
                .peer_nodes
                .get_or_create(&label)
                .set(i64::try_from(bundle.nodes.len()).unwrap_or(i64::MAX));
            serde_json::json!({"fetched": now, "nodes": bundle.nodes.len(), "staleSince": null, "message": null})
        }
        Err(e) => failure(recorder, peer, &now, failure_reason(&e), e.to_string(), metrics).await,
    };
    let patch = serde_json::json!({"status": status});
    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::debug!(peer = %name, error = %e, "cannot write the RemoteCluster's status");
    }
}

/// The Event reason for a failed read: a refused bundle (tampered, unsigned, replayed, foreign,
/// malformed) is `BundleRejected`; Secrets Manager failing is `SecretsManagerUnavailable`; a
/// write under way that outlived the previous version is `BundleTorn` (read again next poll).
fn failure_reason(e: &meshcrypt_registry::Error) -> &'static str {
    use meshcrypt_registry::Error;
    match e {
        Error::SecretsManager { .. } => "SecretsManagerUnavailable",
        Error::Torn { .. } => "BundleTorn",
        _ => "BundleRejected",
    }
}

/// Records a failed read: logged, counted, a Warning Event on the RemoteCluster (once per
/// distinct failure), and the status to write (stale since the first failure in a row).
async fn failure(
    recorder: &Recorder,
    peer: &mut Peer,
    now: &str,
    reason: &'static str,
    message: String,
    metrics: &RegistryMetrics,
) -> serde_json::Value {
    metrics.peer_failures.get_or_create(&RegistryMetrics::failure(&peer.names.cluster, reason)).inc();
    metrics.peer_stale.get_or_create(&RegistryMetrics::peer(&peer.names.cluster)).set(1);
    if peer.reported.as_deref() != Some(message.as_str()) {
        tracing::warn!(peer = %peer.names.cluster, reason, %message, "peer cluster's bundle not read; its last good nodes stay in use");
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(format!("{message}; the last good nodes stay in use")),
            action: "Fetch".to_owned(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some("meshcrypt.dev/v1alpha1".into()),
            kind: Some("RemoteCluster".into()),
            name: Some(peer.names.cluster.clone()),
            ..ObjectReference::default()
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "cannot publish a Kubernetes Event");
        }
        peer.reported = Some(message.clone());
    }
    let since = peer.stale_since.get_or_insert_with(|| now.to_owned()).clone();
    serde_json::json!({"staleSince": since, "message": message})
}

/// The Secrets Manager client: the SDK's default chain (IRSA, EKS Pod Identity) and region, unless
/// `--endpoint-url` names another endpoint, which takes its credentials from the environment's
/// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY only. Either way a call gives up after
/// [`OPERATION_TIMEOUT`] (the SDK sets none by default, so an endpoint that accepts connections
/// but never answers would stall the loop).
async fn secrets_manager_client(args: &RegistryArgs) -> Result<aws_sdk_secretsmanager::Client, AgentError> {
    use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let Some(endpoint) = &args.endpoint_url else {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = &args.region {
            loader = loader.region(Region::new(region.clone()));
        }
        return Ok(aws_sdk_secretsmanager::Client::new(&loader.load().await));
    };
    let var = |name: &'static str| std::env::var(name).map_err(|_| AgentError::MissingEnv { name });
    let credentials =
        Credentials::new(var("AWS_ACCESS_KEY_ID")?, var("AWS_SECRET_ACCESS_KEY")?, None, None, "environment");
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(args.region.clone().unwrap_or_else(|| "us-east-1".into())))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .timeout_config(timeouts)
        .build();
    Ok(aws_sdk_secretsmanager::Client::from_conf(config))
}

fn parse_verifying_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = STANDARD
        .decode(text.trim())
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "not 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
}
