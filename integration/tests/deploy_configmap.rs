//! The agent parses the ConfigMap the manifests ship: the built `meshcrypt config check` (the
//! agent's own strict parser) accepts the rendered base and `eks` overlay, every key the agent
//! knows is set and commented in the base, and a hostile value is rejected naming its key. So the
//! manifest and the code cannot drift apart.

use meshcrypt_integration::manifests::workspace_root;
use std::process::{Command, Output};

use meshcrypt_integration::cluster::meshcrypt_bin;

/// `meshcrypt config check` on `yaml` (written to a file, as an operator would).
fn config_check(yaml: &str) -> Output {
    let bin = meshcrypt_bin().expect("the meshcrypt binary (cargo build -p meshcrypt, or MESHCRYPT_BIN)");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write manifest");
    Command::new(&bin).args(["config", "check"]).arg(&file).output().expect("run meshcrypt config check")
}

/// The `key origin value` lines `config check` prints for a valid ConfigMap.
fn settings(out: &Output) -> Vec<(String, String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned(), words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn assert_accepted(dir: &str) -> Vec<(String, String, String)> {
    let out = config_check(&meshcrypt_integration::manifests::render(dir).expect("render"));
    assert!(
        out.status.success(),
        "meshcrypt config check rejected the {dir} ConfigMap: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{dir}: {}", String::from_utf8_lossy(&out.stdout));
    settings(&out)
}

fn value<'a>(settings: &'a [(String, String, String)], key: &str) -> &'a str {
    &settings.iter().find(|(k, _, _)| k == key).unwrap_or_else(|| panic!("{key} not reported")).2
}

#[test]
fn agent_accepts_the_base_configmap_and_it_sets_every_key() {
    let settings = assert_accepted("base");
    assert!(settings.len() >= 9, "config check reported {settings:?}");
    // The agent reports each key it knows as "set" (in the ConfigMap) or "default": the base sets
    // them all, so a key added to the agent without a line in the manifest fails here.
    let defaulted: Vec<&str> =
        settings.iter().filter(|(_, origin, _)| origin != "set").map(|(k, _, _)| k.as_str()).collect();
    assert!(
        defaulted.is_empty(),
        "keys the agent knows but deploy/base/configmap.yaml does not set: {defaulted:?}"
    );
    assert_eq!(value(&settings, "pod-networks"), "10.244.0.0/16");

    // And each is documented: a comment right above its line in the base file.
    let text =
        std::fs::read_to_string(workspace_root().join("deploy/base/configmap.yaml")).expect("configmap.yaml");
    let lines: Vec<&str> = text.lines().collect();
    for (key, _, _) in &settings {
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("{key} not in deploy/base/configmap.yaml"));
        assert!(at > 0 && lines[at - 1].trim_start().starts_with('#'), "{key} has no comment above it");
    }
}

#[test]
fn agent_accepts_the_eks_overlay_configmap() {
    let settings = assert_accepted("overlays/eks");
    assert_eq!(value(&settings, "addressing"), "pod-ip");
    assert_eq!(value(&settings, "mtu"), "auto");
    assert_eq!(value(&settings, "strict"), "true");
}

#[test]
fn agent_rejects_a_bad_value_naming_the_key() {
    let manifest = meshcrypt_integration::manifests::render("overlays/eks")
        .expect("render")
        .replace("mtu: auto", "mtu: \"70000\"");
    assert!(manifest.contains("mtu: \"70000\""), "the rendered ConfigMap has an mtu line to change");
    let out = config_check(&manifest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mtu 70000 accepted: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("mtu: \"70000\""), "the error names the key and value: {stderr}");

    let out = config_check(
        &meshcrypt_integration::manifests::render("base")
            .expect("render")
            .replace("strict: \"true\"", "strict: \"yes\"\n  surprise: \"1\""),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("strict") && stderr.contains("surprise"), "every bad key is named: {stderr}");
}

/// The DaemonSet's command line is one the built agent accepts: every flag exists and every
/// value parses (`--help` at the end stops it before it would start).
#[test]
fn agent_accepts_the_daemonset_command_line() {
    let yaml = meshcrypt_integration::manifests::render("overlays/eks").expect("render");
    let daemonset = yaml_serde::Deserializer::from_str(&yaml)
        .map(|doc| <yaml_serde::Value as serde::Deserialize>::deserialize(doc).expect("valid YAML"))
        .find(|doc| doc["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").replace("$(NODE_NAME)", "ip-10-0-1-23.ec2.internal"))
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("agent"));
    let bin = meshcrypt_bin().expect("the meshcrypt binary");
    let out = Command::new(&bin).args(&args).arg("--help").output().expect("run meshcrypt");
    assert!(
        out.status.success(),
        "meshcrypt {} rejected: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    // And a flag the agent does not know would have been caught.
    let out =
        Command::new(&bin).args(&args).args(["--no-such-flag", "--help"]).output().expect("run meshcrypt");
    assert!(!out.status.success());
}

/// The lab runs its agents with the names and port the manifests use.
#[test]
fn lab_uses_the_manifests_names() {
    use meshcrypt_integration::cluster::{CONFIG_MAP, CONFIG_NAMESPACE, METRICS_PORT};
    let yaml = meshcrypt_integration::manifests::render("overlays/eks").expect("render");
    let docs: Vec<yaml_serde::Value> = yaml_serde::Deserializer::from_str(&yaml)
        .map(|doc| <yaml_serde::Value as serde::Deserialize>::deserialize(doc).expect("valid YAML"))
        .collect();
    let configmap = docs.iter().find(|d| d["kind"].as_str() == Some("ConfigMap")).expect("a ConfigMap");
    assert_eq!(configmap["metadata"]["name"].as_str(), Some(CONFIG_MAP));
    assert_eq!(configmap["metadata"]["namespace"].as_str(), Some(CONFIG_NAMESPACE));
    let daemonset = docs.iter().find(|d| d["kind"].as_str() == Some("DaemonSet")).expect("a DaemonSet");
    let probe_port =
        &daemonset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"];
    assert_eq!(probe_port.as_u64(), Some(u64::from(METRICS_PORT)));
}
