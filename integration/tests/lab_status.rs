//! `meshcrypt status` on the lab, as an operator runs it: on a node against its agent's status
//! socket, and `--cluster` with a kubeconfig against the API server, with one node's agent
//! stopped. The JSON is asserted; the tables are printed (run with `--nocapture` to see them).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use serde_json::Value;

/// `meshcrypt status ARGS`: stdout, panicking with stderr on failure.
fn status(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary).arg("status").args(args).output().expect("run meshcrypt status");
    assert!(out.status.success(), "meshcrypt status {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn status_names_a_stopped_agent_on_the_node_and_in_the_cluster_view() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some([("strict".to_owned(), "true".to_owned())].into());
    // Reports every 5 s at least, a change after 1 s: the cluster view follows quickly.
    options.extra_args = vec!["--status-interval".into(), "5".into()];
    let binary = options.binary.clone();
    let mut cluster = Cluster::start(3, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    // Handshakes start with traffic: every pair of nodes talks once.
    cluster.cross_node_pods_talk(Duration::from_secs(10), b"status").expect("pods talk across nodes");

    // On a node: its agent over the status socket, no kubeconfig.
    let state_dir = cluster.state_dir("node-0");
    let state_dir = state_dir.to_str().expect("path");
    let node = poll(Duration::from_secs(20), || {
        let doc = json(&status(&binary, &["--state-dir", state_dir, "-o", "json"]));
        let shook = doc["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["lastHandshake"].is_string()));
        if shook { Ok(doc) } else { Err(format!("peers without a handshake yet: {}", doc["peers"])) }
    })
    .expect("node-0 with two handshaked peers");
    assert_eq!(node["schema"], "meshcrypt.dev/node-status/v1");
    assert_eq!(node["node"], "node-0");
    assert_eq!(node["ready"], true, "{node}");
    assert_eq!(node["device"]["name"], "meshcrypt0");
    let peers: Vec<&str> =
        node["peers"].as_array().unwrap().iter().map(|p| p["node"].as_str().unwrap()).collect();
    assert_eq!(peers, ["node-1", "node-2"]);
    let strict = node["settings"].as_array().unwrap().iter().find(|s| s["key"] == "strict").cloned();
    assert_eq!(
        strict.map(|s| (s["value"].clone(), s["source"].clone())),
        Some(("true".into(), "configmap".into()))
    );
    println!("$ meshcrypt status --state-dir {state_dir}\n{}", status(&binary, &["--state-dir", state_dir]));

    // The cluster view, one agent stopped.
    cluster.stop_agent("node-2").expect("stop node-2's agent");
    let kubeconfig = cluster.dir().join("admin.kubeconfig");
    cluster.api().write_kubeconfig(&kubeconfig, cluster.api().admin_token()).expect("kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("path");
    let view = poll(Duration::from_secs(20), || {
        let doc = json(&status(&binary, &["--cluster", "--kubeconfig", kubeconfig, "-o", "json"]));
        // Each node as "name agent handshaked/peers", e.g. "node-0 ready 2/2".
        let seen: Vec<String> = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let text = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
                format!("{} {} {}/{}", text("node"), text("agent"), n["peersHandshaked"], n["peers"])
            })
            .collect();
        if seen == ["node-0 ready 2/2", "node-1 ready 2/2", "node-2 stopped 2/2"] {
            Ok(doc)
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .expect("node-2 stopped, the others ready");
    assert_eq!(view["schema"], "meshcrypt.dev/cluster-status/v1");
    assert_eq!(view["summary"]["nodes"], 3);
    assert_eq!(view["summary"]["ready"], 2);
    let stopped = &view["nodes"][2];
    assert!(stopped["problems"][0].as_str().is_some_and(|p| p.starts_with("agent stopped at")), "{stopped}");
    assert_eq!(stopped["keyEpoch"], 0, "its key stays published: {stopped}");
    for n in &view["nodes"].as_array().unwrap()[..2] {
        assert_eq!((n["strict"].clone(), n["problems"].clone()), (true.into(), serde_json::json!([])), "{n}");
    }
    println!("$ meshcrypt status --cluster\n{}", status(&binary, &["--cluster", "--kubeconfig", kubeconfig]));
}
