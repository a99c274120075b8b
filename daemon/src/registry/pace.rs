//! How often this cluster's bundle may be written, pure (time is an argument).
//!
//! Every sealed bundle written is a new version of each secret it changes (a retry of the same
//! sealed bundle carries the same request tokens and makes none). Secrets Manager removes a
//! secret's unlabeled versions beyond 100 but none younger than 24 hours, and AWS asks for at
//! most one `PutSecretValue` per secret every 10 minutes sustained (API reference,
//! PutSecretValue; user guide, "AWS Secrets Manager quotas"): more than ~100 writes a day pile up
//! towards the secret-versions quota. So each new sealed bundle, written or not, takes one write
//! from a bucket that holds `per_day / 8` (a burst: nodes joining together reach the peers within
//! seconds) and refills so that no 24 hours see more than `per_day`; writes are also at least
//! `min_interval` apart. A replica that takes the Lease replays the writes of the last day (the
//! versions Secrets Manager lists) so the bound holds across failovers too.

use std::time::{Duration, Instant};

/// The pace's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishPace {
    /// The least time between two writes (coalescing).
    pub min_interval: Duration,
    /// The most writes in any 24 hours (at least 2: one for the burst, one regained a day).
    pub per_day: u32,
}

/// A day, the window the pace bounds.
const DAY: Duration = Duration::from_secs(86_400);

impl PublishPace {
    /// The bucket's size: an eighth of the day's writes, at least one.
    pub fn burst(&self) -> f64 {
        f64::from((self.per_day / 8).max(1))
    }

    /// Writes regained per second: the rest of the day's writes, spread over the day.
    fn refill_per_second(&self) -> f64 {
        (f64::from(self.per_day.max(1)) - self.burst()).max(0.0) / DAY.as_secs_f64()
    }
}

/// The back-off after a failed write: 1 s, doubling, at most 5 minutes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What this cluster has written lately: the state [`PublishPace`] is applied to.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishBudget {
    /// Writes in the bucket at `at` (below zero after a day of writes beyond the pace: it takes
    /// longer to refill).
    tokens: f64,
    at: Instant,
    /// The last new sealed bundle's first attempt.
    last: Option<Instant>,
    /// Failed attempts in a row, and when the next may start.
    failures: u32,
    retry_at: Option<Instant>,
}

impl PublishBudget {
    /// The bucket at `now` after writes made `ages` ago (the versions created in the last day,
    /// by any replica): replayed from a full bucket a day ago.
    pub fn resume(pace: &PublishPace, ages: &[Duration], now: Instant) -> Self {
        let mut ages: Vec<Duration> = ages.iter().copied().filter(|a| *a <= DAY).collect();
        ages.sort_by(|a, b| b.cmp(a));
        let rate = pace.refill_per_second();
        let (mut tokens, mut previous) = (pace.burst(), DAY);
        for age in &ages {
            tokens = (tokens + rate * (previous - *age).as_secs_f64()).min(pace.burst()) - 1.0;
            previous = *age;
        }
        tokens = (tokens + rate * previous.as_secs_f64()).min(pace.burst());
        let last = ages.last().and_then(|age| now.checked_sub(*age));
        Self { tokens, at: now, last, failures: 0, retry_at: None }
    }

    fn tokens_at(&self, pace: &PublishPace, now: Instant) -> f64 {
        let regained = now.saturating_duration_since(self.at).as_secs_f64() * pace.refill_per_second();
        (self.tokens + regained).min(pace.burst())
    }

    fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    /// Whether to seal and write a new bundle now: the nodes differ from what was written last
    /// (`changed`), the last new bundle is at least `min_interval` old, the bucket holds a write,
    /// and no back-off runs.
    pub fn due(&self, pace: &PublishPace, changed: bool, now: Instant) -> bool {
        changed
            && self.last.is_none_or(|at| now.saturating_duration_since(at) >= pace.min_interval)
            && !self.backing_off(now)
            && self.tokens_at(pace, now) >= 1.0
    }

    /// Whether to try the bundle whose write failed again (it was paid for when first tried).
    pub fn retry_due(&self, now: Instant) -> bool {
        !self.backing_off(now)
    }

    /// A new sealed bundle is tried at `now`: one write of the budget, whatever the outcome (a
    /// failed attempt may have written some shards already).
    pub fn charge(&mut self, pace: &PublishPace, now: Instant) {
        self.tokens = self.tokens_at(pace, now) - 1.0;
        self.at = now;
        self.last = Some(now);
    }

    /// The attempt at `now` succeeded.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// The attempt at `now` failed: the next waits 1 s, then 2, 4, … up to [`MAX_BACKOFF`].
    pub fn failed(&mut self, now: Instant) {
        let backoff = Duration::from_secs(1u64 << self.failures.min(9)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: PublishPace = PublishPace { min_interval: Duration::from_secs(10), per_day: 96 };

    /// Each row: a history (seconds after t0: `N` a new bundle written, `X` a new bundle whose
    /// write failed, `R` a retry that failed), then at a time whether a new bundle may be written
    /// and whether a failed one may be retried.
    #[test]
    fn budget_table() {
        type Row = (&'static str, &'static [(u64, char)], u64, bool, bool);
        const BURST: &[(u64, char)] = &[
            (0, 'N'),
            (10, 'N'),
            (20, 'N'),
            (30, 'N'),
            (40, 'N'),
            (50, 'N'),
            (60, 'N'),
            (70, 'N'),
            (80, 'N'),
            (90, 'N'),
            (100, 'N'),
            (110, 'N'),
        ];
        const FAILED_BURST: &[(u64, char)] = &[
            (0, 'X'),
            (10, 'X'),
            (20, 'X'),
            (30, 'X'),
            (40, 'X'),
            (50, 'X'),
            (60, 'X'),
            (70, 'X'),
            (80, 'X'),
            (90, 'X'),
            (100, 'X'),
            (110, 'X'),
        ];
        let rows: &[Row] = &[
            ("first write at once", &[], 0, true, true),
            ("coalesced: 9 s after a write", &[(0, 'N')], 9, false, true),
            ("10 s after a write", &[(0, 'N')], 10, true, true),
            ("1 s back-off after a failure", &[(0, 'X')], 0, false, false),
            ("back-off over", &[(0, 'X')], 10, true, true),
            ("second failure: 2 s", &[(0, 'X'), (1, 'R')], 2, false, false),
            ("second failure over", &[(0, 'X'), (1, 'R')], 3, false, true),
            ("a burst of failed bundles is spent too", FAILED_BURST, 420, false, true),
            ("a burst of 12 spent", BURST, 120, false, true),
            ("one write regained after 24 h / 84", BURST, 110 + 86_400 / 84 + 1, true, true),
        ];
        for (name, history, at, want_new, want_retry) in rows {
            let t0 = Instant::now();
            let t = |s: u64| t0 + Duration::from_secs(s);
            let mut budget = PublishBudget::resume(&PACE, &[], t0);
            for (s, what) in *history {
                match what {
                    'N' => {
                        budget.charge(&PACE, t(*s));
                        budget.succeeded();
                    }
                    'X' => {
                        budget.charge(&PACE, t(*s));
                        budget.failed(t(*s));
                    }
                    _ => budget.failed(t(*s)),
                }
            }
            assert_eq!(budget.due(&PACE, true, t(*at)), *want_new, "{name}: new");
            assert_eq!(budget.retry_due(t(*at)), *want_retry, "{name}: retry");
            assert!(!budget.due(&PACE, false, t(*at)), "{name}: nothing changed, nothing written");
        }
    }

    /// A replica that takes over after `ages` of writes by another.
    #[test]
    fn resume_table() {
        let s = Duration::from_secs;
        let rows: &[(&str, Vec<Duration>, bool)] = &[
            ("nothing written: a full bucket", vec![], true),
            ("a write 5 s ago: coalesced", vec![s(5)], false),
            ("the burst spent an hour ago, 3 regained", (0..12).map(|i| s(3_600 + i * 10)).collect(), true),
            ("the burst spent a minute ago", (0..12).map(|i| s(60 + i)).collect(), false),
            ("writes older than a day do not count", (0..12).map(|i| s(90_000 + i)).collect(), true),
        ];
        for (name, ages, want) in rows {
            let now = Instant::now() + s(100_000);
            assert_eq!(PublishBudget::resume(&PACE, ages, now).due(&PACE, true, now), *want, "{name}");
        }
    }

    /// However the changes come, and however often another replica takes over (replaying the
    /// day's writes), no 24 hours see more than `per_day` writes; the budget is used.
    #[test]
    fn no_day_sees_more_than_the_budget() {
        for (per_day, takeover_every) in
            [(2, 0), (8, 0), (96, 0), (500, 0), (96, 3_600), (96, 61), (8, 7_200)]
        {
            let pace = PublishPace { min_interval: Duration::from_secs(1), per_day };
            let t0 = Instant::now();
            let mut budget = PublishBudget::resume(&pace, &[], t0);
            let mut writes: Vec<u64> = Vec::new();
            for s in 0..3 * 86_400u64 {
                let now = t0 + Duration::from_secs(s);
                if takeover_every > 0 && s % takeover_every == 0 {
                    let ages: Vec<Duration> = writes.iter().map(|w| Duration::from_secs(s - w)).collect();
                    budget = PublishBudget::resume(&pace, &ages, now);
                }
                if budget.due(&pace, true, now) {
                    budget.charge(&pace, now);
                    budget.succeeded();
                    writes.push(s);
                }
            }
            let most =
                writes.iter().map(|&w| writes.iter().filter(|&&x| x >= w && x < w + 86_400).count()).max();
            assert!(
                most.unwrap_or(0) <= per_day as usize,
                "{per_day}/{takeover_every}: {most:?} writes in a day"
            );
            let burst = (per_day / 8).max(1);
            let used = burst + 2 * (per_day - burst);
            assert!(writes.len() as u32 >= used, "{per_day}: the budget is used, {} writes", writes.len());
        }
    }
}
