//! `meshcrypt status`: on a node, what its agent knows (from the agent's status socket, no
//! kubeconfig); with `--cluster`, every node's state (from the Nodes and the MeshNodes the agents
//! report on, with a kubeconfig). A table for people, `-o json` for tools.
//!
//! Modules: `document` (the node's status and how it is built), `socket` (the agent's Unix
//! socket and its client), `cluster` (the cluster view), `table` (the tables).

mod cluster;
mod document;
mod socket;
mod table;

pub use cluster::{AgentState, ClusterNode, cluster_status};
pub use document::{NodeStatus, PassView, node_status};
pub use socket::{serve, socket_path};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use crate::cli::{OutputFormat, StatusArgs};
use crate::error::AgentError;
use crate::mesh_node::MeshNode;

/// Runs `meshcrypt status`: prints the node's (or with `--cluster` the cluster's) status.
pub async fn run(args: StatusArgs) -> Result<(), AgentError> {
    let text = if args.cluster {
        let client = crate::agent::kube_client::client(args.kubeconfig.as_deref()).await?;
        let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
        // Without the CRD no agent of this version has reported yet: every node says so.
        let reports = MeshNode::reports(&client).await?;
        let view = cluster::cluster_status(&nodes, &reports, jiff::Timestamp::now());
        match args.output {
            OutputFormat::Json => json(&view)?,
            OutputFormat::Table => table::cluster(&view),
        }
    } else {
        let status = socket::fetch(&socket_path(&args.state.state_dir)).await?;
        match args.output {
            OutputFormat::Json => json(&status)?,
            OutputFormat::Table => table::node(&status),
        }
    };
    print!("{text}");
    Ok(())
}

/// `value` as pretty JSON with a final newline, as the status and audit commands print it.
pub fn json(value: &impl serde::Serialize) -> Result<String, AgentError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| AgentError::Io { what: "encode as JSON".into(), source: e.into() })?;
    text.push('\n');
    Ok(text)
}
