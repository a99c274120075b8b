//! `meshcrypt audit`: a read-only audit of the mesh for assessors (PCI DSS 4.2.1 and 4.2.1.1,
//! NIST SP 800-53 SC-8/SC-12/SC-13, HIPAA 164.312(e)(1), SOC 2 CC6.7; docs/compliance.md): which
//! nodes' pod traffic is encrypted, every key with its age against the policy and who wrote it,
//! what is not encrypted and why, and the configuration, as JSON or Markdown with a content hash.
//! Exit status: 0 compliant, 2 not compliant, 1 could not audit.
//!
//! Modules: `policy` (what is checked against), `judge` (the pure judgement), `report` (the
//! report's shape and hash), `markdown` (its Markdown form).

mod judge;
mod markdown;
mod policy;
mod report;

pub use judge::{BRANCH_ENI_ANNOTATION, FOREIGN_KEY_WRITER};
pub use report::Verdict;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{Api, ListParams};

use crate::cli::{AuditArgs, ReportFormat};
use crate::error::AgentError;
use crate::mesh_node::MeshNode;

/// Runs `meshcrypt audit`: reads the cluster (list and get only), prints the report, writes the
/// JSON to `--json-out` if given, and returns the verdict.
///
/// # Errors
/// The policy's errors, the API's (including a missing permission), writing `--json-out`.
pub async fn run(args: AuditArgs) -> Result<Verdict, AgentError> {
    let policy = policy::Policy::from_args(&args)?;
    let config = crate::agent::kube_client::config(args.kubeconfig.as_deref()).await?;
    let cluster = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)?;
    // Reads in a fixed order; the report is as of the moment after the last.
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
    let reports = MeshNode::reports(&client).await?;
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), &args.config_namespace)
        .get_opt(&args.config_map)
        .await?;
    let pods = branch_eni_pods(&client).await?;
    let selector = format!("reason={FOREIGN_KEY_WRITER}");
    let events = Api::<Event>::all(client).list(&ListParams::default().fields(&selector)).await?.items;
    let inputs = judge::AuditInputs {
        cluster,
        nodes: &nodes,
        reports: &reports,
        config_map_name: (args.config_namespace.clone(), args.config_map.clone()),
        config_map: config_map.as_ref(),
        pods: &pods,
        foreign_writer_events: &events,
    };
    let report = judge::audit(&inputs, &policy, jiff::Timestamp::now());
    let json = || crate::status::json(&report);
    if let Some(path) = &args.json_out {
        std::fs::write(path, json()?)
            .map_err(|e| AgentError::Io { what: format!("write {}", path.display()), source: e })?;
    }
    match args.output {
        ReportFormat::Json => print!("{}", json()?),
        ReportFormat::Markdown => print!("{}", markdown::render(&report)),
    }
    Ok(report.verdict)
}

/// The Pods on branch ENIs, found in pages of 500 metadata-only items (a cluster's Pods in full
/// could take gigabytes), each then read whole (there are few).
pub async fn branch_eni_pods(client: &kube::Client) -> Result<Vec<Pod>, AgentError> {
    let all = Api::<Pod>::all(client.clone());
    let mut params = ListParams::default().limit(500);
    let mut found = Vec::new();
    loop {
        let page = all.list_metadata(&params).await?;
        for pod in page.items.iter().filter(|p| judge::on_branch_eni(&p.metadata)) {
            let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                continue;
            };
            // Gone since the list: nothing to report.
            if let Some(pod) = Api::<Pod>::namespaced(client.clone(), namespace).get_opt(name).await? {
                found.push(pod);
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(found),
        }
    }
}
