//! Waiting for a condition with a deadline, never a bare sleep: tests and the lab re-check a
//! condition every few milliseconds until it holds or the deadline passes.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Ok`, or returns its last error once `deadline` has passed.
pub fn poll<T>(deadline: Duration, check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    poll_every(POLL_INTERVAL, deadline, check)
}

/// Like [`poll`], re-checking every `interval` (for checks that cost something themselves, such
/// as reading a table of 150,000 routes).
pub fn poll_every<T>(
    interval: Duration,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(why) if start.elapsed() >= deadline => return Err(format!("after {deadline:?}: {why}")),
            Err(_) => std::thread::sleep(interval),
        }
    }
}

/// Waits until `condition` holds; panics naming `what` if it does not within `timeout`.
pub fn until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    poll(timeout, || if condition() { Ok(()) } else { Err(format!("waiting for {what}")) })
        .unwrap_or_else(|e| panic!("timed out {e}"));
}
