//! The ValidatingAdmissionPolicy that confines each agent to its own Node's `meshcrypt.dev/`
//! annotations, evaluated the way the API server evaluates it: the policy is read from the
//! rendered `deploy/overlays/eks` manifest (what `kubectl apply -k` would send), never copied
//! here; its match constraints, match conditions, variables and validations are run with a CEL
//! interpreter on the `request`, `object` and `oldObject` the API server builds for an UPDATE of a
//! Node. Every evaluation error fails the test: a denial must come from the validation meant to
//! deny, not from an expression that cannot be evaluated (which `failurePolicy: Fail` would also
//! turn into a denial).

use std::collections::HashMap;

use cel::{Context, Program, Value, to_value};
use serde_json::{Value as Json, json};

const AGENT: &str = "system:serviceaccount:meshcrypt-system:meshcrypt";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    let found: Vec<&Json> =
        docs.iter().filter(|d| d["kind"] == kind && d["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name} expected in the rendered manifest");
    found[0]
}

fn compile(what: &str, source: &str) -> Program {
    Program::compile(source).unwrap_or_else(|e| panic!("{what}: cannot compile {source:?}: {e}"))
}

struct Validation {
    source: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
}

/// The policy as read from the manifest.
struct Policy {
    rules: Vec<Json>,
    match_conditions: Vec<(String, Program)>,
    variables: Vec<(String, Program)>,
    validations: Vec<Validation>,
}

/// An edit of a Node, one test case.
type Change = Box<dyn Fn(&mut Json)>;

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// The policy does not apply to the request (other user, operation or resource).
    NotMatched,
    Allowed,
    /// The messages of the failed validations.
    Denied(Vec<String>),
}

impl Policy {
    /// The policy on Nodes.
    fn load() -> Self {
        Self::named("meshcrypt-own-node-annotations")
    }

    /// The policy `name` and its binding (of the same name).
    fn named(name: &str) -> Self {
        let docs = meshcrypt_integration::manifests::documents(
            &meshcrypt_integration::manifests::render("overlays/eks").expect("render"),
        )
        .expect("documents");
        let policy = find(&docs, "ValidatingAdmissionPolicy", name);
        let binding = find(&docs, "ValidatingAdmissionPolicyBinding", name);
        let spec = &policy["spec"];
        assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(binding["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"], "binding names the policy");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]), "the binding must deny, not warn");
        assert!(binding["spec"].get("paramRef").is_none() && spec.get("paramKind").is_none());
        assert_eq!(spec["failurePolicy"], "Fail", "an evaluation error must deny");
        let list = |v: &Json| v.as_array().cloned().unwrap_or_default();
        let match_conditions = list(&spec["matchConditions"])
            .iter()
            .map(|c| {
                let name = c["name"].as_str().expect("condition name").to_owned();
                let program = compile(&name, c["expression"].as_str().expect("condition expression"));
                (name, program)
            })
            .collect();
        let variables = list(&spec["variables"])
            .iter()
            .map(|v| {
                let name = v["name"].as_str().expect("variable name").to_owned();
                let program = compile(&name, v["expression"].as_str().expect("variable expression"));
                (name, program)
            })
            .collect();
        let validations: Vec<Validation> = list(&spec["validations"])
            .iter()
            .map(|v| {
                let source = v["expression"].as_str().expect("validation expression").to_owned();
                Validation {
                    program: compile("validation", &source),
                    message: v["message"].as_str().map(str::to_owned),
                    message_expression: v["messageExpression"]
                        .as_str()
                        .map(|m| compile("messageExpression", m)),
                    source,
                }
            })
            .collect();
        assert!(!validations.is_empty());
        Policy {
            rules: list(&spec["matchConstraints"]["resourceRules"]),
            match_conditions,
            variables,
            validations,
        }
    }

    /// `matchConstraints.resourceRules`, as the API server matches them.
    fn rules_match(&self, request: &Json) -> bool {
        let group = request["resource"]["group"].as_str().unwrap_or_default();
        let resource = request["resource"]["resource"].as_str().unwrap_or_default();
        let full = match request["subResource"].as_str() {
            Some(sub) if !sub.is_empty() => format!("{resource}/{sub}"),
            _ => resource.to_owned(),
        };
        let has = |list: &Json, item: &str| {
            list.as_array().is_some_and(|l| l.iter().any(|v| v == "*" || v.as_str() == Some(item)))
        };
        self.rules.iter().any(|rule| {
            has(&rule["apiGroups"], group)
                && has(&rule["operations"], request["operation"].as_str().unwrap_or_default())
                && has(&rule["resources"], &full)
        })
    }

    /// The API server's decision for `request` (with `object`/`oldObject` inside it).
    fn admit(&self, request: &Json) -> Decision {
        if !self.rules_match(request) {
            return Decision::NotMatched;
        }
        let mut ctx = Context::default();
        ctx.add_variable("request", to_value(request).expect("request")).expect("request");
        ctx.add_variable("object", to_value(&request["object"]).expect("object")).expect("object");
        ctx.add_variable("oldObject", to_value(&request["oldObject"]).expect("oldObject"))
            .expect("oldObject");
        // Cluster-scoped resource, no paramKind: the API server binds these to null.
        ctx.add_variable("params", to_value(Json::Null).expect("null")).expect("params");
        ctx.add_variable("namespaceObject", to_value(Json::Null).expect("null")).expect("namespaceObject");
        for (name, condition) in &self.match_conditions {
            match condition.execute(&ctx) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return Decision::NotMatched,
                other => panic!("match condition {name}: not a bool: {other:?}"),
            }
        }
        let mut variables: HashMap<String, Value> = HashMap::new();
        for (name, program) in &self.variables {
            let value = program.execute(&ctx).unwrap_or_else(|e| panic!("variable {name}: {e}"));
            variables.insert(name.clone(), value);
            ctx.add_variable_from_value("variables", variables.clone());
        }
        let mut denied = Vec::new();
        for validation in &self.validations {
            match validation.program.execute(&ctx) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    let message = match &validation.message_expression {
                        Some(program) => match program.execute(&ctx) {
                            Ok(Value::String(s)) => s.to_string(),
                            other => panic!("messageExpression of {:?}: {other:?}", validation.source),
                        },
                        None => validation.message.clone().unwrap_or_else(|| validation.source.clone()),
                    };
                    denied.push(message);
                }
                other => panic!("validation {:?} did not evaluate to a bool: {other:?}", validation.source),
            }
        }
        if denied.is_empty() { Decision::Allowed } else { Decision::Denied(denied) }
    }
}

/// A Node as the API server stores it (trimmed): kubelet's labels and annotations, spec, status.
fn node(name: &str) -> Json {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": format!("uid-{name}"),
            "resourceVersion": "1000",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "eks.amazonaws.com/nodegroup": "default",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1"}],
        },
        "spec": {
            "providerID": format!("aws:///us-east-1a/i-{name}"),
            "podCIDR": "10.244.1.0/24",
            "podCIDRs": ["10.244.1.0/24"],
        },
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// `node` after the agent's server-side apply of its key annotations: the annotations, a new
/// resourceVersion and its managedFields entry change, nothing else.
fn with_key(mut node: Json) -> Json {
    let meta = &mut node["metadata"];
    let annotations = meta["annotations"].as_object_mut().expect("annotations");
    annotations
        .insert("meshcrypt.dev/public-key".into(), json!("6ZGvqRdI3ndRNnVUX+DEPZU0nSKSArdzkNVjYr3Q1F0="));
    annotations.insert("meshcrypt.dev/key-epoch".into(), json!("0"));
    annotations.insert("meshcrypt.dev/key-created".into(), json!("2026-11-28T21:00:00Z"));
    meta["resourceVersion"] = json!("1001");
    meta["managedFields"]
        .as_array_mut()
        .expect("managedFields")
        .push(json!({"manager": "meshcrypt", "operation": "Apply", "apiVersion": "v1"}));
    node
}

/// The AdmissionRequest the API server builds for an UPDATE of Node `old` (to `new`) by `user`.
fn update(user: Json, old: &Json, new: &Json, sub_resource: Option<&str>) -> Json {
    let name = old["metadata"]["name"].clone();
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Node"},
        "resource": {"group": "", "version": "v1", "resource": "nodes"},
        "requestKind": {"group": "", "version": "v1", "kind": "Node"},
        "requestResource": {"group": "", "version": "v1", "resource": "nodes"},
        "name": name,
        "operation": "UPDATE",
        "userInfo": user,
        "object": new,
        "oldObject": old,
        "dryRun": false,
        "options": {"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "meshcrypt", "force": true},
    });
    // `subResource` is omitted when empty, as in the API server's JSON.
    if let Some(sub) = sub_resource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    request
}

/// The user info of a bound token from the agent pod on `node` (what kube-apiserver 1.30+ puts
/// in `extra` for a pod's projected service account token).
fn agent_on(node: &str) -> Json {
    json!({
        "username": AGENT,
        "uid": "b2a7c6a5-0000-4000-8000-000000000001",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:meshcrypt-system", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": ["JTI=3e5a0c8e-7d71-4a9c-9f30-1b2c3d4e5f60"],
            NODE_NAME_EXTRA: [node],
            "authentication.kubernetes.io/node-uid": [format!("uid-{node}")],
            "authentication.kubernetes.io/pod-name": ["meshcrypt-x7k2p"],
            "authentication.kubernetes.io/pod-uid": ["c0ffee00-0000-4000-8000-000000000002"],
        },
    })
}

fn assert_denied_by(decision: &Decision, needle: &str, case: &str) {
    match decision {
        Decision::Denied(messages) => assert!(
            messages.iter().any(|m| m.contains(needle)),
            "{case}: denied, but not by the expected rule ({needle:?}): {messages:?}"
        ),
        other => panic!("{case}: expected a denial ({needle:?}), got {other:?}"),
    }
}

#[test]
fn agent_may_publish_and_change_its_own_key() {
    let policy = Policy::load();
    let old = node("node-a");
    let new = with_key(old.clone());
    assert_eq!(
        policy.admit(&update(agent_on("node-a"), &old, &new, None)),
        Decision::Allowed,
        "first publish"
    );

    // A new key: the meshcrypt.dev/ annotations change.
    let mut rotated = new.clone();
    rotated["metadata"]["annotations"]["meshcrypt.dev/public-key"] =
        json!("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=");
    rotated["metadata"]["annotations"]["meshcrypt.dev/key-epoch"] = json!("1");
    assert_eq!(
        policy.admit(&update(agent_on("node-a"), &new, &rotated, None)),
        Decision::Allowed,
        "rotation"
    );

    // `enabled: "false"` withdraws the key: the meshcrypt.dev/ annotations go.
    assert_eq!(policy.admit(&update(agent_on("node-a"), &new, &old, None)), Decision::Allowed, "withdrawal");

    // A no-op apply (same annotations) and a Node that had no annotations at all.
    assert_eq!(policy.admit(&update(agent_on("node-a"), &new, &new, None)), Decision::Allowed, "no-op");
    let mut bare = node("node-a");
    bare["metadata"].as_object_mut().expect("metadata").remove("annotations");
    let mut bare_with_key = bare.clone();
    bare_with_key["metadata"]["annotations"] = json!({"meshcrypt.dev/public-key": "x"});
    assert_eq!(
        policy.admit(&update(agent_on("node-a"), &bare, &bare_with_key, None)),
        Decision::Allowed,
        "node without annotations"
    );
}

#[test]
fn agent_may_not_change_another_node() {
    let policy = Policy::load();
    let old = node("node-b");
    let new = with_key(old.clone());
    let decision = policy.admit(&update(agent_on("node-a"), &old, &new, None));
    assert_denied_by(&decision, "only its own Node, not node-b", "agent on node-a patching node-b");
}

#[test]
fn token_without_a_node_name_is_denied() {
    let policy = Policy::load();
    let old = node("node-a");
    let new = with_key(old.clone());
    let mut no_extra = agent_on("node-a");
    no_extra.as_object_mut().expect("user").remove("extra");
    let mut extra_without_node = agent_on("node-a");
    extra_without_node["extra"].as_object_mut().expect("extra").remove(NODE_NAME_EXTRA);
    let mut empty_node = agent_on("node-a");
    empty_node["extra"][NODE_NAME_EXTRA] = json!([]);
    let mut two_nodes = agent_on("node-a");
    two_nodes["extra"][NODE_NAME_EXTRA] = json!(["node-a", "node-b"]);
    for (case, user) in [
        ("a legacy token (no extra at all)", no_extra),
        ("extra without a node name", extra_without_node),
        ("an empty node-name list", empty_node),
        ("two node names", two_nodes),
    ] {
        let decision = policy.admit(&update(user, &old, &new, None));
        assert_denied_by(&decision, "names no node", case);
    }
}

#[test]
fn only_meshcrypt_annotations_may_change() {
    let policy = Policy::load();
    let old = with_key(node("node-a"));
    let cases: Vec<(&str, Change)> = vec![
        (
            "adds a foreign annotation",
            Box::new(|n| n["metadata"]["annotations"]["example.com/x"] = json!("1")),
        ),
        (
            "changes a foreign annotation",
            Box::new(|n| n["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = json!("30")),
        ),
        (
            "removes a foreign annotation",
            Box::new(|n| {
                n["metadata"]["annotations"]
                    .as_object_mut()
                    .expect("map")
                    .remove("node.alpha.kubernetes.io/ttl");
            }),
        ),
        (
            "a look-alike prefix",
            Box::new(|n| n["metadata"]["annotations"]["meshcrypt.dev.evil.example/public-key"] = json!("x")),
        ),
        (
            "removes every annotation",
            Box::new(|n| {
                n["metadata"].as_object_mut().expect("metadata").remove("annotations");
            }),
        ),
    ];
    for (case, change) in cases {
        let mut new = old.clone();
        change(&mut new);
        let decision = policy.admit(&update(agent_on("node-a"), &old, &new, None));
        assert_denied_by(&decision, "only meshcrypt.dev/ annotations", case);
    }
}

#[test]
fn spec_labels_status_and_ownership_may_not_change() {
    let policy = Policy::load();
    let old = node("node-a");
    let cases: Vec<(&str, &str, Change)> = vec![
        (
            "adds a label",
            "labels",
            Box::new(|n| n["metadata"]["labels"]["meshcrypt.dev/ready"] = json!("true")),
        ),
        (
            "changes a label",
            "labels",
            Box::new(|n| n["metadata"]["labels"]["eks.amazonaws.com/nodegroup"] = json!("other")),
        ),
        (
            "removes every label",
            "labels",
            Box::new(|n| {
                n["metadata"].as_object_mut().expect("metadata").remove("labels");
            }),
        ),
        ("changes the pod CIDRs", "spec", Box::new(|n| n["spec"]["podCIDRs"] = json!(["10.0.0.0/8"]))),
        (
            "adds a taint",
            "taints only by removing its startup taint",
            Box::new(|n| n["spec"]["taints"] = json!([{"key": "x", "effect": "NoSchedule"}])),
        ),
        ("cordons the node", "spec", Box::new(|n| n["spec"]["unschedulable"] = json!(true))),
        (
            "rewrites its InternalIP",
            "status",
            Box::new(|n| n["status"]["addresses"][0]["address"] = json!("192.0.2.99")),
        ),
        (
            "adds a finalizer",
            "finalizers or owner references",
            Box::new(|n| n["metadata"]["finalizers"] = json!(["example.com/hold"])),
        ),
        (
            "adds an owner",
            "finalizers or owner references",
            Box::new(|n| {
                n["metadata"]["ownerReferences"] =
                    json!([{"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "u"}])
            }),
        ),
    ];
    for (case, field, change) in cases {
        // Together with a legitimate key change, so that only the forbidden part can deny it.
        let mut new = with_key(old.clone());
        change(&mut new);
        let decision = policy.admit(&update(agent_on("node-a"), &old, &new, None));
        let needle = if field.starts_with("taints") {
            format!("may change a Node's {field}")
        } else {
            format!("may not change a Node's {field}")
        };
        assert_denied_by(&decision, &needle, case);
    }
    // The status subresource is covered too.
    let mut new = old.clone();
    new["status"]["conditions"][0]["status"] = json!("False");
    let decision = policy.admit(&update(agent_on("node-a"), &old, &new, Some("status")));
    assert_denied_by(&decision, "may not change a Node's status", "nodes/status");
}

#[test]
fn the_policy_applies_to_the_agents_service_account_only() {
    let policy = Policy::load();
    // The username the match condition names is the rendered ServiceAccount's.
    let docs = meshcrypt_integration::manifests::documents(
        &meshcrypt_integration::manifests::render("overlays/eks").expect("render"),
    )
    .expect("documents");
    let sa = find(&docs, "ServiceAccount", "meshcrypt");
    let username = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().expect("namespace"),
        sa["metadata"]["name"].as_str().expect("name")
    );
    assert_eq!(username, AGENT);
    let ds = find(&docs, "DaemonSet", "meshcrypt");
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], sa["metadata"]["name"]);

    let old = node("node-b");
    let mut new = with_key(old.clone());
    new["metadata"]["labels"]["example.com/x"] = json!("1");
    for user in [
        json!({"username": "system:node:node-b", "groups": ["system:nodes", "system:authenticated"]}),
        json!({"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}),
        json!({"username": "system:serviceaccount:kube-system:aws-node", "groups": ["system:serviceaccounts"]}),
    ] {
        let name = user["username"].clone();
        assert_eq!(policy.admit(&update(user, &old, &new, None)), Decision::NotMatched, "{name}");
    }
    // The agent, though, is matched on nodes and nodes/status, and not on other resources.
    let request = update(agent_on("node-b"), &old, &new, Some("status"));
    assert_ne!(policy.admit(&request), Decision::NotMatched);
    let mut pods = update(agent_on("node-b"), &old, &new, None);
    pods["resource"]["resource"] = json!("pods");
    assert_eq!(policy.admit(&pods), Decision::NotMatched);
}

/// The startup taint (issue 11, behaviour 4): the agent may remove `meshcrypt.dev/agent-not-ready`
/// from its own Node, and do nothing else to the taints or the rest of the spec.
#[test]
fn the_agent_may_remove_its_startup_taint_and_nothing_else() {
    let policy = Policy::load();
    let ours = json!({"key": "meshcrypt.dev/agent-not-ready", "value": "true", "effect": "NoSchedule"});
    let other = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
    let tainted = |taints: Json| {
        let mut n = node("node-a");
        n["spec"]["taints"] = taints;
        n
    };
    let without_taints = |mut n: Json| {
        n["spec"].as_object_mut().expect("spec").remove("taints");
        n
    };
    // (case, old, new, acting node, None if admitted or Some(the rule that denies it))
    let cases: Vec<(&str, Json, Json, &str, Option<&str>)> = vec![
        (
            "removes its taint, another stays",
            tainted(json!([ours, other])),
            tainted(json!([other])),
            "node-a",
            None,
        ),
        ("removes its only taint (empty list)", tainted(json!([ours])), tainted(json!([])), "node-a", None),
        (
            "removes its only taint (no list)",
            tainted(json!([ours])),
            without_taints(tainted(json!([ours]))),
            "node-a",
            None,
        ),
        (
            "removes two copies of its taint",
            tainted(json!([ours, other, ours])),
            tainted(json!([other])),
            "node-a",
            None,
        ),
        (
            "removes another taint",
            tainted(json!([ours, other])),
            tainted(json!([ours])),
            "node-a",
            Some("taints only by removing"),
        ),
        (
            "removes its taint and another",
            tainted(json!([ours, other])),
            tainted(json!([])),
            "node-a",
            Some("taints only by removing"),
        ),
        (
            "adds its taint",
            tainted(json!([other])),
            tainted(json!([ours, other])),
            "node-a",
            Some("taints only by removing"),
        ),
        (
            "changes its taint's effect",
            tainted(json!([ours])),
            tainted(
                json!([{"key": "meshcrypt.dev/agent-not-ready", "value": "true", "effect": "NoExecute"}]),
            ),
            "node-a",
            Some("taints only by removing"),
        ),
        (
            "removes its taint and cordons the node",
            tainted(json!([ours])),
            {
                let mut n = tainted(json!([]));
                n["spec"]["unschedulable"] = json!(true);
                n
            },
            "node-a",
            Some("may not change a Node's spec"),
        ),
        (
            "removes the taint of another node",
            tainted(json!([ours])),
            tainted(json!([])),
            "node-b",
            Some("only its own Node"),
        ),
    ];
    for (case, old, new, actor, denied_by) in cases {
        let decision = policy.admit(&update(agent_on(actor), &old, &new, None));
        match denied_by {
            None => assert_eq!(decision, Decision::Allowed, "{case}"),
            Some(needle) => assert_denied_by(&decision, needle, case),
        }
    }
}

/// The AdmissionRequest for a server-side apply of `object` (a MeshNode or a MeshPeer: CREATE or
/// UPDATE, on the object or its status) by `user`.
fn mesh_object_write(user: Json, operation: &str, object: &Json, status: bool) -> Json {
    let kind = object["kind"].as_str().expect("kind");
    let resource = format!("{}s", kind.to_lowercase());
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800003",
        "kind": {"group": "meshcrypt.dev", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "meshcrypt.dev", "version": "v1alpha1", "resource": resource},
        "name": object["metadata"]["name"],
        "operation": operation,
        "userInfo": user,
        "object": object,
        "oldObject": if operation == "UPDATE" { object.clone() } else { Json::Null },
        "dryRun": false,
    });
    if status {
        request["subResource"] = json!("status");
    }
    request
}

fn mesh_object(kind: &str, name: &str, owner: &str) -> Json {
    json!({
        "apiVersion": "meshcrypt.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": owner, "uid": format!("uid-{owner}")}],
        },
        "spec": {},
        "status": {"ready": true},
    })
}

#[test]
fn an_agent_writes_only_its_own_nodes_mesh_objects() {
    let policy = Policy::named("meshcrypt-own-mesh-objects");
    let writes = [
        ("MeshNode", "CREATE", false),
        ("MeshNode", "UPDATE", false),
        ("MeshNode", "UPDATE", true),
        ("MeshPeer", "CREATE", false),
        ("MeshPeer", "UPDATE", false),
    ];
    for (kind, operation, status) in writes {
        let case = format!("{kind} {operation} status={status}");
        let own = mesh_object(kind, "node-a", "node-a");
        assert_eq!(
            policy.admit(&mesh_object_write(agent_on("node-a"), operation, &own, status)),
            Decision::Allowed,
            "{case}"
        );
        let other = mesh_object(kind, "node-b", "node-b");
        assert_denied_by(
            &policy.admit(&mesh_object_write(agent_on("node-a"), operation, &other, status)),
            &format!("only the {kind} of its own node, not node-b"),
            &case,
        );
        let mut no_node = agent_on("node-a");
        no_node.as_object_mut().expect("user").remove("extra");
        assert_denied_by(
            &policy.admit(&mesh_object_write(no_node, operation, &own, status)),
            "not node-a",
            &case,
        );
        let stolen = mesh_object(kind, "node-a", "node-b");
        assert_denied_by(
            &policy.admit(&mesh_object_write(agent_on("node-a"), operation, &stolen, status)),
            &format!("a {kind} may be owned only by its own Node"),
            &case,
        );
        // Someone else (an admin) is not this policy's business; RBAC decides.
        let admin = json!({"username": "kubernetes-admin", "groups": ["system:masters"]});
        assert_eq!(
            policy.admit(&mesh_object_write(
                admin,
                operation,
                &mesh_object(kind, "node-b", "node-b"),
                status
            )),
            Decision::NotMatched,
            "{case}"
        );
    }
}

/// The AdmissionRequest the API server builds for a CREATE of Node `new` by `user`.
fn create(user: Json, new: &Json) -> Json {
    let mut request = update(user, &Json::Null, new, None);
    request["operation"] = json!("CREATE");
    request["name"] = new["metadata"]["name"].clone();
    request
}

/// Issue 15, item 3: only meshcrypt's agent may write `meshcrypt.dev/` annotations; every other
/// principal that may patch or create Nodes keeps every other right.
#[test]
fn only_the_agent_writes_meshcrypt_annotations() {
    let policy = Policy::named("meshcrypt-annotations-by-agents-only");
    let admin = json!({"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]});
    let aws_node = json!({"username": "system:serviceaccount:kube-system:aws-node", "groups": ["system:serviceaccounts"]});
    let karpenter = json!({"username": "system:serviceaccount:kube-system:karpenter", "groups": ["system:serviceaccounts"]});
    let kubelet =
        json!({"username": "system:node:node-a", "groups": ["system:nodes", "system:authenticated"]});
    let plain = node("node-a");
    let keyed = with_key(plain.clone());
    let mut rekeyed = keyed.clone();
    rekeyed["metadata"]["annotations"]["meshcrypt.dev/public-key"] =
        json!("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=");
    let mut labelled = keyed.clone();
    labelled["metadata"]["labels"]["karpenter.sh/nodepool"] = json!("default");
    let mut other_annotation = keyed.clone();
    other_annotation["metadata"]["annotations"]["vpc.amazonaws.com/eniConfig"] = json!("us-east-1a");
    let denied = "only the meshcrypt agent may write meshcrypt.dev/ annotations";
    for (who, user) in
        [("admin", &admin), ("aws-node", &aws_node), ("karpenter", &karpenter), ("kubelet", &kubelet)]
    {
        assert_denied_by(
            &policy.admit(&update(user.clone(), &plain, &keyed, None)),
            denied,
            &format!("{who} adds a key"),
        );
        assert_denied_by(
            &policy.admit(&update(user.clone(), &keyed, &rekeyed, None)),
            denied,
            &format!("{who} changes the key"),
        );
        assert_denied_by(
            &policy.admit(&update(user.clone(), &keyed, &plain, None)),
            denied,
            &format!("{who} removes the key"),
        );
        assert_denied_by(
            &policy.admit(&update(user.clone(), &keyed, &rekeyed, Some("status"))),
            denied,
            &format!("{who} via nodes/status"),
        );
        assert_denied_by(
            &policy.admit(&create(user.clone(), &keyed)),
            denied,
            &format!("{who} creates a keyed Node"),
        );
        // Everything else stays theirs to change.
        assert_eq!(
            policy.admit(&update(user.clone(), &keyed, &labelled, None)),
            Decision::Allowed,
            "{who} labels"
        );
        assert_eq!(
            policy.admit(&update(user.clone(), &keyed, &other_annotation, None)),
            Decision::Allowed,
            "{who} annotates"
        );
        assert_eq!(policy.admit(&create(user.clone(), &plain)), Decision::Allowed, "{who} creates a Node");
    }
    // The agent is the other policy's business.
    assert_eq!(policy.admit(&update(agent_on("node-a"), &plain, &keyed, None)), Decision::NotMatched);
}
