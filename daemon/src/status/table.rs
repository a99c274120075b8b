//! The status as tables for people: columns padded to their widest cell.

use std::fmt::Write as _;

use super::cluster::{AgentState, ClusterStatus};
use super::document::NodeStatus;

/// Rows (the first is the header) as left-aligned columns two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// A duration in seconds as people read it: `42s`, `3m 12s`, `2d 4h`.
fn age(seconds: u64) -> String {
    let d = jiff::SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
    let Ok(span) = jiff::Span::try_from(d) else { return format!("{seconds}s") };
    let rounded = span
        .round(
            jiff::SpanRound::new().largest(jiff::Unit::Day).smallest(jiff::Unit::Second).days_are_24_hours(),
        )
        .unwrap_or(span);
    format!("{rounded:#}")
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// The node view.
pub fn node(s: &NodeStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Node:      {} (meshcrypt {})", s.node, s.version);
    let _ = writeln!(out, "Ready:     {} ({})", if s.ready { "yes" } else { "no" }, s.reason);
    match &s.device {
        Some(d) => {
            let _ =
                writeln!(out, "Device:    {} ({} backend), UDP port {}", d.name, d.backend, d.listen_port);
        }
        None => {
            let _ = writeln!(out, "Device:    none (the mesh is switched off, or not programmed yet)");
        }
    }
    let _ = writeln!(
        out,
        "Key:       {} epoch {}, created {} ({} ago)",
        s.key.fingerprint,
        s.key.epoch,
        s.key.created,
        age(s.key.age_seconds)
    );
    let _ = writeln!(out, "\nSettings:");
    let mut rows = vec![vec!["KEY".to_owned(), "VALUE".to_owned(), "FROM".to_owned()]];
    rows.extend(s.settings.iter().map(|x| vec![x.key.clone(), x.value.clone(), x.source.clone()]));
    out.push_str(&columns(&rows));
    for r in &s.rejected {
        let _ = writeln!(out, "  rejected (the last good value stays): {r}");
    }
    let _ = writeln!(out, "\nPeers: {}", s.peers.len());
    let mut rows = vec![
        ["PEER", "ENDPOINT", "ALLOWED IPS", "LAST HANDSHAKE", "RX BYTES", "TX BYTES"]
            .map(str::to_owned)
            .to_vec(),
    ];
    rows.extend(s.peers.iter().map(|p| {
        vec![
            p.node.clone(),
            or_dash(p.endpoint.clone()),
            p.allowed_ips.join(","),
            p.handshake_age_seconds.map_or_else(|| "never".to_owned(), |a| format!("{} ago", age(a))),
            p.rx_bytes.to_string(),
            p.tx_bytes.to_string(),
        ]
    }));
    out.push_str(&columns(&rows));
    let drops: Vec<String> = s.drops.iter().map(|(reason, n)| format!("{reason}={n}")).collect();
    let _ = writeln!(out, "\nDrops:     {}", if drops.is_empty() { "-".to_owned() } else { drops.join(" ") });
    if s.problems.is_empty() {
        let _ = writeln!(out, "Problems:  none");
    } else {
        let _ = writeln!(out, "Problems:");
        for p in &s.problems {
            let _ = writeln!(out, "  {} {}: {}", p.node, p.reason, p.message);
        }
    }
    out
}

/// The cluster view.
pub fn cluster(c: &ClusterStatus) -> String {
    let mut rows = vec![
        ["NODE", "AGENT", "KEY", "EPOCH", "KEY AGE", "PEERS", "STRICT", "PROBLEMS"]
            .map(str::to_owned)
            .to_vec(),
    ];
    rows.extend(c.nodes.iter().map(|n| {
        let agent = match n.agent {
            AgentState::Ready => "ready".to_owned(),
            AgentState::NotReady => "not-ready".to_owned(),
            AgentState::Stopped => "stopped".to_owned(),
            AgentState::NotReporting => "not-reporting".to_owned(),
            AgentState::NoAgent => "no-agent".to_owned(),
            AgentState::Exception => format!("exception ({})", n.exception.as_deref().unwrap_or("")),
        };
        vec![
            n.node.clone(),
            agent,
            or_dash(n.key_fingerprint.clone()),
            or_dash(n.key_epoch.map(|e| e.to_string())),
            or_dash(n.key_age_seconds.map(age)),
            match (n.peers_handshaked, n.peers) {
                (Some(h), Some(p)) => format!("{h}/{p}"),
                _ => "-".to_owned(),
            },
            or_dash(n.strict.map(|s| if s { "on" } else { "off" }.to_owned())),
            if n.problems.is_empty() { "-".to_owned() } else { n.problems.join("; ") },
        ]
    }));
    let mut out = columns(&rows);
    let s = &c.summary;
    let _ = writeln!(
        out,
        "\n{} nodes: {} ready, {} exceptions, {} with problems (at {})",
        s.nodes, s.ready, s.exceptions, s.with_problems, c.time
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_table() {
        for (seconds, want) in [(0, "0s"), (42, "42s"), (192, "3m 12s"), (90_000, "1d 1h")] {
            assert_eq!(age(seconds), want, "{seconds}");
        }
    }

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let rows = vec![vec!["A".to_owned(), "B".to_owned()], vec!["long".to_owned(), "x".to_owned()]];
        assert_eq!(columns(&rows), "A     B\nlong  x\n");
    }
}
