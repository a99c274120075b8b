//! What the crate's root-free tests share: a real kube client for the in-repo test API server.

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
