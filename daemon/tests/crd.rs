//! `deploy/base/remotecluster-crd.yaml` is what `meshcrypt crd` prints: the manifest cannot drift
//! from the type the agents and the registry read and write.

use std::process::Command;

#[test]
fn the_deployed_crd_is_the_generated_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshcrypt")).arg("crd").output().expect("run meshcrypt crd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated: yaml_serde::Value = yaml_serde::from_slice(&out.stdout).expect("YAML");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/remotecluster-crd.yaml");
    let deployed: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(path).expect("read the manifest")).expect("YAML");
    assert_eq!(
        deployed, generated,
        "regenerate it: (header; meshcrypt crd) > deploy/base/remotecluster-crd.yaml"
    );
    assert_eq!(generated["spec"]["scope"], "Cluster");
    assert_eq!(generated["metadata"]["name"], "remoteclusters.meshcrypt.dev");
}
