//! The live settings of the mesh and their strict parser: the cluster ConfigMap's `data`, key by
//! key. Every key is documented in [`KEYS`]; an unknown key, or a value outside its range, is an
//! error naming the key, and the caller keeps the last good settings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use meshcrypt_routing::mtu::{IPV6_MIN_MTU, tunnel_mtu};

/// Every ConfigMap key, with its default and meaning (the deploy manifest documents the same).
pub const KEYS: &[(&str, &str, &str)] = &[
    ("enabled", "true", "Run the mesh. false removes the device, routes, rules and the published key."),
    (
        "strict",
        "true",
        "Fail closed: drop pod traffic that has no encrypted path instead of sending it in plaintext.",
    ),
    ("port", "51820", "The UDP port of the mesh on every node (1-65535)."),
    (
        "mtu",
        "auto",
        "Tunnel MTU: auto (underlay MTU less 60 for IPv4, 80 for IPv6) or 576-9001; a value the node's underlay cannot carry, or under 1280 with an IPv6 pod network, is rejected.",
    ),
    (
        "backend",
        "auto",
        "The WireGuard implementation: kernel (the kernel's module: the device, its peers and sessions outlive the agent, so restarts and upgrades lose nothing), userspace (meshcrypt's own device: flow records, drop counters and the unknown-key and spoofed-source signals, and no module needed), or auto (kernel where the module is there and flow records are off, else userspace). A change replaces the device: every tunnel of the node starts a new handshake. kernel with flow-records true is rejected, and so is kernel on a node whose kernel has no WireGuard.",
    ),
    (
        "addressing",
        "pod-cidr",
        "Where peers' allowed IPs come from: pod-cidr (spec.podCIDRs) or pod-ip (each node's Pods; AWS VPC CNI).",
    ),
    (
        "pod-networks",
        "",
        "Comma-separated pod network prefixes steered into the mesh, e.g. 10.244.0.0/16,fd00:10:244::/56 (required).",
    ),
    ("host-encryption", "false", "Also encrypt traffic between node addresses."),
    (
        "key-rotation-interval",
        "0",
        "Rotate the node key this often (e.g. 720h); 0 disables scheduled rotation.",
    ),
    ("log-level", "info", "Log filter in tracing syntax, e.g. info or meshcrypt=debug."),
    (
        "peer-metrics",
        "per-peer",
        "Per-peer metric series: per-peer (4 series for each peer, so about 4 x N x N in a cluster of N nodes) or summary (the peers in aggregate: a few series per node at any size).",
    ),
    (
        "flow-records",
        "false",
        "Write flow records (docs/flows.md): each flow through the mesh, encrypted or dropped, with its pods, namespaces and nodes, as JSON lines every flow-interval.",
    ),
    ("flow-interval", "60s", "How often flow records are written: 10s to 1h."),
    (
        "flow-labels",
        "",
        "Comma-separated Pod label keys copied into flow records, e.g. app,app.kubernetes.io/name (at most 16).",
    ),
    (
        "flow-max",
        "65536",
        "The most flows a node holds per interval (1024-1048576); packets of flows beyond it are counted as overflow.",
    ),
];

/// The most label keys `flow-labels` may name.
const MAX_FLOW_LABELS: usize = 16;

/// How peers' allowed IPs are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// From each Node's `spec.podCIDRs`.
    PodCidr,
    /// From the IPs of the Pods scheduled to each node (the AWS VPC CNI gives pods VPC addresses).
    PodIp,
}

impl Addressing {
    /// Where the peer set takes each node's allowed IPs from under this setting.
    pub fn allowed_ips_from(self) -> meshcrypt_keyexchange::mesh::AllowedIpsFrom {
        use meshcrypt_keyexchange::mesh::AllowedIpsFrom;
        match self {
            Self::PodCidr => AllowedIpsFrom::PodCidrs,
            Self::PodIp => AllowedIpsFrom::PodIps,
        }
    }
}

/// Which WireGuard implementation runs the node's device (the `backend` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's where its module is there and flow records are off, else meshcrypt's own.
    Auto,
    /// The kernel's WireGuard module.
    Kernel,
    /// meshcrypt's userspace device.
    Userspace,
}

/// The tunnel MTU setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    /// Derived from the underlay interface.
    Auto,
    /// Fixed.
    Fixed(u32),
}

/// The mesh's tunable settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Run the mesh at all.
    pub enabled: bool,
    /// Fail closed.
    pub strict: bool,
    /// Mesh UDP port.
    pub port: u16,
    /// Tunnel MTU.
    pub mtu: Mtu,
    /// The WireGuard implementation.
    pub backend: Backend,
    /// Where allowed IPs come from.
    pub addressing: Addressing,
    /// The pod networks steered into the mesh.
    pub pod_networks: Vec<IpNet>,
    /// Encrypt node-to-node traffic too.
    pub host_encryption: bool,
    /// Scheduled key rotation; `None` when disabled.
    pub key_rotation_interval: Option<Duration>,
    /// Log filter.
    pub log_level: String,
    /// Series for every peer (true), or the peers in aggregate only.
    pub per_peer_metrics: bool,
    /// Flow records: on or off, how often, which labels.
    pub flows: FlowSettings,
}

/// The flow records' settings (`flow-*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSettings {
    /// Write flow records.
    pub enabled: bool,
    /// How often (10 s to 1 h).
    pub interval: Duration,
    /// Pod label keys copied into records, in the order given.
    pub labels: Vec<String>,
    /// The most flows a node holds per interval.
    pub max_flows: usize,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(60),
            labels: Vec::new(),
            max_flows: meshcrypt_dataplane::DEFAULT_MAX_FLOWS,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            strict: true,
            port: 51820,
            mtu: Mtu::Auto,
            backend: Backend::Auto,
            addressing: Addressing::PodCidr,
            pod_networks: Vec::new(),
            host_encryption: false,
            key_rotation_interval: None,
            log_level: "info".into(),
            per_peer_metrics: true,
            flows: FlowSettings::default(),
        }
    }
}

/// One rejected key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The ConfigMap key.
    pub key: String,
    /// Why its value was rejected.
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl Settings {
    /// Key `key`'s value as these settings hold it, spelled as the ConfigMap spells it (the
    /// scheduled rotation as seconds, `off` when disabled); empty for an unknown key.
    pub fn describe(&self, key: &str) -> String {
        match key {
            "enabled" => self.enabled.to_string(),
            "strict" => self.strict.to_string(),
            "port" => self.port.to_string(),
            "mtu" => match self.mtu {
                Mtu::Auto => "auto".to_owned(),
                Mtu::Fixed(mtu) => mtu.to_string(),
            },
            "backend" => match self.backend {
                Backend::Auto => "auto",
                Backend::Kernel => "kernel",
                Backend::Userspace => "userspace",
            }
            .to_owned(),
            "addressing" => match self.addressing {
                Addressing::PodCidr => "pod-cidr",
                Addressing::PodIp => "pod-ip",
            }
            .to_owned(),
            "pod-networks" => self.pod_networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "host-encryption" => self.host_encryption.to_string(),
            "key-rotation-interval" => {
                self.key_rotation_interval.map(|d| format!("{}s", d.as_secs())).unwrap_or("off".into())
            }
            "log-level" => self.log_level.clone(),
            "peer-metrics" => if self.per_peer_metrics { "per-peer" } else { "summary" }.to_owned(),
            "flow-records" => self.flows.enabled.to_string(),
            "flow-interval" => format!("{}s", self.flows.interval.as_secs()),
            "flow-labels" => self.flows.labels.join(","),
            "flow-max" => self.flows.max_flows.to_string(),
            _ => String::new(),
        }
    }

    /// The keys whose values differ from `before`'s, as `key: old → new`, in [`KEYS`] order.
    pub fn changes_from(&self, before: &Settings) -> Vec<String> {
        KEYS.iter()
            .map(|(key, _, _)| (key, before.describe(key), self.describe(key)))
            .filter(|(_, old, new)| old != new)
            .map(|(key, old, new)| format!("{key}: {old} → {new}"))
            .collect()
    }

    /// Parses a ConfigMap's `data` over `base` (the flags' values): keys present replace the base,
    /// keys absent keep it. All errors are collected; any error rejects the whole map.
    pub fn parse(base: &Settings, data: &BTreeMap<String, String>) -> Result<Settings, Vec<KeyError>> {
        let mut out = base.clone();
        let mut errors = Vec::new();
        for (key, value) in data {
            let value = value.trim();
            let result = match key.as_str() {
                "enabled" => parse_bool(value).map(|v| out.enabled = v),
                "strict" => parse_bool(value).map(|v| out.strict = v),
                "port" => match value.parse::<u16>() {
                    Ok(0) | Err(_) => Err(format!("{value:?} is not a port number 1-65535")),
                    Ok(port) => {
                        out.port = port;
                        Ok(())
                    }
                },
                "mtu" => parse_mtu(value).map(|v| out.mtu = v),
                "backend" => parse_backend(value).map(|v| out.backend = v),
                "addressing" => parse_addressing(value).map(|v| out.addressing = v),
                "pod-networks" => parse_networks(value).map(|v| out.pod_networks = v),
                "host-encryption" => parse_bool(value).map(|v| out.host_encryption = v),
                "key-rotation-interval" => parse_interval(value).map(|v| out.key_rotation_interval = v),
                "peer-metrics" => match value {
                    "per-peer" | "summary" => {
                        out.per_peer_metrics = value == "per-peer";
                        Ok(())
                    }
                    _ => Err(format!("{value:?} is neither per-peer nor summary")),
                },
                "flow-records" => parse_bool(value).map(|v| out.flows.enabled = v),
                "flow-interval" => parse_flow_interval(value).map(|v| out.flows.interval = v),
                "flow-labels" => parse_label_keys(value).map(|v| out.flows.labels = v),
                "flow-max" => match value.parse::<usize>() {
                    Ok(max) if (1024..=1_048_576).contains(&max) => {
                        out.flows.max_flows = max;
                        Ok(())
                    }
                    _ => Err(format!("{value:?} is not a number of flows 1024-1048576")),
                },
                "log-level" => tracing_subscriber::EnvFilter::try_new(value)
                    .map(|_| out.log_level = value.to_owned())
                    .map_err(|e| format!("{value:?} is not a log filter: {e}")),
                _ => Err(format!(
                    "unknown key (known: {})",
                    KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                )),
            };
            if let Err(reason) = result {
                errors.push(KeyError { key: key.clone(), reason });
            }
        }
        if errors.is_empty() && out.enabled && out.pod_networks.is_empty() {
            errors.push(KeyError { key: "pod-networks".into(), reason: "required when enabled".into() });
        }
        if errors.is_empty() && out.backend == Backend::Kernel && out.flows.enabled {
            errors.push(KeyError {
                key: "backend".into(),
                reason: "kernel with flow-records true: the kernel's WireGuard counts no flows (use auto or userspace, or turn flow records off)".into(),
            });
        }
        if let Mtu::Fixed(mtu) = out.mtu
            && errors.is_empty()
            && mtu < IPV6_MIN_MTU
            && out.pod_networks.iter().any(|n| matches!(n, IpNet::V6(_)))
        {
            errors.push(KeyError {
                key: "mtu".into(),
                reason: format!(
                    "{mtu} is less than IPv6's minimum link MTU ({IPV6_MIN_MTU}, RFC 8200 §5), and a pod network is IPv6"
                ),
            });
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }

    /// Whether these settings fit this node's underlay: an `mtu` larger than an underlay of
    /// `underlay_mtu` bytes carries through WireGuard (less 60 bytes over IPv4, 80 over IPv6) is
    /// rejected, naming the largest that fits. `auto` always fits.
    pub fn check_underlay(&self, underlay_mtu: u32, underlay_is_ipv6: bool) -> Result<(), KeyError> {
        let Mtu::Fixed(mtu) = self.mtu else { return Ok(()) };
        let max = tunnel_mtu(underlay_mtu, underlay_is_ipv6).unwrap_or(0);
        if mtu <= max {
            return Ok(());
        }
        let family = if underlay_is_ipv6 { "IPv6" } else { "IPv4" };
        Err(KeyError {
            key: "mtu".into(),
            reason: format!(
                "{mtu} does not fit this node's {underlay_mtu}-byte {family} underlay through WireGuard: at most {max}"
            ),
        })
    }

    /// Whether these settings fit this node's kernel: `backend: kernel` where the kernel has no
    /// WireGuard (`kernel_wireguard`: [`meshcrypt_dataplane::Kernel::available`]) is rejected for
    /// this node, and the last good backend stays.
    pub fn check_kernel(&self, kernel_wireguard: bool) -> Result<(), KeyError> {
        if self.backend != Backend::Kernel || kernel_wireguard {
            return Ok(());
        }
        Err(KeyError {
            key: "backend".into(),
            reason: "kernel, but this node's kernel has no WireGuard (Linux 5.6 or later, or the wireguard module): use auto or userspace".into(),
        })
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is neither true nor false")),
    }
}

/// Parses the `backend` key's value (and the agent's `--backend`): `auto`, `kernel` or `userspace`.
pub fn parse_backend(value: &str) -> Result<Backend, String> {
    match value {
        "auto" => Ok(Backend::Auto),
        "kernel" => Ok(Backend::Kernel),
        "userspace" => Ok(Backend::Userspace),
        _ => Err(format!("{value:?} is none of auto, kernel and userspace")),
    }
}

/// Parses the `addressing` key's value: `pod-cidr` or `pod-ip`.
pub fn parse_addressing(value: &str) -> Result<Addressing, String> {
    match value {
        "pod-cidr" => Ok(Addressing::PodCidr),
        "pod-ip" => Ok(Addressing::PodIp),
        _ => Err(format!("{value:?} is neither pod-cidr nor pod-ip")),
    }
}

fn parse_mtu(value: &str) -> Result<Mtu, String> {
    if value == "auto" {
        return Ok(Mtu::Auto);
    }
    match value.parse::<u32>() {
        Ok(mtu) if (576..=9001).contains(&mtu) => Ok(Mtu::Fixed(mtu)),
        _ => Err(format!("{value:?} is neither auto nor an MTU of 576-9001")),
    }
}

fn parse_networks(value: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net: IpNet = item.parse().map_err(|_| format!("{item:?} is not a prefix"))?;
        if net.trunc() != net {
            return Err(format!("{item:?} has host bits set (did you mean {}?)", net.trunc()));
        }
        out.push(net);
    }
    Ok(out)
}

fn parse_flow_interval(value: &str) -> Result<Duration, String> {
    let span: jiff::SignedDuration =
        value.parse().map_err(|_| format!("{value:?} is not a duration like 60s or 5m"))?;
    match Duration::try_from(span) {
        Ok(d) if (Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err(format!("{value:?} is not between 10s and 1h")),
    }
}

/// Parses a comma-separated list of Kubernetes label keys: an optional DNS-subdomain prefix and
/// `/`, then a name of 1-63 characters, alphanumeric at both ends with `-`, `_` and `.` inside
/// (the API's own rule, `IsQualifiedName`). Duplicates are an error.
fn parse_label_keys(value: &str) -> Result<Vec<String>, String> {
    let name_ok = |n: &str| {
        let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        (1..=63).contains(&n.len())
            && n.chars().all(inner)
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    // The prefix is a DNS subdomain: DNS labels joined by dots, 253 characters at most.
    let prefix_ok =
        |p: &str| (1..=253).contains(&p.len()) && p.split('.').all(crate::registry::plan::is_dns_label);
    let mut keys: Vec<String> = Vec::new();
    for key in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = match key.split_once('/') {
            Some((prefix, name)) => prefix_ok(prefix) && name_ok(name),
            None => name_ok(key),
        };
        if !ok {
            return Err(format!("{key:?} is not a label key"));
        }
        if keys.iter().any(|k| k == key) {
            return Err(format!("{key:?} is named twice"));
        }
        keys.push(key.to_owned());
    }
    if keys.len() > MAX_FLOW_LABELS {
        return Err(format!("{} label keys: at most {MAX_FLOW_LABELS}", keys.len()));
    }
    Ok(keys)
}

fn parse_interval(value: &str) -> Result<Option<Duration>, String> {
    if value == "0" {
        return Ok(None);
    }
    let span: jiff::SignedDuration =
        value.parse().map_err(|_| format!("{value:?} is not a duration like 720h or 30m"))?;
    let duration = Duration::try_from(span).map_err(|_| format!("{value:?} is negative"))?;
    if duration < Duration::from_secs(60) {
        return Err(format!("{value:?} is shorter than a minute"));
    }
    Ok(Some(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Vec<(&'static str, &'static str)>;
    type Check = Box<dyn Fn(&Settings) -> bool>;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn base() -> Settings {
        Settings { pod_networks: vec!["10.244.0.0/16".parse().unwrap()], ..Settings::default() }
    }

    /// What a ConfigApplied Event names: each changed key with its old and new value.
    #[test]
    fn changes_name_each_changed_key_table() {
        let rows: Vec<(Pairs, Vec<&str>)> = vec![
            (vec![], vec![]),
            (vec![("strict", "false")], vec!["strict: true → false"]),
            (vec![("port", "51821"), ("mtu", "1400")], vec!["port: 51820 → 51821", "mtu: auto → 1400"]),
            (vec![("backend", "kernel")], vec!["backend: auto → kernel"]),
            (vec![("pod-networks", "10.244.0.0/16")], vec![]),
        ];
        for (pairs, want) in rows {
            let after = Settings::parse(&base(), &data(&pairs)).expect("valid");
            assert_eq!(after.changes_from(&base()), want, "{pairs:?}");
        }
    }

    #[test]
    fn accepted_values_table() {
        let cases: Vec<(Pairs, Check)> = vec![
            (vec![], Box::new(|s| *s == base())),
            (vec![("enabled", "false")], Box::new(|s| !s.enabled)),
            (vec![("strict", " false ")], Box::new(|s| !s.strict)),
            (vec![("port", "51821")], Box::new(|s| s.port == 51821)),
            (vec![("mtu", "8941")], Box::new(|s| s.mtu == Mtu::Fixed(8941))),
            (vec![("mtu", "auto")], Box::new(|s| s.mtu == Mtu::Auto)),
            (vec![("addressing", "pod-ip")], Box::new(|s| s.addressing == Addressing::PodIp)),
            (vec![("backend", "kernel")], Box::new(|s| s.backend == Backend::Kernel)),
            (vec![("backend", "userspace")], Box::new(|s| s.backend == Backend::Userspace)),
            (vec![("backend", "auto")], Box::new(|s| s.backend == Backend::Auto)),
            (
                vec![("pod-networks", "10.0.0.0/8, fd00:10:244::/56")],
                Box::new(|s| {
                    s.pod_networks.len() == 2 && s.pod_networks[1].to_string() == "fd00:10:244::/56"
                }),
            ),
            (
                vec![("key-rotation-interval", "720h")],
                Box::new(|s| s.key_rotation_interval == Some(Duration::from_secs(720 * 3600))),
            ),
            (vec![("key-rotation-interval", "0")], Box::new(|s| s.key_rotation_interval.is_none())),
            (vec![("log-level", "meshcrypt=debug")], Box::new(|s| s.log_level == "meshcrypt=debug")),
            (vec![("host-encryption", "true")], Box::new(|s| s.host_encryption)),
            (vec![("flow-records", "true")], Box::new(|s| s.flows.enabled)),
            (vec![("flow-interval", "5m")], Box::new(|s| s.flows.interval == Duration::from_secs(300))),
            (
                vec![("flow-labels", "app, app.kubernetes.io/name,team_1")],
                Box::new(|s| s.flows.labels == ["app", "app.kubernetes.io/name", "team_1"]),
            ),
            (vec![("flow-labels", "")], Box::new(|s| s.flows.labels.is_empty())),
            (vec![("flow-max", "1024")], Box::new(|s| s.flows.max_flows == 1024)),
        ];
        for (input, check) in cases {
            let parsed =
                Settings::parse(&base(), &data(&input)).unwrap_or_else(|e| panic!("{input:?}: {e:?}"));
            assert!(check(&parsed), "{input:?}: {parsed:?}");
        }
    }

    #[test]
    fn hostile_values_are_rejected_by_key() {
        let cases: Vec<(Pairs, Vec<&str>)> = vec![
            (vec![("port", "abc")], vec!["port"]),
            (vec![("port", "0")], vec!["port"]),
            (vec![("port", "65536")], vec!["port"]),
            (vec![("mtu", "70000")], vec!["mtu"]),
            (vec![("mtu", "100")], vec!["mtu"]),
            (vec![("enabled", "maybe")], vec!["enabled"]),
            (vec![("strict", "TRUE")], vec!["strict"]),
            (vec![("surprise", "1")], vec!["surprise"]),
            (vec![("addressing", "eni")], vec!["addressing"]),
            (vec![("backend", "Kernel")], vec!["backend"]),
            (vec![("backend", "wireguard-go")], vec!["backend"]),
            (vec![("backend", "kernel"), ("flow-records", "true")], vec!["backend"]),
            (vec![("pod-networks", "10.244.0.1/16")], vec!["pod-networks"]),
            (vec![("pod-networks", "")], vec!["pod-networks"]),
            (vec![("key-rotation-interval", "soon")], vec!["key-rotation-interval"]),
            (vec![("key-rotation-interval", "10s")], vec!["key-rotation-interval"]),
            (vec![("log-level", "[[[")], vec!["log-level"]),
            (vec![("flow-records", "yes")], vec!["flow-records"]),
            (vec![("flow-interval", "5s")], vec!["flow-interval"]),
            (vec![("flow-interval", "2h")], vec!["flow-interval"]),
            (vec![("flow-interval", "-60s")], vec!["flow-interval"]),
            (vec![("flow-labels", "app,app")], vec!["flow-labels"]),
            (vec![("flow-labels", "-app")], vec!["flow-labels"]),
            (vec![("flow-labels", "Example.com/app")], vec!["flow-labels"]),
            (vec![("flow-labels", "a/b/c")], vec!["flow-labels"]),
            (
                vec![("flow-labels", "l0,l1,l2,l3,l4,l5,l6,l7,l8,l9,l10,l11,l12,l13,l14,l15,l16")],
                vec!["flow-labels"],
            ),
            (vec![("flow-max", "1023")], vec!["flow-max"]),
            (vec![("flow-max", "many")], vec!["flow-max"]),
            (
                vec![("port", "abc"), ("mtu", "70000"), ("enabled", "maybe"), ("x", "y")],
                vec!["enabled", "mtu", "port", "x"],
            ),
        ];
        for (input, keys) in cases {
            let errors = Settings::parse(&base(), &data(&input)).expect_err(&format!("{input:?} accepted"));
            let got: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(got, keys, "{input:?}: {errors:?}");
            assert!(errors.iter().all(|e| !e.reason.is_empty()));
        }
    }

    #[test]
    fn backend_kernel_fits_only_a_kernel_with_wireguard() {
        for (backend, module, fits) in [
            (Backend::Kernel, true, true),
            (Backend::Kernel, false, false),
            (Backend::Auto, false, true),
            (Backend::Userspace, false, true),
        ] {
            let settings = Settings { backend, ..Settings::default() };
            let got = settings.check_kernel(module);
            assert_eq!(got.is_ok(), fits, "{backend:?}, module {module}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.key, "backend");
            }
        }
    }

    #[test]
    fn an_mtu_under_1280_is_rejected_when_a_pod_network_is_ipv6() {
        let v6 = [("pod-networks", "10.244.0.0/16,fd00:10:244::/56")];
        for (pairs, accepted) in [
            (vec![("mtu", "1279")], true),
            ([v6.as_slice(), &[("mtu", "1279")]].concat(), false),
            ([v6.as_slice(), &[("mtu", "1280")]].concat(), true),
            ([v6.as_slice(), &[("mtu", "auto")]].concat(), true),
        ] {
            let result = Settings::parse(&base(), &data(&pairs));
            assert_eq!(result.is_ok(), accepted, "{pairs:?}: {result:?}");
            if let Err(errors) = result {
                assert_eq!(errors[0].key, "mtu");
                assert!(errors[0].reason.contains("1280"), "{errors:?}");
            }
        }
    }

    #[test]
    fn check_underlay_table() {
        let with = |mtu| Settings { mtu, ..base() };
        for (settings, underlay, v6, fits) in [
            (with(Mtu::Auto), 1500, false, true),
            (with(Mtu::Fixed(1440)), 1500, false, true),
            (with(Mtu::Fixed(1441)), 1500, false, false),
            (with(Mtu::Fixed(1440)), 1500, true, false),
            (with(Mtu::Fixed(1420)), 1500, true, true),
            (with(Mtu::Fixed(9001)), 9001, false, false),
            (with(Mtu::Fixed(8941)), 9001, false, true),
            (with(Mtu::Fixed(576)), 600, false, false),
        ] {
            let result = settings.check_underlay(underlay, v6);
            assert_eq!(result.is_ok(), fits, "{:?} on {underlay} v6={v6}: {result:?}", settings.mtu);
            if let Err(e) = result {
                assert_eq!(e.key, "mtu");
                assert!(e.reason.contains("at most"), "{e}");
            }
        }
    }

    #[test]
    fn every_key_is_documented_once() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        // Every documented default parses.
        let defaults: BTreeMap<String, String> = KEYS
            .iter()
            .filter(|(_, default, _)| !default.is_empty())
            .map(|(k, v, _)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(Settings::parse(&base(), &defaults).unwrap(), base());
    }
}
