//! The real kubectl binary against the standalone `test-apiserver` binary: discovery, OpenAPI,
//! get, annotate, patch (merge and strategic), client-side apply and server-side apply.

mod apiserver_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use apiserver_support::{client_for_url, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;

const KUBECTL: &str = "/usr/bin/kubectl";

const NODE_1_TOKEN: &str = "node-1-token-for-tests";

/// A running `test-apiserver` process, killed on drop (also when a test panics).
struct ServerProcess {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SEED: &str = r#"
- apiVersion: v1
  kind: Node
  metadata:
    name: seed-node-1
  spec:
    podCIDRs: [10.244.1.0/24]
  status:
    addresses: [{type: InternalIP, address: 198.18.0.11}]
- apiVersion: v1
  kind: Node
  metadata:
    name: seed-node-2
  spec:
    podCIDRs: [10.244.2.0/24]
  status:
    addresses: [{type: InternalIP, address: 198.18.0.12}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
data:
  mode: node
"#;

impl ServerProcess {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.yaml");
        std::fs::write(&seed, SEED).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_test-apiserver"));
        // If this test process dies without running Drop, the server dies with it.
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--seed")
            .arg(&seed)
            .arg("--node-token")
            .arg(format!("seed-node-1={NODE_1_TOKEN}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn test-apiserver");
        let stdout = child.stdout.take().unwrap();
        let mut proc = Self { child, url: String::new(), dir, kubeconfig };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        proc.url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(proc.url.starts_with("https://127.0.0.1:"), "{}", proc.url);
        proc
    }

    /// Runs kubectl with this server's kubeconfig and a private cache; panics unless it succeeds.
    fn kubectl(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl_with(&self.kubeconfig, args);
        assert!(ok, "kubectl {args:?} failed: {stdout}\n{stderr}");
        stdout
    }

    /// Runs kubectl with the given kubeconfig: (success, stdout, stderr).
    fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(KUBECTL)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A kube-rs client built from the same kubeconfig (https, test CA, admin token).
    async fn client(&self) -> kube::Client {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token in kubeconfig")
            .to_string();
        client_for_url(&self.url, Some(&token)).await
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn kubectl_gets_and_annotates_nodes() {
    let server = ServerProcess::start();
    let out = server.kubectl(&["get", "nodes"]);
    assert!(out.contains("seed-node-1") && out.contains("seed-node-2"), "{out}");
    assert!(out.starts_with("NAME"), "{out}");

    let out = server.kubectl(&["annotate", "node", "seed-node-1", "meshcrypt.dev/test=1"]);
    assert!(out.contains("annotated"), "{out}");
    let nodes: Api<Node> = Api::all(server.client().await);
    let n = nodes.get("seed-node-1").await.unwrap();
    let anns = n.metadata.annotations.unwrap_or_default();
    assert_eq!(anns.get("meshcrypt.dev/test").map(String::as_str), Some("1"));
    // Nothing else about the node changed.
    assert_eq!(n.spec.unwrap().pod_cidrs.unwrap(), ["10.244.1.0/24"]);
    assert_eq!(n.status.unwrap().addresses.unwrap()[0].address, "198.18.0.11");

    let json = server.kubectl(&["get", "node", "seed-node-1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["metadata"]["annotations"]["meshcrypt.dev/test"], "1");
}

#[tokio::test]
async fn kubectl_patches_configmaps_with_merge_and_strategic_patches() {
    let server = ServerProcess::start();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");

    server.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mtu":"1420"}}"#,
    ]);
    let cm = cms.get("settings").await.unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data.get("mtu").map(String::as_str), Some("1420"));
    assert_eq!(data.get("mode").map(String::as_str), Some("node"));

    // Default patch type is strategic merge; null deletes a key.
    server.kubectl(&["patch", "configmap", "settings", "-p", r#"{"data":{"mode":"pod","mtu":null}}"#]);
    let data = cms.get("settings").await.unwrap().data.unwrap();
    assert_eq!(data.get("mode").map(String::as_str), Some("pod"));
    assert!(!data.contains_key("mtu"), "{data:?}");
}

#[tokio::test]
async fn kubectl_client_side_apply_creates_then_updates() {
    let server = ServerProcess::start();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let manifest = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: meshcrypt\ndata:\n  enabled: \"true\"\n  port: \"{v}\"\n"
        )
    };
    let file = server.write("cm.yaml", &manifest("51820"));
    let out = server.kubectl(&["apply", "-f", path_str(&file)]);
    assert!(out.contains("created"), "{out}");
    let cm = cms.get("meshcrypt").await.unwrap();
    assert_eq!(cm.data.as_ref().unwrap().get("port").map(String::as_str), Some("51820"));
    let last_applied = cm
        .metadata
        .annotations
        .unwrap_or_default()
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .cloned()
        .expect("kubectl wrote last-applied-configuration");
    assert!(last_applied.contains("51820"));

    let file = server.write("cm.yaml", &manifest("51821"));
    let out = server.kubectl(&["apply", "-f", path_str(&file)]);
    assert!(out.contains("configured"), "{out}");
    let cm = eventually("the applied change", || {
        let cms = cms.clone();
        async move {
            let cm = cms.get("meshcrypt").await.ok()?;
            (cm.data.as_ref()?.get("port")? == "51821").then_some(cm)
        }
    })
    .await;
    assert_eq!(cm.data.unwrap().get("enabled").map(String::as_str), Some("true"));

    // Applying the same file again changes nothing.
    let out = server.kubectl(&["apply", "-f", path_str(&file)]);
    assert!(out.contains("unchanged"), "{out}");
}

#[tokio::test]
async fn kubectl_server_side_apply_creates_and_updates() {
    let server = ServerProcess::start();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let manifest = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"{v}\"\n  b: keep\n")
    };
    let file = server.write("ssa.yaml", &manifest("1"));
    let out = server.kubectl(&["apply", "--server-side", "-f", path_str(&file)]);
    assert!(out.contains("serverside-applied"), "{out}");
    let cm = cms.get("ssa").await.unwrap();
    assert_eq!(cm.data.as_ref().unwrap().get("a").map(String::as_str), Some("1"));
    let managers: Vec<String> =
        cm.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"kubectl".to_string()), "{managers:?}");

    let file = server
        .write("ssa.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"2\"\n");
    server.kubectl(&["apply", "--server-side", "-f", path_str(&file)]);
    let data = cms.get("ssa").await.unwrap().data.unwrap();
    assert_eq!(data.get("a").map(String::as_str), Some("2"));
    assert!(!data.contains_key("b"), "a field kubectl no longer applies is removed: {data:?}");
}

#[tokio::test]
async fn kubectl_with_a_node_token_may_annotate_only_its_own_node() {
    let server = ServerProcess::start();
    let node_kubeconfig = server
        .write("node-1.kubeconfig", &meshcrypt_test_apiserver::kubeconfig_yaml(&server.url, NODE_1_TOKEN));
    let (ok, _, stderr) =
        server.kubectl_with(&node_kubeconfig, &["annotate", "node", "seed-node-2", "meshcrypt.dev/test=1"]);
    assert!(!ok && stderr.contains("Forbidden"), "{stderr}");
    let (ok, stdout, stderr) =
        server.kubectl_with(&node_kubeconfig, &["annotate", "node", "seed-node-1", "meshcrypt.dev/test=1"]);
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, stdout, _) = server.kubectl_with(&node_kubeconfig, &["get", "nodes", "-o", "name"]);
    assert!(ok && stdout.contains("node/seed-node-2"), "{stdout}");

    let nodes: Api<Node> = Api::all(server.client().await);
    let annotated = |name: &'static str| {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get(name).await.unwrap();
            n.metadata.annotations.unwrap_or_default().contains_key("meshcrypt.dev/test")
        }
    };
    assert!(annotated("seed-node-1").await);
    assert!(!annotated("seed-node-2").await);

    // With an unknown token kubectl is turned away.
    let unknown = server
        .write("unknown.kubeconfig", &meshcrypt_test_apiserver::kubeconfig_yaml(&server.url, "wrong-token"));
    let (ok, _, stderr) = server.kubectl_with(&unknown, &["get", "nodes"]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("Unauthorized") || stderr.contains("logged in"), "{stderr}");
}

#[tokio::test]
async fn kubectl_upgrades_from_client_side_to_server_side_apply() {
    let server = ServerProcess::start();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let manifest = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: upgrade\ndata:\n  a: \"{v}\"\n")
    };
    let file = server.write("upgrade.yaml", &manifest("1"));
    server.kubectl(&["apply", "-f", path_str(&file)]);
    // The field is owned by kubectl-client-side-apply; a real API server lets `kubectl apply
    // --server-side` take over what the last-applied annotation records, without --force.
    let file = server.write("upgrade.yaml", &manifest("2"));
    let out = server.kubectl(&["apply", "--server-side", "-f", path_str(&file)]);
    assert!(out.contains("serverside-applied"), "{out}");
    let cm = cms.get("upgrade").await.unwrap();
    assert_eq!(cm.data.unwrap().get("a").map(String::as_str), Some("2"));
    let last = cm.metadata.annotations.unwrap_or_default();
    let last = last.get("kubectl.kubernetes.io/last-applied-configuration").expect("annotation kept");
    assert!(last.contains(r#""a":"2""#), "annotation synced to the applied config: {last}");
    // And client-side apply keeps working afterwards.
    let file = server.write("upgrade.yaml", &manifest("3"));
    server.kubectl(&["apply", "-f", path_str(&file)]);
    let cm = cms.get("upgrade").await.unwrap();
    assert_eq!(cm.data.unwrap().get("a").map(String::as_str), Some("3"));
}
