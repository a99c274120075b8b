//! `deploy/base/crds.yaml` is what `meshcrypt crd` prints: the manifest cannot drift
//! from the type the agents and the registry read and write.

use std::process::Command;

#[test]
fn the_deployed_crd_is_the_generated_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshcrypt")).arg("crd").output().expect("run meshcrypt crd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated = documents(&String::from_utf8(out.stdout).expect("UTF-8"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/crds.yaml");
    let deployed = documents(&std::fs::read_to_string(path).expect("read the manifest"));
    assert_eq!(deployed, generated, "regenerate it: (header; meshcrypt crd) > deploy/base/crds.yaml");
    let names: Vec<&yaml_serde::Value> = generated.iter().map(|d| &d["metadata"]["name"]).collect();
    assert_eq!(names, ["remoteclusters.meshcrypt.dev", "meshnodes.meshcrypt.dev", "meshpeers.meshcrypt.dev"]);
    assert!(generated.iter().all(|d| d["spec"]["scope"] == "Cluster"));
}

fn documents(text: &str) -> Vec<yaml_serde::Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .collect()
}
