//! The Node watchers: a reflector store of every Node (`--peer-source nodes`), and one of this
//! node's own Node alone (its addresses, pod CIDRs, taints and published key, in either mode).
//! Both keep Nodes as [`SlimNode`]s, trimmed as they arrive. A store is only read after its first
//! complete list, so nothing is pruned early.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

use super::slim_node::SlimNode;

/// Starts watching Nodes, waking the loop on each change of what it keeps (a [`SlimNode`] is
/// trimmed as it is parsed): not the image list, nor the conditions whose heartbeats kubelet
/// re-posts every 5 minutes (17 writes a second at 5,000 nodes, none of which may cost a pass).
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<SlimNode> {
    super::watch::reflect(Api::all(client), watcher::Config::default(), "nodes".into(), wake, parsed_trimmed)
}

/// Starts watching this node's own Node (`metadata.name=<node>`: one object, whatever the
/// cluster's size), waking the loop on each change of what it keeps.
pub fn watch_own(client: kube::Client, wake: Arc<Notify>, node: &str) -> Store<SlimNode> {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    super::watch::reflect(Api::all(client), config, "own node".into(), wake, parsed_trimmed)
}

/// Nothing left to trim: a [`SlimNode`] keeps only what the mesh reads from the start.
fn parsed_trimmed(_: &mut SlimNode) {}
