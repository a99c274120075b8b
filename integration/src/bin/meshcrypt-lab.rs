//! `meshcrypt-lab`: the local multi-node demo. Builds a lab of network namespaces (nodes and pods
//! on an underlay bridge), starts the test API server and a real `meshcrypt agent` per node, waits
//! for the mesh, has every pod ping and open a TCP connection to every other pod while the leak
//! detector watches the underlay, prints what worked, each node's mesh and what leaked (nothing),
//! and removes everything again.
//!
//! `--no-agents` runs the same checks without meshcrypt: the report then shows the plaintext pod
//! traffic meshcrypt exists to remove. Needs root, iproute2, iputils-ping and wireguard-tools.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use meshcrypt_integration::cluster::{AgentOptions, Cluster};
use meshcrypt_keyexchange::PublicKey;
use meshcrypt_netlab::lab::{Lab, TCP_TIMEOUT};
use meshcrypt_netlab::leak::{LeakConfig, LeakDetector, LeakReport};
use nix::sys::signal::{SigSet, Signal};

/// Prints a line on stdout, ignoring errors (a closed pipe, e.g. `| head`, must not abort the
/// run before the lab is torn down).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Prints text on stdout, ignoring errors.
fn say_raw(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Build a local meshcrypt lab, check pod-to-pod connectivity and report plaintext on the underlay.
#[derive(Debug, Parser)]
#[command(name = "meshcrypt-lab", version)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 2)]
    pods_per_node: usize,
    /// Dual stack: also give everything IPv6 addresses and check pod-to-pod over IPv6.
    #[arg(long)]
    ipv6: bool,
    /// Keep the lab up after the checks until Ctrl-C (then tear it down).
    #[arg(long)]
    stay: bool,
    /// How many distinct leaking packets the report shows.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Run no meshcrypt agents: shows the plaintext baseline.
    #[arg(long)]
    no_agents: bool,
}

/// One pod-to-pod check.
struct Check {
    from: String,
    to: String,
    to_addr: IpAddr,
    ping: bool,
    tcp: Result<(), String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("meshcrypt-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Blocks SIGINT/SIGTERM in every thread (call before any thread starts) and delivers them on a
/// channel, so that Ctrl-C ends the run through the normal path and the lab is torn down.
fn interrupts() -> anyhow::Result<Receiver<Signal>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("block SIGINT/SIGTERM")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .context("start the signal thread")?;
    Ok(rx)
}

/// The lab alone, or the lab inside a cluster with an agent per node.
enum Setup {
    Bare(Box<Lab>),
    Meshed(Box<Cluster>),
}

impl Setup {
    fn lab(&self) -> &Lab {
        match self {
            Self::Bare(lab) => lab,
            Self::Meshed(cluster) => &cluster.lab,
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (it creates network namespaces)");
    }
    let signals = interrupts()?;
    let lab = Lab::builder()
        .nodes(args.nodes)
        .pods_per_node(args.pods_per_node)
        .ipv6(args.ipv6)
        .build()
        .context("building the lab")?;
    print_topology(&lab);
    let mut setup = if args.no_agents {
        Setup::Bare(Box::new(lab))
    } else {
        // As deploy/ runs them: the live settings come from the ConfigMap meshcrypt-system/meshcrypt
        // (the lab fills in its pod network), which kubectl can change while the lab is up.
        let mut options = AgentOptions::new().context("finding the meshcrypt binary")?;
        options.config_map = Some(
            [("enabled".to_owned(), "true".to_owned()), ("strict".to_owned(), "true".to_owned())].into(),
        );
        options.log_level = "info".into();
        // The cluster view notices an agent that stopped reporting within about a minute and a half.
        options.extra_args = vec!["--status-interval".into(), "15".into()];
        let started = Instant::now();
        let cluster = Cluster::start_in(lab, options).context("starting the API server and the agents")?;
        cluster.wait_ready(Duration::from_secs(60)).context("waiting for the agents")?;
        let nodes = cluster.lab.nodes().len();
        say!("{nodes} meshcrypt agents ready in {:.1?}", started.elapsed());
        cluster.wait_converged(Duration::from_secs(60)).context("waiting for the mesh")?;
        say!("mesh complete in {:.1?}: every node has {} peers", started.elapsed(), nodes.saturating_sub(1));
        say!();
        Setup::Meshed(Box::new(cluster))
    };
    let lab = setup.lab();

    let mut config = LeakConfig::for_lab(lab).with_max_samples(args.samples);
    if let Setup::Meshed(cluster) = &setup {
        config = config.with_api_endpoint(cluster.api_endpoint());
    }
    let detector = LeakDetector::start_for_lab(lab, config).context("starting the leak detector")?;
    let mut checks = Vec::new();
    'pairs: for a in lab.pods() {
        for b in lab.pods() {
            if a == b {
                continue;
            }
            if !matches!(signals.try_recv(), Err(TryRecvError::Empty)) {
                eprintln!("interrupted: tearing the lab down");
                break 'pairs;
            }
            let addrs = std::iter::once(IpAddr::V4(b.address)).chain(b.address6.map(IpAddr::V6));
            for to_addr in addrs {
                let ping = lab.ping(a, to_addr).unwrap_or(false);
                let hello = format!("hello from {}", a.name);
                let tcp = lab
                    .tcp_exchange_ns(&a.namespace, &b.namespace, to_addr, hello.as_bytes(), TCP_TIMEOUT)
                    .map_err(|e| e.to_string());
                checks.push(Check { from: a.name.clone(), to: b.name.clone(), to_addr, ping, tcp });
            }
        }
    }
    let report = detector.stop().context("stopping the leak detector")?;
    let families = if args.ipv6 { 2 } else { 1 };
    let expected = families * lab.pods().len() * lab.pods().len().saturating_sub(1);
    let connected = checks.len() == expected && checks.iter().all(|c| c.ping && c.tcp.is_ok());
    print_checks(&checks);
    let mut ok = connected;
    match &setup {
        Setup::Meshed(cluster) => {
            print_mesh(cluster, &report);
            ok &= report.is_clean();
        }
        Setup::Bare(_) => print_report(&report),
    }

    if args.stay {
        say!();
        print_stay(&setup)?;
        say!("Press Ctrl-C to tear it down.");
        let _ = signals.recv();
    }
    if !ok {
        match &mut setup {
            Setup::Meshed(cluster) => cluster.lab.keep_logs(),
            Setup::Bare(lab) => lab.keep_logs(),
        }
    }
    drop(setup);
    say!();
    say!("lab torn down; connectivity {}", if connected { "OK" } else { "FAILED" });
    Ok(ok)
}

/// What to try while the lab stays up: kubectl (as printed, over https), the ConfigMap,
/// `meshcrypt status`, `wg`, and where the logs are.
fn print_stay(setup: &Setup) -> anyhow::Result<()> {
    let lab = setup.lab();
    say!("The lab stays up. Try, for example:");
    if let (Some(a), Some(b)) = (lab.pods().first(), lab.pods().last()) {
        say!("  ip netns exec {} ping {}", a.namespace, b.address);
    }
    say!("  ip netns list | grep {}", lab.prefix());
    if let Setup::Meshed(cluster) = setup {
        let kubeconfig = cluster.dir().join("admin.kubeconfig");
        cluster.api().write_kubeconfig(&kubeconfig, cluster.api().admin_token())?;
        let k = format!("kubectl --kubeconfig {}", kubeconfig.display());
        let meshcrypt = AgentOptions::new()?.binary;
        let meshcrypt = meshcrypt.display();
        say!();
        say!("The API server (https, the test CA is in the kubeconfig):");
        say!("  {k} get nodes -o wide");
        say!("  {k} describe node node-0            # meshcrypt's Events on the node");
        say!("  {k} get events -A");
        say!("  {k} get meshnodes                   # what each agent reports");
        say!();
        say!("Switch the mesh off and on, and tune it, live (every agent watches this ConfigMap):");
        say!(
            "  {k} -n meshcrypt-system patch configmap meshcrypt --type merge -p '{{\"data\":{{\"enabled\":\"false\"}}}}'"
        );
        say!(
            "  {k} -n meshcrypt-system patch configmap meshcrypt --type merge -p '{{\"data\":{{\"enabled\":\"true\"}}}}'"
        );
        say!(
            "  {k} -n meshcrypt-system patch configmap meshcrypt --type merge -p '{{\"data\":{{\"log-level\":\"debug\"}}}}'"
        );
        say!("  {k} -n meshcrypt-system edit configmap meshcrypt   # every key: deploy/base/configmap.yaml");
        say!();
        say!("Flow records (docs/flows.md): turn them on, send some traffic, and read a node's flow log:");
        say!(
            "  {k} -n meshcrypt-system patch configmap meshcrypt --type merge -p '{{\"data\":{{\"flow-records\":\"true\",\"flow-interval\":\"10s\"}}}}'"
        );
        say!("  tail -f {}", cluster.flow_log("node-0").display());
        say!();
        say!("The mesh as the agents see it:");
        say!("  {meshcrypt} status --state-dir {}", cluster.state_dir("node-0").display());
        say!("  {meshcrypt} status --cluster --kubeconfig {}", kubeconfig.display());
        // The audit as an assessor runs it: with a token that may only read.
        let auditor = cluster.dir().join("auditor.kubeconfig");
        cluster.api().write_kubeconfig(&auditor, &cluster.api().add_reader_token())?;
        say!("  {meshcrypt} audit --kubeconfig {}   # read-only; exit 0 compliant, 2 not", auditor.display());
        if let Some(agent) = cluster.agent("node-0") {
            say!("  nsenter --target {} --mount --net wg show", agent.pid);
        }
    }
    say!();
    say!("Logs of every process the lab started (kept if the run fails): {}", lab.log_dir().display());
    Ok(())
}

/// One row per node: its key, its peers, their latest handshake and the bytes exchanged.
fn print_mesh(cluster: &Cluster, report: &LeakReport) {
    say!(
        "{:<8} {:<24} {:>5} {:>16} {:>10} {:>10}",
        "NODE",
        "KEY",
        "PEERS",
        "LAST HANDSHAKE",
        "RX BYTES",
        "TX BYTES"
    );
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    for node in cluster.lab.nodes() {
        let key = cluster
            .api()
            .get("v1", "Node", None, &node.name)
            .ok()
            .and_then(|n| {
                n["metadata"]["annotations"][meshcrypt_keyexchange::annotations::PUBLIC_KEY]
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|k| k.parse::<PublicKey>().ok())
            .map(|k| k.fingerprint())
            .unwrap_or_else(|| "-".into());
        let dump = cluster.wg(&node.name, &["show", "meshcrypt0", "dump"]).unwrap_or_default();
        let peers: Vec<Vec<&str>> = dump.lines().skip(1).map(|l| l.split('\t').collect()).collect();
        let field = |i: usize| peers.iter().filter_map(move |p| p.get(i)?.parse::<u64>().ok());
        let latest = field(4).max().filter(|t| *t > 0).map(|t| format!("{}s ago", now.saturating_sub(t)));
        say!(
            "{:<8} {:<24} {:>5} {:>16} {:>10} {:>10}",
            node.name,
            key,
            peers.len(),
            latest.unwrap_or_else(|| "never".into()),
            field(5).sum::<u64>(),
            field(6).sum::<u64>()
        );
    }
    say!();
    say!(
        "underlay: {} WireGuard packets, {} API-server packets, plaintext pod packets seen = {}, other leaks = {}",
        report.mesh_packets,
        report.api_packets,
        report.pod_plaintext,
        report.leaking_packets - report.pod_plaintext.min(report.leaking_packets)
    );
    if !report.is_clean() {
        say_raw(&report.to_string());
    }
}

fn print_topology(lab: &Lab) {
    let services6 = lab.services_addr6().map(|a| format!(" and {a}")).unwrap_or_default();
    say!("lab {}: underlay bridge with services address {}{services6}", lab.prefix(), lab.services_addr());
    for n in lab.nodes() {
        let mut underlay = n.underlay_addr.to_string();
        let mut cidrs = n.pod_cidr.to_string();
        if let (Some(a6), Some(c6)) = (n.underlay_addr6, n.pod_cidr6) {
            underlay = format!("{underlay} {a6}");
            cidrs = format!("{cidrs} {c6}");
        }
        say!("  {} (underlay {underlay}; pods {cidrs})", n.name);
        for p in lab.pods_on(&n.name) {
            let a6 = p.address6.map(|a| format!(" {a}")).unwrap_or_default();
            say!("    {} {}{a6}", p.name, p.address);
        }
    }
    say!();
}

fn print_checks(checks: &[Check]) {
    say!("{:<9} {:<9} {:<20} {:<5} TCP", "FROM", "TO", "ADDRESS", "PING");
    for c in checks {
        let tcp = match &c.tcp {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAIL ({e})"),
        };
        say!(
            "{:<9} {:<9} {:<20} {:<5} {tcp}",
            c.from,
            c.to,
            c.to_addr.to_string(),
            if c.ping { "ok" } else { "FAIL" }
        );
    }
    say!();
}

fn print_report(report: &LeakReport) {
    say_raw(&report.to_string());
    if !report.is_clean() {
        say!("(expected with --no-agents: without meshcrypt, pod traffic crosses the underlay in plaintext)");
    }
}
