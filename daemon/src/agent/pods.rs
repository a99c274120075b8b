//! The Pod watcher for pod-IP mode: a reflector store of every Pod in the cluster (or, with
//! `--peer-source mesh-peers`, where the other nodes' pod addresses come on their MeshPeers, of
//! this node's Pods only), started the first time the settings ask for pod-IP mode. Like the Node
//! store, it is read only after its first complete list, so no peer's addresses are pruned early.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

/// Starts watching every Pod, waking the loop on each change. Only what the peer set reads is
/// kept, so a large cluster's Pods cost little memory.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<Pod> {
    super::watch::reflect(Api::all(client), watcher::Config::default(), "pods".into(), wake, trim)
}

/// Starts watching this node's Pods only (`spec.nodeName=<node>`: at most the node's pod
/// capacity, whatever the cluster's size), waking the loop on each change.
pub fn watch_own(client: kube::Client, wake: Arc<Notify>, node: &str) -> Store<Pod> {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    super::watch::reflect(Api::all(client), config, "own pods".into(), wake, trim)
}

fn trim(pod: &mut Pod) {
    pod.metadata.labels = None;
    trim_keeping_labels(pod);
}

/// Drops what neither the peer set nor a flow record reads: all but the Pod's name, namespace,
/// labels, node, phase, host-network flag and addresses.
pub(crate) fn trim_keeping_labels(pod: &mut Pod) {
    pod.metadata.annotations = None;
    pod.metadata.managed_fields = None;
    pod.metadata.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
        spec.init_containers = None;
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
    }
}
