//! From the desired peer set to WireGuard device changes: a pure diff, so that a peer whose
//! endpoint or allowed IPs change keeps its session, and nothing is recreated that need not be.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use meshcrypt_dataplane::{Change, DeviceState, PeerConfig, PeerUpdate, PresharedKey, PublicKey};
use meshcrypt_keyexchange::mesh::PeerSet;

/// One change to the device's peers, comparable in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    /// A peer the device does not have yet.
    Add {
        /// Its key.
        key: PublicKey,
        /// Its endpoint.
        endpoint: SocketAddr,
        /// Its allowed IPs.
        allowed_ips: Vec<IpNet>,
        /// Its peer cluster's pre-shared key, if any.
        preshared_key: Option<PresharedKey>,
    },
    /// A new endpoint for a live peer.
    SetEndpoint(PublicKey, SocketAddr),
    /// A new allowed-IP set for a live peer; its session is kept.
    SetAllowedIps(PublicKey, Vec<IpNet>),
    /// A new pre-shared key (or none) for a live peer: its session restarts with the next
    /// handshake.
    SetPresharedKey(PublicKey, Option<PresharedKey>),
    /// A peer that is no longer wanted (its node left, or changed its key).
    Remove(PublicKey),
}

/// The operations that turn the device's peers into `desired`, with `psks` for the peers that
/// have a pre-shared key (compared with the device's by fingerprint). Removals come first: a node
/// that changed its key hands its prefixes from the old peer to the new one without a moment in
/// which both claim them (packets in between are dropped by the device, never sent in plaintext).
pub fn peer_ops(
    desired: &PeerSet,
    psks: &BTreeMap<PublicKey, PresharedKey>,
    device: &DeviceState,
) -> Vec<PeerOp> {
    // The desired peers sorted by key (the later of two with one key wins, as in a map), and
    // allowed IPs compared as sorted sets borrowed where they are sorted already: no set is built
    // per peer, and a pass at 5,000 nodes allocates nothing for the peers in sync.
    let mut want: Vec<(PublicKey, SocketAddr, Cow<'_, [IpNet]>)> =
        desired.peers.values().map(|p| (p.public_key, p.endpoint, sorted_set(&p.allowed_ips))).collect();
    want.sort_by_key(|(key, ..)| *key);
    want.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    let wanted = |key: &PublicKey| want.binary_search_by_key(key, |(k, ..)| *k).is_ok();
    let mut ops: Vec<PeerOp> = device
        .peers
        .iter()
        .filter(|p| !wanted(&p.public_key))
        .map(|p| PeerOp::Remove(p.public_key))
        .collect();
    for (key, endpoint, allowed) in &want {
        let Some(have) = device.peer(key) else {
            ops.push(PeerOp::Add {
                key: *key,
                endpoint: *endpoint,
                allowed_ips: allowed.to_vec(),
                preshared_key: psks.get(key).cloned(),
            });
            continue;
        };
        let psk = psks.get(key);
        if have.preshared_key != psk.map(PresharedKey::fingerprint) {
            ops.push(PeerOp::SetPresharedKey(*key, psk.cloned()));
        }
        if have.endpoint != Some(*endpoint) {
            ops.push(PeerOp::SetEndpoint(*key, *endpoint));
        }
        if sorted_set(&have.allowed_ips) != *allowed {
            ops.push(PeerOp::SetAllowedIps(*key, allowed.to_vec()));
        }
    }
    ops
}

/// `ips` sorted, each once: borrowed when they are already (the peer set's and the device's
/// are), else a sorted copy.
fn sorted_set(ips: &[IpNet]) -> Cow<'_, [IpNet]> {
    if ips.is_sorted_by(|a, b| a < b) {
        Cow::Borrowed(ips)
    } else {
        let mut copy = ips.to_vec();
        copy.sort_unstable();
        copy.dedup();
        Cow::Owned(copy)
    }
}

/// How long a session may carry data after its handshake (REJECT_AFTER_TIME, WireGuard paper
/// §6.1: 180 s).
const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// The peers to start a handshake with when this node's own key has just changed (every session
/// was reset): the desired peers with a handshake in the REJECT_AFTER_TIME before `now`
/// (`handshakes`), which may hold a session under the old key and keep sending on it until
/// their timers give up (15 s). Every other handshake starts with the first packet for a peer,
/// as kernel WireGuard's do, so tunnel state and timers cost only the peers in use (at 5,000
/// nodes, a handshake with every peer cost 55 MB and a third of an agent's CPU).
///
/// Two waits are cut short by the userspace device itself, which sees what this view of it
/// cannot: a peer that knocked before it was added (its initiation refused) gets an initiation
/// when it is added (`dataplane` `knocks`), and a peer that keeps sending on a session the
/// device lost (an agent restart) is answered (`dataplane` `answer_lost_session`).
pub fn handshake_targets_after_key_change(
    desired: &PeerSet,
    handshakes: &BTreeMap<PublicKey, SystemTime>,
    now: SystemTime,
) -> Vec<PublicKey> {
    let live = |at: &SystemTime| now.duration_since(*at).is_ok_and(|age| age <= REJECT_AFTER_TIME);
    let targets: BTreeSet<PublicKey> = desired
        .peers
        .values()
        .map(|p| p.public_key)
        .filter(|key| handshakes.get(key).is_some_and(live))
        .collect();
    targets.into_iter().collect()
}

/// The device changes for `ops`.
pub fn to_changes(ops: &[PeerOp]) -> Vec<Change> {
    ops.iter()
        .map(|op| match op {
            PeerOp::Add { key, endpoint, allowed_ips, preshared_key } => Change::UpsertPeer(PeerConfig {
                public_key: *key,
                endpoint: Some(*endpoint),
                allowed_ips: allowed_ips.clone(),
                persistent_keepalive: None,
                preshared_key: preshared_key.clone(),
            }),
            PeerOp::SetPresharedKey(key, psk) => Change::UpdatePeer(PeerUpdate {
                update_only: true,
                preshared_key: Some(psk.clone()),
                ..PeerUpdate::new(*key)
            }),
            PeerOp::SetEndpoint(key, endpoint) => Change::UpdatePeer(PeerUpdate {
                update_only: true,
                endpoint: Some(*endpoint),
                ..PeerUpdate::new(*key)
            }),
            PeerOp::SetAllowedIps(key, allowed) => {
                Change::ReplaceAllowedIps { public_key: *key, allowed_ips: allowed.clone() }
            }
            PeerOp::Remove(key) => Change::RemovePeer(*key),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_dataplane::{DeviceCounters, PeerState, PrivateKey};
    use meshcrypt_keyexchange::mesh::Peer;

    fn key(n: u8) -> PublicKey {
        use std::sync::OnceLock;
        static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
        KEYS.get_or_init(|| (0..8).map(|_| PrivateKey::generate().public_key()).collect())[n as usize]
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn desired(peers: &[(u8, &str, &[&str])]) -> PeerSet {
        PeerSet {
            peers: peers
                .iter()
                .map(|(k, e, a)| {
                    let node = format!("node-{k}");
                    let peer = Peer {
                        node: node.clone(),
                        public_key: key(*k),
                        key_epoch: 0,
                        endpoint: ep(e),
                        allowed_ips: nets(a),
                    };
                    (node, peer)
                })
                .collect(),
            local_prefixes: vec![],
            problems: vec![],
        }
    }

    fn device(peers: &[(u8, &str, &[&str])]) -> DeviceState {
        let mut state = DeviceState {
            backend: meshcrypt_dataplane::BackendKind::Userspace,
            ifname: "meshcrypt0".into(),
            ifindex: 3,
            public_key: key(7),
            listen_port: 51820,
            fwmark: None,
            peers: peers
                .iter()
                .map(|(k, e, a)| PeerState {
                    public_key: key(*k),
                    endpoint: Some(ep(e)),
                    allowed_ips: nets(a),
                    persistent_keepalive: None,
                    preshared_key: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                })
                .collect(),
            counters: DeviceCounters::default(),
        };
        // Sorted by key, as every backend reports them.
        state.peers.sort_by_key(|p| p.public_key);
        state
    }

    #[test]
    fn peer_ops_table() {
        let a = "198.18.0.11:51820";
        let b = "198.18.0.12:51820";
        type Peers<'a> = Vec<(u8, &'a str, &'a [&'a str])>;
        let cases: Vec<(&str, Peers, Peers, Vec<PeerOp>)> = vec![
            ("in sync", vec![(1, a, &["10.244.1.0/24"])], vec![(1, a, &["10.244.1.0/24"])], vec![]),
            (
                "new node",
                vec![(1, a, &["10.244.1.0/24"]), (2, b, &["10.244.2.0/24"])],
                vec![(1, a, &["10.244.1.0/24"])],
                vec![PeerOp::Add {
                    key: key(2),
                    endpoint: ep(b),
                    allowed_ips: nets(&["10.244.2.0/24"]),
                    preshared_key: None,
                }],
            ),
            ("node deleted", vec![], vec![(1, a, &["10.244.1.0/24"])], vec![PeerOp::Remove(key(1))]),
            (
                "key changed: old peer removed before the new one is added",
                vec![(2, a, &["10.244.1.0/24"])],
                vec![(1, a, &["10.244.1.0/24"])],
                vec![
                    PeerOp::Remove(key(1)),
                    PeerOp::Add {
                        key: key(2),
                        endpoint: ep(a),
                        allowed_ips: nets(&["10.244.1.0/24"]),
                        preshared_key: None,
                    },
                ],
            ),
            (
                "allowed IPs changed in place",
                vec![(1, a, &["10.244.1.0/24", "fd00:10:244:1::/64"])],
                vec![(1, a, &["10.244.1.0/24"])],
                vec![PeerOp::SetAllowedIps(key(1), nets(&["10.244.1.0/24", "fd00:10:244:1::/64"]))],
            ),
            (
                "endpoint moved",
                vec![(1, b, &[])],
                vec![(1, a, &[])],
                vec![PeerOp::SetEndpoint(key(1), ep(b))],
            ),
            (
                "the same allowed IPs in another order, one twice: in sync",
                vec![(1, a, &["10.244.1.0/24", "10.244.0.0/24", "10.244.1.0/24"])],
                vec![(1, a, &["10.244.0.0/24", "10.244.1.0/24"])],
                vec![],
            ),
            (
                "the device's allowed IPs out of order, one missing: set, sorted",
                vec![(1, a, &["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"])],
                vec![(1, a, &["10.244.2.0/24", "10.244.0.0/24"])],
                vec![PeerOp::SetAllowedIps(
                    key(1),
                    nets(&["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]),
                )],
            ),
            (
                "a new peer's allowed IPs out of order: added sorted, each once",
                vec![(2, b, &["10.244.3.0/24", "10.244.2.0/24", "10.244.3.0/24"])],
                vec![],
                vec![PeerOp::Add {
                    key: key(2),
                    endpoint: ep(b),
                    allowed_ips: nets(&["10.244.2.0/24", "10.244.3.0/24"]),
                    preshared_key: None,
                }],
            ),
        ];
        for (name, want, have, expected) in cases {
            assert_eq!(peer_ops(&desired(&want), &BTreeMap::new(), &device(&have)), expected, "{name}");
        }
    }

    /// Pre-shared keys: given to a new peer, set on a live one when it differs from the device's
    /// (by fingerprint), removed when its cluster no longer has one.
    #[test]
    fn pre_shared_keys_table() {
        let a = "198.18.0.11:51820";
        let psk = |n: u8| PresharedKey::from_bytes([n; 32]);
        let one = desired(&[(1, a, &[])]);
        /// Name, the desired key, the device's key, whether the device has the peer, the ops.
        type Case = (&'static str, Option<u8>, Option<u8>, bool, Vec<PeerOp>);
        let cases: Vec<Case> = vec![
            (
                "a new peer gets its key",
                Some(5),
                None,
                false,
                vec![PeerOp::Add {
                    key: key(1),
                    endpoint: ep(a),
                    allowed_ips: vec![],
                    preshared_key: Some(psk(5)),
                }],
            ),
            ("the same key: nothing", Some(5), Some(5), true, vec![]),
            ("a changed key", Some(6), Some(5), true, vec![PeerOp::SetPresharedKey(key(1), Some(psk(6)))]),
            (
                "a key set on a live peer",
                Some(5),
                None,
                true,
                vec![PeerOp::SetPresharedKey(key(1), Some(psk(5)))],
            ),
            ("the key removed", None, Some(5), true, vec![PeerOp::SetPresharedKey(key(1), None)]),
        ];
        for (name, want, have, live, expected) in cases {
            let psks: BTreeMap<PublicKey, PresharedKey> =
                want.map(|n| (key(1), psk(n))).into_iter().collect();
            let peers: Vec<(u8, &str, &[&str])> = if live { vec![(1, a, &[])] } else { vec![] };
            let mut device = device(&peers);
            if let Some(peer) = device.peers.first_mut() {
                peer.preshared_key = have.map(|n| psk(n).fingerprint());
            }
            assert_eq!(peer_ops(&one, &psks, &device), expected, "{name}");
        }
    }

    #[test]
    fn changes_mirror_ops() {
        let ops = vec![
            PeerOp::Remove(key(1)),
            PeerOp::Add {
                key: key(2),
                endpoint: ep("198.18.0.12:51820"),
                allowed_ips: nets(&["10.244.2.0/24"]),
                preshared_key: Some(PresharedKey::from_bytes([4; 32])),
            },
            PeerOp::SetAllowedIps(key(3), nets(&["10.244.3.0/24"])),
            PeerOp::SetPresharedKey(key(3), None),
        ];
        let changes = to_changes(&ops);
        assert!(
            matches!(&changes[3], Change::UpdatePeer(u) if u.public_key == key(3) && u.update_only && u.preshared_key == Some(None))
        );
        assert!(matches!(&changes[0], Change::RemovePeer(k) if *k == key(1)));
        assert!(matches!(&changes[1], Change::UpsertPeer(c) if c.public_key == key(2)
            && c.allowed_ips.len() == 1 && c.preshared_key == Some(PresharedKey::from_bytes([4; 32]))));
        assert!(matches!(&changes[2], Change::ReplaceAllowedIps { public_key, .. } if *public_key == key(3)));
    }

    #[test]
    fn handshake_targets_after_key_change_table() {
        let a = "198.18.0.11:51820";
        let b = "198.18.0.12:51820";
        let both = desired(&[(1, a, &["10.244.1.0/24"]), (2, b, &["10.244.2.0/24"])]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |s: u64| now - Duration::from_secs(s);
        let shook = |entries: &[(u8, u64)]| -> BTreeMap<PublicKey, SystemTime> {
            entries.iter().map(|(k, s)| (key(*k), ago(*s))).collect()
        };
        let cases: Vec<(&str, BTreeMap<PublicKey, SystemTime>, Vec<PublicKey>)> = vec![
            ("no peer in use: none", shook(&[]), vec![]),
            ("the peers with a live session", shook(&[(1, 10), (2, 181)]), vec![key(1)]),
            ("a session at the edge of REJECT_AFTER_TIME", shook(&[(1, 180), (2, 1)]), vec![key(1), key(2)]),
            ("a handshake with a key no desired peer has", shook(&[(3, 1)]), vec![]),
            (
                "a handshake in the future (a clock step) counts as none",
                [(key(1), now + Duration::from_secs(5))].into(),
                vec![],
            ),
        ];
        for (name, handshakes, want) in cases {
            let mut want = want;
            want.sort();
            assert_eq!(handshake_targets_after_key_change(&both, &handshakes, now), want, "{name}");
        }
    }
}
