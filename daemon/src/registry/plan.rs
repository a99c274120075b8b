//! The registry's decisions, pure: the bundle this cluster publishes, its generation, and when to
//! publish and to poll. Time is an argument.

use std::time::{Duration, Instant};

use meshcrypt_keyexchange::mesh::PeerSet;
use meshcrypt_registry::{Bundle, BundleNode};

/// The bundle of `cluster` at `generation` from its members (see
/// [`meshcrypt_keyexchange::mesh::cluster_members`]), sorted by node name.
pub fn bundle_of(cluster: &str, generation: u64, members: &PeerSet) -> Bundle {
    Bundle {
        cluster: cluster.to_owned(),
        generation,
        nodes: members
            .peers
            .values()
            .map(|p| BundleNode {
                name: p.node.clone(),
                public_key: p.public_key,
                key_epoch: p.key_epoch,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
            })
            .collect(),
    }
}

/// The next generation: above the last one written (by this replica or another, read back at
/// takeover) and at least the wall clock in milliseconds, so it grows across restarts and
/// failovers without any state of its own.
pub fn next_generation(last: Option<u64>, now_unix_ms: u64) -> u64 {
    last.map_or(now_unix_ms, |l| (l.saturating_add(1)).max(now_unix_ms))
}

/// Whether to publish now: the nodes differ from what was published last (`changed`) and the
/// last publish is at least `interval` ago (or there was none): writes are coalesced.
pub fn publish_due(changed: bool, last: Option<Instant>, interval: Duration, now: Instant) -> bool {
    changed && last.is_none_or(|at| now.duration_since(at) >= interval)
}

/// When to poll a peer cluster next: `interval` from `now`, shifted by `jitter` (−1.0..=1.0) times
/// 20% of it, so the registries of many clusters do not poll in step.
pub fn next_poll(now: Instant, interval: Duration, jitter: f64) -> Instant {
    let fifth = interval.as_secs_f64() / 5.0;
    now + Duration::from_secs_f64((interval.as_secs_f64() + jitter.clamp(-1.0, 1.0) * fifth).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_generation_table() {
        for (last, now, want) in [
            (None, 1_000, 1_000),
            (Some(5), 1_000, 1_000),
            (Some(1_000), 1_000, 1_001),
            (Some(2_000), 1_000, 2_001),
            (Some(u64::MAX), 1_000, u64::MAX),
        ] {
            assert_eq!(next_generation(last, now), want, "{last:?} at {now}");
        }
    }

    #[test]
    fn publish_due_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for (changed, last, now, want) in [
            (false, None, t0, false),
            (true, None, t0, true),
            (true, Some(t0), t0 + s(9), false),
            (true, Some(t0), t0 + s(10), true),
            (false, Some(t0), t0 + s(60), false),
        ] {
            assert_eq!(
                publish_due(changed, last, s(10), now),
                want,
                "{changed} {:?}",
                now.duration_since(t0)
            );
        }
    }

    #[test]
    fn polls_are_spread_within_a_fifth_of_the_interval() {
        let t0 = Instant::now();
        let i = Duration::from_secs(30);
        assert_eq!(next_poll(t0, i, 0.0), t0 + i);
        assert_eq!(next_poll(t0, i, 1.0), t0 + Duration::from_secs(36));
        assert_eq!(next_poll(t0, i, -1.0), t0 + Duration::from_secs(24));
        assert_eq!(next_poll(t0, i, 7.0), t0 + Duration::from_secs(36), "clamped");
    }
}
