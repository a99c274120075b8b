//! The rotation policy: when a node key is due to be replaced.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Whether a key created at `created` is due for rotation at `now` under a rotation `interval`
/// (`None`: scheduled rotation is off). A key whose creation time lies in the future (a clock
/// that jumped back) is not due.
pub fn due(created: Timestamp, interval: Option<Duration>, now: Timestamp) -> bool {
    let Some(interval) = interval else { return false };
    let interval = SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX);
    now.duration_since(created) >= interval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_table() {
        let created = Timestamp::from_second(1_800_000_000).unwrap();
        let after = |secs: i64| created + SignedDuration::from_secs(secs);
        let hour = Some(Duration::from_secs(3600));
        for (interval, now, want) in [
            (None, after(10 * 365 * 86_400), false),
            (hour, after(0), false),
            (hour, after(3599), false),
            (hour, after(3600), true),
            (hour, after(-60), false),
            (Some(Duration::MAX), after(10 * 365 * 86_400), false),
        ] {
            assert_eq!(due(created, interval, now), want, "{interval:?} at {now}");
        }
    }
}
