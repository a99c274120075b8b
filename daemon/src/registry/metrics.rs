//! The registry's Prometheus metrics: leadership, this cluster's publishes, and each peer
//! cluster's freshness and refusals, so an alert fires when a peer's nodes go stale.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels naming a peer cluster.
pub type PeerLabel = Vec<(&'static str, String)>;

/// The metrics the registry's loop updates.
#[derive(Debug, Default)]
pub struct RegistryMetrics {
    /// 1 while this replica holds the Lease (is the active one).
    pub leader: Gauge,
    /// Bundles of this cluster written to Secrets Manager.
    pub publishes: Counter,
    /// Publish attempts that failed (retried after a back-off).
    pub publish_errors: Counter,
    /// The generation of the bundle this replica published last.
    pub published_generation: Gauge,
    /// Nodes in the bundle this replica published last.
    pub published_nodes: Gauge,
    /// Per peer: the generation of its last accepted bundle.
    pub peer_generation: Family<PeerLabel, Gauge>,
    /// Per peer: nodes in its last accepted bundle (the ones the agents mesh with).
    pub peer_nodes: Family<PeerLabel, Gauge>,
    /// Per peer: Unix seconds of the last read that succeeded (a bundle accepted, or the version
    /// unchanged).
    pub peer_last_success: Family<PeerLabel, Gauge>,
    /// Per peer: 1 while its reads fail and its last good nodes stay in use.
    pub peer_stale: Family<PeerLabel, Gauge>,
    /// Per peer and reason (`BundleRejected`, `BundleTorn`, `BundleMissing`,
    /// `SecretsManagerUnavailable`): reads that failed.
    pub peer_failures: Family<PeerLabel, Counter>,
}

impl RegistryMetrics {
    /// Forgets the per-peer series: a replica that loses the Lease stops reporting peers (the
    /// active one does), so an alert on staleness follows the leader.
    pub fn clear_peers(&self) {
        self.peer_generation.clear();
        self.peer_nodes.clear();
        self.peer_last_success.clear();
        self.peer_stale.clear();
    }

    /// The labels of peer cluster `peer`.
    pub fn peer(peer: &str) -> PeerLabel {
        vec![("peer_cluster", peer.to_owned())]
    }

    /// The labels of a failed read of `peer` for `reason`.
    pub fn failure(peer: &str, reason: &'static str) -> PeerLabel {
        vec![("peer_cluster", peer.to_owned()), ("reason", reason.to_owned())]
    }

    /// A Prometheus registry exposing these metrics under `meshcrypt_registry_*`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register("meshcrypt_registry_leader", "1 while this replica holds the Lease", self.leader.clone());
        r.register(
            "meshcrypt_registry_publishes",
            "Bundles of this cluster written to Secrets Manager",
            self.publishes.clone(),
        );
        r.register(
            "meshcrypt_registry_publish_errors",
            "Publishes of this cluster's bundle that failed (retried)",
            self.publish_errors.clone(),
        );
        r.register(
            "meshcrypt_registry_published_generation",
            "Generation of the bundle this replica published last",
            self.published_generation.clone(),
        );
        r.register(
            "meshcrypt_registry_published_nodes",
            "Nodes in the bundle this replica published last",
            self.published_nodes.clone(),
        );
        r.register(
            "meshcrypt_registry_peer_generation",
            "Generation of the peer cluster's last accepted bundle",
            self.peer_generation.clone(),
        );
        r.register(
            "meshcrypt_registry_peer_nodes",
            "Nodes in the peer cluster's last accepted bundle",
            self.peer_nodes.clone(),
        );
        r.register(
            "meshcrypt_registry_peer_last_success_timestamp_seconds",
            "Unix time of the last successful read of the peer cluster's bundle",
            self.peer_last_success.clone(),
        );
        r.register(
            "meshcrypt_registry_peer_stale",
            "1 while reads of the peer cluster's bundle fail and its last good nodes stay in use",
            self.peer_stale.clone(),
        );
        r.register(
            "meshcrypt_registry_peer_failures",
            "Failed reads of the peer cluster's bundle, by reason",
            self.peer_failures.clone(),
        );
        crate::process_metrics::register(&mut r);
        r
    }
}
