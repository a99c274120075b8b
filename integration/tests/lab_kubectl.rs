//! The real kubectl against the lab as an operator uses it (`meshcrypt-lab --stay` prints the
//! kubeconfig): over https with the printed kubeconfig, it lists the nodes wide, creates a
//! namespace and a ConfigMap (protobuf bodies), diffs a changed ConfigMap on the server, applies
//! it (and the agents take it), and shows meshcrypt's Events on a Node and cluster-wide.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};

const KUBECTL: &str = "/usr/bin/kubectl";

/// kubectl ARGS with `kubeconfig` and a private cache: (exit code, stdout, stderr).
fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("run kubectl");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn kubectl_works_against_the_lab_as_printed() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    options.config_map = Some([("strict".to_owned(), "true".to_owned())].into());
    let cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    cluster.api().write_kubeconfig(&kubeconfig, cluster.api().admin_token()).expect("kubeconfig");
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| kubectl(&kubeconfig, &cache, args);
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "kubectl {args:?}: {out}{err}");
        out
    };
    assert!(cluster.api().url().starts_with("https://"), "the lab speaks https: {}", cluster.api().url());

    let wide = ok(&["get", "nodes", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&header[..6], ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"], "{wide}");
    assert!(wide.lines().any(|l| l.starts_with("node-1 ") && l.contains("198.18.0.11")), "{wide}");

    assert!(ok(&["create", "namespace", "x"]).contains("namespace/x created"));
    assert!(
        ok(&["create", "configmap", "y", "--from-literal=a=b", "-n", "x"]).contains("configmap/y created")
    );
    assert!(ok(&["get", "configmap", "y", "-n", "x", "-o", "jsonpath={.data.a}"]) == "b");

    // A changed ConfigMap: the server-side diff shows it (exit 1), applying it ends the diff.
    let file = dir.path().join("meshcrypt.yaml");
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: meshcrypt\n  namespace: meshcrypt-system\ndata:\n  strict: \"true\"\n  pod-networks: \"{}\"\n  log-level: \"debug\"\n",
        cluster.pod_networks().join(",")
    );
    std::fs::write(&file, yaml).expect("write the manifest");
    let file = file.to_str().expect("path");
    let (code, diff, err) = run(&["diff", "-f", file]);
    assert_eq!(code, 1, "a difference: {diff}{err}");
    assert!(diff.lines().any(|l| l.starts_with('+') && l.contains("log-level: debug")), "{diff}");
    ok(&["apply", "-f", file]);
    let (code, diff, err) = run(&["diff", "-f", file]);
    assert_eq!(code, 0, "no difference after apply: {diff}{err}");
    poll(Duration::from_secs(10), || {
        let events = cluster.events("ConfigApplied");
        let named = events.iter().any(|e| e["note"].as_str().is_some_and(|n| n.contains("log-level")));
        if named { Ok(()) } else { Err(format!("no ConfigApplied naming log-level: {events:?}")) }
    })
    .expect("the agents take the change");

    // meshcrypt's Events, where people look for them.
    let described = ok(&["describe", "node", "node-1"]);
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("MeshReady") && events.contains("meshcrypt"), "{described}");
    let all = ok(&["get", "events", "-A"]);
    assert!(all.lines().any(|l| l.contains("ConfigApplied") && l.contains("configmap/meshcrypt")), "{all}");
    assert!(all.lines().any(|l| l.contains("MeshReady") && l.contains("node/node-0")), "{all}");
    assert_eq!(ok(&["auth", "can-i", "patch", "nodes"]).trim(), "yes");
}
