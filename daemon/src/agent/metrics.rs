//! Prometheus metrics: reconcile counters kept by the loop, and per-peer WireGuard statistics read
//! live from the device at each scrape.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use meshcrypt_dataplane::{PublicKey, WireGuardDevice};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The metrics the reconcile loop updates.
#[derive(Debug, Default)]
pub struct LoopMetrics {
    /// Reconcile passes run.
    pub reconciles: Counter,
    /// Reconcile passes that failed.
    pub reconcile_errors: Counter,
    /// Nodes left out of the mesh, by reason.
    pub node_problems: Family<Vec<(&'static str, String)>, Gauge>,
    /// 1 while the latest pass programmed the device, peers and routes.
    pub ready: Gauge,
    /// 1 while a staged key rotation waits to be published (the current key stays in use).
    pub key_rotation_pending: Gauge,
}

/// Which node each peer key belongs to, for labels; refreshed by every pass.
pub type PeerNames = Arc<Mutex<BTreeMap<PublicKey, String>>>;

/// The device while the mesh is enabled; empty while it is switched off.
pub type DeviceSlot = Arc<std::sync::RwLock<Option<Arc<dyn WireGuardDevice>>>>;

/// Reads the device at scrape time.
#[derive(Debug)]
struct DeviceCollector {
    device: DeviceSlot,
    names: PeerNames,
}

impl Collector for DeviceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let device = self.device.read().ok().and_then(|d| d.clone());
        let Some(state) = device.and_then(|d| d.observe().ok()) else {
            return ConstGauge::new(0i64).encode(encoder.encode_descriptor(
                "meshcrypt_peers",
                "WireGuard peers configured",
                None,
                MetricType::Gauge,
            )?);
        };
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        let label = |key: &PublicKey| {
            vec![("peer_node", names.get(key).cloned().unwrap_or_else(|| key.fingerprint()))]
        };
        let now = SystemTime::now();

        ConstGauge::new(state.peers.len() as i64).encode(encoder.encode_descriptor(
            "meshcrypt_peers",
            "WireGuard peers configured",
            None,
            MetricType::Gauge,
        )?)?;
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
        let mut dropped = encoder.encode_descriptor(
            "meshcrypt_dropped_packets",
            "Packets the device dropped instead of sending them unencrypted or accepting them",
            None,
            MetricType::Counter,
        )?;
        let c = &state.counters;
        for (reason, value) in [
            ("no_peer", c.dropped_no_route),
            ("no_endpoint", c.dropped_no_endpoint),
            ("bad_source", c.dropped_bad_source),
            ("decrypt_error", c.decrypt_errors),
            ("send_error", c.dropped_send_error),
            ("too_big", c.dropped_too_big),
        ] {
            ConstCounter::new(value).encode(dropped.encode_family(&vec![("reason", reason.to_owned())])?)?;
        }
        Ok(())
    }
}

/// The registry served at `/metrics`.
pub fn registry(loop_metrics: &LoopMetrics, device: DeviceSlot, names: PeerNames) -> Registry {
    let mut registry = Registry::default();
    registry.register("meshcrypt_reconcile", "Reconcile passes run", loop_metrics.reconciles.clone());
    registry.register(
        "meshcrypt_reconcile_errors",
        "Reconcile passes that failed",
        loop_metrics.reconcile_errors.clone(),
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
    registry.register_collector(Box::new(DeviceCollector { device, names }));
    registry
}
