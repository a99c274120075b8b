//! The `deploy/` manifests as tests and the lab read them: rendered by `kubectl kustomize`, split
//! into documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

/// The workspace's root directory (the parent of `integration/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("integration/ has a parent").to_path_buf()
}

/// `kubectl kustomize deploy/<dir>`: the YAML text, or why it could not be rendered.
pub fn render(dir: &str) -> Result<String, String> {
    let path = workspace_root().join("deploy").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run kubectl (scripts/setup.sh checks for it): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("kustomize printed non-UTF-8: {e}"))
}

/// The documents of a multi-document YAML text, as JSON values.
pub fn documents(yaml: &str) -> Result<Vec<Value>, String> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| {
            let value = yaml_serde::Value::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
            serde_json::to_value(value).map_err(|e| format!("YAML that is not JSON: {e}"))
        })
        .collect()
}
