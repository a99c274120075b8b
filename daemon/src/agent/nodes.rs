//! The Node watcher: a reflector store of every Node. The store is only read after its first
//! complete list, so nothing is pruned early.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

/// Starts watching Nodes, waking the loop on each change.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<Node> {
    super::watch::reflect(Api::all(client), watcher::Config::default(), "nodes".into(), wake, |node| {
        node.metadata.managed_fields = None;
        if let Some(status) = node.status.as_mut() {
            status.images = None;
        }
    })
}
