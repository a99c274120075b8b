//! The real kubectl binary against the standalone `test-apiserver` binary: discovery, OpenAPI,
//! get (with `-o wide`), annotate, patch (merge and strategic), client-side and server-side apply,
//! the protobuf bodies of `kubectl create`, server-side dry run and `kubectl diff`, `auth can-i`,
//! Events recorded through events.k8s.io in `get events` and `describe node`, and the annotation
//! size limit.

mod apiserver_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use apiserver_support::{client_for_url, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, ServiceAccount};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

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
    labels: {node-role.kubernetes.io/control-plane: ""}
  spec:
    podCIDRs: [10.244.1.0/24]
  status:
    addresses: [{type: InternalIP, address: 198.18.0.11}, {type: ExternalIP, address: 203.0.113.11}]
    conditions: [{type: Ready, status: "True"}]
    nodeInfo:
      kubeletVersion: v1.32.1-eks-5d632ec
      osImage: Amazon Linux 2023.6.20250115
      kernelVersion: 6.1.119-129.201.amzn2023.x86_64
      containerRuntimeVersion: containerd://1.7.25
- apiVersion: v1
  kind: Node
  metadata:
    name: seed-node-2
  spec:
    podCIDRs: [10.244.2.0/24]
    unschedulable: true
  status:
    addresses: [{type: InternalIP, address: 198.18.0.12}]
    conditions: [{type: Ready, status: "False"}]
    nodeInfo: {kubeletVersion: v1.32.1-eks-5d632ec}
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
        let run = self.kubectl_with(&self.kubeconfig, args);
        assert!(run.ok(), "kubectl {args:?} failed: {}\n{}", run.stdout, run.stderr);
        run.stdout
    }

    /// Runs kubectl with the given kubeconfig, whatever its outcome.
    fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> KubectlRun {
        let out = Command::new(KUBECTL)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        KubectlRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
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

/// One kubectl run: its exit code and output.
struct KubectlRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl KubectlRun {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The cells of one line of kubectl's table output (columns are separated by 2+ spaces).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()
}

/// The row of `name` in kubectl's table output.
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(cells)
        .find(|c| c.contains(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{out}"))
}

/// The server's current resourceVersion, as a list reports it.
async fn current_rv(cms: &Api<ConfigMap>) -> String {
    cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap()
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
    let run =
        server.kubectl_with(&node_kubeconfig, &["annotate", "node", "seed-node-2", "meshcrypt.dev/test=1"]);
    assert!(!run.ok() && run.stderr.contains("Forbidden"), "{}", run.stderr);
    let run =
        server.kubectl_with(&node_kubeconfig, &["annotate", "node", "seed-node-1", "meshcrypt.dev/test=1"]);
    assert!(run.ok(), "{}\n{}", run.stdout, run.stderr);
    let run = server.kubectl_with(&node_kubeconfig, &["get", "nodes", "-o", "name"]);
    assert!(run.ok() && run.stdout.contains("node/seed-node-2"), "{}", run.stdout);

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
    let run = server.kubectl_with(&unknown, &["get", "nodes"]);
    assert!(!run.ok(), "{}", run.stderr);
    assert!(run.stderr.contains("Unauthorized") || run.stderr.contains("logged in"), "{}", run.stderr);
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

#[tokio::test]
async fn kubectl_shows_events_recorded_through_events_k8s_io() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::Event as NewEvent;
    use kube::api::{Patch, PatchParams, PostParams};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let server = ServerProcess::start();
    let admin = server.client().await;
    let node = Api::<Node>::all(admin.clone()).get("seed-node-1").await.unwrap();
    // As the agent does: kube-rs's Recorder with a node token, a reference that carries the uid.
    let recorder = Recorder::new(
        client_for_url(&server.url, Some(NODE_1_TOKEN)).await,
        Reporter { controller: "meshcrypt".into(), instance: Some("seed-node-1".into()) },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("seed-node-1".into()),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "NoKey".into(),
        note: Some("the first cause".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    // The cause changed: the same Event's note and series move on (a merge patch, as recorders send).
    let events: Api<NewEvent> = Api::namespaced(admin.clone(), "default");
    let recorded = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let name = recorded[0].metadata.name.clone().unwrap();
    let observed = serde_json::to_value(&recorded[0].event_time).unwrap();
    events
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"note": "the latest cause", "series": {"count": 3, "lastObservedTime": observed}}),
            ),
        )
        .await
        .unwrap();
    // An Event about the other node, written through core/v1, as older clients do.
    let core: Api<CoreEvent> = Api::namespaced(admin, "default");
    let other: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "seed-node-2.other"},
        "involvedObject": {"kind": "Node", "name": "seed-node-2", "uid": "seed-node-2"},
        "reason": "Other",
        "message": "about the other node",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "seed-node-2"},
    }))
    .unwrap();
    core.create(&PostParams::default(), &other).await.unwrap();

    let out = server.kubectl(&["get", "events", "-A"]);
    assert_eq!(
        cells(out.lines().next().unwrap()),
        ["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    let r = row(&out, "NoKey");
    assert_eq!(
        [r[0], r[2], r[3], r[4], r[5]],
        ["default", "Warning", "NoKey", "node/seed-node-1", "the latest cause"]
    );
    assert!(out.contains("about the other node"), "{out}");
    // Both versions list both Events.
    let out = server.kubectl(&["get", "events.v1.events.k8s.io", "-A", "-o", "name"]);
    assert!(out.contains(&name) && out.contains("seed-node-2.other"), "{out}");

    let out = server.kubectl(&["describe", "node", "seed-node-1"]);
    let described = out.split("Events:").nth(1).unwrap_or_else(|| panic!("no Events section:\n{out}"));
    assert!(described.contains("Warning") && described.contains("NoKey"), "{described}");
    assert!(described.contains("(x3 over") && described.contains("meshcrypt"), "{described}");
    assert!(described.contains("the latest cause"), "{described}");
    assert!(
        !described.contains("the first cause") && !described.contains("about the other node"),
        "{described}"
    );
    let out = server.kubectl(&["describe", "node", "seed-node-2"]);
    assert!(out.split("Events:").nth(1).is_some_and(|e| e.contains("about the other node")), "{out}");
}

#[tokio::test]
async fn kubectl_creates_objects_with_protobuf_bodies() {
    let server = ServerProcess::start();
    let client = server.client().await;
    assert!(server.kubectl(&["create", "namespace", "x"]).contains("namespace/x created"));
    let out = server.kubectl(&["create", "configmap", "y", "--from-literal=a=b", "-n", "x"]);
    assert!(out.contains("configmap/y created"), "{out}");
    let out = server.kubectl(&["create", "secret", "generic", "s", "--from-literal=k=v", "-n", "x"]);
    assert!(out.contains("secret/s created"), "{out}");
    let out = server.kubectl(&["create", "serviceaccount", "sa", "-n", "x"]);
    assert!(out.contains("serviceaccount/sa created"), "{out}");

    let ns = Api::<Namespace>::all(client.clone()).get("x").await.unwrap();
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "x").get("y").await.unwrap();
    assert_eq!(cm.data.unwrap().get("a").map(String::as_str), Some("b"));
    let secret = Api::<Secret>::namespaced(client.clone(), "x").get("s").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret.data.unwrap().get("k").map(|v| v.0.as_slice()), Some(&b"v"[..]));
    Api::<ServiceAccount>::namespaced(client, "x").get("sa").await.unwrap();
    assert_eq!(server.kubectl(&["get", "configmap", "y", "-n", "x", "-o", "jsonpath={.data.a}"]), "b");
    // Creating it again is refused as a real server refuses it.
    let run = server.kubectl_with(&server.kubeconfig, &["create", "namespace", "x"]);
    assert!(!run.ok() && run.stderr.contains("AlreadyExists"), "{}", run.stderr);
}

#[tokio::test]
async fn kubectl_diff_and_server_side_dry_run_change_nothing() {
    let server = ServerProcess::start();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let manifest = |port: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\ndata:\n  enabled: \"true\"\n  port: \"{port}\"\n"
        )
    };
    let file = server.write("dry.yaml", &manifest("51820"));
    let rv = current_rv(&cms).await;
    let out = server.kubectl(&["apply", "--dry-run=server", "-f", path_str(&file)]);
    assert!(out.contains("created (server dry run)"), "{out}");
    assert!(cms.get_opt("dry").await.unwrap().is_none(), "a dry-run create stores nothing");
    assert_eq!(current_rv(&cms).await, rv);

    server.kubectl(&["apply", "-f", path_str(&file)]);
    let file = server.write("dry.yaml", &manifest("51821"));
    let rv = current_rv(&cms).await;
    let diff = server.kubectl_with(&server.kubeconfig, &["diff", "-f", path_str(&file)]);
    assert_eq!(diff.code, Some(1), "kubectl diff finds a change: {}\n{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains("-  port: \"51820\"") && diff.stdout.contains("+  port: \"51821\""),
        "{}",
        diff.stdout
    );
    let out = server.kubectl(&["apply", "--dry-run=server", "-f", path_str(&file)]);
    assert!(out.contains("configured (server dry run)"), "{out}");
    let out = server.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        path_str(&file),
    ]);
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    let out =
        server.kubectl(&["patch", "configmap", "dry", "--dry-run=server", "-p", r#"{"data":{"port":"1"}}"#]);
    // (kubectl patch names no dry run in its output; the request carries dryRun=All.)
    assert!(out.contains("configmap/dry patched"), "{out}");
    let out = server.kubectl(&["delete", "configmap", "dry", "--dry-run=server"]);
    assert!(out.contains("deleted (server dry run)"), "{out}");
    let cm = cms.get("dry").await.unwrap();
    assert_eq!(cm.data.unwrap().get("port").map(String::as_str), Some("51820"), "dry runs changed nothing");
    assert_eq!(current_rv(&cms).await, rv, "dry runs bumped no resourceVersion");

    server.kubectl(&["apply", "-f", path_str(&file)]);
    let diff = server.kubectl_with(&server.kubeconfig, &["diff", "-f", path_str(&file)]);
    assert_eq!(diff.code, Some(0), "nothing to diff after apply: {}\n{}", diff.stdout, diff.stderr);
    assert!(diff.stdout.is_empty(), "{}", diff.stdout);
}

#[tokio::test]
async fn kubectl_get_nodes_wide_prints_the_nodes_status() {
    let server = ServerProcess::start();
    let out = server.kubectl(&["get", "nodes", "-o", "wide"]);
    assert_eq!(
        cells(out.lines().next().unwrap()),
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    let r = row(&out, "seed-node-1");
    assert_eq!(
        [r[0], r[1], r[2], r[4], r[5], r[6], r[7], r[8], r[9]],
        [
            "seed-node-1",
            "Ready",
            "control-plane",
            "v1.32.1-eks-5d632ec",
            "198.18.0.11",
            "203.0.113.11",
            "Amazon Linux 2023.6.20250115",
            "6.1.119-129.201.amzn2023.x86_64",
            "containerd://1.7.25"
        ]
    );
    let r = row(&out, "seed-node-2");
    assert_eq!(
        [r[0], r[1], r[2], r[5], r[6], r[7], r[8], r[9]],
        [
            "seed-node-2",
            "NotReady,SchedulingDisabled",
            "<none>",
            "198.18.0.12",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ]
    );
    // Without -o wide the wide columns stay hidden.
    let out = server.kubectl(&["get", "nodes"]);
    assert_eq!(cells(out.lines().next().unwrap()), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
}

#[tokio::test]
async fn kubectl_auth_can_i_asks_the_servers_authorizer() {
    let server = ServerProcess::start();
    let node = server
        .write("node-1.kubeconfig", &meshcrypt_test_apiserver::kubeconfig_yaml(&server.url, NODE_1_TOKEN));
    let can_i = |kubeconfig: &Path, args: &[&str]| {
        let run = server.kubectl_with(kubeconfig, &[&["auth", "can-i"], args].concat());
        let answer = run.stdout.trim().to_string();
        assert!(
            (run.ok() && answer == "yes") || (run.code == Some(1) && answer == "no"),
            "kubectl auth can-i {args:?}: {answer}\n{}",
            run.stderr
        );
        answer == "yes"
    };
    assert!(!can_i(&node, &["patch", "nodes/seed-node-2"]));
    assert!(can_i(&node, &["patch", "nodes/seed-node-1"]));
    assert!(can_i(&node, &["list", "nodes"]));
    assert!(can_i(&node, &["create", "events.events.k8s.io"]));
    assert!(can_i(&node, &["patch", "events"]));
    assert!(!can_i(&node, &["create", "configmaps"]));
    assert!(!can_i(&node, &["delete", "nodes/seed-node-2"]));
    assert!(can_i(&server.kubeconfig, &["patch", "nodes/seed-node-2"]));
    assert!(can_i(&server.kubeconfig, &["delete", "configmaps", "-n", "kube-system"]));
}

#[tokio::test]
async fn kubectl_is_refused_annotations_over_256_kib() {
    let server = ServerProcess::start();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    // Keys and values count: "big" plus the value is one byte over 262144.
    let patch = |len: usize| json!({"metadata": {"annotations": {"big": "x".repeat(len)}}}).to_string();
    let file = server.write("big.json", &patch(262_144 - 3 + 1));
    let rv = current_rv(&cms).await;
    let run = server.kubectl_with(
        &server.kubeconfig,
        &["patch", "configmap", "settings", "--type", "merge", "--patch-file", path_str(&file)],
    );
    assert!(!run.ok(), "{}", run.stdout);
    assert!(
        run.stderr.contains(
            r#"ConfigMap "settings" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"#
        ),
        "{}",
        run.stderr
    );
    let cm = cms.get("settings").await.unwrap();
    assert!(cm.metadata.annotations.is_none(), "the stored object is unchanged");
    assert_eq!(current_rv(&cms).await, rv);
    // Exactly at the limit is fine.
    let file = server.write("big.json", &patch(262_144 - 3));
    server.kubectl(&["patch", "configmap", "settings", "--type", "merge", "--patch-file", path_str(&file)]);
    let cm = cms.get("settings").await.unwrap();
    assert_eq!(cm.metadata.annotations.unwrap()["big"].len(), 262_141);
}
