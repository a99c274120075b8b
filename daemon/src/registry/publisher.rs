//! Publishing this cluster's bundle: what the members are, whether a write is due (the pace in
//! [`super::pace`]), sealing, and writing; a failed write is retried with the same sealed bundle
//! (the same request tokens: a retry makes no second version) after a back-off.

use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::SigningKey;
use kube::runtime::reflector::Store;
use meshcrypt_keyexchange::mesh::{MeshConfig, PeerSet, PodView, cluster_members};
use meshcrypt_registry::{
    Bundle, Fetched, Manifest, Names, Sealed, SecretStore, SecretsManager, Trust, fetch, publish, seal,
};

use super::metrics::RegistryMetrics;
use super::pace::{PublishBudget, PublishPace};
use super::plan;
use crate::agent::node_views::NodeViews;
use crate::agent::slim_node::SlimNode;
use crate::agent::slim_pod::SlimPod;
use crate::error::AgentError;

/// The cluster's Nodes, and its Pods when its agents run in pod-IP mode.
pub struct Members {
    /// Every Node.
    pub nodes: Store<SlimNode>,
    /// Every Pod (pod-IP mode only).
    pub pods: Option<Store<SlimPod>>,
}

/// This cluster's side of the exchange, as the active replica keeps it.
pub struct Publisher<S: SecretStore = SecretsManager> {
    signing: SigningKey,
    store: S,
    names: Names,
    pace: PublishPace,
    config: MeshConfig,
    /// What was written last (by this replica, or read back at takeover).
    bundle: Option<Bundle>,
    /// The Nodes' views, made once per change.
    views: NodeViews,
    manifest: Option<Manifest>,
    /// A sealed bundle whose write failed, retried as it is while the members stay the same.
    pending: Option<(Bundle, Sealed)>,
    /// The pace's state; `None` until the day's writes are known (read at takeover, and again
    /// every tick until Secrets Manager answers: nothing is written before).
    budget: Option<PublishBudget>,
    /// Why the day's writes could not be read last (logged once per distinct reason).
    budget_error: Option<String>,
    /// The members as last computed from the stores (recomputed only after they changed).
    set: Option<PeerSet>,
}

impl<S: SecretStore> Publisher<S> {
    /// A publisher of `names.cluster`'s bundle, signed with `signing`, written to `store`; it
    /// writes once it has taken over ([`Publisher::take_over`]).
    pub fn new(signing: SigningKey, store: S, names: Names, pace: PublishPace, config: MeshConfig) -> Self {
        Self {
            signing,
            store,
            names,
            pace,
            config,
            bundle: None,
            views: NodeViews::default(),
            manifest: None,
            pending: None,
            budget: None,
            budget_error: None,
            set: None,
        }
    }

    /// Takes over where the last writer (maybe another replica) left off: reads back the bundle
    /// published last, so the next generation is above it and unchanged shards are not rewritten,
    /// and the day's writes, so the pace holds across failovers.
    pub async fn take_over(&mut self, now: Instant) {
        self.bundle = None;
        self.manifest = None;
        self.pending = None;
        self.budget = None;
        self.resume_budget(now).await;
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

    /// Reads the day's writes and sets the pace's state from them; on failure it stays unknown
    /// (logged) and the next tick tries again.
    async fn resume_budget(&mut self, now: Instant) {
        match self.writes_today().await {
            Ok(ages) => {
                self.budget = Some(PublishBudget::resume(&self.pace, &ages, now));
                self.budget_error = None;
            }
            Err(e) => {
                let reason = e.to_string();
                if self.budget_error.as_ref() != Some(&reason) {
                    tracing::warn!(error = %reason, "cannot read how often this cluster's bundle was written today (DescribeSecret, ListSecretVersionIds); publishing waits for it");
                    self.budget_error = Some(reason);
                }
            }
        }
    }

    /// How long ago each write of the last day was: the versions of the manifest or of shard 0
    /// (every new bundle rewrites both; a failed attempt may have reached only the shard),
    /// whichever lists more. A secret that does not exist has none (asked with `DescribeSecret`
    /// first).
    async fn writes_today(&self) -> Result<Vec<Duration>, meshcrypt_registry::Error> {
        let wall = SystemTime::now();
        let mut most = Vec::new();
        for name in [self.names.manifest(), self.names.shard(0)] {
            if self.store.current_version(&name).await?.is_none() {
                continue;
            }
            let dates = self.store.version_dates(&name).await?;
            let ages: Vec<Duration> = dates.iter().filter_map(|d| wall.duration_since(*d).ok()).collect();
            if ages.len() > most.len() {
                most = ages;
            }
        }
        Ok(most)
    }

    /// Writes this cluster's bundle if its members changed and the pace allows it; retries a
    /// failed one (the same sealed bundle, while the members stay the same) after its back-off.
    /// The members are computed again only when the stores `changed` since the last step (the
    /// loop also ticks every second, for the pace and retries). `now` paces; `wall` (the clock)
    /// seeds a new bundle's generation.
    pub async fn step(
        &mut self,
        members: &Members,
        changed: bool,
        metrics: &RegistryMetrics,
        now: Instant,
        wall: jiff::Timestamp,
    ) {
        if changed || self.set.is_none() {
            let views = self.views.refresh(&members.nodes.state());
            let pods = members.pods.as_ref().map(Store::state).unwrap_or_default();
            let pods: Vec<&PodView> = pods.iter().filter_map(|p| p.view.as_deref()).collect();
            self.set = Some(cluster_members(&views, &pods, true, &self.config));
        }
        let Some(set) = self.set.take() else { return };
        self.publish_members(&set, metrics, now, wall).await;
        self.set = Some(set);
    }

    /// [`Publisher::step`] for the members `set`.
    async fn publish_members(
        &mut self,
        set: &PeerSet,
        metrics: &RegistryMetrics,
        now: Instant,
        wall: jiff::Timestamp,
    ) {
        if self.budget.is_none() {
            self.resume_budget(now).await;
        }
        let Some(budget) = self.budget.as_mut() else { return };
        let last_generation = self.bundle.as_ref().map(|b| b.generation);
        let candidate = plan::bundle_of(&self.names.cluster, last_generation.unwrap_or(0), set);
        let changed = self.bundle.as_ref().is_none_or(|b| b.nodes != candidate.nodes);
        let (bundle, sealed) = match self.pending.take() {
            Some((bundle, sealed)) if bundle.nodes == candidate.nodes => {
                if !budget.retry_due(now) {
                    self.pending = Some((bundle, sealed));
                    return;
                }
                (bundle, sealed)
            }
            _ => {
                if !budget.due(&self.pace, changed, now) {
                    return;
                }
                let now_ms = u64::try_from(wall.as_millisecond()).unwrap_or(0);
                let bundle =
                    Bundle { generation: plan::next_generation(last_generation, now_ms), ..candidate };
                match seal(&bundle, &self.signing) {
                    Ok(sealed) => {
                        budget.charge(&self.pace, now);
                        (bundle, sealed)
                    }
                    Err(e) => {
                        budget.failed(now);
                        failed(metrics, &AgentError::from(e));
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
                budget.succeeded();
                metrics.publishes.inc();
                metrics.published_generation.set(i64::try_from(bundle.generation).unwrap_or(i64::MAX));
                metrics.published_nodes.set(i64::try_from(bundle.nodes.len()).unwrap_or(i64::MAX));
                self.bundle = Some(bundle);
                self.manifest = Some(sealed.signed);
            }
            Err(e) => {
                budget.failed(now);
                self.pending = Some((bundle, sealed));
                failed(metrics, &AgentError::from(e));
            }
        }
    }
}

/// Counts and logs a failed attempt.
fn failed(metrics: &RegistryMetrics, error: &AgentError) {
    metrics.publish_errors.inc();
    tracing::warn!(%error, "cannot publish this cluster's bundle; retrying after a back-off");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshcrypt_keyexchange::PrivateKey;
    use meshcrypt_keyexchange::mesh::{AllowedIpsFrom, Peer};
    use meshcrypt_registry::testing::MemoryStore;

    use super::*;

    fn members(count: u8) -> PeerSet {
        let peers = (0..count)
            .map(|i| {
                let node = format!("node-{i}");
                let peer = Peer {
                    node: node.clone(),
                    public_key: PrivateKey::generate().public_key(),
                    key_epoch: 0,
                    endpoint: format!("198.18.0.{}:51820", 10 + i).parse().unwrap(),
                    allowed_ips: vec![format!("10.244.{i}.0/24").parse().unwrap()],
                };
                (node, peer)
            })
            .collect();
        PeerSet { peers, local_prefixes: vec![], problems: vec![] }
    }

    /// A write whose answer is lost is retried as the same sealed bundle, with the same request
    /// tokens, though the clock has moved on: Secrets Manager keeps one version per secret, and
    /// a reader gets the bundle.
    #[tokio::test]
    async fn a_lost_answer_is_retried_without_a_second_version() {
        let signing = SigningKey::from_bytes(&[7; 32]);
        let key = signing.verifying_key();
        let names = Names { prefix: "meshcrypt".into(), cluster: "prod-a".into() };
        let pace = PublishPace { min_interval: Duration::from_secs(1), per_day: 96 };
        let config = MeshConfig { port: 51820, allowed_ips: AllowedIpsFrom::PodCidrs };
        let mut publisher = Publisher::new(signing, MemoryStore::default(), names.clone(), pace, config);
        let metrics = RegistryMetrics::default();
        let (t0, wall) = (Instant::now(), jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let later = |s: u64| (t0 + Duration::from_secs(s), wall + jiff::SignedDuration::from_secs(s as i64));
        publisher.take_over(t0).await;
        let set = members(3);

        publisher.store.lose_responses(1);
        publisher.publish_members(&set, &metrics, t0, wall).await;
        assert_eq!(metrics.publish_errors.get(), 1);
        assert_eq!(
            publisher.store.versions(&names.shard(0)),
            1,
            "the write went through, its answer did not"
        );
        assert_eq!(publisher.store.versions(&names.manifest()), 0);

        let (now, wall) = later(2);
        publisher.publish_members(&set, &metrics, now, wall).await;
        assert_eq!(metrics.publishes.get(), 1);
        assert_eq!(publisher.store.versions(&names.shard(0)), 1, "the retry wrote no new version");
        assert_eq!(publisher.store.versions(&names.manifest()), 1);
        let trust = Trust { cluster: "prod-a", key: &key, last_generation: None };
        let Ok(Fetched::Bundle { bundle, .. }) = fetch(&publisher.store, &names, &trust, None).await else {
            panic!("the bundle reads back");
        };
        assert_eq!(
            (bundle.generation, bundle.nodes.len()),
            (1_800_000_000_000, 3),
            "the first sealed bundle"
        );
    }
}
