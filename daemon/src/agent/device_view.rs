//! What the agent reports about its device, for the metrics and `meshcrypt status` alike: each
//! peer's latest handshake, kept after the session expires, the peers sent to without an answer,
//! and the drops by reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use meshcrypt_dataplane::{DeviceCounters, DeviceState, PublicKey};

/// Each peer's latest handshake seen, kept after its session expires (the device forgets it then),
/// until the peer leaves the device. Shared by every reader of the device.
#[derive(Debug, Clone, Default)]
pub struct Handshakes(Arc<Mutex<BTreeMap<PublicKey, SystemTime>>>);

impl Handshakes {
    /// Takes in what `state` reports and returns each peer's latest handshake seen (peers that
    /// never completed one are absent).
    pub fn observe(&self, state: &DeviceState) -> BTreeMap<PublicKey, SystemTime> {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|key, _| state.peer(key).is_some());
        for peer in &state.peers {
            if let Some(at) = peer.last_handshake {
                let kept = seen.entry(peer.public_key).or_insert(at);
                *kept = (*kept).max(at);
            }
        }
        seen.clone()
    }
}

/// The peers the device has sent to (its tx bytes count handshake initiations) that no handshake
/// ever completed with, `handshakes` being [`Handshakes::observe`]'s: as handshakes start with the
/// first packet, a peer nothing was sent to is not among them.
pub fn unanswered<'a>(
    state: &'a DeviceState,
    handshakes: &'a BTreeMap<PublicKey, SystemTime>,
) -> impl Iterator<Item = PublicKey> + 'a {
    state
        .peers
        .iter()
        .filter(|p| p.tx_bytes > 0 && !handshakes.contains_key(&p.public_key))
        .map(|p| p.public_key)
}

/// The device's drop counters by reason, as the metrics label them (`reason`) and the status
/// lists them: the reasons are stable names.
pub fn drops(c: &DeviceCounters) -> [(&'static str, u64); 7] {
    [
        ("no_peer", c.dropped_no_route),
        ("no_endpoint", c.dropped_no_endpoint),
        ("bad_source", c.dropped_bad_source),
        ("decrypt_error", c.decrypt_errors),
        ("unknown_key", c.handshakes_unknown_key),
        ("send_error", c.dropped_send_error),
        ("too_big", c.dropped_too_big),
    ]
}

/// The bytes exchanged with all peers as counters that never go back, for the aggregate series: a
/// peer removed, or a device recreated (its counters start again), leaves what it had counted in
/// the totals, so `rate()` sees no reset when a node scales in.
#[derive(Debug, Default)]
pub struct ByteTotals(Mutex<Totals>);

#[derive(Debug, Default)]
struct Totals {
    /// Each peer's (rx, tx) as last seen.
    seen: BTreeMap<PublicKey, (u64, u64)>,
    /// What peers no longer counted had counted.
    retired: (u64, u64),
}

impl ByteTotals {
    /// Takes in the device as it reports itself now (`None`: no device) and returns the totals
    /// (received, transmitted) in bytes.
    pub fn observe(&self, state: Option<&DeviceState>) -> (u64, u64) {
        let mut t = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now: BTreeMap<PublicKey, (u64, u64)> = state
            .map(|s| s.peers.iter().map(|p| (p.public_key, (p.rx_bytes, p.tx_bytes))).collect())
            .unwrap_or_default();
        let mut retired = t.retired;
        for (key, (rx, tx)) in &t.seen {
            match now.get(key) {
                Some((now_rx, now_tx)) if now_rx >= rx && now_tx >= tx => {}
                _ => retired = (retired.0.saturating_add(*rx), retired.1.saturating_add(*tx)),
            }
        }
        let live =
            now.values().fold((0u64, 0u64), |a, (rx, tx)| (a.0.saturating_add(*rx), a.1.saturating_add(*tx)));
        t.retired = retired;
        t.seen = now;
        (retired.0.saturating_add(live.0), retired.1.saturating_add(live.1))
    }
}

#[cfg(test)]
mod tests {
    use meshcrypt_dataplane::{PeerState, PrivateKey};

    use super::*;

    fn device(peers: &[(PublicKey, u64, u64)]) -> DeviceState {
        let mut state = DeviceState {
            backend: meshcrypt_dataplane::BackendKind::Userspace,
            ifname: "meshcrypt0".into(),
            ifindex: 7,
            public_key: PrivateKey::generate().public_key(),
            listen_port: 51820,
            fwmark: None,
            peers: peers
                .iter()
                .map(|(k, rx, tx)| PeerState {
                    public_key: *k,
                    endpoint: None,
                    allowed_ips: vec![],
                    persistent_keepalive: None,
                    preshared_key: None,
                    last_handshake: None,
                    rx_bytes: *rx,
                    tx_bytes: *tx,
                })
                .collect(),
            counters: DeviceCounters::default(),
        };
        // Sorted by key, as every backend reports them.
        state.peers.sort_by_key(|p| p.public_key);
        state
    }

    #[test]
    fn byte_totals_never_go_back() {
        let (a, b) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
        let totals = ByteTotals::default();
        for (case, state, want) in [
            ("two peers", Some(device(&[(a, 10, 1), (b, 20, 2)])), (30, 3)),
            ("they count on", Some(device(&[(a, 15, 1), (b, 25, 4)])), (40, 5)),
            ("b removed: what it counted stays", Some(device(&[(a, 16, 1)])), (41, 5)),
            ("the device recreated: a starts again", Some(device(&[(a, 2, 0)])), (43, 5)),
            ("switched off", None, (43, 5)),
            ("back with b", Some(device(&[(b, 1, 1)])), (44, 6)),
        ] {
            assert_eq!(totals.observe(state.as_ref()), want, "{case}");
        }
    }
}
