//! Publishing this cluster's bundle: what the members are, whether a write is due (the pace in
//! [`super::plan`]), sealing, and writing; a failed write is retried with the same sealed bundle
//! (the same request tokens: a retry makes no second version) after a back-off.

use std::time::Instant;

use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::Store;
use meshcrypt_keyexchange::mesh::{MeshConfig, NodeView, PodView, cluster_members};
use meshcrypt_registry::{
    Bundle, Fetched, Manifest, Names, Sealed, SecretsManager, Trust, fetch, publish, seal,
};

use super::metrics::RegistryMetrics;
use super::plan::{self, PublishBudget, PublishPace};
use crate::error::AgentError;

/// The cluster's Nodes, and its Pods when its agents run in pod-IP mode.
pub struct Members {
    /// Every Node.
    pub nodes: Store<Node>,
    /// Every Pod (pod-IP mode only).
    pub pods: Option<Store<Pod>>,
}

/// This cluster's side of the exchange, as the active replica keeps it.
pub struct Publisher {
    signing: SigningKey,
    store: SecretsManager,
    names: Names,
    pace: PublishPace,
    config: MeshConfig,
    /// What was written last (by this replica, or read back at takeover).
    bundle: Option<Bundle>,
    manifest: Option<Manifest>,
    /// A sealed bundle whose write failed, retried as it is while the members stay the same.
    pending: Option<(Bundle, Sealed)>,
    budget: PublishBudget,
}

impl Publisher {
    /// A publisher of `names.cluster`'s bundle, signed with `signing`, written to `store`.
    pub fn new(
        signing: SigningKey,
        store: SecretsManager,
        names: Names,
        pace: PublishPace,
        config: MeshConfig,
        now: Instant,
    ) -> Self {
        let budget = PublishBudget::new(&pace, now);
        Self { signing, store, names, pace, config, bundle: None, manifest: None, pending: None, budget }
    }

    /// Takes over where the last writer (maybe another replica) left off: reads back the bundle
    /// published last, so the next generation is above it and unchanged shards are not rewritten.
    pub async fn take_over(&mut self, now: Instant) {
        self.bundle = None;
        self.manifest = None;
        self.pending = None;
        self.budget = PublishBudget::new(&self.pace, now);
        let key = self.signing.verifying_key();
        let trust = Trust { cluster: &self.names.cluster, key: &key, last_generation: None };
        match fetch(&self.store, &self.names, &trust, None).await {
            Ok(Fetched::Bundle { manifest, bundle, .. }) => {
                self.manifest = Some(manifest);
                self.bundle = Some(bundle);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this cluster's published bundle; publishing anew")
            }
        }
    }

    /// Writes this cluster's bundle if its members changed and the pace allows it.
    pub async fn step(&mut self, members: &Members, metrics: &RegistryMetrics, now: Instant) {
        let views: Vec<NodeView> = members.nodes.state().iter().map(|n| NodeView::from_node(n)).collect();
        let pods: Vec<PodView> = members
            .pods
            .as_ref()
            .map(|store| store.state().iter().filter_map(|p| PodView::from_pod(p)).collect())
            .unwrap_or_default();
        let set = cluster_members(&views, &pods, true, &self.config);
        let last_generation = self.bundle.as_ref().map(|b| b.generation);
        let candidate = plan::bundle_of(&self.names.cluster, last_generation.unwrap_or(0), &set);
        let changed = self.bundle.as_ref().is_none_or(|b| b.nodes != candidate.nodes);
        if !self.budget.due(&self.pace, changed, now) {
            return;
        }
        let (bundle, sealed) = match self.pending.take() {
            Some((bundle, sealed)) if bundle.nodes == candidate.nodes => (bundle, sealed),
            _ => {
                let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
                let bundle =
                    Bundle { generation: plan::next_generation(last_generation, now_ms), ..candidate };
                match seal(&bundle, &self.signing) {
                    Ok(sealed) => (bundle, sealed),
                    Err(e) => {
                        self.failed(metrics, now, &AgentError::from(e));
                        return;
                    }
                }
            }
        };
        match publish(&self.store, &self.names, &sealed, self.manifest.as_ref()).await {
            Ok(wrote) => {
                tracing::info!(
                    generation = bundle.generation,
                    nodes = bundle.nodes.len(),
                    shards = sealed.shards.len(),
                    written = wrote.written,
                    unchanged = wrote.unchanged,
                    "published this cluster's bundle"
                );
                self.budget.wrote(&self.pace, now);
                metrics.publishes.inc();
                metrics.published_generation.set(i64::try_from(bundle.generation).unwrap_or(i64::MAX));
                metrics.published_nodes.set(i64::try_from(bundle.nodes.len()).unwrap_or(i64::MAX));
                self.bundle = Some(bundle);
                self.manifest = Some(sealed.signed);
            }
            Err(e) => {
                self.pending = Some((bundle, sealed));
                self.failed(metrics, now, &AgentError::from(e));
            }
        }
    }

    fn failed(&mut self, metrics: &RegistryMetrics, now: Instant, error: &AgentError) {
        self.budget.failed(now);
        metrics.publish_errors.inc();
        tracing::warn!(%error, "cannot publish this cluster's bundle; retrying after a back-off");
    }
}
