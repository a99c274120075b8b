//! The node's status document, `meshcrypt status -o json` (schema `meshcrypt.dev/node-status/v1`):
//! what one agent knows about its node, built from the loop's latest pass and the device as it
//! reports itself at the moment of asking. Field names are stable.

use std::collections::BTreeMap;
use std::time::SystemTime;

use meshcrypt_dataplane::{DeviceState, PublicKey};
use meshcrypt_keyexchange::NodeKeyAnnotations;
use serde::{Deserialize, Serialize};

use crate::config::settings::{KEYS, Settings};

/// The schema name and version of [`NodeStatus`].
pub const NODE_STATUS_SCHEMA: &str = "meshcrypt.dev/node-status/v1";

/// One node's status, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Always [`NODE_STATUS_SCHEMA`].
    pub schema: String,
    /// The node's name.
    pub node: String,
    /// When this was taken (RFC 3339).
    pub time: String,
    /// The agent's version (`meshcrypt --version`).
    pub version: String,
    /// Whether the latest pass programmed the device, its peers and the routes (`/readyz`).
    pub ready: bool,
    /// Why the agent is (not) ready.
    pub reason: String,
    /// The WireGuard device; `None` while the mesh is switched off or not created yet.
    pub device: Option<DeviceStatus>,
    /// The node key in use.
    pub key: KeyStatus,
    /// Every setting in force, in the ConfigMap's key order, with where its value came from.
    pub settings: Vec<SettingStatus>,
    /// The ConfigMap's keys rejected now (the last good settings stay in force), as `key: why`.
    pub rejected: Vec<String>,
    /// The peers on the device, by node name.
    pub peers: Vec<PeerStatus>,
    /// Packets the device dropped rather than send unencrypted or accept, by reason (the
    /// `reason` label of `meshcrypt_dropped_packets`).
    pub drops: BTreeMap<String, u64>,
    /// Nodes left out of the mesh, or claims contested, as this agent sees them.
    pub problems: Vec<ProblemStatus>,
}

/// The device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// The interface, e.g. `meshcrypt0`.
    pub name: String,
    /// The WireGuard implementation running the device: `userspace` (meshcrypt's, boringtun on a
    /// TUN device) or `kernel` (the kernel's WireGuard module), as the device reports itself.
    pub backend: String,
    /// The UDP port the device listens on.
    pub listen_port: u16,
    /// The device's public key's fingerprint (the key in use; it may lag a staged rotation).
    pub public_key: String,
}

/// The node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// `sha256:` and 16 hex digits of the public key (never the key itself).
    pub fingerprint: String,
    /// The key's epoch (0 for the first key, one more per rotation).
    pub epoch: u64,
    /// When the key was made (RFC 3339), from its key record.
    pub created: String,
    /// Its age in seconds at [`NodeStatus::time`].
    pub age_seconds: u64,
}

/// One setting in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingStatus {
    /// The ConfigMap key, e.g. `strict`.
    pub key: String,
    /// Its value in force, for people.
    pub value: String,
    /// Where it came from: `configmap`, `flag` (the agent's command line), `default`, or
    /// `configmap (last good)` when the ConfigMap now says something else that was rejected.
    pub source: String,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The peer's node (`<cluster>/<node>` for a peer cluster's), or its key's fingerprint when
    /// the agent has no name for it.
    pub node: String,
    /// The peer's public key's fingerprint.
    pub public_key: String,
    /// Where its packets go (`address:port`); `None` before one is known.
    pub endpoint: Option<String>,
    /// The prefixes routed to it and accepted from it.
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Vec<String>,
    /// When the latest handshake completed (RFC 3339), kept after the session expires; `None`
    /// before the first.
    pub last_handshake: Option<String>,
    /// Seconds since [`Self::last_handshake`].
    pub handshake_age_seconds: Option<u64>,
    /// Inner bytes received from it.
    pub rx_bytes: u64,
    /// Inner bytes sent to it.
    pub tx_bytes: u64,
    /// Whether a pre-shared key is set (peer clusters that share one).
    pub preshared_key: bool,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProblemStatus {
    /// The node concerned.
    pub node: String,
    /// The stable reason (the Event reason and the `meshcrypt_node_problems` label).
    pub reason: String,
    /// What is wrong.
    pub message: String,
}

/// What the loop knows after its latest pass (the device is read when asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassView {
    /// The settings in force (`None` before the first valid read).
    pub settings: Option<Settings>,
    /// The flags' settings (what an absent ConfigMap key means).
    pub base: Settings,
    /// The ConfigMap's data as last read (`None` without a ConfigMap or before it is seen).
    pub config_map: Option<BTreeMap<String, String>>,
    /// The rejected keys, as `key: why`.
    pub rejected: Vec<String>,
    /// The key in use.
    pub key: Option<NodeKeyAnnotations>,
    /// The problems as (node, reason, message).
    pub problems: Vec<(String, String, String)>,
}

/// Where each setting in force came from: the ConfigMap when it names the key with the value in
/// force; otherwise the flags when they differ from the default, else the default; and
/// `configmap (last good)` for a value in force that neither the ConfigMap now nor the flags give
/// (the ConfigMap changed and was rejected).
pub fn settings_status(
    in_force: &Settings,
    base: &Settings,
    config_map: Option<&BTreeMap<String, String>>,
) -> Vec<SettingStatus> {
    let default = Settings::default();
    KEYS.iter()
        .map(|(key, _, _)| {
            let value = in_force.describe(key);
            let from_map = config_map.and_then(|data| {
                let raw = data.get(*key)?;
                let one = BTreeMap::from([((*key).to_owned(), raw.clone())]);
                // Over the settings in force, so that checks across keys hold.
                Settings::parse(in_force, &one).ok().map(|s| s.describe(key))
            });
            let source = if from_map.as_deref() == Some(value.as_str()) {
                "configmap"
            } else if base.describe(key) != value {
                "configmap (last good)"
            } else if default.describe(key) != value {
                "flag"
            } else {
                "default"
            };
            SettingStatus { key: (*key).to_owned(), value, source: source.to_owned() }
        })
        .collect()
}

/// RFC 3339 for a system time (`None` if before 1970 or out of range).
fn rfc3339(t: SystemTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::try_from(t).ok()
}

/// The document for `node` at `now`: `view` from the latest pass, readiness as the probes have
/// it, `device` as it reports itself now, with `names` for its peers and `handshakes` (each
/// peer's latest, kept past expiry).
#[allow(clippy::too_many_arguments)]
pub fn node_status(
    node: &str,
    now: jiff::Timestamp,
    (ready, reason): (bool, String),
    view: &PassView,
    device: Option<&DeviceState>,
    names: &BTreeMap<PublicKey, String>,
    handshakes: &BTreeMap<PublicKey, SystemTime>,
) -> NodeStatus {
    let key = match &view.key {
        Some(k) => KeyStatus {
            fingerprint: k.public_key.fingerprint(),
            epoch: k.epoch,
            created: k.created.to_string(),
            age_seconds: u64::try_from(now.duration_since(k.created).as_secs()).unwrap_or(0),
        },
        None => KeyStatus { fingerprint: String::new(), epoch: 0, created: String::new(), age_seconds: 0 },
    };
    let mut peers: Vec<PeerStatus> = device
        .map(|d| d.peers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let latest = handshakes.get(&p.public_key).copied().and_then(rfc3339);
            PeerStatus {
                node: names.get(&p.public_key).cloned().unwrap_or_else(|| p.public_key.fingerprint()),
                public_key: p.public_key.fingerprint(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
                last_handshake: latest.map(|t| t.to_string()),
                handshake_age_seconds: latest
                    .map(|t| u64::try_from(now.duration_since(t).as_secs()).unwrap_or(0)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                preshared_key: p.preshared_key.is_some(),
            }
        })
        .collect();
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    NodeStatus {
        schema: NODE_STATUS_SCHEMA.to_owned(),
        node: node.to_owned(),
        time: now.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ready,
        reason,
        device: device.map(|d| DeviceStatus {
            name: d.ifname.clone(),
            backend: d.backend.as_str().to_owned(),
            listen_port: d.listen_port,
            public_key: d.public_key.fingerprint(),
        }),
        key,
        settings: view
            .settings
            .as_ref()
            .map(|s| settings_status(s, &view.base, view.config_map.as_ref()))
            .unwrap_or_default(),
        rejected: view.rejected.clone(),
        peers,
        drops: device
            .map(|d| {
                crate::agent::device_view::drops(&d.counters)
                    .iter()
                    .map(|(r, n)| ((*r).to_owned(), *n))
                    .collect()
            })
            .unwrap_or_default(),
        problems: view
            .problems
            .iter()
            .map(|(node, reason, message)| ProblemStatus {
                node: node.clone(),
                reason: reason.clone(),
                message: message.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_status_table() {
        let flags = Settings {
            port: 51821,
            pod_networks: vec!["10.244.0.0/16".parse().unwrap()],
            ..Settings::default()
        };
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let source = |in_force: &Settings, map: Option<&BTreeMap<String, String>>, key: &str| {
            settings_status(in_force, &flags, map).into_iter().find(|s| s.key == key).unwrap().source
        };
        let strict_off = Settings { strict: false, ..flags.clone() };
        let map = data(&[("strict", "false")]);
        for (case, in_force, map, key, want) in [
            ("a key the ConfigMap sets", &strict_off, Some(&map), "strict", "configmap"),
            ("a key only a flag sets", &strict_off, Some(&map), "port", "flag"),
            ("a key nobody sets", &strict_off, Some(&map), "host-encryption", "default"),
            ("no ConfigMap at all", &flags, None, "port", "flag"),
            (
                "the ConfigMap now says otherwise (rejected)",
                &strict_off,
                Some(&data(&[("strict", "maybe")])),
                "strict",
                "configmap (last good)",
            ),
            (
                "the ConfigMap repeats the default",
                &flags,
                Some(&data(&[("strict", "true")])),
                "strict",
                "configmap",
            ),
        ] {
            assert_eq!(source(in_force, map, key), want, "{case}");
        }
    }
}
