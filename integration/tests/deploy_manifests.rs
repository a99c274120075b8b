//! The deploy manifests: `kubectl kustomize deploy/overlays/eks` (and the base) render, and the
//! output passes kubernetes-validate `--strict` (offline OpenAPI schemas, unknown fields rejected)
//! for Kubernetes 1.30 and 1.33 with no warning at all (an unknown kind is only a warning there,
//! so any warning fails). Then the rendered DaemonSet and RBAC are held to the conventions the
//! deploy issue sets, so that a later edit cannot quietly drop one.
//!
//! kubernetes-validate lives in a virtualenv that `scripts/setup.sh` creates; `scripts/test.sh`
//! exports `KUBERNETES_VALIDATE` with its path. Without it the tests look for
//! `.venv/bin/kubernetes-validate` at the workspace root, and fail (never skip) if it is missing.

use meshcrypt_integration::manifests;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value as Json, json};

/// The kubernetes-validate release the venv pins (scripts/setup.sh).
const VALIDATOR_VERSION: &str = manifests::KUBERNETES_VALIDATE_VERSION;
/// The Kubernetes versions the manifests must be valid for: 1.30 is the first with
/// ValidatingAdmissionPolicy v1 (and the node name in service account tokens).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.33.0"];

/// The rendered documents (the shared parser of `meshcrypt_integration::manifests`).
fn documents(text: &str) -> Vec<Json> {
    manifests::documents(text).expect("valid YAML")
}

fn kubernetes_validate() -> PathBuf {
    manifests::kubernetes_validate().unwrap_or_else(|e| panic!("{e}"))
}

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifest"))
}

fn validate(yaml: &str, version: &str) -> manifests::Validation {
    manifests::validate_strictly(yaml, version).unwrap_or_else(|e| panic!("{e}"))
}

/// Strict validation for every supported version: exit 0, no warning, no error, and one "passed"
/// line per rendered document.
fn assert_valid_everywhere(dir: &str) {
    let yaml = meshcrypt_integration::manifests::render(dir).expect("render");
    let docs = documents(&yaml);
    assert!(docs.len() >= 10, "{dir}: only {} documents rendered", docs.len());
    for version in KUBERNETES_VERSIONS {
        let report = validate(&yaml, version);
        assert!(report.success, "{dir} on {version}: {report:#?}");
        assert!(report.errors.is_empty(), "{dir} on {version}: {:#?}", report.errors);
        assert!(
            report.warnings.is_empty(),
            "{dir} on {version}: unexplained warnings {:#?}",
            report.warnings
        );
        assert_eq!(
            report.passed.len(),
            docs.len(),
            "{dir} on {version}: every document validated: {report:#?}"
        );
        println!("{dir}: {} documents pass kubernetes-validate --strict for {version}", report.passed.len());
    }
}

#[test]
fn validator_is_the_pinned_release() {
    let out = Command::new(kubernetes_validate()).arg("--version").output().expect("run kubernetes-validate");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), VALIDATOR_VERSION);
}

#[test]
fn eks_overlay_renders_and_validates_strictly() {
    assert_valid_everywhere("overlays/eks");
}

#[test]
fn base_renders_and_validates_strictly() {
    assert_valid_everywhere("base");
}

/// The checks above have teeth: an unknown field is an error under `--strict`, and a kind the
/// schemas do not know (here ValidatingAdmissionPolicy v1 on 1.29, before it went GA) is a
/// warning, which `assert_valid_everywhere` refuses.
#[test]
fn validator_catches_unknown_fields_and_kinds() {
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: y\ndaata:\n  a: b\n";
    let report = validate(typo, "1.33.0");
    assert!(!report.success && report.errors.iter().any(|e| e.contains("daata")), "{report:#?}");

    let report =
        validate(&meshcrypt_integration::manifests::render("overlays/eks").expect("render"), "1.29.0");
    assert!(
        report.warnings.iter().any(|w| w.contains("ValidatingAdmissionPolicy")),
        "1.29 has no ValidatingAdmissionPolicy v1, a warning was expected: {report:#?}"
    );
}

#[test]
fn daemonset_follows_the_network_agent_conventions() {
    let docs = documents(&meshcrypt_integration::manifests::render("overlays/eks").expect("render"));
    let ds = find(&docs, "DaemonSet", "meshcrypt");
    assert_eq!(ds["metadata"]["namespace"], "meshcrypt-system");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "meshcrypt");
    // The node's resolver: cluster DNS lives on the pod network the agent builds.
    assert_eq!(pod["dnsPolicy"], "Default");
    assert!(
        pod["tolerations"]
            .as_array()
            .expect("tolerations")
            .iter()
            .any(|t| t == &json!({"operator": "Exists"})),
        "must tolerate every taint: {}",
        pod["tolerations"]
    );

    // Fargate, hybrid and Auto Mode nodes excluded, as EKS's own node agents exclude them: the
    // values the agent treats as nodes expected to run no agent (no NoKey Warning for them).
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let terms = terms.as_array().expect("node selector terms");
    assert!(!terms.is_empty());
    for term in terms {
        let excluded = term["matchExpressions"].as_array().expect("match expressions").iter().any(|e| {
            e["key"] == "eks.amazonaws.com/compute-type"
                && e["operator"] == "NotIn"
                && e["values"] == json!(["fargate", "hybrid", "auto"])
        });
        assert!(
            excluded,
            "every node selector term must exclude Fargate, hybrid and Auto Mode nodes: {term}"
        );
    }

    // Rolling update, at most 10% unavailable.
    let strategy = &ds["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    let max = strategy["rollingUpdate"]["maxUnavailable"].as_str().expect("maxUnavailable as a percentage");
    let percent: u32 = max.trim_end_matches('%').parse().expect("a percentage");
    assert!(max.ends_with('%') && (1..=10).contains(&percent), "maxUnavailable {max}");

    // Prometheus scrape annotations on the pods.
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9476");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    let image = agent["image"].as_str().expect("image");
    assert_eq!(
        image,
        format!("ghcr.io/meshcrypt/meshcrypt:{}", env!("CARGO_PKG_VERSION")),
        "image follows the release"
    );
    let args: Vec<&str> =
        agent["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("arg")).collect();
    assert_eq!(
        args,
        [
            "agent",
            "--node-name",
            "$(NODE_NAME)",
            "--config-map",
            "meshcrypt",
            "--config-namespace",
            "meshcrypt-system",
            "--state-dir",
            "/var/lib/meshcrypt",
            "--uapi-dir",
            "/var/run/wireguard",
            "--metrics-addr",
            "0.0.0.0:9476",
            "--log-format",
            "json",
        ],
        "JSON logs for the log pipeline"
    );
    let env = agent["env"].as_array().expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "NODE_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName")
    );

    // NET_ADMIN without privilege.
    let security = &agent["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let added = security["capabilities"]["add"].as_array().expect("added capabilities");
    assert!(added.contains(&json!("NET_ADMIN")));
    assert!(added.iter().all(|c| c == "NET_ADMIN" || c == "NET_RAW"), "only network capabilities: {added:?}");
    // No init container: the agent tightens its empty state directory to 0700 itself, and the
    // image has no shell to run one (deploy/Dockerfile).
    assert!(pod.get("initContainers").is_none(), "no init container: {}", pod["initContainers"]);

    // Probes and ports.
    assert_eq!(agent["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": 9476}));
    assert_eq!(agent["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": 9476}));
    let ports = agent["ports"].as_array().expect("ports");
    assert!(ports.contains(&json!({"name": "wireguard", "containerPort": 51820, "protocol": "UDP"})));
    assert!(ports.contains(&json!({"name": "metrics", "containerPort": 9476, "protocol": "TCP"})));

    // Requests and limits.
    for (what, value) in [
        ("cpu request", &agent["resources"]["requests"]["cpu"]),
        ("memory request", &agent["resources"]["requests"]["memory"]),
        ("memory limit", &agent["resources"]["limits"]["memory"]),
    ] {
        assert!(value.is_string(), "{what} missing");
    }

    // Host paths: the TUN device, the key's state directory, the UAPI directory.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let host_path = |path: &str| {
        volumes.iter().find(|v| v["hostPath"]["path"] == path).unwrap_or_else(|| panic!("no hostPath {path}"))
    };
    assert_eq!(host_path("/dev/net/tun")["hostPath"]["type"], "CharDevice");
    assert_eq!(host_path("/var/lib/meshcrypt")["hostPath"]["type"], "DirectoryOrCreate");
    assert_eq!(host_path("/var/run/wireguard")["hostPath"]["type"], "DirectoryOrCreate");
    let mounts = agent["volumeMounts"].as_array().expect("volume mounts");
    for (volume, path) in [
        (host_path("/dev/net/tun"), "/dev/net/tun"),
        (host_path("/var/lib/meshcrypt"), "/var/lib/meshcrypt"),
        (host_path("/var/run/wireguard"), "/var/run/wireguard"),
    ] {
        assert!(
            mounts.iter().any(|m| m["name"] == volume["name"] && m["mountPath"] == path),
            "{path} is not mounted into the agent"
        );
    }
    // Peer clusters' pre-shared keys: an optional Secret, readable by the agent (root) alone, at
    // the agent's default --psk-dir.
    let psk = volumes.iter().find(|v| v["secret"]["secretName"] == "meshcrypt-psk").expect("the psk volume");
    assert_eq!(psk["secret"]["optional"], true, "clusters without pre-shared keys need no Secret");
    assert_eq!(psk["secret"]["defaultMode"], 0o400);
    assert!(mounts.iter().any(|m| m["name"] == psk["name"]
        && m["mountPath"] == "/etc/meshcrypt/psk"
        && m["readOnly"] == true));
}

/// The image holds the one binary and no shell (deploy/Dockerfile; scripts/image.sh checks the
/// built image): every container of the manifests that runs it keeps its entrypoint, `meshcrypt`
/// (args only, no `command`), and no pod has an init container.
#[test]
fn manifests_run_nothing_but_the_binary_from_the_image() {
    for dir in ["base", "overlays/eks", "overlays/eks-multicluster"] {
        let docs = documents(&meshcrypt_integration::manifests::render(dir).expect("render"));
        let mut seen = 0;
        for workload in docs.iter().filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment") {
            let name = &workload["metadata"]["name"];
            let pod = &workload["spec"]["template"]["spec"];
            assert!(pod.get("initContainers").is_none(), "{dir}: {name} has an init container");
            for container in pod["containers"].as_array().expect("containers") {
                if !container["image"].as_str().is_some_and(|i| i.starts_with("ghcr.io/meshcrypt/meshcrypt:"))
                {
                    continue;
                }
                seen += 1;
                assert!(
                    container.get("command").is_none(),
                    "{dir}: {name} overrides the entrypoint: {container}"
                );
                let subcommand = container["args"][0].as_str().expect("a subcommand as the first arg");
                assert!(["agent", "registry"].contains(&subcommand), "{dir}: {name} runs {subcommand}");
            }
        }
        assert!(seen >= 1, "{dir}: no container runs the meshcrypt image");
    }
}

/// The ClusterRole and Roles grant exactly the verbs the agent uses (README, deploy issue).
#[test]
fn rbac_grants_the_fewest_verbs() {
    let docs = documents(&meshcrypt_integration::manifests::render("overlays/eks").expect("render"));
    let rules = |kind: &str, name: &str| find(&docs, kind, name)["rules"].clone();
    assert_eq!(
        rules("ClusterRole", "meshcrypt"),
        json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["meshcrypt.dev"], "resources": ["remoteclusters"], "verbs": ["list", "watch"]},
            {"apiGroups": ["meshcrypt.dev"], "resources": ["meshnodes", "meshnodes/status"], "verbs": ["create", "patch"]},
            {"apiGroups": ["meshcrypt.dev"], "resources": ["meshpeers"], "verbs": ["list", "watch", "create", "patch"]},
        ])
    );
    assert_eq!(
        rules("Role", "meshcrypt"),
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["meshcrypt"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    );
    assert_eq!(find(&docs, "Role", "meshcrypt")["metadata"]["namespace"], "meshcrypt-system");
    // Events about Nodes (cluster-scoped) are recorded in "default".
    let node_events = find(&docs, "Role", "meshcrypt-node-events");
    assert_eq!(node_events["metadata"]["namespace"], "default");
    assert_eq!(
        node_events["rules"],
        json!([{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}])
    );
    // Every binding is for the agent's ServiceAccount and names a role that exists.
    let subject = json!([{"kind": "ServiceAccount", "name": "meshcrypt", "namespace": "meshcrypt-system"}]);
    for binding in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding") {
        assert_eq!(binding["subjects"], subject, "{}", binding["metadata"]["name"]);
        let role = &binding["roleRef"];
        let target =
            find(&docs, role["kind"].as_str().expect("role kind"), role["name"].as_str().expect("role name"));
        assert_eq!(target["metadata"]["namespace"], binding["metadata"]["namespace"]);
    }
    // Nothing grants Secrets or a write other than the node patch, events, its MeshNode and its
    // MeshPeer.
    for doc in docs.iter().filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role") {
        for rule in doc["rules"].as_array().expect("rules") {
            assert!(!rule["resources"].as_array().expect("resources").contains(&json!("secrets")));
            for verb in ["create", "update", "delete", "deletecollection", "*"] {
                let grants = rule["verbs"].as_array().expect("verbs").contains(&json!(verb));
                let allowed = rule["resources"] == json!(["events"])
                    || rule["resources"] == json!(["meshnodes", "meshnodes/status"])
                    || rule["resources"] == json!(["meshpeers"]);
                assert!(!grants || (verb == "create" && allowed), "{rule}");
            }
        }
    }
    // The agents hold no AWS credentials: their ServiceAccount carries no IAM role (IRSA), in the
    // eks overlay or the eks-multicluster one built on it (only the registry's has one, below).
    for overlay in ["overlays/eks", "overlays/eks-multicluster"] {
        let docs = documents(&meshcrypt_integration::manifests::render(overlay).expect("render"));
        let sa = find(&docs, "ServiceAccount", "meshcrypt");
        assert!(
            sa["metadata"]["annotations"].get("eks.amazonaws.com/role-arn").is_none(),
            "{overlay}: the agents' ServiceAccount must carry no IAM role: {sa}"
        );
    }
}

#[test]
fn eks_multicluster_overlay_renders_and_validates_strictly() {
    assert_valid_everywhere("overlays/eks-multicluster");
}

/// The registry, and only it, holds the AWS role; it may read Nodes and Pods, write (and delete)
/// RemoteClusters and their status, hold its Lease and record Events, and nothing else; two replicas, non-root, the
/// signing key from a Secret readable by its group only.
#[test]
fn the_registry_holds_the_aws_role_and_the_fewest_verbs() {
    let docs =
        documents(&meshcrypt_integration::manifests::render("overlays/eks-multicluster").expect("render"));
    assert_eq!(
        find(&docs, "ClusterRole", "meshcrypt-registry")["rules"],
        json!([
            {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["meshcrypt.dev"], "resources": ["remoteclusters"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["meshcrypt.dev"], "resources": ["remoteclusters/status"], "verbs": ["patch"]},
        ])
    );
    let lease = find(&docs, "Role", "meshcrypt-registry");
    assert_eq!(lease["metadata"]["namespace"], "meshcrypt-system");
    assert_eq!(
        lease["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]}])
    );
    let events = find(&docs, "Role", "meshcrypt-registry-events");
    assert_eq!(events["metadata"]["namespace"], "default");
    let subject =
        json!([{"kind": "ServiceAccount", "name": "meshcrypt-registry", "namespace": "meshcrypt-system"}]);
    for name in ["meshcrypt-registry", "meshcrypt-registry-events"] {
        let binding = docs
            .iter()
            .find(|d| {
                (d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
                    && d["metadata"]["name"] == name
                    && d["roleRef"]["name"] == name
            })
            .expect("a binding");
        assert_eq!(binding["subjects"], subject, "{name}");
    }
    let sa = find(&docs, "ServiceAccount", "meshcrypt-registry");
    assert!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":role/meshcrypt-registry"))
    );

    let deployment = find(&docs, "Deployment", "meshcrypt-registry");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "meshcrypt-registry");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    let container = &pod["containers"][0];
    let args: Vec<&str> =
        container["args"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args[0], "registry");
    assert!(
        args.iter().any(|a| a.starts_with("--cluster-id=")) && args.iter().any(|a| a.starts_with("--peer=")),
        "{args:?}"
    );
    assert!(args.contains(&"--signing-key=/etc/meshcrypt-registry/signing.key"));
    assert!(args.contains(&"--addressing=pod-ip"), "the eks agents' addressing: {args:?}");
    assert!(args.contains(&"--log-format=json"), "JSON logs for the log pipeline: {args:?}");
    assert_eq!(container["ports"][0]["containerPort"], 9477);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let volume = &pod["volumes"][0];
    assert_eq!(volume["secret"]["secretName"], "meshcrypt-registry-signing-key");
    assert_eq!(volume["secret"]["defaultMode"], 0o440, "group-readable (fsGroup), no one else");
    // The agents' ClusterRole is what the eks overlay grants: no AWS, no writes beyond their own.
    assert_eq!(find(&docs, "ClusterRole", "meshcrypt")["rules"].as_array().map(Vec::len), Some(5));
}
