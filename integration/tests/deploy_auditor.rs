//! The auditor component (`deploy/components/auditor`): on the `eks` overlays it validates with
//! kubernetes-validate --strict, and grants the group `meshcrypt:auditors` exactly what
//! `meshcrypt audit` reads (list and get of Nodes, MeshNodes, Pods, Events and the one ConfigMap),
//! with no watch, no write and no Secrets.

use meshcrypt_integration::manifests::{documents, render_composed, validate_strictly};
use serde_json::{Value as Json, json};

const OVERLAYS: [&str; 2] = ["overlays/eks", "overlays/eks-multicluster"];

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_auditor_role_grants_what_the_audit_reads_and_nothing_else() {
    for overlay in OVERLAYS {
        let yaml = render_composed(&[overlay], &["components/auditor"]).expect("render");
        let docs = documents(&yaml).expect("documents");
        for version in ["1.30.0", "1.33.0"] {
            let report = validate_strictly(&yaml, version).expect("kubernetes-validate");
            assert!(report.success && report.errors.is_empty(), "{overlay} on {version}: {report:#?}");
        }
        assert_eq!(
            find(&docs, "ClusterRole", "meshcrypt-auditor")["rules"],
            json!([
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
                {"apiGroups": ["meshcrypt.dev"], "resources": ["meshnodes", "remoteclusters"], "verbs": ["list"]},
            ]),
            "{overlay}"
        );
        let role = find(&docs, "Role", "meshcrypt-auditor");
        assert_eq!(role["metadata"]["namespace"], "meshcrypt-system");
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["meshcrypt"], "verbs": ["get"]}])
        );
        let group =
            json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "meshcrypt:auditors"}]);
        for (kind, role_kind) in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")] {
            let binding = find(&docs, kind, "meshcrypt-auditor");
            assert_eq!(binding["subjects"], group, "{overlay}: {kind}");
            assert_eq!(binding["roleRef"]["kind"], role_kind);
            assert_eq!(binding["roleRef"]["name"], "meshcrypt-auditor");
            let namespace = if kind == "RoleBinding" { json!("meshcrypt-system") } else { Json::Null };
            assert_eq!(binding["metadata"]["namespace"], namespace, "{overlay}: {kind}");
        }
        // Every other role and binding is the overlay's own: the component adds exactly four.
        let auditor: Vec<&Json> =
            docs.iter().filter(|d| d["metadata"]["name"] == "meshcrypt-auditor").collect();
        assert_eq!(auditor.len(), 4, "{overlay}");
        for rule in auditor.iter().filter_map(|d| d["rules"].as_array()).flatten() {
            for verb in rule["verbs"].as_array().expect("verbs") {
                assert!(verb == "get" || verb == "list", "{overlay}: {rule}");
            }
            assert!(!rule["resources"].as_array().expect("resources").contains(&json!("secrets")));
        }
    }
}
