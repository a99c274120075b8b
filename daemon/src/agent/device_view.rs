//! What the agent reports about its device, for the metrics and `meshcrypt status` alike: each
//! peer's latest handshake, kept after the session expires, and the drops by reason.

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

/// The device's drop counters by reason, as the metrics label them (`reason`) and the status
/// lists them: the reasons are stable names.
pub fn drops(c: &DeviceCounters) -> [(&'static str, u64); 6] {
    [
        ("no_peer", c.dropped_no_route),
        ("no_endpoint", c.dropped_no_endpoint),
        ("bad_source", c.dropped_bad_source),
        ("decrypt_error", c.decrypt_errors),
        ("send_error", c.dropped_send_error),
        ("too_big", c.dropped_too_big),
    ]
}
