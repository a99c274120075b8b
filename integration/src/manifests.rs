//! The `deploy/` manifests as tests and the lab read them: rendered by `kubectl kustomize` (an
//! overlay as it is, or overlays and components composed in a temporary kustomization), split into
//! documents, and checked by kubernetes-validate.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

/// The workspace's root directory (the parent of `integration/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("integration/ has a parent").to_path_buf()
}

/// `kubectl kustomize deploy/<dir>`: the YAML text, or why it could not be rendered.
pub fn render(dir: &str) -> Result<String, String> {
    render_path(&workspace_root().join("deploy").join(dir))
}

/// `kubectl kustomize` of a kustomization made for the occasion: `resources` and `components`
/// are directories under `deploy/` (e.g. `overlays/eks` and `components/monitoring`), composed as
/// an overlay of a cluster's own would compose them.
pub fn render_composed(resources: &[&str], components: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    // kustomize takes no absolute path to a directory, only one relative to the kustomization.
    let deploy = relative_to(dir.path(), &workspace_root().join("deploy"))?;
    let list = |dirs: &[&str]| -> String {
        dirs.iter().map(|d| format!("  - {}/{d}\n", deploy.display())).collect()
    };
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{}components:\n{}",
        list(resources),
        list(components)
    );
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization)
        .map_err(|e| format!("cannot write the temporary kustomization: {e}"))?;
    render_path(dir.path())
}

/// `target` as a path relative to the directory `from` (both made absolute and free of symlinks).
fn relative_to(from: &Path, target: &Path) -> Result<PathBuf, String> {
    let canonical = |p: &Path| p.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", p.display()));
    let (from, target) = (canonical(from)?, canonical(target)?);
    let common = from.components().zip(target.components()).take_while(|(a, b)| a == b).count();
    let mut relative: PathBuf = from.components().skip(common).map(|_| Component::ParentDir).collect();
    relative.extend(target.components().skip(common));
    Ok(relative)
}

/// `kubectl kustomize DIR`: the YAML text, or why it could not be rendered.
fn render_path(path: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(path)
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

/// The documents of a multi-document YAML text, as JSON values (empty documents left out).
pub fn documents(yaml: &str) -> Result<Vec<Value>, String> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| {
            let value = yaml_serde::Value::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
            serde_json::to_value(value).map_err(|e| format!("YAML that is not JSON: {e}"))
        })
        .filter(|doc| !matches!(doc, Ok(Value::Null)))
        .collect()
}

/// The kubernetes-validate release the venv pins (scripts/setup.sh).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// kubernetes-validate: `$KUBERNETES_VALIDATE` (scripts/test.sh sets it), else
/// `.venv/bin/kubernetes-validate` at the workspace root; an error saying how to get it if neither
/// exists.
pub fn kubernetes_validate() -> Result<PathBuf, String> {
    let path = match std::env::var_os("KUBERNETES_VALIDATE") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join(".venv/bin/kubernetes-validate"),
    };
    if !path.is_file() {
        return Err(format!(
            "kubernetes-validate not found at {} (set KUBERNETES_VALIDATE, or run scripts/setup.sh, which \
             installs kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} into .venv/)",
            path.display()
        ));
    }
    Ok(path)
}

/// What kubernetes-validate said about one manifest for one Kubernetes version.
#[derive(Debug)]
pub struct Validation {
    /// It exited 0.
    pub success: bool,
    /// One `INFO ... passed for resource ...` line per document it validated.
    pub passed: Vec<String>,
    /// `WARN` lines (a kind it has no schema for is one, and not an error).
    pub warnings: Vec<String>,
    /// `ERROR` lines.
    pub errors: Vec<String>,
}

/// `kubernetes-validate --strict --kubernetes-version VERSION` on `yaml` (offline OpenAPI schemas,
/// unknown fields rejected).
pub fn validate_strictly(yaml: &str, version: &str) -> Result<Validation, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let out = Command::new(kubernetes_validate()?)
        .args(["--strict", "--kubernetes-version", version])
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run kubernetes-validate: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines = |prefix: &str| -> Vec<String> {
        text.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
    };
    let passed = lines("INFO").into_iter().filter(|l| l.contains(" passed for resource ")).collect();
    Ok(Validation { success: out.status.success(), passed, warnings: lines("WARN"), errors: lines("ERROR") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        let root = tempfile::tempdir().unwrap();
        let (from, to) = (root.path().join("a/b"), root.path().join("c/d"));
        std::fs::create_dir_all(&from).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        assert_eq!(relative_to(&from, &to).unwrap(), PathBuf::from("../../c/d"));
        assert_eq!(relative_to(&from, &root.path().join("a")).unwrap(), PathBuf::from(".."));
        assert!(relative_to(&from, &root.path().join("missing")).is_err());
    }
}
