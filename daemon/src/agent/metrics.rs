//! Prometheus metrics: reconcile counters kept by the loop, and per-peer WireGuard statistics read
//! live from the device at each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use meshcrypt_dataplane::{PublicKey, WireGuardDevice};

use super::device_view::{ByteTotals, Handshakes, drops};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A histogram per phase of a pass (`phase`: gather, decide, execute, release).
pub type PhaseHistograms = Family<Vec<(&'static str, &'static str)>, Histogram, fn() -> Histogram>;

/// The buckets of [`LoopMetrics::phase_seconds`]: 100 µs to 5 s, the range between a pass over a
/// handful of nodes and one over 5,000 nodes and 150,000 pods.
fn phase_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

/// The metrics the reconcile loop updates.
#[derive(Debug)]
pub struct LoopMetrics {
    /// Reconcile passes run.
    pub reconciles: Counter,
    /// Reconcile passes that failed.
    pub reconcile_errors: Counter,
    /// How long each phase of a pass took (`phase`: gather, decide, execute, release), in seconds.
    pub phase_seconds: PhaseHistograms,
    /// Peer changes applied to the device by passes that succeeded (an added, removed or changed
    /// peer is one).
    pub peer_ops: Counter,
    /// Kernel changes (routes, rules, addresses, the link) applied by passes that succeeded.
    pub kernel_ops: Counter,
    /// Nodes left out of the mesh, by reason.
    pub node_problems: Family<Vec<(&'static str, String)>, Gauge>,
    /// 1 while the latest pass programmed the device, peers and routes.
    pub ready: Gauge,
    /// 1 while a staged key rotation waits to be published (the current key stays in use).
    pub key_rotation_pending: Gauge,
    /// Key rotations this agent completed (a new key published and put in use) since it started.
    pub key_rotations: Counter,
    /// The key in use: one series, `{fingerprint, epoch}`, value 1.
    pub key_info: Family<Vec<(&'static str, String)>, Gauge>,
    /// When the key in use was made (Unix seconds, from its key record).
    pub key_created: Gauge,
    /// 1 while the ConfigMap is rejected (the last good settings stay in force).
    pub config_rejected: Gauge,
    /// Suspicious-activity signals raised by this agent, by reason (docs/signals.md).
    pub signals: Family<Vec<(&'static str, String)>, Counter>,
    /// The peers only in aggregate (the `peer-metrics: summary` setting), no per-peer series.
    pub peers_summarised: Arc<AtomicBool>,
}

impl Default for LoopMetrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            phase_seconds: Family::new_with_constructor(phase_histogram),
            peer_ops: Counter::default(),
            kernel_ops: Counter::default(),
            node_problems: Family::default(),
            ready: Gauge::default(),
            key_rotation_pending: Gauge::default(),
            key_rotations: Counter::default(),
            key_info: Family::default(),
            key_created: Gauge::default(),
            config_rejected: Gauge::default(),
            signals: Family::default(),
            peers_summarised: Arc::default(),
        }
    }
}

impl LoopMetrics {
    /// Shows `key` as the key in use (the series of the one before goes).
    pub fn set_key(&self, key: &meshcrypt_keyexchange::NodeKeyAnnotations) {
        let labels = vec![("fingerprint", key.public_key.fingerprint()), ("epoch", key.epoch.to_string())];
        if self.key_info.get(&labels).is_none() {
            self.key_info.clear();
            self.key_info.get_or_create(&labels).set(1);
        }
        self.key_created.set(key.created.as_second());
    }
}

/// Which node each peer key belongs to, for labels: the map as the latest pass left it, replaced
/// whole when the peer set's keys or names change (a reader takes the `Arc`, not a copy).
pub type PeerNames = Arc<Mutex<Arc<BTreeMap<PublicKey, String>>>>;

/// The device while the mesh is enabled; empty while it is switched off.
pub type DeviceSlot = Arc<std::sync::RwLock<Option<Arc<dyn WireGuardDevice>>>>;

/// Reads the device at scrape time.
#[derive(Debug)]
struct DeviceCollector {
    device: DeviceSlot,
    names: PeerNames,
    handshakes: Handshakes,
    summarised: Arc<AtomicBool>,
    totals: ByteTotals,
}

impl Collector for DeviceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let device = self.device.read().ok().and_then(|d| d.clone());
        let Some(state) = device.and_then(|d| d.observe().ok()) else {
            self.totals.observe(None);
            return ConstGauge::new(0i64).encode(encoder.encode_descriptor(
                "meshcrypt_peers",
                "WireGuard peers configured",
                None,
                MetricType::Gauge,
            )?);
        };
        let names = self.names.lock().map(|n| Arc::clone(&n)).unwrap_or_default();
        let label = |key: &PublicKey| {
            vec![("peer_node", names.get(key).cloned().unwrap_or_else(|| key.fingerprint()))]
        };
        let now = SystemTime::now();
        let latest = self.handshakes.observe(&state);

        ConstGauge::new(state.peers.len() as i64).encode(encoder.encode_descriptor(
            "meshcrypt_peers",
            "WireGuard peers configured",
            None,
            MetricType::Gauge,
        )?)?;
        // An info metric (always 1): which WireGuard implementation runs the device, so a
        // dashboard can tell the nodes on the kernel backend from those on the userspace one.
        let info = [("backend", state.backend.as_str().to_owned()), ("interface", state.ifname.clone())];
        ConstGauge::new(1i64).encode(encoder.encode_descriptor(
            "meshcrypt_device_info",
            "The WireGuard device: its backend (userspace or kernel) and interface, as labels; always 1",
            None,
            MetricType::Gauge,
        )?.encode_family(&info)?)?;
        ConstGauge::new(latest.len() as i64).encode(encoder.encode_descriptor(
            "meshcrypt_peers_handshaked",
            "Peers a handshake completed with since they were configured",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(super::device_view::unanswered(&state, &latest).count() as i64).encode(encoder.encode_descriptor(
            "meshcrypt_peers_unanswered",
            "Peers this node has sent to (handshake initiations at least) that no handshake ever completed with",
            None,
            MetricType::Gauge,
        )?)?;
        let stamp = |key: &PublicKey| {
            latest
                .get(key)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        // Over the peers that had a handshake: handshakes start with traffic, so a peer nothing
        // was sent to has none, and would hold the series at 0.
        let oldest = state.peers.iter().map(|p| stamp(&p.public_key)).filter(|t| *t > 0.0).reduce(f64::min);
        ConstGauge::new(oldest.unwrap_or(0.0)).encode(encoder.encode_descriptor(
            "meshcrypt_peer_last_handshake_oldest_timestamp_seconds",
            "The oldest of the peers' latest handshakes, over the peers that had one, Unix seconds (0 before the first)",
            None,
            MetricType::Gauge,
        )?)?;
        let (rx, tx) = self.totals.observe(Some(&state));
        for (name, help, total) in [
            ("meshcrypt_receive_bytes", "Bytes received from all peers, those gone included", rx),
            ("meshcrypt_transmit_bytes", "Bytes sent to all peers, those gone included", tx),
        ] {
            ConstCounter::new(total).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        if !self.summarised.load(Ordering::Relaxed) {
            let mut family = encoder.encode_descriptor(
                "meshcrypt_peer_handshake_age_seconds",
                "Seconds since the latest handshake with each peer (absent before the first)",
                None,
                MetricType::Gauge,
            )?;
            for peer in &state.peers {
                if let Some(at) = peer.last_handshake {
                    let age = now.duration_since(at).unwrap_or_default().as_secs_f64();
                    ConstGauge::new(age).encode(family.encode_family(&label(&peer.public_key))?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "meshcrypt_peer_last_handshake_timestamp_seconds",
                "Unix time of the latest handshake with each peer, kept after its session expires; 0 before the first",
                None,
                MetricType::Gauge,
            )?;
            for peer in &state.peers {
                ConstGauge::new(stamp(&peer.public_key))
                    .encode(family.encode_family(&label(&peer.public_key))?)?;
            }
            for (name, help, pick) in [
                ("meshcrypt_peer_receive_bytes", "Bytes received from each peer", true),
                ("meshcrypt_peer_transmit_bytes", "Bytes sent to each peer", false),
            ] {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for peer in &state.peers {
                    let bytes = if pick { peer.rx_bytes } else { peer.tx_bytes };
                    ConstCounter::new(bytes).encode(family.encode_family(&label(&peer.public_key))?)?;
                }
            }
        }
        let mut dropped = encoder.encode_descriptor(
            "meshcrypt_dropped_packets",
            "Packets the device dropped instead of sending them unencrypted or accepting them",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in drops(&state.counters) {
            ConstCounter::new(value).encode(dropped.encode_family(&vec![("reason", reason.to_owned())])?)?;
        }
        Ok(())
    }
}

/// The registry served at `/metrics`.
pub fn registry(
    loop_metrics: &LoopMetrics,
    device: DeviceSlot,
    names: PeerNames,
    handshakes: Handshakes,
) -> Registry {
    let mut registry = Registry::default();
    registry.register("meshcrypt_reconcile", "Reconcile passes run", loop_metrics.reconciles.clone());
    registry.register(
        "meshcrypt_reconcile_errors",
        "Reconcile passes that failed",
        loop_metrics.reconcile_errors.clone(),
    );
    registry.register(
        "meshcrypt_reconcile_phase_seconds",
        "How long each phase of a reconcile pass took (gather: every read; decide: the pure decisions; execute: the device, kernel and API writes; release: giving the pass's freed heap pages back to the kernel), seconds",
        loop_metrics.phase_seconds.clone(),
    );
    registry.register(
        "meshcrypt_device_peer_ops",
        "Peer changes (added, removed, changed) applied to the WireGuard device by reconcile passes that succeeded",
        loop_metrics.peer_ops.clone(),
    );
    registry.register(
        "meshcrypt_kernel_ops",
        "Kernel changes (routes, rules, addresses, the link) applied by reconcile passes that succeeded",
        loop_metrics.kernel_ops.clone(),
    );
    registry.register(
        "meshcrypt_node_problems",
        "Nodes left out of the mesh, by reason",
        loop_metrics.node_problems.clone(),
    );
    registry.register(
        "meshcrypt_ready",
        "1 while the latest reconcile pass programmed the device, its peers and the routes",
        loop_metrics.ready.clone(),
    );
    registry.register(
        "meshcrypt_key_rotation_pending",
        "1 while a staged key rotation waits to be published; the current key stays in use",
        loop_metrics.key_rotation_pending.clone(),
    );
    registry.register(
        "meshcrypt_key_rotations",
        "Key rotations this agent completed (the new key published, then put in use) since it started; the epoch counts them over the node's life",
        loop_metrics.key_rotations.clone(),
    );
    registry.register(
        "meshcrypt_key_info",
        "The key in use: its fingerprint and epoch (value always 1)",
        loop_metrics.key_info.clone(),
    );
    registry.register(
        "meshcrypt_key_created_timestamp_seconds",
        "When the key in use was made, Unix seconds (from its key record)",
        loop_metrics.key_created.clone(),
    );
    registry.register(
        "meshcrypt_signals",
        "Suspicious-activity signals (Warning Events of docs/signals.md's codes) this agent raised, by reason",
        loop_metrics.signals.clone(),
    );
    registry.register(
        "meshcrypt_config_rejected",
        "1 while the ConfigMap is rejected; the last good settings stay in force",
        loop_metrics.config_rejected.clone(),
    );
    let summarised = loop_metrics.peers_summarised.clone();
    let totals = ByteTotals::default();
    registry.register_collector(Box::new(DeviceCollector { device, names, handshakes, summarised, totals }));
    crate::process_metrics::register(&mut registry);
    registry
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use meshcrypt_dataplane::fake::FakeBackend;
    use meshcrypt_dataplane::{Change, DeviceConfig, PeerConfig, PrivateKey, WireGuardBackend as _};
    use meshcrypt_keyexchange::NodeKeyAnnotations;

    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    /// The handshake timestamp exists before the first handshake (0), stays after the session
    /// expires (the age series does not), and goes with the peer; the key series follows the key.
    #[test]
    fn handshake_timestamps_outlive_sessions_and_the_key_series_follows_the_key() {
        let backend = FakeBackend::new(Box::new(|_| Ok(7)), Arc::new(|_| {}));
        let config = DeviceConfig::new("meshcrypt0", PrivateKey::generate());
        let device = backend.create(config).unwrap();
        let peer = PrivateKey::generate().public_key();
        device
            .apply(&[Change::UpsertPeer(PeerConfig {
                public_key: peer,
                endpoint: Some("198.18.0.11:51820".parse().unwrap()),
                allowed_ips: vec![],
                persistent_keepalive: None,
                preshared_key: None,
            })])
            .unwrap();
        let loop_metrics = LoopMetrics::default();
        let slot = DeviceSlot::default();
        *slot.write().unwrap() = Some(device);
        let names = PeerNames::default();
        *names.lock().unwrap() = Arc::new([(peer, "node-1".into())].into());
        let registry = registry(&loop_metrics, slot, names, Handshakes::default());
        let series = "meshcrypt_peer_last_handshake_timestamp_seconds{peer_node=\"node-1\"}";

        assert!(scrape(&registry).contains(&format!("{series} 0.0")), "before the first handshake");
        let fake = backend.device().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        fake.set_handshake(&peer, Some(at));
        let text = scrape(&registry);
        assert!(text.contains(&format!("{series} 1800000000.0")), "{text}");
        assert!(text.contains("meshcrypt_peer_handshake_age_seconds{peer_node=\"node-1\"}"));
        fake.set_handshake(&peer, None);
        let text = scrape(&registry);
        assert!(text.contains(&format!("{series} 1800000000.0")), "kept after the session expired: {text}");
        assert!(!text.contains("meshcrypt_peer_handshake_age_seconds{"), "{text}");
        fake.apply(&[Change::RemovePeer(peer)]).unwrap();
        assert!(!scrape(&registry).contains(series), "gone with the peer");

        let key = |epoch| NodeKeyAnnotations {
            public_key: PrivateKey::generate().public_key(),
            epoch,
            created: jiff::Timestamp::from_second(1_800_000_000 + epoch as i64).unwrap(),
        };
        let (first, second) = (key(0), key(1));
        loop_metrics.set_key(&first);
        loop_metrics.set_key(&second);
        let text = scrape(&registry);
        let info = |k: &NodeKeyAnnotations| {
            format!(
                "meshcrypt_key_info{{fingerprint=\"{}\",epoch=\"{}\"}} 1",
                k.public_key.fingerprint(),
                k.epoch
            )
        };
        assert!(text.contains(&info(&second)) && !text.contains(&info(&first)), "{text}");
        assert!(text.contains("meshcrypt_key_created_timestamp_seconds 1800000001"), "{text}");
    }

    /// `peer-metrics: summary` drops every per-peer series and keeps the aggregate ones, among
    /// them the peers sent to without an answer.
    #[test]
    fn the_summary_mode_keeps_no_per_peer_series() {
        let backend = FakeBackend::new(Box::new(|_| Ok(7)), Arc::new(|_| {}));
        let device = backend.create(DeviceConfig::new("meshcrypt0", PrivateKey::generate())).unwrap();
        let peers: Vec<PublicKey> = (0..3).map(|_| PrivateKey::generate().public_key()).collect();
        let upserts: Vec<Change> = peers
            .iter()
            .map(|k| {
                Change::UpsertPeer(PeerConfig {
                    public_key: *k,
                    endpoint: None,
                    allowed_ips: vec![],
                    persistent_keepalive: None,
                    preshared_key: None,
                })
            })
            .collect();
        device.apply(&upserts).unwrap();
        let fake = backend.device().unwrap();
        for (i, k) in peers.iter().take(2).enumerate() {
            fake.set_handshake(k, Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i as u64)));
        }
        let loop_metrics = LoopMetrics::default();
        let slot = DeviceSlot::default();
        *slot.write().unwrap() = Some(device);
        let registry = registry(&loop_metrics, slot, PeerNames::default(), Handshakes::default());
        let per_peer = scrape(&registry);
        assert_eq!(
            per_peer.matches("meshcrypt_peer_last_handshake_timestamp_seconds{").count(),
            3,
            "{per_peer}"
        );
        loop_metrics.peers_summarised.store(true, Ordering::Relaxed);
        assert!(scrape(&registry).contains("meshcrypt_peers_unanswered 0"), "the third never sent to");
        fake.set_tx_bytes(&peers[2], 148);
        let summary = scrape(&registry);
        assert!(!summary.contains("peer_node="), "{summary}");
        assert!(summary.contains("meshcrypt_peers 3"), "{summary}");
        assert!(summary.contains("meshcrypt_peers_handshaked 2"), "{summary}");
        assert!(summary.contains("meshcrypt_peers_unanswered 1"), "sent an initiation, no answer: {summary}");
        assert!(
            summary.contains("meshcrypt_peer_last_handshake_oldest_timestamp_seconds 1800000000.0"),
            "the oldest of the two that had one: {summary}"
        );
    }
}
