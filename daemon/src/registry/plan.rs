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

/// How often this cluster's bundle may be written.
///
/// Every write is a new version of each secret it touches. Secrets Manager removes a secret's
/// unlabeled versions beyond 100 but none younger than 24 hours, and AWS asks for at most one
/// `PutSecretValue` per secret every 10 minutes sustained (API reference, PutSecretValue; user
/// guide, "AWS Secrets Manager quotas"): more than ~100 writes a day pile up towards the
/// secret-versions quota. So writes are spaced by `min_interval` and drawn from a bucket that
/// holds `per_day / 8` writes (a burst: nodes joining together reach the peers within seconds)
/// and refills so that no 24 hours ever see more than `per_day`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishPace {
    /// The least time between two writes (coalescing).
    pub min_interval: Duration,
    /// The most writes in any 24 hours (at least 2: one for the burst, one regained a day).
    pub per_day: u32,
}

impl PublishPace {
    const DAY: Duration = Duration::from_secs(86_400);

    /// The bucket's size: an eighth of the day's writes, at least one.
    pub fn burst(&self) -> f64 {
        f64::from((self.per_day / 8).max(1))
    }

    /// Writes regained per second: the rest of the day's writes, spread over the day.
    fn refill_per_second(&self) -> f64 {
        (f64::from(self.per_day.max(1)) - self.burst()).max(0.0) / Self::DAY.as_secs_f64()
    }
}

/// The back-off after a failed write: 1 s, doubling, at most 5 minutes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What this replica has written lately: the state [`PublishPace`] is applied to.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishBudget {
    /// Writes in the bucket at `at`.
    tokens: f64,
    at: Instant,
    /// The last successful write.
    last: Option<Instant>,
    /// Failed writes in a row, and when the next attempt may start.
    failures: u32,
    retry_at: Option<Instant>,
}

impl PublishBudget {
    /// A full bucket at `now` (a replica that takes over does not know the writes before it; the
    /// per-day bound holds per replica).
    pub fn new(pace: &PublishPace, now: Instant) -> Self {
        Self { tokens: pace.burst(), at: now, last: None, failures: 0, retry_at: None }
    }

    fn tokens_at(&self, pace: &PublishPace, now: Instant) -> f64 {
        let regained = now.saturating_duration_since(self.at).as_secs_f64() * pace.refill_per_second();
        (self.tokens + regained).min(pace.burst())
    }

    /// Whether to write now: the nodes differ from what was written last (`changed`), the last
    /// write is at least `min_interval` ago, the bucket holds a write, and no back-off runs.
    pub fn due(&self, pace: &PublishPace, changed: bool, now: Instant) -> bool {
        changed
            && self.last.is_none_or(|at| now.saturating_duration_since(at) >= pace.min_interval)
            && self.retry_at.is_none_or(|at| now >= at)
            && self.tokens_at(pace, now) >= 1.0
    }

    /// Records a successful write at `now`.
    pub fn wrote(&mut self, pace: &PublishPace, now: Instant) {
        self.tokens = self.tokens_at(pace, now) - 1.0;
        self.at = now;
        self.last = Some(now);
        self.failures = 0;
        self.retry_at = None;
    }

    /// Records a failed write at `now`: the next attempt waits 1 s, then 2, 4, … up to
    /// [`MAX_BACKOFF`]. A failed write takes nothing from the bucket (it made no manifest version;
    /// the retry rewrites its shards with the same request tokens, which makes no new version).
    pub fn failed(&mut self, now: Instant) {
        let backoff = Duration::from_secs(1u64 << self.failures.min(9)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + backoff);
    }
}

/// When to poll a peer cluster next: `interval` from `now`, shifted by `jitter` (−1.0..=1.0) times
/// 20% of it, so the registries of many clusters do not poll in step.
pub fn next_poll(now: Instant, interval: Duration, jitter: f64) -> Instant {
    let fifth = interval.as_secs_f64() / 5.0;
    now + Duration::from_secs_f64((interval.as_secs_f64() + jitter.clamp(-1.0, 1.0) * fifth).max(0.0))
}

/// Whether `s` is a DNS label (RFC 1123): 1–63 lowercase letters, digits and `-`, starting and
/// ending with a letter or digit. Cluster ids are, since they name RemoteCluster objects and
/// secrets.
pub fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_table() {
        for (s, want) in [
            ("prod-a", true),
            ("a", true),
            ("0", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("Prod", false),
            ("a.b", false),
            ("a_b", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(is_dns_label(s), want, "{s:?}");
        }
    }

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

    /// Each row: a history of events (seconds after t0: `W` a write, `F` a failure), then whether
    /// a changed bundle may be written at a time.
    #[test]
    fn publish_budget_table() {
        let pace = PublishPace { min_interval: Duration::from_secs(10), per_day: 96 };
        /// A name, the history, when to ask, the answer.
        type Row = (&'static str, &'static [(u64, char)], u64, bool);
        const BURST: &[(u64, char)] = &[
            (0, 'W'),
            (10, 'W'),
            (20, 'W'),
            (30, 'W'),
            (40, 'W'),
            (50, 'W'),
            (60, 'W'),
            (70, 'W'),
            (80, 'W'),
            (90, 'W'),
            (100, 'W'),
            (110, 'W'),
        ];
        let rows: &[Row] = &[
            ("first write at once", &[], 0, true),
            ("coalesced: 9 s after a write", &[(0, 'W')], 9, false),
            ("10 s after a write", &[(0, 'W')], 10, true),
            ("1 s back-off after a failure", &[(0, 'F')], 0, false),
            ("back-off over", &[(0, 'F')], 1, true),
            ("second failure: 2 s", &[(0, 'F'), (1, 'F')], 2, false),
            ("second failure over", &[(0, 'F'), (1, 'F')], 3, true),
            ("a burst of 12 spent", BURST, 120, false),
            ("one write regained after 24 h / 84", BURST, 110 + 86_400 / 84 + 1, true),
        ];
        for (name, history, at, want) in rows {
            let t0 = Instant::now();
            let t = |s: u64| t0 + Duration::from_secs(s);
            let mut budget = PublishBudget::new(&pace, t0);
            for (s, what) in *history {
                match what {
                    'W' => budget.wrote(&pace, t(*s)),
                    _ => budget.failed(t(*s)),
                }
            }
            assert_eq!(budget.due(&pace, true, t(*at)), *want, "{name}");
            assert!(!budget.due(&pace, false, t(*at)), "{name}: nothing changed, nothing written");
        }
    }

    /// However the changes come, no 24 hours see more than `per_day` writes.
    #[test]
    fn no_day_sees_more_than_the_budget() {
        for per_day in [2, 8, 96, 500] {
            let pace = PublishPace { min_interval: Duration::from_secs(1), per_day };
            let t0 = Instant::now();
            let mut budget = PublishBudget::new(&pace, t0);
            let mut writes = Vec::new();
            for s in 0..3 * 86_400u64 {
                let now = t0 + Duration::from_secs(s);
                if budget.due(&pace, true, now) {
                    budget.wrote(&pace, now);
                    writes.push(s);
                }
            }
            let most =
                writes.iter().map(|&w| writes.iter().filter(|&&x| x >= w && x < w + 86_400).count()).max();
            assert!(most.unwrap_or(0) <= per_day as usize, "{per_day}: {most:?} writes in a day");
            let burst = (per_day / 8).max(1);
            let used = burst + 2 * (per_day - burst);
            assert!(writes.len() as u32 >= used, "{per_day}: the budget is used, {} writes", writes.len());
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
