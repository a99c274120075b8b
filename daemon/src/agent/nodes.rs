//! The Node watcher: a reflector store of every Node, and a wake-up for the reconcile loop on each
//! change. The store is only read after its first complete list, so nothing is pruned early.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::Notify;

/// Starts watching Nodes; returns the store and the task that feeds it.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> (Store<Node>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let api: Api<Node> = Api::all(client);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying with backoff"),
            }
        }
    });
    (reader, task)
}
