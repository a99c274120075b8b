//! The RemoteCluster watcher: every peer cluster's nodes, as the registry wrote them (see
//! [`crate::remote_cluster`]). Read like the Node store; empty where the CRD is not installed.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::remote_cluster::RemoteCluster;

/// Starts watching every RemoteCluster, waking the loop on each change. The status (the
/// registry's report for people) is dropped: the agent reads only the spec.
pub fn watch(client: kube::Client, wake: Arc<Notify>) -> Store<RemoteCluster> {
    super::watch::reflect(Api::all(client), watcher::Config::default(), "remoteclusters".into(), wake, trim)
}

fn trim(remote: &mut RemoteCluster) {
    remote.status = None;
    remote.metadata.managed_fields = None;
    remote.metadata.annotations = None;
}
