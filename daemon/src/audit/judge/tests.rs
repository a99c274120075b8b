//! The audit's judgement as a table: each case a small cluster, the policy, and the verdict,
//! findings and exceptions it must give.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, ObjectReference, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey};

use super::*;
use crate::audit::report::Verdict;
use meshcrypt_keyexchange::annotations::KEY_FINGERPRINT;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(second).unwrap()
}

fn key(age_days: i64) -> NodeKeyAnnotations {
    NodeKeyAnnotations {
        public_key: PrivateKey::generate().public_key(),
        epoch: 1,
        created: at(NOW - age_days * DAY),
    }
}

fn writer(manager: &str) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Apply".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(
            serde_json::json!({"f:metadata": {"f:annotations": {"f:meshcrypt.dev/public-key": {}}}}),
        )),
        ..ManagedFieldsEntry::default()
    }
}

/// A Node publishing `key`, its `meshcrypt.dev/` annotations owned by the field managers `writers`.
fn node(name: &str, key: Option<&NodeKeyAnnotations>, labels: &[(&str, &str)], writers: &[&str]) -> Node {
    let mut node = crate::test_support::node(name, key, labels);
    node.metadata.managed_fields = Some(writers.iter().map(|w| writer(w)).collect());
    node
}

fn config_map(pairs: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("meshcrypt".into()),
            namespace: Some("meshcrypt-system".into()),
            resource_version: Some("42".into()),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl-client-side-apply".into()),
                operation: Some("Update".into()),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        },
        data: Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
        ..ConfigMap::default()
    }
}

/// One cluster: its Nodes, reports, ConfigMap, Pods and Events.
#[derive(Default)]
struct World {
    nodes: Vec<Node>,
    reports: BTreeMap<String, MeshNodeStatus>,
    config_map: Option<ConfigMap>,
    pods: Vec<Pod>,
    events: Vec<Event>,
}

impl World {
    /// A node `name` with a ready agent, a key of `age_days`, `edit` applied to its report.
    fn ready(mut self, name: &str, age_days: i64, edit: impl FnOnce(&mut MeshNodeStatus)) -> Self {
        let k = key(age_days);
        self.nodes.push(node(name, Some(&k), &[], &["meshcrypt"]));
        let mut r = crate::test_support::ready_report(&k, NOW);
        edit(&mut r);
        self.reports.insert(name.into(), r);
        self
    }

    fn with_node(mut self, n: Node) -> Self {
        self.nodes.push(n);
        self
    }
}

fn default_policy() -> Policy {
    Policy { max_key_age_seconds: 90 * DAY as u64, require_strict: true, max_handshake_age_seconds: None }
}

fn branch_eni_pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("payments-0".into()),
            namespace: Some("shop".into()),
            annotations: Some(BTreeMap::from([(
                BRANCH_ENI_ANNOTATION.to_owned(),
                r#"[{"eniId":"eni-0abc","privateIp":"10.0.1.5"}]"#.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec { node_name: Some("a".into()), ..PodSpec::default() }),
        ..Pod::default()
    }
}

fn forged_fingerprint() -> Node {
    let mut n = node("a", Some(&key(1)), &[], &["meshcrypt"]);
    n.metadata.annotations.as_mut().unwrap().insert(KEY_FINGERPRINT.into(), "sha256:0000000000000000".into());
    n
}

fn foreign_write_event() -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some("a.1".into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some("a".into()),
            ..ObjectReference::default()
        },
        reason: Some(FOREIGN_KEY_WRITER.into()),
        message: Some("meshcrypt.dev/public-key written by kubectl-annotate".into()),
        ..Event::default()
    }
}

/// (case, the cluster, the policy, the verdict, the findings as `severity subject code`, the
/// exceptions beyond the three every cluster has, as `kind subject`)
type Case = (&'static str, World, Policy, Verdict, Vec<&'static str>, Vec<&'static str>);

#[test]
fn audit_table() {
    let strict_not_required = Policy { require_strict: false, ..default_policy() };
    let handshakes_15m = Policy { max_handshake_age_seconds: Some(900), ..default_policy() };
    // A ConfigMap that meets the default policy: host encryption on, keys rotated every 30 days.
    let host = || {
        Some(config_map(&[
            ("pod-networks", "10.244.0.0/16"),
            ("host-encryption", "true"),
            ("key-rotation-interval", "720h"),
        ]))
    };
    let with = |extra: (&'static str, &'static str)| {
        let mut cm = host().unwrap();
        cm.data.as_mut().unwrap().insert(extra.0.into(), extra.1.into());
        World { config_map: Some(cm), ..World::default() }
    };
    let k = key(1);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("the ConfigMap switches strict off: a violation before any agent reports it", with(("strict", "false")).ready("a", 1, |_| {}), default_policy(), Verdict::NotCompliant,
            vec!["violation configmap/meshcrypt-system/meshcrypt StrictOff"], vec![]),
        ("... not when strict is not required", with(("strict", "false")).ready("a", 1, |_| {}), strict_not_required.clone(), Verdict::Compliant,
            vec![], vec![]),
        ("the ConfigMap switches the mesh off", with(("enabled", "false")).ready("a", 1, |_| {}), default_policy(), Verdict::NotCompliant,
            vec!["violation configmap/meshcrypt-system/meshcrypt MeshDisabled"], vec![]),
        ("no scheduled rotation", with(("key-rotation-interval", "0")).ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec!["warning configmap/meshcrypt-system/meshcrypt NoScheduledRotation"], vec![]),
        ("a rotation slower than the policy", with(("key-rotation-interval", "2184h")).ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec!["warning configmap/meshcrypt-system/meshcrypt RotationSlowerThanPolicy"], vec![]),
        ("a healthy node", World::default().ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec!["warning configmap/meshcrypt-system/meshcrypt ConfigMapMissing"], vec!["host-encryption-off cluster"]),
        ("host encryption on: no host exception", World { config_map: host(), ..World::default() }.ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec![], vec![]),
        ("a rejected ConfigMap", World { config_map: Some(config_map(&[("strict", "yes")])), ..World::default() }.ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec!["warning configmap/meshcrypt-system/meshcrypt ConfigRejected"], vec!["host-encryption-off cluster"]),
        ("an agent stopped", World { config_map: host(), ..World::default() }.ready("a", 1, |r| { r.ready = false; r.stopped = true }), default_policy(), Verdict::NotCompliant,
            vec!["violation a AgentStopped"], vec![]),
        ("an agent not ready", World { config_map: host(), ..World::default() }.ready("a", 1, |r| { r.ready = false; r.reason = "the last reconcile pass failed".into() }), default_policy(), Verdict::NotCompliant,
            vec!["violation a AgentNotReady"], vec![]),
        ("an agent gone quiet", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.reported_at = at(NOW - 661).to_string()), default_policy(), Verdict::NotCompliant,
            vec!["violation a AgentNotReporting"], vec![]),
        ("a key older than the policy", World { config_map: host(), ..World::default() }.ready("a", 91, |_| {}), default_policy(), Verdict::NotCompliant,
            vec!["violation a KeyTooOld"], vec![]),
        ("a key just within the policy", World { config_map: host(), ..World::default() }.ready("a", 90, |_| {}), default_policy(), Verdict::Compliant,
            vec![], vec![]),
        ("strict off, required", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.strict = false), default_policy(), Verdict::NotCompliant,
            vec!["violation a StrictOff"], vec![]),
        ("strict off, not required: an exception", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.strict = false), strict_not_required, Verdict::Compliant,
            vec![], vec!["strict-off a"]),
        ("the mesh switched off", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.enabled = false), default_policy(), Verdict::NotCompliant,
            vec!["violation a MeshDisabled"], vec![]),
        ("a node without an agent or key", World { config_map: host(), ..World::default() }.ready("a", 1, |_| {}).with_node(node("b", None, &[], &[])), default_policy(), Verdict::NotCompliant,
            vec!["violation b NoAgent", "violation b NoKeyPublished"], vec![]),
        ("a Fargate node: an exception", World { config_map: host(), ..World::default() }.ready("a", 1, |_| {}).with_node(node("f", None, &[("eks.amazonaws.com/compute-type", "fargate")], &[])), default_policy(), Verdict::Compliant,
            vec![], vec!["no-agent-expected f"]),
        ("a key annotation owned by kubectl too", World { config_map: host(), ..World::default() }.with_node(node("a", Some(&k), &[], &["meshcrypt", "kubectl-annotate"])).ready("b", 1, |_| {}), default_policy(), Verdict::NotCompliant,
            vec!["violation a NoAgent", "violation a ForeignKeyWriter"], vec![]),
        ("a foreign write the agent undid: a warning from its Event", World { config_map: host(), events: vec![foreign_write_event()], ..World::default() }.ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec!["warning a ForeignKeyWriterSeen"], vec![]),
        ("a fingerprint annotation that is not the key's", World { config_map: host(), ..World::default() }.with_node(forged_fingerprint()).ready("b", 1, |_| {}), default_policy(), Verdict::NotCompliant,
            vec!["violation a NoAgent", "violation a FingerprintMismatch"], vec![]),
        ("the reported key is not the published one", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.key_fingerprint = "sha256:0000000000000000".into()), default_policy(), Verdict::Compliant,
            vec!["warning a KeyMismatch"], vec![]),
        ("handshakes not checked by default", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.peers_handshaked = 1), default_policy(), Verdict::Compliant,
            vec![], vec![]),
        ("a peer never handshaked, handshakes checked", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.peers_handshaked = 1), handshakes_15m.clone(), Verdict::NotCompliant,
            vec!["violation a HandshakeMissing"], vec![]),
        ("the oldest handshake too old", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.oldest_handshake = Some(at(NOW - 901).to_string())), handshakes_15m.clone(), Verdict::NotCompliant,
            vec!["violation a HandshakeStale"], vec![]),
        ("the oldest handshake recent enough", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.oldest_handshake = Some(at(NOW - 899).to_string())), handshakes_15m, Verdict::Compliant,
            vec![], vec![]),
        ("an agent's own problem: a warning", World { config_map: host(), ..World::default() }.ready("a", 1, |r| r.problems = vec!["ContestedPrefix: 10.244.1.0/24".into()]), default_policy(), Verdict::Compliant,
            vec!["warning a AgentProblem"], vec![]),
        ("a pod on a branch ENI: an exception", World { config_map: host(), pods: vec![branch_eni_pod()], ..World::default() }.ready("a", 1, |_| {}), default_policy(), Verdict::Compliant,
            vec![], vec!["branch-eni-pod shop/payments-0"]),
    ];
    for (case, world, policy, verdict, findings, exceptions) in cases {
        let inputs = AuditInputs {
            cluster: "https://example.invalid".into(),
            nodes: &world.nodes,
            reports: &world.reports,
            config_map_name: ("meshcrypt-system".into(), "meshcrypt".into()),
            config_map: world.config_map.as_ref(),
            pods: &world.pods,
            foreign_writer_events: &world.events,
        };
        let got = audit(&inputs, &policy, at(NOW));
        assert_eq!(got.verdict, verdict, "{case}: {:#?}", got.findings);
        let mut seen: Vec<String> = got
            .findings
            .iter()
            .map(|f| {
                let severity = if f.severity == Severity::Violation { "violation" } else { "warning" };
                format!("{severity} {} {}", f.subject, f.code)
            })
            .collect();
        let mut want: Vec<String> = findings.iter().map(|s| (*s).to_owned()).collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want, "{case}");
        let mut seen: Vec<String> = got
            .exceptions
            .iter()
            .map(|e| format!("{} {}", e.kind, e.subject))
            .filter(|e| e != "same-node-traffic cluster" && e != "outside-pod-networks cluster")
            .collect();
        let mut want: Vec<String> = exceptions.iter().map(|s| (*s).to_owned()).collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want, "{case}");
        assert_eq!(
            got.summary.violations,
            got.findings.iter().filter(|f| f.severity == Severity::Violation).count()
        );
        assert_eq!(got.content_hash, crate::audit::report::content_hash(&got), "{case}");
    }
}

#[test]
fn the_content_hash_covers_every_field_and_only_the_content() {
    let world = World::default().ready("a", 1, |_| {});
    let inputs = AuditInputs {
        cluster: "https://example.invalid".into(),
        nodes: &world.nodes,
        reports: &world.reports,
        config_map_name: ("meshcrypt-system".into(), "meshcrypt".into()),
        config_map: None,
        pods: &[],
        foreign_writer_events: &[],
    };
    let report = audit(&inputs, &default_policy(), at(NOW));
    assert!(report.content_hash.starts_with("sha256:") && report.content_hash.len() == 7 + 64);
    let again = audit(&inputs, &default_policy(), at(NOW));
    assert_eq!(again.content_hash, report.content_hash, "the same content, the same hash");
    let later = audit(&inputs, &default_policy(), at(NOW + 1));
    assert_ne!(later.content_hash, report.content_hash, "the time is content");
    let mut edited = report.clone();
    edited.key_inventory[0].epoch += 1;
    assert_ne!(crate::audit::report::content_hash(&edited), report.content_hash, "a changed key entry");
    let mut rehashed = report.clone();
    rehashed.content_hash = "sha256:forged".into();
    assert_eq!(
        crate::audit::report::content_hash(&rehashed),
        report.content_hash,
        "the hash leaves itself out"
    );
}
