//! Helpers shared by the `apiserver_*` integration tests: kube clients for a test server, and
//! polling with a deadline.

#![allow(dead_code)]

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use meshcrypt_test_apiserver::{TestApiServer, kubeconfig_yaml};
use serde_json::{Value, json};

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A kube client for `url` authenticating with `token` (none: no Authorization header).
pub async fn client_for_url(url: &str, token: Option<&str>) -> kube::Client {
    let yaml = match token {
        Some(t) => kubeconfig_yaml(url, t),
        None => kubeconfig_yaml(url, "unused").replace("    token: unused\n", "    {}\n"),
    };
    let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

/// A kube client for the server with `token`.
pub async fn client(server: &TestApiServer, token: &str) -> kube::Client {
    client_for_url(&server.url(), Some(token)).await
}

/// A Node object with a pod CIDR and an InternalIP.
pub fn node(name: &str, i: u32) -> Value {
    TestApiServer::node_object(
        name,
        &format!("10.244.{}.0/24", i % 256),
        &format!("198.18.{}.{}", i / 250, i % 250 + 1),
    )
}

/// Polls `f` every 50 ms until it returns `Some`, panicking with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An annotation merge patch.
pub fn annotate(key: &str, value: &str) -> Value {
    json!({"metadata": {"annotations": {key: value}}})
}
