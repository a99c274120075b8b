//! The lab runs from the ConfigMap that `deploy/` renders, so the manifest and the agent cannot
//! drift apart: `kubectl kustomize deploy/base`, take its meshcrypt ConfigMap as it is, and run the
//! mesh from it.

use std::collections::BTreeMap;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, CONFIG_MAP, CONFIG_NAMESPACE, Cluster};
use meshcrypt_integration::manifests::{documents, render};

fn rendered_configmap() -> BTreeMap<String, String> {
    let docs = documents(&render("base").expect("render deploy/base")).expect("documents");
    let configmap = docs
        .into_iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == CONFIG_MAP
                && d["metadata"]["namespace"] == CONFIG_NAMESPACE
        })
        .unwrap_or_else(|| panic!("no ConfigMap {CONFIG_NAMESPACE}/{CONFIG_MAP} in the rendered base"));
    serde_json::from_value(configmap["data"].clone()).expect("string data")
}

#[test]
fn the_lab_runs_from_the_rendered_configmap() {
    let data = rendered_configmap();
    assert!(data.contains_key("pod-networks"), "the manifest sets the pod network: {data:?}");
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some(data);
    let cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("agents ready from the rendered ConfigMap");
    let a = cluster.lab.pods_on("node-0")[0].clone();
    let b = cluster.lab.pods_on("node-1")[0].clone();
    meshcrypt_integration::cluster::poll(Duration::from_secs(10), || {
        cluster.lab.ping(&a, b.address.into()).ok().filter(|ok| *ok).ok_or_else(|| "no".to_owned())
    })
    .expect("pods talk");
    assert!(cluster.events("ConfigRejected").is_empty(), "the rendered ConfigMap was rejected");
    let peers = cluster.wg("node-0", &["show", "meshcrypt0", "peers"]).expect("wg");
    assert_eq!(peers.lines().count(), 1, "{peers}");
}
