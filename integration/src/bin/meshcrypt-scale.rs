//! `meshcrypt-scale`: the scale harness (see `meshcrypt_integration::scale`). A few real agents
//! in the lab, the rest of a large cluster simulated in the test API server, a churn at stated
//! rates; prints event→route latencies, CPU per event, memory, API load per agent and device and
//! kernel operations per changed peer. Needs root, iproute2 and wireguard-tools.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meshcrypt_integration::scale::churn::Rates;
use meshcrypt_integration::scale::{ScaleOptions, run};

/// Measure the mesh at scale: a few real agents, a large simulated cluster, churn.
///
/// Needs root, iproute2 and wireguard-tools, and the meshcrypt binary ($MESHCRYPT_BIN, or beside
/// this one). Progress goes to stderr, the report to stdout (BENCHMARKS.md, "Scale and churn",
/// explains its columns). The address plan holds 8,192 simulated nodes: --nodes less --agents,
/// plus the bursts' joins and the churn's, must stay below it.
#[derive(Debug, Parser)]
#[command(name = "meshcrypt-scale", version)]
struct Args {
    /// Nodes in the cluster, the real ones included.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Real nodes with agents.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Pods per simulated node; more than 0 runs pod-IP mode (30: 150,000 pods at 5,000 nodes).
    #[arg(long, default_value_t = 0)]
    pods_per_node: usize,
    /// Churn events to apply.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Pod events per second (default: 80 in pod-IP mode).
    #[arg(long)]
    pod_rate: Option<f64>,
    /// Node joins per second, and as many leaves.
    #[arg(long)]
    node_rate: Option<f64>,
    /// The schedule's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Node joins at once to count operations against changed peers, comma-separated (0: none;
    /// needs an agent that serves meshcrypt_device_peer_ops_total).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    bursts: Vec<usize>,
    /// How long the mesh may take to converge, in seconds.
    #[arg(long, default_value_t = 900)]
    deadline: u64,
    /// Each agent's `--peer-source` in turn, comma-separated (`nodes`, `mesh-peers`): the default
    /// runs both under the same churn (node-0 and node-2 watch Nodes, node-1 MeshPeers).
    #[arg(long, value_delimiter = ',', default_value = "nodes,mesh-peers")]
    peer_sources: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rates = Rates::defaults(args.nodes, args.pods_per_node > 0);
    if let Some(rate) = args.pod_rate {
        rates.pods = rate;
    }
    if let Some(rate) = args.node_rate {
        rates.node_joins = rate;
    }
    let options = ScaleOptions {
        nodes: args.nodes,
        agents: args.agents,
        pods_per_node: args.pods_per_node,
        events: args.events,
        rates,
        seed: args.seed,
        bursts: args.bursts,
        deadline: Duration::from_secs(args.deadline),
        peer_sources: args.peer_sources,
    };
    let mut say = |line: &str| eprintln!("meshcrypt-scale: {line}");
    match run(&options, &mut say) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshcrypt-scale: {e}");
            ExitCode::FAILURE
        }
    }
}
