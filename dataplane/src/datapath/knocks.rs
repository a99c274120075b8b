//! Knocks: handshake initiations refused because no peer had the initiator's key, remembered so
//! that the device starts the handshake itself the moment that key becomes a peer.
//!
//! A node that joins the mesh initiates to every node it knows; one that has not learned of it
//! yet refuses the initiation, and the joiner retries only every REKEY_TIMEOUT (5 s) for
//! REKEY_ATTEMPT_TIME (90 s; WireGuard paper §6.4). Answered when the peer is added, the path is
//! up at once instead of at the joiner's next retry.
//!
//! Recording and answering need no lock of their own to meet: an initiation is refused while its
//! worker holds the peer table's read lock, and a change is applied under its write lock. Either
//! the refusal was recorded before the apply looks at the knocks, or the key was already a peer
//! when its initiation arrived and it was answered as any other.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use meshcrypt_keyexchange::PublicKey;

/// How many knocking keys are remembered (the latest ones); a node joins a mesh with far fewer
/// refusals under way than this at once.
const KEPT: usize = 64;

/// How long an initiator whose handshake gets no answer keeps retrying (REKEY_ATTEMPT_TIME,
/// WireGuard paper §6.4: 90 s); an older knock has given up.
const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);

/// A refused initiation: the initiator's static key, and when (its latest one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Knock {
    pub(crate) key: PublicKey,
    pub(crate) at: SystemTime,
}

/// The latest knock of each of the [`KEPT`] keys that knocked most recently, latest first.
#[derive(Default)]
pub(crate) struct Knocks {
    latest: Mutex<VecDeque<Knock>>,
}

impl Knocks {
    /// Records a refused initiation from `key` at `at`.
    pub(crate) fn record(&self, key: PublicKey, at: SystemTime) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.retain(|k| k.key != key);
        latest.push_front(Knock { key, at });
        latest.truncate(KEPT);
    }

    /// The knocks remembered, latest first.
    pub(crate) fn latest(&self) -> Vec<Knock> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }
}

/// Of the peers a change just added or updated (`changed`: key and latest handshake), those to
/// start a handshake with now: the ones that knocked in the REKEY_ATTEMPT_TIME before `now` and
/// have had no handshake since. A peer whose endpoint or allowed IPs changed keeps its session
/// and gets none; a knock from the future (a clock step) counts as none.
pub(crate) fn to_answer(
    knocks: &[Knock],
    changed: &[(PublicKey, Option<SystemTime>)],
    now: SystemTime,
) -> Vec<PublicKey> {
    changed
        .iter()
        .filter(|(key, shook)| {
            knocks.iter().any(|k| {
                k.key == *key
                    && now.duration_since(k.at).is_ok_and(|age| age <= REKEY_ATTEMPT_TIME)
                    && shook.is_none_or(|shook| shook < k.at)
            })
        })
        .map(|(key, _)| *key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        meshcrypt_keyexchange::PrivateKey::from_bytes(zeroize::Zeroizing::new([n; 32])).public_key()
    }

    #[test]
    fn to_answer_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |s: u64| now - Duration::from_secs(s);
        let knock = |k: u8, s: u64| Knock { key: key(k), at: ago(s) };
        let later = now + Duration::from_secs(5);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<Knock>, Vec<(u8, Option<SystemTime>)>, Vec<u8>)> = vec![
            ("nothing knocked", vec![], vec![(1, None)], vec![]),
            ("a peer added that knocked 5 s ago: answered now", vec![knock(1, 5)], vec![(1, None)], vec![1]),
            ("... at the edge of its retries", vec![knock(1, 90)], vec![(1, None)], vec![1]),
            ("... that has given up knocking", vec![knock(1, 91)], vec![(1, None)], vec![]),
            ("a knock from a key not added", vec![knock(2, 5)], vec![(1, None)], vec![]),
            ("a knock, and no change", vec![knock(1, 5)], vec![], vec![]),
            (
                "a peer updated that has had a handshake since its knock (endpoint or allowed IPs changed)",
                vec![knock(1, 5)],
                vec![(1, Some(ago(4)))],
                vec![],
            ),
            (
                "a peer re-added that knocked after its last handshake (it was removed meanwhile)",
                vec![knock(1, 5)],
                vec![(1, Some(ago(20)))],
                vec![1],
            ),
            (
                "a knock from the future (a clock step) counts as none",
                vec![Knock { key: key(1), at: later }],
                vec![(1, None)],
                vec![],
            ),
            (
                "several added, some knocked",
                vec![knock(3, 1), knock(1, 2)],
                vec![(1, None), (2, None), (3, None)],
                vec![1, 3],
            ),
        ];
        for (name, knocks, changed, want) in cases {
            let changed: Vec<_> = changed.into_iter().map(|(k, shook)| (key(k), shook)).collect();
            let want: Vec<_> = want.into_iter().map(key).collect();
            assert_eq!(to_answer(&knocks, &changed, now), want, "{name}");
        }
    }

    #[test]
    fn knocks_keep_the_latest_of_each_key_latest_first_and_at_most_kept() {
        let knocks = Knocks::default();
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        knocks.record(key(1), at(1));
        knocks.record(key(2), at(2));
        knocks.record(key(1), at(3));
        assert_eq!(knocks.latest(), [Knock { key: key(1), at: at(3) }, Knock { key: key(2), at: at(2) }]);
        for n in 0..=KEPT as u64 {
            knocks.record(key(10 + n as u8), at(10 + n));
        }
        let latest = knocks.latest();
        assert_eq!(latest.len(), KEPT);
        assert_eq!(latest[0].key, key(10 + KEPT as u8));
    }
}
