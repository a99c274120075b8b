//! `meshcrypt audit` on the lab as an assessor runs it, with a read-only kubeconfig: a healthy lab is
//! compliant (exit 0), a pod on a branch ENI listed as an exception; with one node's agent down, one node's key older than the policy and one
//! node with strict off, it is not (exit 2) and names all three and why; a key annotation
//! changed with kubectl is reported by the node's agent as a Warning Event and by the audit. The
//! JSON is asserted and its content hash recomputed independently (Python); the Markdown is
//! printed (run with `--nocapture` to see both reports).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use serde_json::Value;

const KUBECTL: &str = "/usr/bin/kubectl";

/// `meshcrypt audit ARGS`: (exit code, stdout), panicking with stderr when it could not audit.
fn audit(binary: &Path, kubeconfig: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(binary)
        .args(["audit", "--kubeconfig", kubeconfig])
        .args(args)
        .output()
        .expect("run meshcrypt audit");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 2,
        "meshcrypt audit {args:?} exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, String::from_utf8(out.stdout).expect("UTF-8"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The violations as `node code`, sorted.
fn violations(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "violation")
        .map(|f| format!("{} {}", f["subject"].as_str().unwrap(), f["code"].as_str().unwrap()))
        .collect();
    out.sort();
    out
}

/// The content hash as documented, computed by Python's json module rather than ours.
fn python_hash(file: &Path) -> String {
    let script = "import json,sys,hashlib\nd=json.load(open(sys.argv[1]))\nd.pop('contentHash')\n\
                  print('sha256:'+hashlib.sha256(json.dumps(d,sort_keys=True,separators=(',',':'),ensure_ascii=False).encode()).hexdigest())";
    let out = Command::new("python3").args(["-c", script]).arg(file).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8").trim().to_owned()
}

#[test]
fn audit_passes_a_healthy_lab_and_names_a_stopped_agent_an_old_key_strict_off_and_a_foreign_writer() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    // No `strict` key: each agent's flag decides (the default, true; node-1 is started without).
    options.config_map = Some(Default::default());
    // Reports every 5 s at least, a change after 1 s: the audit follows quickly.
    options.extra_args = vec!["--status-interval".into(), "5".into()];
    let binary = options.binary.clone();
    let mut cluster = Cluster::start(4, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    cluster.api().write_kubeconfig(&kubeconfig, cluster.api().admin_token()).expect("kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("path");
    // The audit runs as an auditor whose token may only read: any write would be refused (403)
    // and the audit would exit 1.
    let auditor = dir.path().join("auditor.kubeconfig");
    cluster.api().write_kubeconfig(&auditor, &cluster.api().add_reader_token()).expect("kubeconfig");
    let auditor = auditor.to_str().expect("path");
    let json_out = dir.path().join("report.json");
    let json_arg = json_out.to_str().expect("path");

    // A pod with security groups of its own (a branch ENI): an exception, not a fault.
    cluster
        .api()
        .create(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "payments-0", "namespace": "shop", "annotations": {
                "vpc.amazonaws.com/pod-eni": r#"[{"eniId":"eni-0abc","ifAddress":"0a:1b:2c:3d:4e:5f","privateIp":"10.0.1.5"}]"#}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app"}]},
        }))
        .expect("a branch-ENI pod");

    // Healthy: every agent has reported ready with its three peers.
    let healthy = poll(Duration::from_secs(20), || {
        let (code, text) = audit(&binary, auditor, &["-o", "json"]);
        let report = json(&text);
        let meshed = report["coverage"].as_array().unwrap().iter().all(|c| c["peers"] == 3);
        if code == 0 && meshed {
            Ok(report)
        } else {
            Err(format!("exit {code}: {:?}; {}", violations(&report), report["coverage"]))
        }
    })
    .expect("a healthy lab is compliant");
    assert_eq!(healthy["schema"], "meshcrypt.dev/audit-report/v1");
    assert_eq!(healthy["verdict"], "compliant");
    assert_eq!(healthy["summary"]["nodes"], 4);
    assert_eq!(healthy["summary"]["compliant"], 4, "{}", healthy["coverage"]);
    let inventory = healthy["keyInventory"].as_array().unwrap();
    assert_eq!(inventory.len(), 4);
    for key in inventory {
        assert_eq!(key["writtenBy"], serde_json::json!(["meshcrypt"]), "{key}");
        assert_eq!(key["withinPolicy"], true, "{key}");
        assert!(key["fingerprint"].as_str().unwrap().starts_with("sha256:"), "{key}");
    }
    let kinds: Vec<&str> =
        healthy["exceptions"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"same-node-traffic") && kinds.contains(&"host-encryption-off"), "{kinds:?}");
    let eni =
        healthy["exceptions"].as_array().unwrap().iter().find(|e| e["kind"] == "branch-eni-pod").cloned();
    assert_eq!(
        eni.map(|e| e["subject"].clone()),
        Some("shop/payments-0".into()),
        "{}",
        healthy["exceptions"]
    );
    let config = &healthy["configuration"];
    assert_eq!(config["found"], true);
    assert!(config["resourceVersion"].is_string(), "{config}");
    assert!(!config["managers"].as_array().unwrap().is_empty(), "who wrote the ConfigMap: {config}");
    let (code, markdown) = audit(&binary, auditor, &["--json-out", json_arg]);
    assert_eq!(code, 0);
    let filed = json(&std::fs::read_to_string(&json_out).expect("the JSON written"));
    assert_eq!(python_hash(&json_out), filed["contentHash"], "the content hash recomputed independently");
    assert!(
        markdown.contains(filed["contentHash"].as_str().unwrap()),
        "the Markdown carries the JSON's hash"
    );
    println!("$ meshcrypt audit   # healthy\n{markdown}");

    // node-1 with strict off; node-2's key made 100 days old (its record's creation time); node-3's
    // agent stopped.
    cluster.stop_agent("node-1").expect("stop node-1's agent");
    cluster.start_agent_with("node-1", &["--strict=false"]).expect("node-1 without strict");
    cluster.stop_agent("node-2").expect("stop node-2's agent");
    cluster.age_key("node-2", Duration::from_secs(100 * 86_400)).expect("age the key");
    cluster.start_agent("node-2").expect("node-2 again");
    cluster.stop_agent("node-3").expect("stop node-3's agent");

    // A key annotation changed by someone else: kubectl, as a cluster admin.
    let out = Command::new(KUBECTL)
        .args(["--kubeconfig", kubeconfig, "--cache-dir"])
        .arg(dir.path().join("cache"))
        .args(["annotate", "node", "node-0", "--overwrite", "meshcrypt.dev/key-created=2020-01-01T00:00:00Z"])
        .output()
        .expect("kubectl annotate");
    assert!(out.status.success(), "kubectl annotate: {}", String::from_utf8_lossy(&out.stderr));
    let event = poll(Duration::from_secs(20), || {
        let found = cluster.events("ForeignKeyWriter");
        found
            .into_iter()
            .find(|e| e["regarding"]["name"] == "node-0")
            .ok_or_else(|| "no ForeignKeyWriter Event on node-0".to_owned())
    })
    .expect("the agent names the foreign writer");
    assert_eq!(event["type"], "Warning");
    assert!(event["note"].as_str().unwrap().contains("kubectl"), "{event}");

    let want = ["node-1 StrictOff", "node-2 KeyTooOld", "node-3 AgentStopped"];
    let failing = poll(Duration::from_secs(30), || {
        let (code, text) = audit(&binary, auditor, &["-o", "json", "--max-key-age", "90d"]);
        let report = json(&text);
        let seen = violations(&report);
        let foreign =
            report["findings"].as_array().unwrap().iter().any(|f| {
                f["subject"] == "node-0" && f["code"].as_str().unwrap().starts_with("ForeignKeyWriter")
            });
        if code == 2 && seen == want && foreign {
            Ok(report)
        } else {
            Err(format!("exit {code}: {seen:?}, foreign writer {foreign}"))
        }
    })
    .expect("the audit names all three");
    assert_eq!(failing["verdict"], "not-compliant");
    let coverage: Vec<String> = failing["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!("{} {} {}", c["node"].as_str().unwrap(), c["agent"].as_str().unwrap(), c["compliant"])
        })
        .collect();
    assert_eq!(
        coverage,
        ["node-0 ready true", "node-1 ready false", "node-2 ready false", "node-3 stopped false"]
    );
    let aged_key =
        failing["keyInventory"].as_array().unwrap().iter().find(|k| k["node"] == "node-2").unwrap();
    assert_eq!(aged_key["withinPolicy"], false);
    assert!(aged_key["ageSeconds"].as_u64().unwrap() >= 100 * 86_400, "{aged_key}");
    let (code, markdown) = audit(&binary, auditor, &[]);
    assert_eq!(code, 2);
    for line in ["StrictOff", "KeyTooOld", "AgentStopped", "NOT COMPLIANT"] {
        assert!(markdown.contains(line), "{line} in the Markdown");
    }
    println!(
        "$ meshcrypt audit   # node-1 strict off, node-2's key 100 days old, node-3's agent stopped\n{markdown}"
    );
}
