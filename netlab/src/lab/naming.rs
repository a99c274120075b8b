//! Per-run names (`mclab-<pid hex>-<n>-`) and the sweep of namespaces left by dead runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns;
use super::processes::pid_alive;

/// Every lab namespace name starts with this.
pub const NAME_PREFIX: &str = "mclab-";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix for one lab of this process: `mclab-<pid hex>-<n>-`.
pub fn new_run_prefix() -> String {
    let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{:x}-{n}-", std::process::id())
}

/// The pid encoded in a lab namespace (or log directory) name, if it is one of ours.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (hex, rest) = rest.split_once('-')?;
    // A namespace is `<prefix><name>`; the log directory is the prefix without its last dash.
    let n = rest.split_once('-').map_or(rest, |(n, _)| n);
    if hex.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// The directory under which a lab keeps the logs of the processes it spawns.
pub fn log_root() -> PathBuf {
    std::env::temp_dir()
}

/// Removes namespaces (and log directories) of lab runs whose process no longer exists, killing any
/// process still inside them first. Returns the names of the namespaces removed.
pub fn sweep_stale() -> Vec<String> {
    let me = std::process::id();
    let mut removed = Vec::new();
    for ns in netns::list() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if pid == me || pid_alive(pid) {
            continue;
        }
        for p in netns::pids(&ns) {
            if p != me {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if netns::delete(&ns).is_ok() {
            tracing::info!(namespace = %ns, owner = pid, "removed stale lab namespace");
            removed.push(ns);
        }
    }
    if let Ok(dir) = std::fs::read_dir(log_root()) {
        for e in dir.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name)
                && pid != me
                && !pid_alive(pid)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trips_pid() {
        let p = new_run_prefix();
        assert_eq!(owner_pid(&format!("{p}node-0")), Some(std::process::id()));
        assert_eq!(owner_pid("mclab-zz-0-node"), None);
        assert_eq!(owner_pid("mclab-1f-x-node"), None);
        assert_eq!(owner_pid("other-1f-0-node"), None);
        assert_eq!(owner_pid("mclab-1f-3-"), Some(0x1f));
        assert_eq!(owner_pid("mclab-1f-3"), Some(0x1f));
        assert_eq!(owner_pid("mclab-1f"), None);
    }
}
