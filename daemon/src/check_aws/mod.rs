//! `meshcrypt check aws`: proves, read-only, that the security groups let the mesh through. It
//! reads, in this order, the Nodes (their `aws:///<zone>/<instance>` providerIDs and InternalIPs),
//! the RemoteClusters (peer clusters' node endpoints, when the CRD is installed), the ConfigMap's
//! `port`, then from EC2 the instances (DescribeInstances), their security groups
//! (DescribeSecurityGroups), and the Pods on branch ENIs (security groups for pods; their
//! annotation names the ENI) with their ENIs (DescribeNetworkInterfaces). The decision is
//! [`judge::judge`]'s; this module only reads and prints. Exit 0: every pair allowed; 2: a pair
//! blocked or a node not checked; 1: it could not check.

mod judge;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use aws_sdk_ec2::types::{Filter, IpPermission};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams};

use crate::cli::{CheckAwsArgs, CheckFormat};
use crate::config::settings::Settings;
use crate::error::AgentError;
use crate::remote_cluster::RemoteCluster;
use judge::{Group, NodeNet, PeerRange, Rule};
use meshcrypt_keyexchange::mesh::NoAgentExpected;

/// A Pod on a branch ENI, with the ENI's security groups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchPod {
    /// `namespace/name`.
    pub pod: String,
    /// The ENI (`eni-…`).
    pub eni: String,
    /// Its address.
    pub ip: String,
    /// Its security groups (empty when EC2 did not return the ENI).
    pub groups: Vec<String>,
}

/// Runs the check; returns whether it is clean.
pub async fn run(args: CheckAwsArgs) -> Result<bool, AgentError> {
    let config = crate::agent::kube_client::config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
    let mut remotes_unchecked = None;
    let remotes = match Api::<RemoteCluster>::all(client.clone()).list(&ListParams::default()).await {
        Ok(list) => list.items,
        // No CRD: a single cluster.
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            remotes_unchecked = Some(format!(
                "peer clusters: cannot list RemoteClusters ({}): their nodes were not checked",
                e.message
            ));
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let port = match args.port {
        Some(port) => port,
        None => config_map_port(&client, &args.config_namespace, &args.config_map).await?,
    };
    let pods = crate::audit::branch_eni_pods(&client).await?;

    let sdk = crate::aws::sdk_config(args.region.as_deref(), args.endpoint_url.as_deref()).await?;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let Sorted { instances, mut unchecked, no_agent } = instances_of(&nodes);
    unchecked.extend(remotes_unchecked);
    let described = describe_instances(&ec2, instances.keys().cloned().collect()).await?;
    let mut node_nets = Vec::new();
    for (instance, (node, ip)) in &instances {
        match described.get(instance) {
            Some(interfaces) => {
                // The interface holding the node's address; else the primary one.
                let groups = interfaces
                    .iter()
                    .find(|(ips, _, _)| ips.contains(ip))
                    .or_else(|| interfaces.iter().find(|(_, index, _)| *index == 0))
                    .map(|(_, _, groups)| groups.clone())
                    .unwrap_or_default();
                node_nets.push(NodeNet { node: node.clone(), instance: instance.clone(), ip: *ip, groups });
            }
            None => unchecked.push(format!("{node}: instance {instance} not found in EC2")),
        }
    }
    let branch = branch_pods(&ec2, &pods).await?;
    let mut group_ids: BTreeSet<String> = node_nets.iter().flat_map(|n| n.groups.iter().cloned()).collect();
    group_ids.extend(branch.iter().flat_map(|p| p.groups.iter().cloned()));
    let groups = describe_groups(&ec2, group_ids.into_iter().collect()).await?;
    let mut ranges = remote_ranges(&remotes);
    ranges.extend(args.peer_cidr.iter().map(|c| PeerRange { name: format!("--peer-cidr {c}"), range: *c }));
    node_nets.sort_by(|a, b| a.node.cmp(&b.node));
    let mut findings = judge::judge(&node_nets, &groups, &ranges, port, unchecked);
    findings.no_agent = no_agent;
    let clean = findings.clean();
    match args.output {
        CheckFormat::Text => print!("{}", render::text(&findings, &branch)),
        CheckFormat::Json => print!("{}", render::json(&findings, &branch)?),
    }
    Ok(clean)
}

/// The ConfigMap's `port` as the agents' parser reads it (51820 when absent); a value it rejects is
/// an error, since the agents then keep a port this cannot know (pass `--port`).
async fn config_map_port(client: &kube::Client, namespace: &str, name: &str) -> Result<u16, AgentError> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(name).await?;
    let Some(value) = map.and_then(|m| m.data).and_then(|d| d.get("port").cloned()) else {
        return Ok(Settings::default().port);
    };
    // The port alone, over settings that ask nothing else of the map.
    let base = Settings { enabled: false, ..Settings::default() };
    let data = [("port".to_owned(), value)].into();
    Settings::parse(&base, &data)
        .map(|s| s.port)
        .map_err(|errors| AgentError::ConfigRejected { name: format!("{namespace}/{name}"), errors })
}

/// Each Node's instance (from `aws:///<zone>/<instance-id>`) and InternalIP; the Nodes without
/// either, with why; and the Nodes that run no agent (Fargate, hybrid, Auto Mode, Windows: the
/// audit's exceptions), which are not part of the mesh and are left out.
fn instances_of(nodes: &[Node]) -> Sorted {
    let mut found = BTreeMap::new();
    let mut unchecked = Vec::new();
    let mut no_agent = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(why) = node.metadata.labels.as_ref().and_then(NoAgentExpected::from_labels) {
            no_agent.push(format!("{name}: {why}"));
            continue;
        }
        let provider = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()).unwrap_or_default();
        let instance = provider
            .strip_prefix("aws:///")
            .and_then(|rest| rest.rsplit('/').next())
            .filter(|i| i.starts_with("i-"));
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<IpAddr>().ok());
        match (instance, ip) {
            (Some(instance), Some(ip)) => {
                found.insert(instance.to_owned(), (name, ip));
            }
            (None, _) => unchecked.push(format!("{name}: no aws:///<zone>/<instance> providerID ({provider:?}): not an EC2 instance, or not EKS")),
            (_, None) => unchecked.push(format!("{name}: no InternalIP")),
        }
    }
    Sorted { instances: found, unchecked, no_agent }
}

/// The Nodes sorted for the check: instance → (Node, InternalIP); Nodes not checked, with why;
/// Nodes that run no agent, with why.
struct Sorted {
    instances: BTreeMap<String, (String, IpAddr)>,
    unchecked: Vec<String>,
    no_agent: Vec<String>,
}

/// Each instance's network interfaces: (private addresses, device index, security groups).
type Interfaces = Vec<(Vec<IpAddr>, i32, BTreeSet<String>)>;

async fn describe_instances(
    ec2: &aws_sdk_ec2::Client,
    ids: Vec<String>,
) -> Result<BTreeMap<String, Interfaces>, AgentError> {
    let mut out = BTreeMap::new();
    // A filter takes at most 200 values.
    for chunk in ids.chunks(200) {
        let filter = Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build();
        let mut pages = ec2.describe_instances().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ec2_error("DescribeInstances", e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else { continue };
                let interfaces = instance
                    .network_interfaces()
                    .iter()
                    .map(|eni| {
                        let ips = eni
                            .private_ip_addresses()
                            .iter()
                            .filter_map(|a| a.private_ip_address()?.parse().ok())
                            .chain(eni.ipv6_addresses().iter().filter_map(|a| a.ipv6_address()?.parse().ok()))
                            .collect();
                        let index = eni.attachment().and_then(|a| a.device_index()).unwrap_or(-1);
                        let groups =
                            eni.groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
                        (ips, index, groups)
                    })
                    .collect();
                out.insert(id.to_owned(), interfaces);
            }
        }
    }
    Ok(out)
}

async fn describe_groups(ec2: &aws_sdk_ec2::Client, ids: Vec<String>) -> Result<Vec<Group>, AgentError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let filter = Filter::builder().name("group-id").set_values(Some(chunk.to_vec())).build();
        let mut pages = ec2.describe_security_groups().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ec2_error("DescribeSecurityGroups", e))?;
            for g in page.security_groups() {
                out.push(Group {
                    id: g.group_id().unwrap_or_default().to_owned(),
                    name: g.group_name().unwrap_or_default().to_owned(),
                    ingress: g.ip_permissions().iter().map(rule).collect(),
                    egress: g.ip_permissions_egress().iter().map(rule).collect(),
                });
            }
        }
    }
    Ok(out)
}

fn rule(p: &IpPermission) -> Rule {
    Rule {
        protocol: p.ip_protocol().unwrap_or("-1").to_owned(),
        from_port: p.from_port(),
        to_port: p.to_port(),
        cidrs: p
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip()?.parse().ok())
            .chain(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()?.parse().ok()))
            .collect(),
        groups: p.user_id_group_pairs().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect(),
        prefix_lists: !p.prefix_list_ids().is_empty(),
    }
}

/// The Pods on branch ENIs, each with its ENI's groups from EC2.
async fn branch_pods(
    ec2: &aws_sdk_ec2::Client,
    pods: &[k8s_openapi::api::core::v1::Pod],
) -> Result<Vec<BranchPod>, AgentError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct PodEni {
        eni_id: String,
        #[serde(default)]
        private_ip: String,
    }
    let mut listed: Vec<BranchPod> = Vec::new();
    for pod in pods {
        let annotation =
            pod.metadata.annotations.as_ref().and_then(|a| a.get(crate::audit::BRANCH_ENI_ANNOTATION));
        let enis: Vec<PodEni> = annotation.and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        for eni in enis {
            listed.push(BranchPod {
                pod: name.clone(),
                eni: eni.eni_id,
                ip: eni.private_ip,
                groups: Vec::new(),
            });
        }
    }
    let ids: Vec<String> =
        listed.iter().map(|p| p.eni.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in ids.chunks(200) {
        let filter = Filter::builder().name("network-interface-id").set_values(Some(chunk.to_vec())).build();
        let mut pages = ec2.describe_network_interfaces().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ec2_error("DescribeNetworkInterfaces", e))?;
            for eni in page.network_interfaces() {
                let ids = eni.groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
                groups.insert(eni.network_interface_id().unwrap_or_default().to_owned(), ids);
            }
        }
    }
    for pod in &mut listed {
        pod.groups = groups.get(&pod.eni).cloned().unwrap_or_default();
    }
    Ok(listed)
}

/// Every peer cluster node's endpoint address, as a single-address range.
fn remote_ranges(remotes: &[RemoteCluster]) -> Vec<PeerRange> {
    remotes
        .iter()
        .flat_map(|r| {
            let cluster = kube::ResourceExt::name_any(r);
            r.spec.nodes.iter().filter_map(move |n| {
                let addr = n.endpoint.parse::<SocketAddr>().ok()?.ip();
                Some(PeerRange { name: format!("{cluster}/{}", n.name), range: IpNet::from(addr) })
            })
        })
        .collect()
}

/// The error of EC2 call `call`, with its code and message (an SDK error's Display is only
/// "service error").
fn ec2_error(call: &'static str, e: impl Into<aws_sdk_ec2::Error>) -> AgentError {
    let source: aws_sdk_ec2::Error = e.into();
    AgentError::Ec2 { call, detail: crate::aws::error_detail(&source), source: Box::new(source) }
}
