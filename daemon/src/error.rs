//! The agent's error type: what can stop a reconcile pass or the agent itself.

/// Everything the agent can fail at, with the cause kept.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node key could not be loaded or stored.
    #[error("node key: {0}")]
    Key(#[from] meshcrypt_keyexchange::Error),
    /// The WireGuard device could not be created or configured.
    #[error("wireguard device: {0}")]
    Device(#[from] meshcrypt_dataplane::Error),
    /// The kernel refused a routing change.
    #[error("routing: {0}")]
    Routing(#[from] meshcrypt_routing::Error),
    /// The Kubernetes API failed or refused a request.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// A kubeconfig file given with `--kubeconfig` could not be read or used.
    #[error("kubernetes client configuration {}: {source}", path.display())]
    KubeConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No client configuration could be found: not in a cluster, and no usable `$KUBECONFIG`.
    #[error("kubernetes client configuration: {0}")]
    KubeConfigInfer(#[source] kube::config::InferConfigError),
    /// The local Node is not in the API's Node list (`--node-name` wrong, or the Node deleted).
    #[error("local node {node}: not found in the API")]
    LocalNodeMissing {
        /// The node's name.
        node: String,
    },
    /// The local Node has no InternalIP in `status.addresses`: no underlay address to send from.
    #[error("local node {node}: no InternalIP in status.addresses")]
    NoInternalIp {
        /// The node's name.
        node: String,
    },
    /// No interface holds the local Node's InternalIP, so the tunnel MTU cannot be derived.
    #[error("local node {node}: no interface holds {ip}")]
    UnderlayUnknown {
        /// The node's name.
        node: String,
        /// Its InternalIP.
        ip: std::net::IpAddr,
    },
    /// A link with the device's name exists and is not one meshcrypt can take over (a TUN for
    /// the userspace backend, or a kernel `wireguard` link, which it adopts).
    #[error(
        "a {kind} link named {ifname} already exists (left by an earlier install or another tool); meshcrypt takes over only a TUN or a wireguard link of that name: delete it (`ip link del {ifname}`) or run the agent with another --interface"
    )]
    ForeignLink {
        /// The interface name.
        ifname: String,
        /// Its kind as the kernel reports it ("veth", "wireguard", ...).
        kind: String,
    },
    /// A TUN with the device's name is held open by another process.
    #[error(
        "the TUN {ifname} is in use by another process (another meshcrypt agent, or wireguard-go?): stop it, or run the agent with another --interface"
    )]
    TunBusy {
        /// The interface name.
        ifname: String,
        /// The device's error (EBUSY).
        #[source]
        source: meshcrypt_dataplane::Error,
    },
    /// No valid settings yet: the ConfigMap has been rejected since the agent started.
    #[error("no valid settings yet: the ConfigMap was rejected (see the ConfigRejected Event)")]
    NoSettings,
    /// The underlay's MTU leaves no room for WireGuard's overhead.
    #[error("underlay MTU {mtu} is too small for a tunnel")]
    UnderlayTooSmall {
        /// The underlay interface's MTU.
        mtu: u32,
    },
    /// The WireGuard interface was deleted from outside; the next pass creates a new device.
    #[error("the WireGuard interface {ifname} is gone; a new device is created on the next pass")]
    DeviceGone {
        /// The interface name.
        ifname: String,
    },
    /// The node key file is missing (deleted under the running agent).
    #[error("the node key file {} is missing", path.display())]
    KeyFileMissing {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The saved last known peer set cannot be used.
    #[error("last known peer set: {0}")]
    LastKnown(#[from] crate::agent::Refused),
    /// A watch's store closed before its first complete list (the watcher task ended).
    #[error("the {what} store closed before its first complete list")]
    StoreClosed {
        /// Which store ("nodes", "pods", "configmap").
        what: &'static str,
        /// kube-runtime's error.
        #[source]
        source: kube::runtime::reflector::store::WriterDropped,
    },
    /// This cluster's id (`--cluster-id`) is no DNS label (RFC 1123).
    #[error("cluster id {id:?}: not a DNS label (RFC 1123: lowercase letters, digits and '-', at most 63)")]
    ClusterId {
        /// The id given.
        id: String,
    },
    /// A peer cluster's configuration (`--peer`) is refused: a pinned key that is no Ed25519
    /// public key, a name that is no DNS label, a peer named twice, a partial ARN that cannot work.
    #[error("peer cluster {peer}: {reason}")]
    PeerConfig {
        /// The peer cluster.
        peer: String,
        /// Why it was refused.
        reason: String,
    },
    /// This cluster's signing key file is unusable.
    #[error("signing key {}: {reason}", path.display())]
    SigningKey {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An EC2 call of `meshcrypt check aws` failed (credentials, permissions, the endpoint).
    #[error("EC2 {call}: {detail}")]
    Ec2 {
        /// The API call.
        call: &'static str,
        /// The error's code and message, as EC2 gave them.
        detail: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_ec2::Error>,
    },
    /// A CloudWatch Logs call writing flow records failed (permissions, a missing log group).
    #[error("CloudWatch Logs {call}: {detail}")]
    CloudWatchLogs {
        /// The API call.
        call: &'static str,
        /// The error's code and message, as CloudWatch Logs gave them.
        detail: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_cloudwatchlogs::Error>,
    },
    /// An environment variable the configuration needs is not set.
    #[error("environment variable {name} is not set")]
    MissingEnv {
        /// Its name.
        name: &'static str,
    },
    /// The cross-cluster exchange failed (Secrets Manager, or a bundle that cannot be sealed).
    #[error("cross-cluster exchange: {0}")]
    Registry(#[from] meshcrypt_registry::Error),
    /// The registry's Lease could not be managed.
    #[error("lease: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// The state directory holds no node key (`meshcrypt keys show` or `rotate` before `init`).
    #[error("no key in {}: run `meshcrypt keys init`", dir.display())]
    NoKey {
        /// The state directory.
        dir: std::path::PathBuf,
    },
    /// A manifest is not YAML, or its ConfigMap's `data` does not map strings to strings.
    #[error("{}: {source}", file.display())]
    Yaml {
        /// The manifest.
        file: std::path::PathBuf,
        /// The YAML parser's error (with its line and column).
        #[source]
        source: yaml_serde::Error,
    },
    /// The manifest holds no ConfigMap of that name.
    #[error("no ConfigMap named {name:?} in {}", file.display())]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
        /// The manifest.
        file: std::path::PathBuf,
    },
    /// The strict parser rejected the ConfigMap; every bad key is named.
    #[error("ConfigMap {name:?} rejected: {}", listed(errors))]
    ConfigRejected {
        /// The ConfigMap's name.
        name: String,
        /// Each rejected key and why.
        errors: Vec<crate::config::settings::KeyError>,
    },
    /// Reading, writing or serving failed at the operating-system level.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The audit's policy file does not parse (`meshcrypt audit --policy`).
    #[error("policy file {}", path.display())]
    PolicyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why it does not parse (an unknown key, a value of the wrong type).
        #[source]
        source: yaml_serde::Error,
    },
    /// A duration of the audit's policy does not parse (want `90d`, `720h`, `15m`).
    #[error(
        "{what} {text:?}: want a duration in days, hours, minutes or seconds, like 90d, 720h or 15m (no months or years: write 365d)"
    )]
    PolicyDuration {
        /// Which value, and where it came from (`--max-key-age`, `maxKeyAge in policy.yaml`).
        what: String,
        /// As given.
        text: String,
        /// jiff's error.
        #[source]
        source: jiff::Error,
    },
    /// A duration of the audit's policy is zero or negative.
    #[error("{what} {text:?}: want a positive duration like 90d, 720h or 15m")]
    PolicyNotPositive {
        /// Which value, and where it came from.
        what: String,
        /// As given.
        text: String,
    },
    /// The agent's status document could not be read or understood (`meshcrypt status`).
    #[error("status from {}: {source}", socket.display())]
    StatusDocument {
        /// The status socket.
        socket: std::path::PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}

fn listed(errors: &[crate::config::settings::KeyError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
