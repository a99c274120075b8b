//! Where the tunnel processes' CPU goes during the single-stream test, from a `perf` profile of
//! both ends: the AEAD's own code, the kernel (system calls and the network stack they run), and
//! everything else in the process (ours: routing, batching, copies, locks, the allocator, libc).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// Samples per second `perf record` takes (a software clock: hardware counters are often
/// missing in a VM).
const FREQUENCY: &str = "999";

/// Shares of the tunnel processes' samples, each in 0..=1 (they add up to 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    /// ChaCha20-Poly1305 (ring's assembly: symbols with `chacha` or `poly1305`).
    pub crypto: f64,
    /// The kernel, in the processes' system calls and the softirq work they trigger.
    pub kernel: f64,
    /// Everything else in the processes.
    pub ours: f64,
}

/// A `perf record` of some processes, running until [`Recording::finish`].
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// Starts `perf record` (software clock, no call graphs) on `pids`, writing to `data`.
/// Errors: `perf` cannot be started (it is Debian's `linux-perf`).
pub fn start(pids: &[u32], data: &Path) -> anyhow::Result<Recording> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let child = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", FREQUENCY, "-p", &pids.join(","), "-o"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start perf record (Debian package linux-perf)")?;
    Ok(Recording { child, data: data.to_owned() })
}

impl Recording {
    /// Stops the recording (SIGINT, as perf expects) and reads its budget. Errors: perf failed,
    /// or its report has no samples.
    pub fn finish(mut self) -> anyhow::Result<Budget> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        self.child.wait().context("wait for perf record")?;
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "dso,sym", "-i"])
            .arg(&self.data)
            .output()
            .context("perf report")?;
        if !out.status.success() {
            bail!("perf report: {}", String::from_utf8_lossy(&out.stderr));
        }
        budget(&String::from_utf8_lossy(&out.stdout)).context("perf report has no samples")
    }
}

/// The budget of a `perf report --stdio --sort dso,sym` text, whose sample lines read
/// `  12.34%  meshcrypt  [.] symbol` (`[k]` marks the kernel's); `None` without sample lines.
pub fn budget(report: &str) -> Option<Budget> {
    let mut b = Budget::default();
    for line in report.lines() {
        let mut words = line.split_whitespace();
        let Some(share) = words.next().and_then(|w| w.strip_suffix('%')).and_then(|w| w.parse::<f64>().ok())
        else {
            continue;
        };
        let _dso = words.next();
        let space = words.next();
        let symbol = words.collect::<Vec<_>>().join(" ").to_ascii_lowercase();
        let slot = if space == Some("[k]") {
            &mut b.kernel
        } else if symbol.contains("chacha") || symbol.contains("poly1305") {
            &mut b.crypto
        } else {
            &mut b.ours
        };
        *slot += share / 100.0;
    }
    let total = b.crypto + b.kernel + b.ours;
    (total > 0.0).then(|| Budget { crypto: b.crypto / total, kernel: b.kernel / total, ours: b.ours / total })
}

#[cfg(test)]
mod tests {
    use super::{Budget, budget};

    #[test]
    fn budget_table() {
        let report = "# Overhead  Shared Object      Symbol\n\
            #\n\
            \x20   40.00%  meshcrypt          [.] ring_core_0_17_14__chacha20_poly1305_open\n\
            \x20   30.00%  [kernel.kallsyms]  [k] copy_user_enhanced_fast_string\n\
            \x20   10.00%  meshcrypt          [.] ring_core_0_17_14__ChaCha20_ctr32_avx2\n\
            \x20   15.00%  meshcrypt          [.] meshcrypt_dataplane::datapath::tx::tx_once\n\
            \x20    5.00%  libc.so.6          [.] __memmove_avx_unaligned_erms\n\
            \n\
            # (Tip: use --sort)\n";
        for (text, want) in [
            (report, Some(Budget { crypto: 0.5, kernel: 0.3, ours: 0.2 })),
            // Shares are of the samples listed, whatever perf's own total.
            (
                "  3.00% a [k] x\n  1.00% a [.] poly1305_blocks\n",
                Some(Budget { crypto: 0.25, kernel: 0.75, ours: 0.0 }),
            ),
            ("# no samples\n", None),
            ("", None),
        ] {
            let got = budget(text);
            let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
            let same = match (got, want) {
                (Some(g), Some(w)) => {
                    close(g.crypto, w.crypto) && close(g.kernel, w.kernel) && close(g.ours, w.ours)
                }
                (None, None) => true,
                _ => false,
            };
            assert!(same, "{text:?}: got {got:?}, want {want:?}");
        }
    }
}
