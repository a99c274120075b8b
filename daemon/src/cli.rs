//! The command line: global logging flags and one subcommand per job.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

/// Encrypts pod-to-pod traffic between Kubernetes nodes with a WireGuard mesh.
#[derive(Debug, Parser)]
#[command(name = "meshcrypt", version)]
pub struct Cli {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How the process logs (always to stderr).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter in `tracing` syntax, e.g. `info` or `meshcrypt=debug`.
    #[arg(long, env = "MESHCRYPT_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Where an agent learns the other nodes' keys, addresses and pod CIDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerSource {
    /// Watch every Node: simple, but every kubelet status write (one per node every 5 minutes)
    /// reaches every agent whole.
    Nodes,
    /// Watch every node's MeshPeer (written by its agent, about 1 kB, changed only with the key,
    /// the addresses or the pod CIDRs), and read a Node only when its MeshPeer's addresses or pod
    /// CIDRs change, to take them from the Node. Needs the MeshPeer CRD (`deploy/base/crds.yaml`).
    MeshPeers,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: publish this node's key, build the mesh, steer pod traffic into it.
    Agent(Box<AgentArgs>),
    /// Manage this node's WireGuard key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Work with meshcrypt's cluster configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the data plane alone as a WireGuard device configured over UAPI, like wireguard-go.
    Device(DeviceArgs),
    /// Show this node's mesh status from its agent (or, with `--cluster`, every node's).
    Status(StatusArgs),
    /// Audit the mesh for assessors (read-only, with a kubeconfig): coverage, key inventory,
    /// exceptions and configuration against a policy. Exits 0 when compliant, 2 when not, 1 when
    /// it could not audit.
    Audit(AuditArgs),
    /// Check the cloud around the mesh (read-only).
    #[command(subcommand)]
    Check(CheckCommand),
    /// Print the CustomResourceDefinitions of meshcrypt's resources, RemoteCluster and MeshNode
    /// (YAML).
    Crd,
    /// Run the cross-cluster registry: publish this cluster's nodes to AWS Secrets Manager, read
    /// the peer clusters', and hand those to the agents as RemoteCluster objects.
    Registry(Box<RegistryArgs>),
    /// Make this cluster's registry signing key (a 0600 file) and print its public half, which
    /// the peer clusters pin.
    SigningKey {
        /// Where to write it (never over an existing file).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `meshcrypt status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Every node's state from the Nodes and the MeshNodes their agents report on (needs a
    /// kubeconfig), instead of this node's from its agent's status socket.
    #[arg(long)]
    pub cluster: bool,
    /// The agent's state directory, where its status socket is (this node's view).
    #[command(flatten)]
    pub state: StateDir,
    /// A kubeconfig file for `--cluster`; without it, `$KUBECONFIG`, then `~/.kube/config`, then
    /// the in-cluster service account (kube-rs's order).
    #[arg(long, env = "MESHCRYPT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How `meshcrypt status` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document (the schemas `meshcrypt.dev/node-status/v1`,
    /// `meshcrypt.dev/cluster-status/v1`).
    Json,
}

/// `meshcrypt audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A kubeconfig file; without it, `$KUBECONFIG`, then `~/.kube/config`, then the in-cluster
    /// service account (kube-rs's order).
    #[arg(long, env = "MESHCRYPT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The policy (YAML or JSON: `maxKeyAge`, `requireStrict`, `maxHandshakeAge`); the flags
    /// below replace its values.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The longest a node key may be in use, e.g. `90d`, `720h` (default `90d`).
    #[arg(long)]
    pub max_key_age: Option<String>,
    /// Whether every node must run fail-closed (default true); when false, a node with strict
    /// off is an exception, not a violation.
    #[arg(long, action = clap::ArgAction::Set)]
    pub require_strict: Option<bool>,
    /// Require every configured peer to have completed a handshake, the least recent at most
    /// this long ago, e.g. `15m` (default: not checked).
    #[arg(long)]
    pub max_handshake_age: Option<String>,
    /// The cluster ConfigMap.
    #[arg(long, default_value = "meshcrypt")]
    pub config_map: String,
    /// Its namespace.
    #[arg(long, default_value = "meshcrypt-system")]
    pub config_namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub output: ReportFormat,
    /// Also write the report as JSON to this file (the same report, the same content hash).
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// `meshcrypt check …`
#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Prove that every pair of nodes' security groups allow the mesh's UDP port both ways (and
    /// from peer clusters' nodes), name the pairs that do not, and list the Pods on branch ENIs.
    /// Reads the Nodes and EC2 (DescribeInstances, DescribeSecurityGroups,
    /// DescribeNetworkInterfaces; the IAM policy is in docs/eks.md) and, in Kubernetes, lists
    /// Nodes, Pods and RemoteClusters and gets the ConfigMap (the auditor role grants it). Exits 0
    /// when every pair is allowed, 2 when one is not or a node could not be checked, 1 when it
    /// could not check.
    Aws(CheckAwsArgs),
}

/// `meshcrypt check aws`
#[derive(Debug, Args)]
pub struct CheckAwsArgs {
    /// A kubeconfig file; without it, `$KUBECONFIG`, then `~/.kube/config`, then the in-cluster
    /// service account (kube-rs's order).
    #[arg(long, env = "MESHCRYPT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The AWS region (default: the SDK's, from `AWS_REGION` or the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// Another EC2 endpoint (tests); credentials then come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY only.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The mesh's UDP port (default: the ConfigMap's `port`, else 51820).
    #[arg(long)]
    pub port: Option<u16>,
    /// A peer cluster's node range that must reach every node (repeatable); peer clusters'
    /// nodes in RemoteCluster objects are checked without it.
    #[arg(long)]
    pub peer_cidr: Vec<ipnet::IpNet>,
    /// The cluster ConfigMap (for the port).
    #[arg(long, default_value = "meshcrypt")]
    pub config_map: String,
    /// Its namespace.
    #[arg(long, default_value = "meshcrypt-system")]
    pub config_namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckFormat::Text)]
    pub output: CheckFormat,
}

/// How `meshcrypt check aws` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CheckFormat {
    /// Lines for people.
    Text,
    /// One JSON document (schema `meshcrypt.dev/check-aws/v1`).
    Json,
}

/// How `meshcrypt audit` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    /// A Markdown document for people and filing.
    Markdown,
    /// One JSON document (schema `meshcrypt.dev/audit-report/v1`).
    Json,
}

/// A peer cluster as `--peer NAME=KEY` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCluster {
    /// Its cluster id.
    pub name: String,
    /// Its registry's Ed25519 signing key, public half, base64 (pinned here).
    pub key: String,
    /// Its secrets' name prefix, when not `--secret-prefix`: for a peer in another AWS account,
    /// the partial ARN `arn:aws:secretsmanager:REGION:ACCOUNT:secret:PREFIX` (Secrets Manager
    /// finds another account's secret only by ARN).
    pub prefix: Option<String>,
    /// Its secrets' region, when not `--region`.
    pub region: Option<String>,
}

fn parse_peer(value: &str) -> Result<PeerCluster, String> {
    const WANT: &str = "want NAME=SIGNING_KEY[,prefix=PREFIX][,region=REGION]";
    let mut fields = value.split(',');
    let (name, key) = fields.next().and_then(|f| f.split_once('=')).ok_or(WANT)?;
    let mut peer = PeerCluster { name: name.to_owned(), key: key.to_owned(), prefix: None, region: None };
    for field in fields {
        match field.split_once('=') {
            Some(("prefix", v)) if !v.is_empty() && peer.prefix.is_none() => peer.prefix = Some(v.to_owned()),
            Some(("region", v)) if !v.is_empty() && peer.region.is_none() => peer.region = Some(v.to_owned()),
            _ => return Err(format!("{field:?}: {WANT}")),
        }
    }
    Ok(peer)
}

/// `meshcrypt registry`
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// This cluster's id: a DNS label, unique among the peered clusters.
    #[arg(long, env = "MESHCRYPT_CLUSTER_ID")]
    pub cluster_id: String,
    /// A peer cluster, `NAME=SIGNING_KEY[,prefix=PREFIX][,region=REGION]`: its id (a DNS label),
    /// the public half of its registry's Ed25519 key (base64, as `meshcrypt signing-key` printed
    /// it and its registry logs it at start), and where its secrets live when not under
    /// `--secret-prefix` in `--region` (another account, by partial ARN:
    /// `prefix=arn:aws:secretsmanager:REGION:ACCOUNT:secret:meshcrypt`). Repeat for each.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<PeerCluster>,
    /// This cluster's Ed25519 signing key: a 0600 file holding the base64 seed, made with
    /// `meshcrypt signing-key --out FILE` (every replica gets the same one, e.g. from a Secret).
    #[arg(long, default_value = "/var/lib/meshcrypt-registry/signing.key")]
    pub signing_key: PathBuf,
    /// The prefix of the secrets' names (`<prefix>/<cluster>`, `<prefix>/<cluster>/<n>`).
    #[arg(long, default_value = "meshcrypt")]
    pub secret_prefix: String,
    /// The AWS region of the secrets (default: the SDK's).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Another Secrets Manager endpoint (tests: moto on loopback). With it, the credentials are
    /// taken from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY alone, never the default chain.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The mesh port of this cluster's nodes.
    #[arg(long, default_value_t = 51820)]
    pub port: u16,
    /// Where this cluster's peers' allowed IPs come from, as the agents' ConfigMap key
    /// `addressing` says: `pod-cidr` (each Node's `spec.podCIDRs`) or `pod-ip` (its Pods'
    /// addresses, aggregated: the AWS VPC CNI). Must match the agents'.
    #[arg(long, default_value = "pod-cidr", value_parser = crate::config::settings::parse_addressing)]
    pub addressing: crate::config::settings::Addressing,
    /// Where to serve `/healthz`, `/readyz` (ready once the Nodes are listed; the reason says
    /// `leading` or `standby`) and `/metrics` (`meshcrypt_registry_*`).
    #[arg(long, default_value = "0.0.0.0:9477")]
    pub metrics_addr: std::net::SocketAddr,
    /// Publish this cluster's nodes at most this often, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub publish_interval: u64,
    /// Publish at most this many times in any 24 hours (an eighth of them may come in a burst).
    /// Every publish is a new version of the manifest secret; Secrets Manager keeps versions
    /// younger than 24 h, so more than ~100 a day pile up towards its versions quota.
    #[arg(long, default_value_t = 96, value_parser = clap::value_parser!(u32).range(2..=1440))]
    pub publishes_per_day: u32,
    /// A customer-managed KMS key (id, ARN or alias) for the secrets this registry creates
    /// (default: the account's `aws/secretsmanager` key, which other accounts cannot use).
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Read each peer cluster's bundle this often, in seconds (with ±20% jitter).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_interval: u64,
    /// The Lease that elects the active replica.
    #[arg(long, default_value = "meshcrypt-registry")]
    pub lease: String,
    /// The Lease's namespace.
    #[arg(long, default_value = "meshcrypt-system")]
    pub namespace: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: String,
    /// How long the Lease holds, in seconds: a standby takes over this long after the active
    /// replica stops renewing.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_seconds: u64,
    /// A kubeconfig file; without it, `$KUBECONFIG`, then `~/.kube/config`, then the in-cluster
    /// service account (kube-rs's order).
    #[arg(long, env = "MESHCRYPT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// `meshcrypt device`
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// The interface to create.
    pub ifname: String,
    /// Directory of the UAPI socket (`wg` looks in /var/run/wireguard).
    #[arg(long, default_value = meshcrypt_dataplane::DEFAULT_UAPI_DIR)]
    pub uapi_dir: PathBuf,
    /// The UDP port to listen on (0: any free port).
    #[arg(long, default_value_t = 51820)]
    pub port: u16,
    /// Data-path workers (each serves both directions). `--threads` is the old name, still
    /// accepted.
    #[arg(long, alias = "threads", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub workers: u16,
    /// The interface's MTU: 1420 fits a 1500-byte underlay over IPv4 or IPv6 (wireguard-go's
    /// default); a path that carries less gets ICMP too-big back to the sender.
    #[arg(long, default_value_t = meshcrypt_dataplane::DEFAULT_MTU, value_parser = clap::value_parser!(u16).range(576..=65_535))]
    pub mtu: u16,
    /// Count flows as the agent does with `flow-records` on, in a table of at most this many
    /// flows (to measure what accounting costs: the throughput bench's `--flows`); the totals are
    /// logged when the device stops.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub flow_accounting: Option<u64>,
    /// Accepted for compatibility with `wireguard-go -f`: the device always runs in the foreground.
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
}

/// `meshcrypt config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the meshcrypt ConfigMap in a manifest file exactly as the agent parses it.
    Check(ConfigCheckArgs),
}

/// `meshcrypt config check`
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// A YAML manifest (one or more documents) holding the ConfigMap.
    pub file: PathBuf,
    /// The ConfigMap's name.
    #[arg(long, default_value = "meshcrypt")]
    pub name: String,
}

/// `meshcrypt keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Load the node key, creating it if there is none, and print its public half.
    Init(StateDir),
    /// Print the public half and fingerprint of the existing node key.
    Show(StateDir),
    /// Stage a new node key of the next epoch (`pending.key`): the agent publishes it on its next
    /// pass and, once peers can learn it, puts it in use and destroys the old key. During an API
    /// outage the rotation stays pending and the old key keeps working.
    Rotate(StateDir),
}

/// Where the node's state (its private key) lives.
#[derive(Debug, Args)]
pub struct StateDir {
    /// The agent's state directory: the 0600 key file, the saved peer set and the status
    /// socket (`status.sock`).
    #[arg(long, env = "MESHCRYPT_STATE_DIR", default_value = "/var/lib/meshcrypt")]
    pub state_dir: PathBuf,
}

/// `meshcrypt agent`
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name, as in the Kubernetes Node object (the DaemonSet sets it from
    /// `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// A kubeconfig file; without it, `$KUBECONFIG`, then `~/.kube/config`, then the in-cluster
    /// service account (kube-rs's order).
    #[arg(long, env = "MESHCRYPT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the private key lives.
    #[command(flatten)]
    pub state: StateDir,
    /// The WireGuard interface.
    #[arg(long, default_value = "meshcrypt0")]
    pub interface: String,
    /// The UDP port of the mesh, the same on every node.
    #[arg(long, default_value_t = 51820)]
    pub port: u16,
    /// The routing table meshcrypt owns.
    #[arg(long, default_value_t = 51820)]
    pub table: u32,
    /// The priority of meshcrypt's policy rules: below the AWS VPC CNI's 512.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..512))]
    pub rule_priority: u32,
    /// The firewall mark on the mesh's own UDP packets (one bit): meshcrypt's rules skip marked
    /// packets, so encrypted traffic never loops back into the mesh.
    #[arg(long, default_value = "0x200000", value_parser = parse_mark)]
    pub fwmark: u32,
    /// The cluster's pod network; repeat for several (dual-stack). All traffic to it is steered
    /// into the mesh. The ConfigMap's `pod-networks` replaces it.
    #[arg(long = "pod-network")]
    pub pod_networks: Vec<IpNet>,
    /// The ConfigMap holding the live settings (watched; its keys replace the flags' values).
    #[arg(long)]
    pub config_map: Option<String>,
    /// The namespace of that ConfigMap.
    #[arg(long, default_value = "meshcrypt-system")]
    pub config_namespace: String,
    /// The tunnel MTU; by default the underlay interface's MTU less 60 (IPv4) or 80 (IPv6).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Fail closed: drop pod traffic that has no encrypted path instead of sending it in
    /// plaintext.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub strict: bool,
    /// The WireGuard implementation on this node: auto, kernel or userspace (the ConfigMap's
    /// `backend` key, where it has one, replaces it): a node group's own choice. `auto` takes
    /// the kernel's where its module is and flow records are off, else userspace; `kernel` with
    /// flow records on is rejected (the kernel counts no flows).
    #[arg(long, default_value = "auto", value_parser = crate::config::settings::parse_backend)]
    pub backend: crate::config::settings::Backend,
    /// Directory of the userspace device's UAPI socket (`wg` looks in /var/run/wireguard; the
    /// kernel backend has none: `wg` talks to the kernel).
    #[arg(long, default_value = meshcrypt_dataplane::DEFAULT_UAPI_DIR)]
    pub uapi_dir: PathBuf,
    /// Where flow records go when the ConfigMap's `flow-records` is true: a file (a hostPath the
    /// node's log shipper tails; deploy/components/flow-logs), `-` for stdout, or
    /// `cloudwatch-logs:GROUP` for this node's stream (its name) in that CloudWatch Logs group,
    /// written directly (the agent then needs AWS credentials: docs/flows.md).
    #[arg(long, default_value = "/var/log/meshcrypt/flows.log")]
    pub flow_log: PathBuf,
    /// The flow log's size, in bytes, at which it is replaced by a fresh file (the old one kept as
    /// `<file>.1`).
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub flow_log_max_bytes: u64,
    /// The AWS region of a `cloudwatch-logs:` flow log (default: the SDK's).
    #[arg(long)]
    pub flow_log_region: Option<String>,
    /// Another CloudWatch Logs endpoint (tests); credentials then come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY only.
    #[arg(long)]
    pub flow_log_endpoint_url: Option<String>,
    /// Pre-shared keys for peer clusters: one file per peer cluster id holding its key as
    /// `wg genpsk` prints it (a Secret mounted with `defaultMode: 0400`; the same value in both
    /// clusters). Read every pass; a missing directory means none.
    #[arg(long, default_value = "/etc/meshcrypt/psk")]
    pub psk_dir: PathBuf,
    /// Data-path workers, each serving both directions: 1 suits 2 cores (lowest latency); on
    /// larger nodes 2 lets one worker encrypt while another decrypts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub dataplane_workers: u16,
    /// Address of the health (`/healthz`, `/readyz`) and Prometheus (`/metrics`) endpoint.
    #[arg(long, default_value = "0.0.0.0:9476")]
    pub metrics_addr: SocketAddr,
    /// How often the agent re-checks the kernel and device even without a change, in seconds.
    #[arg(long, default_value_t = 10)]
    pub resync_seconds: u64,
    /// Where the agent learns the other nodes (every agent writes its MeshPeer either way, so
    /// nodes of a cluster may use different sources, e.g. during a rollout).
    #[arg(long, value_enum, env = "MESHCRYPT_PEER_SOURCE", default_value_t = PeerSource::Nodes)]
    pub peer_source: PeerSource,
    /// How long a peer may be configured without ever completing a handshake before the agent
    /// raises a `PeerNoHandshake` Warning (a blocked mesh port, or the peer's agent down), in
    /// seconds. The handshake starts when the peer is added and WireGuard retries it for 90 s
    /// (REKEY_ATTEMPT_TIME, the WireGuard paper §6.4): the default, twice that, leaves room for the
    /// peer's agent to add this node.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub no_handshake_after: u32,
    /// How often, at least, the agent reports its node's state on its MeshNode for
    /// `meshcrypt status --cluster`, in seconds; a change is reported after a fifth of this.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub status_interval: u64,
}

fn parse_mark(text: &str) -> Result<u32, String> {
    let value = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?}: {e}"))?;
    if value.count_ones() == 1 {
        Ok(value)
    } else {
        Err(format!("{text:?} must be a single bit, e.g. 0x200000"))
    }
}
