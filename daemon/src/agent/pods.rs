//! The Pod watcher for pod-IP mode: a reflector store of every Pod in the cluster (or, with
//! `--peer-source mesh-peers`, where the other nodes' pod addresses come on their MeshPeers, of
//! this node's Pods only), started the first time the settings ask for pod-IP mode. Like the Node
//! store, it is read only after its first complete list, so no peer's addresses are pruned early.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

use super::slim_pod::SlimPod;

/// Starts watching every Pod, waking the loop on each change. Only what the peer set reads is
/// kept ([`SlimPod`], without labels), so a large cluster's Pods cost little memory.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<SlimPod> {
    super::watch::reflect(
        Api::all(client),
        watcher::Config::default(),
        "pods".into(),
        wake,
        SlimPod::without_labels,
    )
}

/// Starts watching this node's Pods only (`spec.nodeName=<node>`: at most the node's pod
/// capacity, whatever the cluster's size), waking the loop on each change.
pub fn watch_own(client: kube::Client, wake: Arc<Notify>, node: &str) -> Store<SlimPod> {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    super::watch::reflect(Api::all(client), config, "own pods".into(), wake, SlimPod::without_labels)
}

/// Nothing to trim for a store that keeps the labels: a [`SlimPod`] keeps only what the agent
/// reads from the start.
pub(crate) fn keep_labels(_: &mut SlimPod) {}
