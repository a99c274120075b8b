//! The leak report: counts, plaintext pod flows, and a bounded list of distinct sample packets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::findings::{Allowed, Finding, FrameVerdict, LeakKind};

/// How many plaintext pod flows the readable form lists.
pub const MAX_FLOWS_SHOWN: usize = 32;

/// One distinct offending packet shape and how many packets had it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakSample {
    /// The finding (rule, layer, headers).
    pub finding: Finding,
    /// How many packets matched it exactly.
    pub count: u64,
}

/// What a capture saw. Every frame is counted once (see the capture module for how).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// Frames captured.
    pub frames: u64,
    /// Frames carrying IPv4 or IPv6.
    pub ip_packets: u64,
    /// Frames that are not IP (ARP, …): never leaks.
    pub non_ip_frames: u64,
    /// Frames too short to parse.
    pub unparsable_frames: u64,
    /// Allowed mesh (WireGuard) packets between underlay hosts.
    pub mesh_packets: u64,
    /// Allowed API-server packets.
    pub api_packets: u64,
    /// Allowed ICMP errors between underlay hosts about mesh packets (see
    /// [`Allowed::MeshIcmpError`]).
    pub mesh_icmp_errors: u64,
    /// Packets that break at least one rule.
    pub leaking_packets: u64,
    /// Packets with a plaintext pod address at some layer.
    pub pod_plaintext: u64,
    /// Packets between underlay hosts outside the mesh and the API server.
    pub stray_underlay: u64,
    /// Packets on the mesh port that do not look like WireGuard.
    pub mesh_not_wireguard: u64,
    /// Plaintext pod packets per (source, destination) of the header that showed the pod address.
    pub pod_flows: BTreeMap<(IpAddr, IpAddr), u64>,
    /// Distinct offending packets, at most `max_samples`, in order of first sighting.
    pub samples: Vec<LeakSample>,
    /// Findings that matched no kept sample once the sample list was full.
    pub unsampled_findings: u64,
    /// Frames the kernel dropped because the capture socket's buffer was full.
    pub kernel_drops: u64,
    /// How long the capture ran.
    pub duration: Duration,
    max_samples: usize,
}

impl LeakReport {
    /// An empty report keeping at most `max_samples` distinct samples.
    pub fn new(max_samples: usize) -> Self {
        LeakReport { max_samples, ..Default::default() }
    }

    /// Adds one frame's verdict.
    pub fn record(&mut self, verdict: &FrameVerdict) {
        self.frames += 1;
        if verdict.unparsable {
            self.unparsable_frames += 1;
            return;
        }
        if !verdict.ip {
            self.non_ip_frames += 1;
            return;
        }
        self.ip_packets += 1;
        match verdict.allowed {
            Some(Allowed::Mesh) => self.mesh_packets += 1,
            Some(Allowed::Api) => self.api_packets += 1,
            Some(Allowed::MeshIcmpError) => self.mesh_icmp_errors += 1,
            None => {}
        }
        if !verdict.is_leak() {
            return;
        }
        self.leaking_packets += 1;
        if verdict.has(LeakKind::PodPlaintext) {
            self.pod_plaintext += 1;
        }
        if verdict.has(LeakKind::StrayUnderlay) {
            self.stray_underlay += 1;
        }
        if verdict.has(LeakKind::MeshNotWireGuard) {
            self.mesh_not_wireguard += 1;
        }
        let mut flows: Vec<(IpAddr, IpAddr)> = verdict
            .findings
            .iter()
            .filter(|f| f.kind == LeakKind::PodPlaintext)
            .map(|f| (f.packet.src, f.packet.dst))
            .collect();
        flows.sort();
        flows.dedup();
        for flow in flows {
            *self.pod_flows.entry(flow).or_default() += 1;
        }
        for f in &verdict.findings {
            if let Some(s) = self.samples.iter_mut().find(|s| s.finding == *f) {
                s.count += 1;
            } else if self.samples.len() < self.max_samples {
                self.samples.push(LeakSample { finding: *f, count: 1 });
            } else {
                self.unsampled_findings += 1;
            }
        }
    }

    /// True if no captured packet broke a rule.
    pub fn is_clean(&self) -> bool {
        self.leaking_packets == 0
    }

    /// For a run in which every pod talked to every other pod without meshcrypt, what does not fit
    /// that picture, described: the plaintext must be reported as a leak, nothing else may cross
    /// the underlay, the kernel must not have dropped captured frames, each pair of pods on
    /// different nodes must show at least `min` plaintext packets, and no pair on the same node may
    /// show up at all (local traffic never leaves its node).
    pub fn plaintext_baseline_problems(&self, pods: &[crate::lab::Pod], min: u64) -> Vec<String> {
        let mut problems = Vec::new();
        if self.is_clean() {
            problems.push("the plaintext pod traffic was not reported as a leak".to_owned());
        }
        if self.stray_underlay != 0 {
            problems.push(format!("{} stray underlay packets", self.stray_underlay));
        }
        if self.kernel_drops != 0 {
            problems.push(format!(
                "{} frames dropped by the kernel: the capture is incomplete",
                self.kernel_drops
            ));
        }
        for a in pods {
            for b in pods.iter().filter(|b| *b != a) {
                let n = self.pod_flow(IpAddr::V4(a.address), IpAddr::V4(b.address));
                if a.node == b.node && n != 0 {
                    problems
                        .push(format!("{} -> {}: {n} packets on the underlay from one node", a.name, b.name));
                } else if a.node != b.node && n < min {
                    problems
                        .push(format!("{} -> {}: {n} plaintext packets seen, want {min}", a.name, b.name));
                }
            }
        }
        problems
    }

    /// Plaintext pod packets seen from `src` to `dst`.
    pub fn pod_flow(&self, src: IpAddr, dst: IpAddr) -> u64 {
        self.pod_flows.get(&(src, dst)).copied().unwrap_or(0)
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "underlay capture: {} frames in {:.1?} ({} IP, {} non-IP, {} unparsable, {} dropped by the kernel)",
            self.frames,
            self.duration,
            self.ip_packets,
            self.non_ip_frames,
            self.unparsable_frames,
            self.kernel_drops
        )?;
        writeln!(
            f,
            "allowed: {} mesh (WireGuard) packets, {} API-server packets, {} ICMP errors about mesh packets",
            self.mesh_packets, self.api_packets, self.mesh_icmp_errors
        )?;
        if self.is_clean() {
            return writeln!(f, "LEAKS: none");
        }
        writeln!(
            f,
            "LEAKS: {} packets: {} with plaintext pod addresses, {} stray between underlay hosts, {} non-WireGuard on the mesh port",
            self.leaking_packets, self.pod_plaintext, self.stray_underlay, self.mesh_not_wireguard
        )?;
        if !self.pod_flows.is_empty() {
            writeln!(f, "plaintext pod flows (packets):")?;
            let shown = || self.pod_flows.iter().take(MAX_FLOWS_SHOWN);
            let w = shown().map(|((s, d), _)| s.to_string().len().max(d.to_string().len())).max();
            let w = w.unwrap_or(0);
            for ((src, dst), n) in shown() {
                writeln!(f, "  {:<w$} -> {:<w$} {n:>6}", src.to_string(), dst.to_string())?;
            }
            if self.pod_flows.len() > MAX_FLOWS_SHOWN {
                writeln!(f, "  … and {} more flows", self.pod_flows.len() - MAX_FLOWS_SHOWN)?;
            }
        }
        writeln!(f, "samples (distinct packets):")?;
        for s in &self.samples {
            writeln!(f, "  {:>6} × {}", s.count, s.finding)?;
        }
        if self.unsampled_findings > 0 {
            writeln!(f, "  … and {} findings not sampled", self.unsampled_findings)?;
        }
        Ok(())
    }
}
