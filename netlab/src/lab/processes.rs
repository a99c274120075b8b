//! Long-running processes the lab starts inside its namespaces; stopped (TERM, then KILL) and reaped.
//!
//! Each process runs as `ip netns exec <ns> <program> …` in a process group of its own, so stopping
//! it also stops whatever it forked. `ip netns exec` also gives it a private mount namespace with a
//! fresh `/sys`. Its stdout and stderr go to a log file in the lab's log directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use std::os::unix::process::CommandExt;

use super::error::LabError;

/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How to start a lab process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Directories that get a fresh, private tmpfs for this process (and its children) only, e.g.
    /// `/run/wireguard`: `ip netns exec` already gives every process its own mount namespace (with
    /// slave propagation, so nothing leaks back to the host); the tmpfs is mounted there before the
    /// program starts. A missing directory is created (empty) on the host first.
    pub private_dirs: Vec<PathBuf>,
}

/// The shell prelude that mounts the private directories, then runs the program:
/// `sh -c PRELUDE sh <count> <dir>… <program> <arg>…`.
const PRIVATE_DIRS_PRELUDE: &str = r#"set -e
n=$1; shift
while [ "$n" -gt 0 ]; do
  mkdir -p "$1"
  mount -t tmpfs -o mode=0755 meshcrypt-lab "$1"
  shift; n=$((n - 1))
done
exec "$@""#;

/// A process the lab started; the lab stops it on drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabProcess {
    /// Its pid (also its process-group id).
    pub pid: u32,
    /// The namespace it runs in.
    pub namespace: String,
    /// The command line, for messages.
    pub command: String,
    /// The file that receives its stdout and stderr.
    pub log: PathBuf,
}

/// The data-path worker threads (`wg-0`, `wg-1`, …) of process `pid` (a lab process, or this
/// test process when it runs a device itself), sorted; empty if the process is gone.
pub fn worker_threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut names: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_owned())
        .filter(|comm| comm.strip_prefix("wg-").is_some_and(|n| n.parse::<usize>().is_ok()))
        .collect();
    names.sort();
    names
}

/// The processes a lab owns.
#[derive(Debug, Default)]
pub(crate) struct ProcessTable {
    entries: Vec<(LabProcess, Child)>,
    spawned: usize,
}

impl ProcessTable {
    /// Starts `cmd` inside `ns`, logging to a new file in `log_dir`.
    pub(crate) fn spawn(
        &mut self,
        ns: &str,
        cmd: &Command,
        options: &SpawnOptions,
        log_dir: &Path,
    ) -> Result<LabProcess, LabError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let command =
            std::iter::once(program.clone()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
        self.spawned += 1;
        let base = Path::new(&program)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "proc".into());
        let log = log_dir.join(format!("{}-{}-{base}.log", self.spawned, ns));
        let out = File::create(&log).map_err(|e| LabError::io(format!("create {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| LabError::io(format!("dup {}", log.display()), e))?;

        let mut wrapped = Command::new("ip");
        wrapped.args(["netns", "exec", ns]);
        if !options.private_dirs.is_empty() {
            wrapped
                .args(["sh", "-c", PRIVATE_DIRS_PRELUDE, "sh"])
                .arg(options.private_dirs.len().to_string())
                .args(&options.private_dirs);
        }
        wrapped
            .arg(&program)
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let child = wrapped
            .spawn()
            .map_err(|source| LabError::Spawn { command: format!("ip netns exec {ns} {command}"), source })?;
        let p = LabProcess { pid: child.id(), namespace: ns.to_string(), command, log };
        tracing::debug!(pid = p.pid, namespace = ns, command = %p.command, "lab process started");
        self.entries.push((p.clone(), child));
        Ok(p)
    }

    /// The processes still owned (running or exited but not yet stopped).
    pub(crate) fn list(&self) -> Vec<LabProcess> {
        self.entries.iter().map(|(p, _)| p.clone()).collect()
    }

    /// True if process `pid` is owned and has not exited.
    pub(crate) fn running(&mut self, pid: u32) -> bool {
        self.entries
            .iter_mut()
            .find(|(p, _)| p.pid == pid)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops and reaps process `pid`.
    pub(crate) fn stop(&mut self, pid: u32) -> Result<(), LabError> {
        let i = self
            .entries
            .iter()
            .position(|(p, _)| p.pid == pid)
            .ok_or_else(|| LabError::Unknown { kind: "process", name: pid.to_string() })?;
        let (p, child) = self.entries.remove(i);
        stop_child(&p, child)
    }

    /// Stops and reaps every process for which `pred` holds; returns the failures.
    pub(crate) fn stop_where(&mut self, pred: impl Fn(&LabProcess) -> bool) -> Vec<String> {
        let (stop, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.entries).into_iter().partition(|(p, _)| pred(p));
        self.entries = keep;
        // Signal them all first, then wait, so several processes share one grace period.
        for (p, _) in &stop {
            let _ = killpg(Pid::from_raw(p.pid as i32), Signal::SIGTERM);
        }
        stop.into_iter().filter_map(|(p, c)| stop_child(&p, c).err().map(|e| e.to_string())).collect()
    }
}

fn stop_child(p: &LabProcess, mut child: Child) -> Result<(), LabError> {
    let pg = Pid::from_raw(p.pid as i32);
    if matches!(child.try_wait(), Ok(Some(_))) {
        // Already exited; still clean up anything it left in its group.
        let _ = killpg(pg, Signal::SIGKILL);
        return Ok(());
    }
    let _ = killpg(pg, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => {
                let _ = killpg(pg, Signal::SIGKILL);
                return Ok(());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(LabError::io(format!("wait for pid {}", p.pid), e)),
        }
    }
    let _ = killpg(pg, Signal::SIGKILL);
    child.wait().map(drop).map_err(|e| LabError::io(format!("reap pid {} ({})", p.pid, p.command), e))
}

/// Runs `wg ARGS` inside the mount and network namespaces of process `pid` (a device with a private
/// `/run/wireguard`, see [`SpawnOptions::private_dirs`]), returning its stdout.
pub fn wg_via(pid: u32, args: &[&str]) -> Result<String, LabError> {
    let pid = pid.to_string();
    let mut argv = vec!["--target", &pid, "--mount", "--net", "wg"];
    argv.extend_from_slice(args);
    super::command::run("nsenter", &argv)
}

/// True if process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}
