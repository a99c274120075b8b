//! What a scale run reads off the real agents without asking them: route changes in their tables
//! from `ip -ts monitor route` (the kernel's own notifications, so reading them costs the agent
//! nothing), their CPU time and memory from `/proc`, and counters from their `/metrics`.

use std::collections::BTreeMap;

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A route added to or deleted from a table, as `ip -ts monitor route` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// When the kernel announced it.
    pub at: Timestamp,
    /// Deleted (else added or replaced).
    pub deleted: bool,
    /// The destination.
    pub prefix: IpNet,
}

/// The route changes through device `ifname` in `table` among `ip -ts monitor route`'s lines
/// (timestamps in `tz`, as iproute2 prints local time); other lines are skipped.
pub fn route_changes(log: &str, ifname: &str, table: u32, tz: &TimeZone) -> Vec<RouteChange> {
    let table = table.to_string();
    log.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('[')?;
            let (stamp, rest) = rest.split_once(']')?;
            let at = stamp.parse::<jiff::civil::DateTime>().ok()?.to_zoned(tz.clone()).ok()?.timestamp();
            let words: Vec<&str> = rest.split_whitespace().collect();
            let through = words.windows(2).any(|w| w[0] == "dev" && w[1] == ifname);
            let in_table = words.windows(2).any(|w| w[0] == "table" && w[1] == table);
            if !through || !in_table {
                return None;
            }
            let deleted = words.first() == Some(&"Deleted");
            let prefix = words.iter().find_map(|w| {
                w.parse::<IpNet>().ok().or_else(|| w.parse::<std::net::IpAddr>().ok().map(IpNet::from))
            })?;
            Some(RouteChange { at, deleted, prefix })
        })
        .collect()
}

/// A process's CPU time (user + system) in seconds, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix(" kB")?.trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")? * 1024, field("VmHWM:")? * 1024))
}

/// Every sample of a Prometheus text exposition, by series (name and labels as written).
pub fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The `q`-quantile (0–1) of `values` by nearest rank; `None` when there are none.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_changes_are_read_off_ip_monitor() {
        let log = "\
[2026-12-01T04:52:01.250000] 10.244.128.4/30 dev meshcrypt0 table 51820 proto static scope link \n\
[2026-12-01T04:52:01.500000] Deleted 10.244.128.8/30 dev meshcrypt0 table 51820 proto static scope link \n\
[2026-12-01T04:52:02.000000] fd00:10:244:ff::1 dev meshcrypt0 table 51820 proto static metric 1024 pref medium\n\
[2026-12-01T04:52:02.000000] 10.244.1.0/24 dev pod0 table main scope link\n\
[2026-12-01T04:52:02.000000] unreachable 10.244.0.0/16 table 51820 proto static\n\
garbage\n";
        let changes = route_changes(log, "meshcrypt0", 51_820, &TimeZone::UTC);
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            changes,
            [
                RouteChange {
                    at: at("2026-12-01T04:52:01.25Z"),
                    deleted: false,
                    prefix: "10.244.128.4/30".parse().unwrap()
                },
                RouteChange {
                    at: at("2026-12-01T04:52:01.5Z"),
                    deleted: true,
                    prefix: "10.244.128.8/30".parse().unwrap()
                },
                RouteChange {
                    at: at("2026-12-01T04:52:02Z"),
                    deleted: false,
                    prefix: "fd00:10:244:ff::1/128".parse().unwrap()
                },
            ]
        );
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        let (rss, peak) = memory(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
    }

    #[test]
    fn samples_by_series() {
        let text = "# HELP x y\nmeshcrypt_reconcile_total 12\nmeshcrypt_reconcile_phase_seconds_sum{phase=\"decide\"} 0.5\n";
        let s = samples(text);
        assert_eq!(s["meshcrypt_reconcile_total"], 12.0);
        assert_eq!(s["meshcrypt_reconcile_phase_seconds_sum{phase=\"decide\"}"], 0.5);
    }
}
