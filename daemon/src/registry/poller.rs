//! Reading one peer cluster's bundle: change detection first (`DescribeSecret`), then the bundle
//! and every check it must pass, then its RemoteCluster (spec and status). A failure leaves the
//! spec as it was, marks the status stale, counts it, and raises a Warning Event once per distinct
//! failure.

use std::time::Instant;

use ed25519_dalek::VerifyingKey;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use meshcrypt_registry::{Fetched, Names, SecretsManager, Trust, fetch};

use super::metrics::RegistryMetrics;
use super::{FIELD_MANAGER, MANAGED_BY};
use crate::events::{EventRecorder, EventType};
use crate::remote_cluster::{RemoteCluster, RemoteClusterSpec, RemoteNode};

/// A peer cluster as the registry tracks it.
pub struct Peer {
    /// Where its bundle lives (its secret prefix and cluster id).
    pub names: Names,
    key: VerifyingKey,
    /// The client for its secrets' region.
    store: SecretsManager,
    /// The manifest version id read last.
    seen: Option<String>,
    /// The last generation accepted: an older bundle is refused (no replay; the same generation
    /// is the same bundle).
    generation: Option<u64>,
    /// When to read next.
    pub next_poll: Instant,
    /// Since when reads fail (RFC 3339), while they do.
    stale_since: Option<String>,
    /// The failure last reported as an Event (each distinct one is reported once).
    reported: Option<String>,
}

impl Peer {
    /// A peer whose bundle is read from `store` under `names`, signed by `key`.
    pub fn new(names: Names, key: VerifyingKey, store: SecretsManager, now: Instant) -> Self {
        Self {
            names,
            key,
            store,
            seen: None,
            generation: None,
            next_poll: now,
            stale_since: None,
            reported: None,
        }
    }

    /// Resumes from what the RemoteCluster says was accepted last (its spec's generation), so
    /// that after a restart or a failover an older bundle, however well signed, is still refused.
    pub async fn resume(&mut self, api: &Api<RemoteCluster>) {
        match api.get_opt(&self.names.cluster).await {
            Ok(Some(remote)) => {
                self.generation = self.generation.max(Some(remote.spec.generation));
                self.seen = None;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(peer = %self.names.cluster, error = %e, "cannot read the RemoteCluster; accepting any newer bundle")
            }
        }
    }

    /// Reads the bundle and writes the RemoteCluster.
    pub async fn poll(
        &mut self,
        api: &Api<RemoteCluster>,
        recorder: &EventRecorder,
        metrics: &RegistryMetrics,
    ) {
        let name = self.names.cluster.clone();
        let trust = Trust { cluster: &name, key: &self.key, last_generation: self.generation };
        let at = jiff::Timestamp::now();
        let now = at.to_string();
        let label = RegistryMetrics::peer(&name);
        let status = match fetch(&self.store, &self.names, &trust, self.seen.as_deref()).await {
            Ok(Fetched::Unchanged) => {
                metrics.peer_last_success.get_or_create(&label).set(at.as_second());
                if self.stale_since.is_none() {
                    return;
                }
                // Reads work again and the bundle accepted last is still the current one.
                tracing::info!(peer = %name, "peer cluster's bundle readable again; unchanged");
                self.fresh(metrics);
                serde_json::json!({"fetched": now, "staleSince": null, "message": null})
            }
            Ok(Fetched::Missing) => {
                let message = "the peer cluster has published no bundle yet".to_owned();
                self.failure(recorder, &now, "BundleMissing", message, metrics).await
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
                    "metadata": {"name": name, "labels": {MANAGED_BY: FIELD_MANAGER}},
                    "spec": spec,
                });
                let params = PatchParams::apply(FIELD_MANAGER).force();
                if let Err(e) = api.patch(&name, &params, &Patch::Apply(&object)).await {
                    tracing::warn!(peer = %name, error = %e, "cannot write the RemoteCluster; reading again next poll");
                    return;
                }
                tracing::info!(peer = %name, generation = bundle.generation, nodes = bundle.nodes.len(), "peer cluster's nodes updated");
                self.seen = Some(version);
                self.generation = Some(bundle.generation);
                self.fresh(metrics);
                metrics.peer_last_success.get_or_create(&label).set(at.as_second());
                let generation = i64::try_from(bundle.generation).unwrap_or(i64::MAX);
                metrics.peer_generation.get_or_create(&label).set(generation);
                metrics
                    .peer_nodes
                    .get_or_create(&label)
                    .set(i64::try_from(bundle.nodes.len()).unwrap_or(i64::MAX));
                serde_json::json!({"fetched": now, "nodes": bundle.nodes.len(), "staleSince": null, "message": null})
            }
            Err(e) => self.failure(recorder, &now, failure_reason(&e), e.to_string(), metrics).await,
        };
        let patch = serde_json::json!({"status": status});
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(peer = %name, error = %e, "cannot write the RemoteCluster's status");
        }
    }

    fn fresh(&mut self, metrics: &RegistryMetrics) {
        self.stale_since = None;
        self.reported = None;
        metrics.peer_stale.get_or_create(&RegistryMetrics::peer(&self.names.cluster)).set(0);
    }

    /// Records a failed read: logged, counted, a Warning Event on the RemoteCluster (once per
    /// distinct failure), and the status to write (stale since the first failure in a row).
    async fn failure(
        &mut self,
        recorder: &EventRecorder,
        now: &str,
        reason: &'static str,
        message: String,
        metrics: &RegistryMetrics,
    ) -> serde_json::Value {
        let cluster = self.names.cluster.clone();
        metrics.peer_failures.get_or_create(&RegistryMetrics::failure(&cluster, reason)).inc();
        metrics.peer_stale.get_or_create(&RegistryMetrics::peer(&cluster)).set(1);
        if self.reported.as_deref() != Some(message.as_str()) {
            let kept = match self.generation {
                Some(_) => "the last good nodes stay in use",
                None => "none of its nodes is known yet",
            };
            tracing::warn!(peer = %cluster, reason, detail = %message, "peer cluster's bundle not read; {kept}");
            let reference = ObjectReference {
                api_version: Some("meshcrypt.dev/v1alpha1".into()),
                kind: Some("RemoteCluster".into()),
                name: Some(cluster),
                ..ObjectReference::default()
            };
            let note = format!("{message}; {kept}");
            recorder
                .publish(reference, EventType::Warning, reason, "Fetch", &note, jiff::Timestamp::now())
                .await;
            self.reported = Some(message.clone());
        }
        let since = self.stale_since.get_or_insert_with(|| now.to_owned()).clone();
        serde_json::json!({"staleSince": since, "message": message})
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
