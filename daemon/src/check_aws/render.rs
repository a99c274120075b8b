//! How `meshcrypt check aws` prints its findings: text for people, or one JSON document
//! (`meshcrypt.dev/check-aws/v1`).

use std::fmt::Write as _;

use super::BranchPod;
use super::judge::{Findings, Side};
use crate::error::AgentError;

/// The JSON document's schema.
pub const SCHEMA: &str = "meshcrypt.dev/check-aws/v1";

/// The findings as text: a summary line, each blocked class with examples, the nodes not checked,
/// and the Pods on branch ENIs.
pub fn text(f: &Findings, branch: &[BranchPod]) -> String {
    let named = |ids: &[String]| -> String {
        let name = |id: &String| match f.group_names.get(id) {
            Some(name) if !name.is_empty() => format!("{id} ({name})"),
            _ => id.clone(),
        };
        ids.iter().map(name).collect::<Vec<_>>().join(", ")
    };
    let mut out = String::new();
    let verdict = if f.clean() { "OK" } else { "BLOCKED" };
    let _ = writeln!(
        out,
        "{verdict}: UDP {} between {} node(s) and from {} peer-cluster source(s): {} ordered pair(s) checked",
        f.port, f.nodes, f.peer_ranges, f.pairs
    );
    for b in &f.blocked {
        let side = match b.side {
            Side::Ingress => {
                format!("inbound rules of [{}] allow no UDP {} from it", named(&b.to_groups), f.port)
            }
            Side::Egress => {
                format!("outbound rules of [{}] allow no UDP {} to it", named(&b.from_groups), f.port)
            }
        };
        let _ = writeln!(
            out,
            "BLOCKED [{}] → [{}]: {} pair(s); {side}{}",
            named(&b.from_groups),
            named(&b.to_groups),
            b.pairs,
            if b.prefix_list_rules { " (a prefix-list rule was not resolved: check it by hand)" } else { "" }
        );
        for example in &b.examples {
            let _ = writeln!(out, "  {example}");
        }
    }
    for node in &f.unchecked {
        let _ = writeln!(out, "NOT CHECKED {node}");
    }
    for node in &f.no_agent {
        let _ = writeln!(out, "NO AGENT {node} (left out: not in the mesh)");
    }
    for group in &f.missing_groups {
        let _ = writeln!(out, "MISSING GROUP {group}: a node uses it, EC2 did not return it");
    }
    if !branch.is_empty() {
        let _ = writeln!(
            out,
            "Pods on branch ENIs (security groups for pods): their traffic leaves outside the node's routes and is not encrypted by meshcrypt (an exception in `meshcrypt audit`):"
        );
        for p in branch {
            let _ = writeln!(out, "  {} {} {} [{}]", p.pod, p.ip, p.eni, named(&p.groups));
        }
    }
    out
}

/// The findings and the branch-ENI Pods as one JSON document.
pub fn json(f: &Findings, branch: &[BranchPod]) -> Result<String, AgentError> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc<'a> {
        schema: &'static str,
        clean: bool,
        #[serde(flatten)]
        findings: &'a Findings,
        branch_eni_pods: &'a [BranchPod],
    }
    crate::status::json(&Doc { schema: SCHEMA, clean: f.clean(), findings: f, branch_eni_pods: branch })
}
