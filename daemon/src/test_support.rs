//! What the crate's root-free tests share: a real kube client for the in-repo test API server, and
//! the Nodes and MeshNode reports the cluster view's and the audit's tables start from.

use kube::config::{KubeConfigOptions, Kubeconfig};
use meshcrypt_test_apiserver::{TestApiServer, kubeconfig_yaml};

/// A client of `server` with its admin token, over real HTTP.
pub async fn client(server: &TestApiServer) -> kube::Client {
    let yaml = kubeconfig_yaml(&server.url(), server.admin_token());
    let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// A Node named `name` publishing `key` (if any), with `labels`.
pub fn node(
    name: &str,
    key: Option<&meshcrypt_keyexchange::NodeKeyAnnotations>,
    labels: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::Node {
    k8s_openapi::api::core::v1::Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            annotations: key.map(meshcrypt_keyexchange::NodeKeyAnnotations::to_annotations),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A ready agent's report at Unix second `now` (written 10 s before) for a node using `key`: strict,
/// two peers both handshaked, the older 100 s before, every 300 s.
pub fn ready_report(
    key: &meshcrypt_keyexchange::NodeKeyAnnotations,
    now: i64,
) -> crate::mesh_node::MeshNodeStatus {
    let at = |second: i64| jiff::Timestamp::from_second(second).expect("a time").to_string();
    crate::mesh_node::MeshNodeStatus {
        ready: true,
        reason: "mesh programmed".into(),
        enabled: true,
        strict: true,
        key_fingerprint: key.public_key.fingerprint(),
        key_epoch: key.epoch,
        peers: 2,
        peers_handshaked: 2,
        oldest_handshake: Some(at(now - 100)),
        reported_at: at(now - 10),
        report_interval_seconds: 300,
        ..Default::default()
    }
}
