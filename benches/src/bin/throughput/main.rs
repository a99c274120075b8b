//! The data-plane throughput bench: meshcrypt's device (`meshcrypt device`), wireguard-go and
//! boringtun-cli side by side between two lab namespaces (underlay MTU 1500, tunnel MTU 1420), in
//! interleaved rounds (the order rotates every round). Each round starts every tunnel afresh on
//! both nodes, configures it over UAPI with `wg setconf`, and measures ping latency, iperf3 TCP
//! with one and four streams, the CPU the two tunnel processes use, their peak resident memory,
//! and TCP retransmits (from the sender's `/proc/net/snmp`). It prints the medians and meshcrypt's
//! ratios as a Markdown table.
//!
//! It fails (exit status 1) when a tunnel process crashes or meshcrypt's tunnel does not carry
//! traffic, never on a number.
//!
//! ```text
//! throughput [--rounds N] [--seconds S] [--quick] [--baseline] [--only NAME,NAME…]
//!            [--compare NAME=PATH-TO-MESHCRYPT]… [--peer NAME=PATH-TO-WIREGUARD-GO]… [--flows]
//!            [--profile]
//! ```
//! `--profile` records both tunnel processes with `perf` during the single-stream test and adds
//! where their CPU per Gbit/s went: the AEAD, the kernel, the rest ([`profile`]).
//! `--compare` runs another build of meshcrypt (`PATH device IFNAME`); `--peer` runs any
//! wireguard-go-compatible binary (`PATH -f IFNAME`, configured over its UAPI socket in
//! `/var/run/wireguard` like Debian's), e.g. the upstream wireguard-go a user runs.
//! `--flows` adds `meshcrypt+flows`: the same device with flow accounting on (the agent's
//! `flow-records`), so the two rows of one run give its cost.
//! Needs root, iproute2, iperf3, ping, wg (wireguard-tools), nsenter, and optionally wireguard-go
//! and boringtun-cli (looked up in PATH and in `target/tools/bin`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshcrypt_keyexchange::PrivateKey;
use meshcrypt_netlab::lab::{Lab, LabProcess, Node, SpawnOptions};
use meshcrypt_netlab::wait::poll;

mod profile;

const IFNAME: &str = "wgbench0";
const ADDR_A: &str = "10.244.10.1";
const ADDR_B: &str = "10.244.20.1";
const PORT: u16 = 51820;
/// The name of the no-tunnel reference row.
const BASELINE: &str = "underlay (no tunnel)";

/// One tunnel implementation under test.
#[derive(Clone)]
struct Impl {
    name: String,
    /// Program and arguments before the interface name is appended.
    argv: Vec<String>,
    /// Where the interface name goes (`boringtun-cli` wants it first, then options).
    ifname_first: bool,
    /// Whether its failures fail the bench.
    ours: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Metric {
    Tcp1,
    Tcp4,
    Ping,
    Cpu1,
    CpuPerGbit,
    Retrans1,
    Retrans4,
    Memory,
    CryptoPerGbit,
    KernelPerGbit,
    OursPerGbit,
}

impl Metric {
    const ALL: [Metric; 11] = [
        Metric::Tcp1,
        Metric::Tcp4,
        Metric::Ping,
        Metric::Cpu1,
        Metric::CpuPerGbit,
        Metric::Retrans1,
        Metric::Retrans4,
        Metric::Memory,
        Metric::CryptoPerGbit,
        Metric::KernelPerGbit,
        Metric::OursPerGbit,
    ];

    fn label(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream (Gbit/s)",
            Metric::Tcp4 => "TCP 4 streams (Gbit/s)",
            Metric::Ping => "ping avg RTT (ms)",
            Metric::Cpu1 => "tunnel CPU, 1 stream (% of a core, both ends)",
            Metric::CpuPerGbit => "tunnel CPU per Gbit/s, 1 stream (% of a core)",
            Metric::Retrans1 => "TCP retransmits, 1 stream (% of segments)",
            Metric::Retrans4 => "TCP retransmits, 4 streams (% of segments)",
            Metric::Memory => "tunnel peak resident memory (MiB, larger end)",
            Metric::CryptoPerGbit => "of which ChaCha20-Poly1305 (% of a core per Gbit/s, perf)",
            Metric::KernelPerGbit => "of which the kernel (% of a core per Gbit/s, perf)",
            Metric::OursPerGbit => "of which the rest of the process (% of a core per Gbit/s, perf)",
        }
    }
}

struct Args {
    rounds: usize,
    seconds: u32,
    ping_count: u32,
    only: Option<Vec<String>>,
    baseline: bool,
    /// Other builds of `meshcrypt` to run side by side (name, path), e.g. the previous commit's.
    compare: Vec<(String, PathBuf)>,
    /// wireguard-go-compatible binaries to run side by side (name, path).
    peers: Vec<(String, PathBuf)>,
    flows: bool,
    /// Profile the single-stream test with perf.
    profile: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 3,
        seconds: 5,
        ping_count: 100,
        only: None,
        baseline: false,
        compare: Vec::new(),
        peers: Vec::new(),
        flows: false,
        profile: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--seconds" => a.seconds = value("--seconds")?.parse().context("--seconds")?,
            "--quick" => {
                a.rounds = 1;
                a.seconds = 2;
                a.ping_count = 10;
            }
            "--baseline" => a.baseline = true,
            "--only" => a.only = Some(value("--only")?.split(',').map(str::to_owned).collect()),
            "--flows" => a.flows = true,
            "--profile" => a.profile = true,
            "--compare" => a.compare.push(named_path("--compare", &value("--compare")?)?),
            "--peer" => a.peers.push(named_path("--peer", &value("--peer")?)?),
            "-h" | "--help" => {
                println!(
                    "usage: throughput [--rounds N] [--seconds S] [--quick] [--baseline] [--only NAME,NAME…] [--compare NAME=PATH-TO-MESHCRYPT]… [--peer NAME=PATH-TO-WIREGUARD-GO]… [--flows] [--profile]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.rounds == 0 || a.seconds == 0 {
        bail!("--rounds and --seconds must be positive");
    }
    Ok(a)
}

/// `NAME=PATH` of `--compare` and `--peer`: the row's name and the binary.
fn named_path(flag: &str, value: &str) -> anyhow::Result<(String, PathBuf)> {
    match value.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => bail!("{flag} wants NAME=PATH, got {value:?}"),
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin").join(name);
    if tools.is_file() {
        return Some(tools);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The contestants: meshcrypt (and with `--flows` its flow-accounting twin), the `--compare` and
/// `--peer` binaries, then wireguard-go and boringtun-cli where installed, narrowed by `--only`.
/// Errors on a missing binary or a name used twice.
fn implementations(args: &Args) -> anyhow::Result<Vec<Impl>> {
    let exe = std::env::current_exe().context("current_exe")?;
    let meshcrypt = exe.with_file_name("meshcrypt");
    if !meshcrypt.is_file() {
        bail!("{} not found: build it with `cargo build --release -p meshcrypt`", meshcrypt.display());
    }
    let mut list = vec![Impl {
        name: "meshcrypt".into(),
        argv: vec![meshcrypt.display().to_string(), "device".into()],
        ifname_first: false,
        ours: true,
    }];
    if args.flows {
        list.push(Impl {
            name: "meshcrypt+flows".into(),
            argv: vec![
                meshcrypt.display().to_string(),
                "device".into(),
                "--flow-accounting".into(),
                "65536".into(),
            ],
            ifname_first: false,
            ours: true,
        });
    }
    let extra = [("--compare", &args.compare, "device"), ("--peer", &args.peers, "-f")];
    for (flag, named, first_arg) in extra {
        for (name, path) in named {
            if !path.is_file() {
                bail!("{flag} {name}: {} not found", path.display());
            }
            list.push(Impl {
                name: name.clone(),
                argv: vec![path.display().to_string(), first_arg.into()],
                ifname_first: false,
                ours: false,
            });
        }
    }
    match find_program("wireguard-go") {
        Some(p) => list.push(Impl {
            name: "wireguard-go".into(),
            argv: vec![p.display().to_string(), "-f".into()],
            ifname_first: false,
            ours: false,
        }),
        None => println!("SKIP wireguard-go: not installed (Debian package `wireguard-go`)"),
    }
    match find_program("boringtun-cli") {
        Some(p) => {
            for (name, threads) in [("boringtun-cli", None), ("boringtun-cli-t1", Some("1"))] {
                let mut argv = vec![p.display().to_string()];
                let mut rest: Vec<String> = vec!["--foreground".into(), "--disable-drop-privileges".into()];
                if let Some(t) = threads {
                    rest.extend(["--threads".into(), t.into()]);
                }
                argv.extend(rest);
                list.push(Impl { name: name.into(), argv, ifname_first: true, ours: false });
            }
        }
        None => println!(
            "SKIP boringtun-cli: not installed (`cargo install boringtun-cli --version 0.7.1 --locked --root target/tools`)"
        ),
    }
    if let Some(only) = &args.only {
        list.retain(|i| only.iter().any(|o| o == &i.name));
    }
    let mut names = BTreeSet::new();
    if let Some(twice) = list.iter().find(|i| !names.insert(i.name.as_str())) {
        bail!("two contestants are named {:?}: give --compare and --peer other names", twice.name);
    }
    Ok(list)
}

/// `ours ÷ other`, or `None` when it means nothing (both zero, e.g. no retransmits on either).
fn ratio(ours: f64, other: f64) -> Option<f64> {
    let r = ours / other;
    r.is_finite().then_some(r).or_else(|| (ours > 0.0).then_some(f64::INFINITY))
}

/// A tunnel running on one node.
struct Tunnel {
    pid: u32,
}

fn start_tunnel(lab: &Lab, node: &Node, imp: &Impl) -> anyhow::Result<Tunnel> {
    let mut argv = imp.argv.clone();
    if imp.ifname_first {
        argv.insert(1, IFNAME.into());
    } else {
        argv.push(IFNAME.into());
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let options = SpawnOptions { private_dirs: vec![PathBuf::from("/var/run/wireguard")] };
    let proc = lab.spawn_with(&node.namespace, &cmd, &options).context("spawn tunnel")?;
    let pid = proc.pid;
    poll(Duration::from_secs(10), || {
        if !lab.process_running(pid) {
            return Ok(Err(anyhow::anyhow!("{} exited at start; log: {}", imp.name, log_tail(&proc.log))));
        }
        let ok = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-n", "wg", "show", IFNAME])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok { Ok(Ok(Tunnel { pid })) } else { Err("no UAPI socket yet".to_owned()) }
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}; log: {}", imp.name, log_tail(&proc.log)))?
}

/// Starts an `iperf3` server on `addr` in `ns` and waits until it listens.
fn iperf_server(lab: &Lab, ns: &str, addr: &str) -> anyhow::Result<LabProcess> {
    let server = lab.spawn(ns, &["iperf3", "-s", "-B", addr])?;
    let filter = format!("src {addr}:5201");
    poll(Duration::from_secs(5), || match lab.exec(ns, &["ss", "-Hltn", &filter]) {
        Ok(out) if !out.trim().is_empty() => Ok(()),
        Ok(_) => Err("not listening yet".to_owned()),
        Err(e) => Err(e.to_string()),
    })
    .map_err(|e| anyhow::anyhow!("iperf3 server on {addr}: {e}"))?;
    Ok(server)
}

fn log_tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2000)..]).into_owned()
}

#[allow(clippy::too_many_arguments)]
fn configure(
    lab: &Lab,
    node: &Node,
    tunnel: &Tunnel,
    own: &PrivateKey,
    peer: &PrivateKey,
    peer_node: &Node,
    (addr, peer_net): (&str, &str),
    dir: &Path,
) -> anyhow::Result<()> {
    let conf = dir.join(format!("{}.conf", node.name));
    let text = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n[Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = {peer_net}\n",
        own.to_base64().as_str(),
        peer.public_key(),
        peer_node.underlay_addr,
    );
    std::fs::write(&conf, text)?;
    let out = Command::new("nsenter")
        .args(["-t", &tunnel.pid.to_string(), "-m", "-n", "wg", "setconf", IFNAME])
        .arg(&conf)
        .output()?;
    if !out.status.success() {
        bail!("wg setconf: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ns = &node.namespace;
    lab.exec(ns, &["ip", "addr", "add", &format!("{addr}/24"), "dev", IFNAME])?;
    lab.exec(ns, &["ip", "link", "set", IFNAME, "mtu", "1420", "up"])?;
    lab.exec(ns, &["ip", "route", "add", peer_net, "dev", IFNAME])?;
    Ok(())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command come state (field 3) …; utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// A process's peak resident memory (`VmHWM` in `/proc/PID/status`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| vm_hwm_kib(&status))
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// The `VmHWM:` line of a `/proc/PID/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// (OutSegs, RetransSegs) of a namespace.
fn tcp_segments(lab: &Lab, ns: &str) -> anyhow::Result<(u64, u64)> {
    let snmp = lab.exec(ns, &["cat", "/proc/net/snmp"])?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(head), Some(values)) = (lines.next(), lines.next()) else { bail!("no Tcp lines in snmp") };
    let map: BTreeMap<&str, u64> = head
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect();
    Ok((map.get("OutSegs").copied().unwrap_or(0), map.get("RetransSegs").copied().unwrap_or(0)))
}

struct TcpResult {
    gbps: f64,
    retrans_pct: f64,
    cpu_pct: f64,
    /// Where the tunnels' CPU went, when profiled.
    budget: Option<profile::Budget>,
}

fn iperf_to(
    lab: &Lab,
    a: &Node,
    to: &str,
    tunnels: [&Tunnel; 2],
    streams: u32,
    seconds: u32,
    perf_data: Option<&Path>,
) -> anyhow::Result<TcpResult> {
    let recording =
        perf_data.map(|data| profile::start(&[tunnels[0].pid, tunnels[1].pid], data)).transpose()?;
    let (seg0, re0) = tcp_segments(lab, &a.namespace)?;
    let cpu0 = cpu_seconds(tunnels[0].pid) + cpu_seconds(tunnels[1].pid);
    let start = Instant::now();
    let timeout = (seconds + 20).to_string();
    let (t, p) = (seconds.to_string(), streams.to_string());
    let argv =
        ["timeout", &timeout, "iperf3", "-c", to, "-t", &t, "-P", &p, "-J", "--connect-timeout", "3000"];
    let out = lab.exec_output(&a.namespace, &argv)?;
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(tunnels[0].pid) + cpu_seconds(tunnels[1].pid);
    let (seg1, re1) = tcp_segments(lab, &a.namespace)?;
    let budget = recording.map(profile::Recording::finish).transpose()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(err) = json.get("error") {
        bail!("iperf3: {err}");
    }
    let bps = json["end"]["sum_received"]["bits_per_second"].as_f64().context("no sum_received")?;
    let segs = seg1.saturating_sub(seg0).max(1);
    Ok(TcpResult {
        gbps: bps / 1e9,
        retrans_pct: 100.0 * re1.saturating_sub(re0) as f64 / segs as f64,
        cpu_pct: 100.0 * (cpu1 - cpu0) / wall,
        budget,
    })
}

fn ping_avg_ms(lab: &Lab, ns: &str, count: u32) -> anyhow::Result<f64> {
    let c = count.to_string();
    let out = lab.exec(ns, &["ping", "-n", "-q", "-c", &c, "-i", "0.02", "-W", "1", ADDR_B])?;
    // rtt min/avg/max/mdev = 0.081/0.102/0.140/0.017 ms
    let line = out.lines().find(|l| l.contains("min/avg/max")).context("no rtt line")?;
    if std::env::var_os("THROUGHPUT_VERBOSE").is_some() {
        println!("    {line}");
    }
    let nums = line.split('=').nth(1).context("rtt")?.trim();
    let avg = nums.split('/').nth(1).context("avg")?;
    Ok(avg.parse()?)
}

fn wait_for_ping(lab: &Lab, ns: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = lab.exec_output(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", ADDR_B])?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no ping reply through the tunnel within 15 s");
        }
    }
}

type Samples = BTreeMap<String, BTreeMap<Metric, Vec<f64>>>;

/// The underlay without a tunnel, single stream: the ceiling under the machine's load right now.
fn run_baseline(lab: &Lab, args: &Args, samples: &mut Samples) -> anyhow::Result<()> {
    let (a, b) = (&lab.nodes()[0], &lab.nodes()[1]);
    let to = b.underlay_addr.to_string();
    let server = iperf_server(lab, &b.namespace, &to)?;
    let none = Tunnel { pid: 0 };
    let result = iperf_to(lab, a, &to, [&none, &none], 1, args.seconds, None);
    let _ = lab.stop_process(server.pid);
    let one = result?;
    samples.entry(BASELINE.into()).or_default().entry(Metric::Tcp1).or_default().push(one.gbps);
    println!("  {:<18} tcp1 {:6.3} Gbit/s (retr {:5.2}%)", BASELINE, one.gbps, one.retrans_pct);
    Ok(())
}

/// One implementation, one round: start, configure, measure, stop.
fn run_one(lab: &Lab, args: &Args, imp: &Impl, samples: &mut Samples) -> anyhow::Result<()> {
    let (a, b) = (&lab.nodes()[0], &lab.nodes()[1]);
    let dir = tempfile::tempdir()?;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let ta = start_tunnel(lab, a, imp)?;
    let tb = match start_tunnel(lab, b, imp) {
        Ok(t) => t,
        Err(e) => {
            let _ = lab.stop_process(ta.pid);
            return Err(e);
        }
    };
    let result = (|| {
        configure(lab, a, &ta, &ka, &kb, b, (ADDR_A, "10.244.20.0/24"), dir.path())?;
        configure(lab, b, &tb, &kb, &ka, a, (ADDR_B, "10.244.10.0/24"), dir.path())?;
        wait_for_ping(lab, &a.namespace)?;
        // Let the previous test's teardown settle before measuring latency.
        std::thread::sleep(Duration::from_secs(1));
        let server = iperf_server(lab, &b.namespace, ADDR_B)?;
        let run = (|| {
            let ping = ping_avg_ms(lab, &a.namespace, args.ping_count)?;
            let perf_data = args.profile.then(|| dir.path().join("perf.data"));
            let one = iperf_to(lab, a, ADDR_B, [&ta, &tb], 1, args.seconds, perf_data.as_deref())?;
            let four = iperf_to(lab, a, ADDR_B, [&ta, &tb], 4, args.seconds, None)?;
            // Peak since start: the round's ping and both TCP tests.
            let memory = peak_rss_mib(ta.pid).max(peak_rss_mib(tb.pid));
            anyhow::Ok((ping, one, four, memory))
        })();
        let _ = lab.stop_process(server.pid);
        let (ping, one, four, memory) = run?;
        let s = samples.entry(imp.name.clone()).or_default();
        let per_gbit = one.cpu_pct / one.gbps.max(1e-9);
        if let Some(b) = one.budget {
            for (m, share) in [
                (Metric::CryptoPerGbit, b.crypto),
                (Metric::KernelPerGbit, b.kernel),
                (Metric::OursPerGbit, b.ours),
            ] {
                s.entry(m).or_default().push(per_gbit * share);
            }
        }
        for (m, v) in [
            (Metric::Tcp1, one.gbps),
            (Metric::Tcp4, four.gbps),
            (Metric::Ping, ping),
            (Metric::Cpu1, one.cpu_pct),
            (Metric::CpuPerGbit, per_gbit),
            (Metric::Retrans1, one.retrans_pct),
            (Metric::Retrans4, four.retrans_pct),
            (Metric::Memory, memory),
        ] {
            s.entry(m).or_default().push(v);
        }
        println!(
            "  {:<18} tcp1 {:6.3} Gbit/s (retr {:5.2}%, cpu {:5.1}%)  tcp4 {:6.3} Gbit/s (retr {:5.2}%)  ping {:.3} ms  peak {:.1} MiB",
            imp.name, one.gbps, one.retrans_pct, one.cpu_pct, four.gbps, four.retrans_pct, ping, memory
        );
        anyhow::Ok(())
    })();
    if std::env::var_os("THROUGHPUT_VERBOSE").is_some()
        && let Some(p) = lab.processes().into_iter().find(|p| p.pid == ta.pid)
    {
        println!("    log of {}: {}", p.command, log_tail(&p.log));
    }
    let crashed: Vec<&str> = [(&ta, "node-0"), (&tb, "node-1")]
        .into_iter()
        .filter(|(t, _)| !lab.process_running(t.pid))
        .map(|(_, n)| n)
        .collect();
    let _ = lab.stop_process(ta.pid);
    let _ = lab.stop_process(tb.pid);
    if !crashed.is_empty() {
        bail!("{} crashed on {}", imp.name, crashed.join(", "));
    }
    result
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn table(impls: &[Impl], samples: &Samples) -> String {
    let get =
        |name: &str, m: Metric| samples.get(name).and_then(|s| s.get(&m)).map_or(f64::NAN, |v| median(v));
    let others: Vec<&Impl> = impls.iter().filter(|i| i.name != "meshcrypt").collect();
    let mut out = String::from("| metric (median) |");
    for i in impls {
        let _ = write!(out, " {} |", i.name);
    }
    for o in &others {
        let _ = write!(out, " meshcrypt ÷ {} |", o.name);
    }
    out.push_str("\n|---|");
    for _ in 0..impls.len() + others.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for m in Metric::ALL {
        if impls.iter().all(|i| get(&i.name, m).is_nan()) {
            continue;
        }
        let _ = write!(out, "| {} |", m.label());
        for i in impls {
            let _ = write!(out, " {:.3} |", get(&i.name, m));
        }
        for o in &others {
            let _ = match ratio(get("meshcrypt", m), get(&o.name, m)) {
                Some(r) => write!(out, " {r:.2}× |"),
                None => write!(out, " – |"),
            };
        }
        out.push('\n');
    }
    let rounds: Vec<String> = impls
        .iter()
        .map(|i| {
            format!(
                "{} {}",
                i.name,
                samples.get(&i.name).and_then(|s| s.get(&Metric::Tcp1)).map_or(0, Vec::len)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nratios are meshcrypt ÷ other: higher is better for throughput, lower for ping, CPU, retransmits and memory."
    );
    let _ = writeln!(out, "rounds completed: {}", rounds.join(", "));
    out
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let impls = implementations(&args)?;
    if impls.is_empty() {
        bail!("nothing to run");
    }
    let lab = Lab::builder().nodes(2).pods_per_node(0).build().context("build the lab")?;
    println!(
        "lab {}: node-0 {} ↔ node-1 {}, tunnel MTU 1420; {} round(s) of {} s; {}",
        lab.prefix(),
        lab.nodes()[0].underlay_addr,
        lab.nodes()[1].underlay_addr,
        args.rounds,
        args.seconds,
        impls.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut samples = Samples::new();
    let mut failures = Vec::new();
    for round in 1..=args.rounds {
        println!("round {round}/{}", args.rounds);
        if args.baseline
            && let Err(e) = run_baseline(&lab, &args, &mut samples)
        {
            println!("  {BASELINE:<18} FAILED: {e:#}");
        }
        // Rotate the order every round, so that no implementation always follows the same one.
        for k in 0..impls.len() {
            let imp = &impls[(k + round - 1) % impls.len()];
            if let Err(e) = run_one(&lab, &args, imp, &mut samples) {
                println!("  {:<18} FAILED: {e:#}", imp.name);
                if imp.ours || e.to_string().contains("crashed") {
                    failures.push(format!("{} round {round}: {e:#}", imp.name));
                }
            }
        }
    }
    if let Some(plain) = samples.get(BASELINE).and_then(|s| s.get(&Metric::Tcp1)) {
        println!("\n{BASELINE}: TCP 1 stream median {:.3} Gbit/s", median(plain));
    }
    println!("\n{}", table(&impls, &samples));
    drop(lab);
    if !failures.is_empty() {
        bail!("failures:\n{}", failures.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ratio, vm_hwm_kib};

    #[test]
    fn ratio_table() {
        for (ours, other, want) in
            [(2.0, 0.5, Some(4.0)), (0.0, 16.0, Some(0.0)), (0.0, 0.0, None), (1.0, 0.0, Some(f64::INFINITY))]
        {
            assert_eq!(ratio(ours, other), want, "{ours} ÷ {other}");
        }
    }

    #[test]
    fn peak_memory_is_read_from_vm_hwm() {
        let status = "Name:\tmeshcrypt\nVmPeak:\t  180000 kB\nVmHWM:\t   14456 kB\nVmRSS:\t   14372 kB\n";
        for (text, want) in [
            (status, Some(14_456)),
            ("Name:\tx\nVmRSS:\t 10 kB\n", None),
            ("VmHWM:\t  oops kB\n", None),
            ("VmHWM:\t 12\n", None),
        ] {
            assert_eq!(vm_hwm_kib(text), want, "{text:?}");
        }
    }
}
