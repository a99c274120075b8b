//! A scale run's figures and how they are printed.

use std::fmt;

use super::observe::quantile;
use super::truth::Drift;

/// Device and kernel operations for one burst of node joins, averaged over the real agents.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstOps {
    /// Nodes that joined at once.
    pub changed: usize,
    /// Peer changes applied to the device.
    pub peer_ops: f64,
    /// Kernel changes (routes, rules, addresses, the link).
    pub kernel_ops: f64,
    /// Reconcile passes run meanwhile.
    pub passes: f64,
}

/// One real agent's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentFigures {
    /// Its node.
    pub node: String,
    /// Where it learns the other nodes (`--peer-source`).
    pub peer_source: String,
    /// Each observed change's latency, API write to route notification, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Expected changes never observed.
    pub unobserved: usize,
    /// CPU time (user + system) over the churn, per event, in milliseconds.
    pub cpu_ms_per_event: f64,
    /// API requests it made over the churn, per event.
    pub requests_per_event: f64,
    /// Response bytes (watch streams included) it received over the churn, per event.
    pub bytes_per_event: f64,
    /// Watch events it received over the churn, per event.
    pub watch_events_per_event: f64,
    /// Reconcile passes over the churn.
    pub passes: f64,
    /// Seconds spent in each phase over the churn.
    pub gather_seconds: f64,
    /// See [`AgentFigures::gather_seconds`].
    pub decide_seconds: f64,
    /// See [`AgentFigures::gather_seconds`].
    pub execute_seconds: f64,
    /// See [`AgentFigures::gather_seconds`] (giving the pass's freed pages back to the kernel).
    pub release_seconds: f64,
    /// Resident memory after the first sync, at the end, and at its peak, in bytes.
    pub rss_after_sync: u64,
    /// See [`AgentFigures::rss_after_sync`].
    pub rss_end: u64,
    /// See [`AgentFigures::rss_after_sync`].
    pub rss_peak: u64,
    /// What was stale or missing once the churn had settled (zero, or the run fails before).
    pub drift: Drift,
}

/// A scale run's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    /// Nodes at the start of the churn, the real ones and the bursts' joins included.
    pub nodes: usize,
    /// Simulated pods at the start.
    pub pods: usize,
    /// Pod-IP mode.
    pub pod_ip: bool,
    /// Seconds from seeding to every agent in step.
    pub first_sync_seconds: f64,
    /// Churn events applied.
    pub events: usize,
    /// Seconds the churn took.
    pub churn_seconds: f64,
    /// Churn events with a route change to observe.
    pub expected_changes: usize,
    /// The bursts' operation counts.
    pub bursts: Vec<BurstOps>,
    /// Each real agent's figures.
    pub agents: Vec<AgentFigures>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for ScaleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.pod_ip { "pod-IP" } else { "podCIDR" };
        writeln!(
            f,
            "{} nodes at the start of the churn, {} simulated pods, {mode} mode",
            self.nodes, self.pods
        )?;
        writeln!(f, "first sync: {:.1} s", self.first_sync_seconds)?;
        writeln!(
            f,
            "churn: {} events in {:.1} s ({:.1}/s), {} with a route to observe",
            self.events,
            self.churn_seconds,
            self.events as f64 / self.churn_seconds.max(f64::EPSILON),
            self.expected_changes
        )?;
        writeln!(f, "\nnodes joining at once | peer ops | kernel ops | passes")?;
        for b in &self.bursts {
            writeln!(
                f,
                "{:>21} | {:>8.1} | {:>10.1} | {:>6.1}",
                b.changed, b.peer_ops, b.kernel_ops, b.passes
            )?;
        }
        writeln!(
            f,
            "\nagent | peer source | event→route p50 / p99 / max ms | unobserved | CPU ms/event | API req/event | bytes/event | watch events/event | passes/event | gather / decide / execute / release ms per pass | RSS after sync / end / peak MiB | drift"
        )?;
        for a in &self.agents {
            let q = |p| quantile(&a.latencies_ms, p).unwrap_or(f64::NAN);
            let per_pass = |s: f64| s * 1_000.0 / a.passes.max(1.0);
            writeln!(
                f,
                "{} | {} | {:.0} / {:.0} / {:.0} | {} | {:.2} | {:.3} | {:.0} | {:.2} | {:.2} | {:.1} / {:.1} / {:.1} / {:.2} | {:.1} / {:.1} / {:.1} | {}",
                a.node,
                a.peer_source,
                q(0.5),
                q(0.99),
                q(1.0),
                a.unobserved,
                a.cpu_ms_per_event,
                a.requests_per_event,
                a.bytes_per_event,
                a.watch_events_per_event,
                a.passes / (self.events.max(1) as f64),
                per_pass(a.gather_seconds),
                per_pass(a.decide_seconds),
                per_pass(a.execute_seconds),
                per_pass(a.release_seconds),
                mib(a.rss_after_sync),
                mib(a.rss_end),
                mib(a.rss_peak),
                if a.drift.is_zero() { "none".to_owned() } else { format!("{:?}", a.drift) },
            )?;
        }
        Ok(())
    }
}
