//! The monitoring component (`deploy/components/monitoring`), rendered on top of the `eks` and
//! `eks-multicluster` overlays as a cluster's own overlay would add it:
//! - every built-in document passes kubernetes-validate `--strict` for Kubernetes 1.30 and 1.33;
//!   the prometheus-operator kinds (PodMonitor, PrometheusRule), which it has no schema for and
//!   only warns about, are held to the fields of their CRDs this component uses (unknown fields,
//!   wrong types and malformed durations refused);
//! - the PodMonitors select the agents' and the registry's pods by the labels their DaemonSet and
//!   Deployment use, on the port named `metrics` that the containers declare and listen on;
//! - the PrometheusRule's `spec`, as rendered, is what `promtool check rules` and `promtool test
//!   rules` run on (with `rules-test.yaml`, in which every alert both fires and stays silent), so
//!   the tested rules are the shipped ones; every alert has a severity, a summary, a description
//!   and a runbook URL naming its section of the component's README;
//! - the Grafana dashboard is a ConfigMap for the sidecar with the expected panels, and its
//!   queries parse as PromQL (promtool);
//! - the rules and the dashboard name only series the code exposes (daemon/src).
//!
//! promtool comes from Debian's `prometheus` package and kubernetes-validate from the venv, both
//! installed by `scripts/setup.sh`; a missing one fails the tests (never skips them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use meshcrypt_integration::manifests::{documents, render_composed, validate_strictly, workspace_root};
use serde_json::{Value as Json, json};

/// The Kubernetes versions the manifests must be valid for (as in deploy_manifests.rs).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.33.0"];
/// The overlays the component is tried on.
const OVERLAYS: [&str; 2] = ["overlays/eks", "overlays/eks-multicluster"];
/// Kinds kubernetes-validate has no schema for: checked against `crd_schema` instead.
const CRD_KINDS: [&str; 2] = ["PodMonitor", "PrometheusRule"];
/// Where each alert's runbook_url points: a section of the component's README.
const RUNBOOKS: &str =
    "https://github.com/meshcrypt/meshcrypt/blob/main/deploy/components/monitoring/README.md";

fn component_dir() -> PathBuf {
    workspace_root().join("deploy/components/monitoring")
}

/// `overlay` with the monitoring component, as documents.
fn rendered(overlay: &str) -> Vec<Json> {
    let yaml = render_composed(&[overlay], &["components/monitoring"]).expect("render");
    documents(&yaml).expect("documents")
}

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifest"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run promtool ({e}): scripts/setup.sh installs it (Debian's prometheus package)")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

/// The rendered PrometheusRule's `spec`: a Prometheus rules file.
fn rules(docs: &[Json]) -> &Json {
    &find(docs, "PrometheusRule", "meshcrypt")["spec"]
}

fn alerts(docs: &[Json]) -> Vec<&Json> {
    rules(docs)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect()
}

/// The dashboard's JSON, from the rendered ConfigMap.
fn dashboard(docs: &[Json]) -> Json {
    let map = find(docs, "ConfigMap", "meshcrypt-grafana-dashboard");
    serde_json::from_str(map["data"]["meshcrypt.json"].as_str().expect("meshcrypt.json"))
        .expect("dashboard JSON")
}

/// Every PromQL expression of the dashboard's panels, with Grafana's variables replaced by values
/// PromQL accepts.
fn dashboard_queries(dashboard: &Json) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            let expr = t["expr"].as_str().expect("every target has an expr");
            expr.replace("$__rate_interval", "5m").replace("$node", ".*")
        })
        .collect()
}

// ---- a reduced structural schema for the prometheus-operator kinds ----

/// The part of the CRD's OpenAPI schema (monitoring.coreos.com/v1) that this component uses, in
/// the same terms: `properties` (any other field is refused, as `kubectl apply --validate=strict`
/// does), `required`, `additionalProperties` (maps), `items`, `enum`, and two formats: a
/// Prometheus duration (the CRDs' pattern) and a label name.
fn crd_schema(kind: &str) -> Json {
    let string = json!({"type": "string"});
    let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let duration = json!({"type": "string", "format": "duration"});
    let metadata = json!({"type": "object", "required": ["name", "namespace"], "properties": {
        "name": string, "namespace": string, "labels": map, "annotations": map,
    }});
    let relabeling = json!({"type": "object", "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "format": "labelname"}},
        "separator": string, "targetLabel": string, "regex": string, "replacement": string,
        "modulus": {"type": "integer"},
        "action": {"type": "string", "enum": [
            "replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
            "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase", "Uppercase",
            "keepequal", "KeepEqual", "dropequal", "DropEqual",
        ]},
    }});
    let spec = match kind {
        "PodMonitor" => {
            json!({"type": "object", "required": ["selector", "podMetricsEndpoints"], "properties": {
                "jobLabel": string,
                "namespaceSelector": {"type": "object", "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": string},
                }},
                "selector": {"type": "object", "properties": {"matchLabels": map}},
                "podMetricsEndpoints": {"type": "array", "items": {"type": "object", "properties": {
                    "port": string, "path": string, "interval": duration, "scrapeTimeout": duration,
                    "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
                    "honorLabels": {"type": "boolean"},
                    "relabelings": {"type": "array", "items": relabeling},
                    "metricRelabelings": {"type": "array", "items": relabeling},
                }}},
            }})
        }
        "PrometheusRule" => json!({"type": "object", "properties": {
            "groups": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": string, "interval": duration,
                "rules": {"type": "array", "items": {"type": "object", "required": ["expr"], "properties": {
                    "alert": string, "record": string, "expr": string, "for": duration,
                    "keep_firing_for": duration, "labels": map, "annotations": map,
                }}},
            }}},
        }}),
        other => panic!("no schema for {other}"),
    };
    json!({"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
        "apiVersion": {"type": "string", "enum": ["monitoring.coreos.com/v1"]},
        "kind": {"type": "string", "enum": [kind]},
        "metadata": metadata,
        "spec": spec,
    }})
}

/// `^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`,
/// the CRDs' duration pattern, less the empty string.
fn is_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let units = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut next_unit = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        // "ms" before "m": the longest unit that matches, and units only in order.
        let Some(i) =
            (next_unit..units.len()).filter(|&i| rest.starts_with(units[i])).max_by_key(|&i| units[i].len())
        else {
            return false;
        };
        rest = &rest[units[i].len()..];
        next_unit = i + 1;
    }
    !text.is_empty()
}

fn is_label_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where `value` breaks `schema`, one line per violation, each naming the field's path.
fn schema_violations(schema: &Json, value: &Json, path: &str, out: &mut Vec<String>) {
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        _ => true,
    };
    if !type_ok {
        out.push(format!("{path}: expected {}, found {value}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    match (schema["format"].as_str(), value.as_str()) {
        (Some("duration"), Some(text)) if !is_duration(text) => {
            out.push(format!("{path}: {text:?} is not a Prometheus duration"));
        }
        (Some("labelname"), Some(text)) if !is_label_name(text) => {
            out.push(format!("{path}: {text:?} is not a label name"));
        }
        _ => {}
    }
    if let Some(fields) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().expect("required names");
            if !fields.contains_key(name) {
                out.push(format!("{path}: missing required field {name}"));
            }
        }
        for (name, field) in fields {
            let field_path = format!("{path}.{name}");
            match (schema.get("properties"), schema.get("additionalProperties")) {
                (Some(properties), _) => match properties.get(name) {
                    Some(field_schema) => schema_violations(field_schema, field, &field_path, out),
                    None => out.push(format!("{field_path}: unknown field")),
                },
                (None, Some(values)) => schema_violations(values, field, &field_path, out),
                (None, None) => {}
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            schema_violations(items, item, &format!("{path}[{i}]"), out);
        }
    }
}

// ---- the tests ----

/// Every built-in document passes kubernetes-validate --strict; the only warnings are the ones
/// for the prometheus-operator kinds, which the CRD schema check takes instead.
#[test]
fn the_component_renders_on_the_eks_overlays_and_validates() {
    for overlay in OVERLAYS {
        let yaml = render_composed(&[overlay], &["components/monitoring"]).expect("render");
        let docs = documents(&yaml).expect("documents");
        let custom: Vec<&Json> = docs.iter().filter(|d| CRD_KINDS.iter().any(|k| d["kind"] == *k)).collect();
        let kinds: BTreeSet<&str> = custom.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, BTreeSet::from(CRD_KINDS), "{overlay}: both prometheus-operator kinds rendered");
        for version in KUBERNETES_VERSIONS {
            let report = validate_strictly(&yaml, version).expect("kubernetes-validate");
            assert!(report.success, "{overlay} on {version}: {report:#?}");
            assert!(report.errors.is_empty(), "{overlay} on {version}: {:#?}", report.errors);
            assert_eq!(report.passed.len(), docs.len() - custom.len(), "{overlay} on {version}: {report:#?}");
            let expected: Vec<String> = custom
                .iter()
                .map(|d| format!("Couldn't find schema for kind {}", d["kind"].as_str().expect("kind")))
                .collect();
            assert_eq!(
                report.warnings.len(),
                expected.len(),
                "{overlay} on {version}: {:#?}",
                report.warnings
            );
            for warning in &report.warnings {
                assert!(
                    expected.iter().any(|e| warning.contains(e.as_str())),
                    "{overlay} on {version}: unexplained warning {warning}"
                );
            }
            println!(
                "{overlay} + monitoring: {} documents pass kubernetes-validate --strict for {version}, {} checked against the CRDs",
                report.passed.len(),
                custom.len()
            );
        }
        for doc in custom {
            let kind = doc["kind"].as_str().expect("kind");
            let mut violations = Vec::new();
            schema_violations(&crd_schema(kind), doc, kind, &mut violations);
            assert!(violations.is_empty(), "{overlay}: {kind} {}: {violations:#?}", doc["metadata"]["name"]);
        }
    }
}

/// The CRD check has teeth: a misspelt field, a duration Prometheus cannot read, a number where a
/// string belongs and a missing selector are each refused.
#[test]
fn the_crd_check_refuses_unknown_fields_and_malformed_values() {
    let docs = rendered("overlays/eks");
    let good = find(&docs, "PodMonitor", "meshcrypt").clone();
    let mut violations = Vec::new();
    schema_violations(&crd_schema("PodMonitor"), &good, "PodMonitor", &mut violations);
    assert!(violations.is_empty(), "{violations:#?}");

    let broken = |edit: &dyn Fn(&mut Json)| {
        let mut doc = good.clone();
        edit(&mut doc);
        let mut violations = Vec::new();
        schema_violations(&crd_schema("PodMonitor"), &doc, "PodMonitor", &mut violations);
        violations
    };
    let typo = broken(&|d| {
        let spec = d["spec"].as_object_mut().expect("spec");
        let endpoints = spec.remove("podMetricsEndpoints").expect("podMetricsEndpoints");
        spec.insert("podMetricEndpoints".into(), endpoints);
    });
    assert!(typo.iter().any(|v| v.contains("spec.podMetricEndpoints: unknown field")), "{typo:#?}");
    assert!(typo.iter().any(|v| v.contains("missing required field podMetricsEndpoints")), "{typo:#?}");
    let interval = broken(&|d| d["spec"]["podMetricsEndpoints"][0]["interval"] = json!("30 seconds"));
    assert!(interval.iter().any(|v| v.contains("not a Prometheus duration")), "{interval:#?}");
    let port = broken(&|d| d["spec"]["podMetricsEndpoints"][0]["port"] = json!(9476));
    assert!(port.iter().any(|v| v.contains(".port: expected \"string\"")), "{port:#?}");
    let selector = broken(&|d| {
        d["spec"].as_object_mut().expect("spec").remove("selector");
    });
    assert!(selector.iter().any(|v| v.contains("missing required field selector")), "{selector:#?}");

    for (text, valid) in [
        ("30s", true),
        ("1h30m", true),
        ("500ms", true),
        ("0", true),
        ("90d", true),
        ("", false),
        ("1m1h", false),
        ("5", false),
        ("1.5m", false),
    ] {
        assert_eq!(is_duration(text), valid, "{text:?}");
    }
}

/// The agents' PodMonitor selects the DaemonSet's pods, in its namespace, on the container port
/// named `metrics`, which is the port the agent serves /metrics on; the registry's the same for its
/// Deployment. The job label (the pods' app.kubernetes.io/name) is what the alerts select on.
#[test]
fn the_podmonitors_scrape_the_agents_and_the_registry_on_their_metrics_ports() {
    let docs = rendered("overlays/eks-multicluster");
    let workloads =
        [("DaemonSet", "meshcrypt", "meshcrypt"), ("Deployment", "meshcrypt-registry", "meshcrypt-registry")];
    for (kind, name, job) in workloads {
        let workload = find(&docs, kind, name);
        let monitor = find(&docs, "PodMonitor", name);
        let spec = &monitor["spec"];
        assert_eq!(monitor["metadata"]["namespace"], workload["metadata"]["namespace"], "{name}");
        assert_eq!(
            spec["namespaceSelector"]["matchNames"],
            json!([workload["metadata"]["namespace"]]),
            "{name}"
        );
        assert_eq!(spec["selector"]["matchLabels"], workload["spec"]["selector"]["matchLabels"], "{name}");
        let pod_labels = &workload["spec"]["template"]["metadata"]["labels"];
        let selected = spec["selector"]["matchLabels"].as_object().expect("matchLabels");
        assert!(selected.iter().all(|(k, v)| &pod_labels[k] == v), "{name}: the pods carry {pod_labels}");
        let job_label = spec["jobLabel"].as_str().expect("jobLabel");
        assert_eq!(pod_labels[job_label], job, "{name}: the job label the rules select on");

        let endpoints = spec["podMetricsEndpoints"].as_array().expect("podMetricsEndpoints");
        assert_eq!(endpoints.len(), 1, "{name}");
        let endpoint = &endpoints[0];
        assert_eq!(endpoint["path"], "/metrics", "{name}");
        let relabelings = endpoint["relabelings"].as_array().expect("relabelings");
        assert!(
            relabelings.iter().any(|r| r["sourceLabels"] == json!(["__meta_kubernetes_pod_node_name"])
                && r["targetLabel"] == "node"),
            "{name}: every series carries its node"
        );
        let containers = workload["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{name}");
        let port = containers[0]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap_or_else(|| panic!("{name}: no container port named {}", endpoint["port"]));
        let number = port["containerPort"].as_u64().expect("containerPort");
        // The agent listens where --metrics-addr says; the registry on its default, 0.0.0.0:9477.
        let args: Vec<&str> =
            containers[0]["args"].as_array().expect("args").iter().filter_map(Json::as_str).collect();
        let listen = args
            .windows(2)
            .find(|w| w[0] == "--metrics-addr")
            .map(|w| w[1].to_owned())
            .or_else(|| args.iter().find_map(|a| a.strip_prefix("--metrics-addr=").map(str::to_owned)))
            .unwrap_or_else(|| "0.0.0.0:9477".to_owned());
        assert_eq!(listen, format!("0.0.0.0:{number}"), "{name}: the named port is where /metrics is served");
    }
    // The agents' pods keep the annotations for annotation-based scrapers; they agree.
    let annotations = &find(&docs, "DaemonSet", "meshcrypt")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9476");
    assert_eq!(
        annotations["prometheus.io/path"],
        find(&docs, "PodMonitor", "meshcrypt")["spec"]["podMetricsEndpoints"][0]["path"]
    );
}

/// `promtool check rules` and `promtool test rules` on the PrometheusRule's spec exactly as
/// rendered, with the component's rules-test.yaml.
#[test]
fn the_rendered_rules_pass_promtool_check_and_their_unit_tests() {
    let docs = rendered("overlays/eks");
    let dir = tempfile::tempdir().expect("temp dir");
    // JSON is YAML: the spec goes to promtool as kustomize rendered it, field for field.
    let text = serde_json::to_string_pretty(rules(&docs)).expect("rules as JSON");
    std::fs::write(dir.path().join("meshcrypt-rules.yaml"), text).expect("write the rules");
    std::fs::copy(component_dir().join("rules-test.yaml"), dir.path().join("rules-test.yaml"))
        .expect("copy rules-test.yaml");
    let checked = promtool(&["check", "rules", "meshcrypt-rules.yaml"], dir.path());
    let count = alerts(&docs).len();
    assert!(checked.contains(&format!("SUCCESS: {count} rules found")), "{checked}");
    let tested = promtool(&["test", "rules", "rules-test.yaml"], dir.path());
    assert!(tested.contains("SUCCESS"), "{tested}");
    println!("promtool: {count} rules check; rules-test.yaml passes");
}

/// Each alert pages or tickets (severity), says what happened (summary, description) and points
/// to its runbook, a section of README.md; and rules-test.yaml shows it firing and not firing.
#[test]
fn every_alert_has_a_severity_a_runbook_and_tests_both_ways() {
    let docs = rendered("overlays/eks");
    let readme = std::fs::read_to_string(component_dir().join("README.md")).expect("README.md");
    let tests: Json = {
        let text = std::fs::read_to_string(component_dir().join("rules-test.yaml")).expect("rules-test.yaml");
        serde_json::to_value(
            yaml_serde::from_str::<yaml_serde::Value>(&text).expect("rules-test.yaml is YAML"),
        )
        .expect("as JSON")
    };
    // alert name -> (evaluations expecting it, evaluations expecting none of it)
    let mut exercised: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for case in tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().expect("alert_rule_test"))
    {
        let entry = exercised.entry(case["alertname"].as_str().expect("alertname").to_owned()).or_default();
        match case["exp_alerts"].as_array().map(Vec::len) {
            Some(0) | None => entry.1 += 1,
            Some(_) => entry.0 += 1,
        }
    }
    let mut names = BTreeSet::new();
    for rule in alerts(&docs) {
        let name = rule["alert"].as_str().unwrap_or_else(|| panic!("a rule that is not an alert: {rule}"));
        assert!(names.insert(name), "{name} twice");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_else(|| panic!("{name}: no severity"));
        assert!(["critical", "warning"].contains(&severity), "{name}: severity {severity}");
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_else(|| panic!("{name}: no {key}"));
            assert!(text.len() > 20, "{name}: {key} {text:?}");
        }
        let anchor = name.to_lowercase();
        assert_eq!(rule["annotations"]["runbook_url"], format!("{RUNBOOKS}#{anchor}"), "{name}");
        assert!(
            readme.lines().any(|l| l == format!("### {name}")),
            "{name}: no section \"### {name}\" in README.md"
        );
        let (firing, silent) = exercised.get(name).copied().unwrap_or_default();
        assert!(
            firing > 0 && silent > 0,
            "{name}: rules-test.yaml must show it firing ({firing}) and not ({silent})"
        );
    }
    let unknown: Vec<&String> = exercised.keys().filter(|n| !names.contains(n.as_str())).collect();
    assert!(unknown.is_empty(), "rules-test.yaml tests alerts that do not exist: {unknown:?}");
    // README.md's patch for the key-age threshold addresses the rule by position.
    assert_eq!(
        rules(&docs)["groups"][0]["rules"][9]["alert"],
        "MeshcryptKeyOlderThanPolicy",
        "README.md's patch"
    );
}

/// The dashboard reaches the Grafana sidecar (a ConfigMap labelled grafana_dashboard: "1", the
/// same JSON as dashboard.json), has the panels the component promises, one data source variable
/// for every query, a grid that fits, and queries promtool parses.
#[test]
fn the_dashboard_is_a_sidecar_configmap_with_the_panels_and_valid_queries() {
    let docs = rendered("overlays/eks");
    let map = find(&docs, "ConfigMap", "meshcrypt-grafana-dashboard");
    assert_eq!(map["metadata"]["namespace"], "meshcrypt-system");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["data"].as_object().map(|d| d.len()), Some(1), "one dashboard");
    let dashboard = dashboard(&docs);
    let file = std::fs::read_to_string(component_dir().join("dashboard.json")).expect("dashboard.json");
    assert_eq!(dashboard, serde_json::from_str::<Json>(&file).expect("dashboard.json is JSON"));
    assert_eq!(dashboard["uid"], "meshcrypt");

    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: BTreeSet<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Agents ready",
        "Peers per node",
        "Oldest handshake per node",
        "Handshake age by peer",
        "Received bytes/s per node",
        "Transmitted bytes/s per node",
        "Dropped packets by reason",
        "Key age per node",
        "Active registry replicas",
        "Peer clusters",
        "CPU",
        "Resident memory",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?} in {titles:?}");
    }
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "panel id {} twice", panel["id"]);
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{}: wider than the grid", panel["title"]);
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(cells.insert(cell), "{} overlaps another panel at {cell:?}", panel["title"]);
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", panel["title"]);
        for target in std::iter::once(panel).chain(targets) {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        }
    }

    // Every query as a recording rule, for promtool to parse.
    let queries = dashboard_queries(&dashboard);
    let rules: Vec<Json> = queries
        .iter()
        .enumerate()
        .map(|(i, expr)| json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.path().join("dashboard-queries.yaml"), file.to_string()).expect("write queries");
    let checked = promtool(&["check", "rules", "dashboard-queries.yaml"], dir.path());
    assert!(checked.contains(&format!("SUCCESS: {} rules found", queries.len())), "{checked}");
}

/// The `meshcrypt_*` and `process_*` names in `expr` (outside quoted strings).
fn series_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("meshcrypt_") || word.starts_with("process_") {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// The Rust sources under `dir`, concatenated.
fn sources(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            text.push_str(&sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).expect("read a source file"));
        }
    }
    text
}

/// A series the daemon exposes: its name registered as written, or a counter's name before
/// `_total`, or an Info's before `_info` (prometheus_client adds those suffixes).
fn exposed(code: &str, name: &str) -> bool {
    let quoted = |n: &str| code.contains(&format!("\"{n}\""));
    quoted(name)
        || name.strip_suffix("_total").is_some_and(quoted)
        || name.strip_suffix("_info").is_some_and(quoted)
}

/// Alerts and panels on series that do not exist never fire and stay empty: every name they use is
/// one daemon/src registers.
#[test]
fn the_rules_and_the_dashboard_use_only_series_the_code_exposes() {
    let docs = rendered("overlays/eks");
    let code = sources(&workspace_root().join("daemon/src"));
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for rule in alerts(&docs) {
        for name in series_names(rule["expr"].as_str().expect("expr")) {
            used.insert(name, format!("alert {}", rule["alert"]));
        }
    }
    let dashboard = dashboard(&docs);
    for query in dashboard_queries(&dashboard) {
        for name in series_names(&query) {
            used.entry(name).or_insert_with(|| format!("dashboard query {query}"));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("variables") {
        for name in variable["definition"].as_str().map(series_names).unwrap_or_default() {
            used.entry(name).or_insert_with(|| format!("variable {}", variable["name"]));
        }
    }
    assert!(used.len() >= 20, "the names were found: {used:?}");
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exposed(&code, name))
        .map(|(n, by)| format!("{n} (in {by})"))
        .collect();
    assert!(missing.is_empty(), "series the code does not expose: {missing:#?}");
    // The check itself: a name nobody registers is caught, suffixes only where the types add them.
    assert!(!exposed(&code, "meshcrypt_peer_last_handshake_seconds"));
    assert!(exposed(&code, "meshcrypt_dropped_packets_total") && exposed(&code, "meshcrypt_build_info"));
}
