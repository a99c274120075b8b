//! The flow-logs component (`deploy/components/flow-logs`): on the `eks` overlays it validates
//! with kubernetes-validate --strict, and its Fluent Bit tails the file the agent writes: the
//! agent's default `--flow-log`, on the hostPath the agent's DaemonSet mounts, read-only here.

use std::process::Command;

use meshcrypt_integration::cluster::meshcrypt_bin;
use meshcrypt_integration::manifests::{documents, render_composed, validate_strictly};
use serde_json::Value as Json;

const OVERLAYS: [&str; 2] = ["overlays/eks", "overlays/eks-multicluster"];

fn daemonset<'a>(docs: &'a [Json], name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name}"))
}

/// (hostPath, mountPath, readOnly) of the volume mounted at `mount` in the DaemonSet's first
/// container.
fn host_mount(ds: &Json, mount: &str) -> (String, String, bool) {
    let pod = &ds["spec"]["template"]["spec"];
    let m = pod["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mountPath"] == mount))
        .unwrap_or_else(|| panic!("nothing mounted at {mount}"));
    let volume =
        pod["volumes"].as_array().and_then(|vs| vs.iter().find(|v| v["name"] == m["name"])).expect("volume");
    let host = volume["hostPath"]["path"].as_str().expect("a hostPath").to_owned();
    (host, mount.to_owned(), m["readOnly"].as_bool().unwrap_or(false))
}

#[test]
fn fluent_bit_tails_the_file_the_agent_writes() {
    let help = Command::new(meshcrypt_bin().expect("meshcrypt binary"))
        .args(["agent", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: /var/log/meshcrypt/flows.log]"), "{help}");
    for overlay in OVERLAYS {
        let yaml = render_composed(&[overlay], &["components/flow-logs"]).expect("render");
        for version in ["1.30.0", "1.33.0"] {
            let report = validate_strictly(&yaml, version).expect("kubernetes-validate");
            assert!(report.success && report.errors.is_empty(), "{overlay} on {version}: {report:#?}");
        }
        let docs = documents(&yaml).expect("documents");
        let agent = daemonset(&docs, "meshcrypt");
        let args: Vec<&str> = agent["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Json::as_str)
            .collect();
        assert!(!args.contains(&"--flow-log"), "{overlay}: the agent writes its default path");
        assert_eq!(
            host_mount(agent, "/var/log/meshcrypt"),
            ("/var/log/meshcrypt".into(), "/var/log/meshcrypt".into(), false)
        );
        let shipper = daemonset(&docs, "meshcrypt-flow-logs");
        let affinity = |ds: &Json| ds["spec"]["template"]["spec"]["affinity"].clone();
        assert_eq!(affinity(shipper), affinity(agent), "{overlay}: Fluent Bit runs where the agent does");
        assert_eq!(
            host_mount(shipper, "/var/log/meshcrypt"),
            ("/var/log/meshcrypt".into(), "/var/log/meshcrypt".into(), true)
        );
        let config = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "meshcrypt-flow-logs")
            .expect("Fluent Bit's ConfigMap");
        let conf = config["data"]["fluent-bit.conf"].as_str().expect("fluent-bit.conf");
        let setting = |section: &str, key: &str| -> Option<String> {
            let body = conf.split('[').find(|s| s.starts_with(&format!("{section}]")))?;
            body.lines().map(str::trim).find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim().to_owned())
            })
        };
        assert_eq!(setting("INPUT", "Path").as_deref(), Some("/var/log/meshcrypt/flows.log"), "{overlay}");
        assert_eq!(setting("OUTPUT", "Name").as_deref(), Some("cloudwatch_logs"));
        assert_eq!(setting("OUTPUT", "log_key").as_deref(), Some("log"), "records go unchanged");
        assert_eq!(setting("INPUT", "Tag"), setting("OUTPUT", "Match"));
    }
}
