//! Writes through kube-rs against the in-process test API server: server-side apply with field
//! ownership, optimistic concurrency, authorization by token, pods with selectors, leases, events.

mod apiserver_support;

use apiserver_support::{client, client_for_url, node};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Error};
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};
use serde_json::json;

fn api_code(e: &Error) -> (u16, String) {
    match e {
        Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn annotations(n: &Node) -> std::collections::BTreeMap<String, String> {
    n.metadata.annotations.clone().unwrap_or_default()
}

fn apply_annotations(anns: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Apply(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a", "annotations": anns},
    }))
}

#[tokio::test]
async fn server_side_apply_tracks_field_ownership_per_manager() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let nodes: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let ours = PatchParams::apply("meshcrypt");
    let theirs = PatchParams::apply("someone-else");

    let n = nodes
        .patch(
            "node-a",
            &ours,
            &apply_annotations(json!({"meshcrypt.dev/public-key": "k1", "meshcrypt.dev/epoch": "1"})),
        )
        .await
        .unwrap();
    assert_eq!(annotations(&n).get("meshcrypt.dev/public-key").map(String::as_str), Some("k1"));
    assert_eq!(annotations(&n).get("meshcrypt.dev/epoch").map(String::as_str), Some("1"));
    // Status and spec were untouched by applying annotations.
    assert_eq!(n.spec.unwrap().pod_cidrs.unwrap(), vec!["10.244.1.0/24".to_string()]);
    assert_eq!(n.status.unwrap().addresses.unwrap()[0].address, "198.18.0.2");

    nodes.patch("node-a", &theirs, &apply_annotations(json!({"example.com/other": "x"}))).await.unwrap();

    // Re-applying without a key we owned removes it; the other manager's annotation stays.
    let n = nodes
        .patch("node-a", &ours, &apply_annotations(json!({"meshcrypt.dev/public-key": "k2"})))
        .await
        .unwrap();
    let anns = annotations(&n);
    assert_eq!(anns.get("meshcrypt.dev/public-key").map(String::as_str), Some("k2"));
    assert!(!anns.contains_key("meshcrypt.dev/epoch"), "omitted field removed: {anns:?}");
    assert_eq!(anns.get("example.com/other").map(String::as_str), Some("x"));

    let managers: Vec<(String, String)> = n
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    assert!(managers.contains(&("meshcrypt".into(), "Apply".into())), "{managers:?}");
    assert!(managers.contains(&("someone-else".into(), "Apply".into())), "{managers:?}");

    // A different value for a field another manager owns is a conflict without force...
    let err = nodes
        .patch(
            "node-a",
            &theirs,
            &apply_annotations(json!({"example.com/other": "x", "meshcrypt.dev/public-key": "evil"})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".to_string()));
    let n = nodes.get("node-a").await.unwrap();
    assert_eq!(annotations(&n).get("meshcrypt.dev/public-key").map(String::as_str), Some("k2"));

    // ...and taken over with force.
    let n = nodes
        .patch(
            "node-a",
            &theirs.clone().force(),
            &apply_annotations(json!({"example.com/other": "x", "meshcrypt.dev/public-key": "forced"})),
        )
        .await
        .unwrap();
    assert_eq!(annotations(&n).get("meshcrypt.dev/public-key").map(String::as_str), Some("forced"));
    // meshcrypt lost the field: its next apply without force now conflicts.
    let err = nodes
        .patch("node-a", &ours, &apply_annotations(json!({"meshcrypt.dev/public-key": "k3"})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 409);

    // Apply creates a missing object; a re-apply with identical content changes nothing.
    let cms: Api<ConfigMap> = Api::namespaced(nodes.clone().into(), "default");
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let created = cms.patch("cfg", &ours, &Patch::Apply(cm.clone())).await.unwrap();
    let again = cms.patch("cfg", &ours, &Patch::Apply(cm)).await.unwrap();
    assert_eq!(created.metadata.resource_version, again.metadata.resource_version);
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_a_conflict() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let nodes: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let original = nodes.get("node-a").await.unwrap();

    let mut first = original.clone();
    first.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
    let updated = nodes.replace("node-a", &PostParams::default(), &first).await.unwrap();
    assert_ne!(updated.metadata.resource_version, original.metadata.resource_version);

    let mut stale = original.clone();
    stale.metadata.labels = Some([("b".to_string(), "2".to_string())].into());
    let err = nodes.replace("node-a", &PostParams::default(), &stale).await.unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".to_string()));
    let now = nodes.get("node-a").await.unwrap();
    assert_eq!(now.metadata.labels.unwrap().get("a").map(String::as_str), Some("1"));

    // Creating a duplicate is AlreadyExists, getting a missing object NotFound.
    let err = nodes.create(&PostParams::default(), &original).await.unwrap_err();
    assert_eq!(api_code(&err), (409, "AlreadyExists".to_string()));
    let err = nodes.get("nope").await.unwrap_err();
    assert_eq!(api_code(&err), (404, "NotFound".to_string()));

    // Leases are optimistic too.
    let leases: Api<Lease> = Api::namespaced(nodes.into(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "node-a"},
        "spec": {"holderIdentity": "node-a"}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().lease_duration_seconds = Some(40);
    leases.replace("node-a", &PostParams::default(), &renewed).await.unwrap();
    let err = leases.replace("node-a", &PostParams::default(), &renewed).await.unwrap_err();
    assert_eq!(api_code(&err).0, 409);
}

#[tokio::test]
async fn node_tokens_may_modify_only_their_own_node() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    server.create(node("node-b", 2)).unwrap();
    let token = server.add_node_token("node-a");
    let as_node = client(&server, &token).await;
    let nodes: Api<Node> = Api::all(as_node.clone());
    let patch = Patch::Merge(json!({"metadata": {"annotations": {"meshcrypt.dev/public-key": "k"}}}));

    let err = nodes.patch("node-b", &PatchParams::default(), &patch).await.unwrap_err();
    assert_eq!(api_code(&err), (403, "Forbidden".to_string()));
    let err = nodes.delete("node-b", &Default::default()).await.unwrap_err();
    assert_eq!(api_code(&err).0, 403);
    let b = server.get("v1", "Node", None, "node-b").unwrap();
    assert!(b.pointer("/metadata/annotations/meshcrypt.dev~1public-key").is_none());

    let a = nodes.patch("node-a", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(annotations(&a).get("meshcrypt.dev/public-key").map(String::as_str), Some("k"));
    // Server-side apply to its own node works too.
    nodes
        .patch(
            "node-a",
            &PatchParams::apply("meshcrypt"),
            &apply_annotations(json!({"meshcrypt.dev/epoch": "2"})),
        )
        .await
        .unwrap();

    // Reading anything is fine; creating Events is fine; creating other things is not.
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 2);
    let events: Api<Event> = Api::namespaced(as_node.clone(), "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "node-a."},
        "involvedObject": {"kind": "Node", "name": "node-a"},
        "reason": "KeyPublished",
        "message": "published",
        "type": "Normal"
    }))
    .unwrap();
    events.create(&PostParams::default(), &ev).await.unwrap();
    assert_eq!(events.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let cms: Api<ConfigMap> = Api::namespaced(as_node, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert_eq!(api_code(&err).0, 403);

    // No token, or an unknown one: 401.
    let anonymous: Api<Node> = Api::all(client_for_url(&server.url(), None).await);
    let err = anonymous.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_code(&err).0, 401);
    let unknown: Api<Node> = Api::all(client(&server, "not-a-token").await);
    let err = unknown.get("node-a").await.unwrap_err();
    assert_eq!(api_code(&err).0, 401);
}

#[tokio::test]
async fn pods_list_and_watch_with_field_and_label_selectors() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    for (ns, name, node, app) in [
        ("default", "p1", "node-a", "web"),
        ("default", "p2", "node-b", "web"),
        ("other", "p3", "node-a", "db"),
    ] {
        server
            .create(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            }))
            .unwrap();
    }
    let c = client(&server, server.admin_token()).await;
    let all: Api<Pod> = Api::all(c.clone());
    let names = |pods: Vec<Pod>| {
        let mut v: Vec<String> = pods.into_iter().map(|p| p.metadata.name.unwrap()).collect();
        v.sort();
        v
    };
    let on_a = all.list(&ListParams::default().fields("spec.nodeName=node-a")).await.unwrap();
    assert_eq!(names(on_a.items), ["p1", "p3"]);
    let not_a = all.list(&ListParams::default().fields("spec.nodeName!=node-a")).await.unwrap();
    assert_eq!(names(not_a.items), ["p2"]);
    let web_in_default: Api<Pod> = Api::namespaced(c.clone(), "default");
    let l = web_in_default.list(&ListParams::default().labels("app in (web,cache)")).await.unwrap();
    assert_eq!(names(l.items), ["p1", "p2"]);
    let l =
        all.list(&ListParams::default().labels("app!=web").fields("metadata.namespace=other")).await.unwrap();
    assert_eq!(names(l.items), ["p3"]);

    // A watch filtered to node-a sees a pod that moves there as ADDED and its deletion.
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let rv = on_a.metadata.resource_version.unwrap();
    let mut stream = all
        .watch(&WatchParams::default().fields("spec.nodeName=node-a").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    server.delete("v1", "Pod", Some("default"), "p2").unwrap();
    server
        .create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p4", "namespace": "default"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
    server.delete("v1", "Pod", Some("other"), "p3").unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(apiserver_support::DEADLINE, stream.next()).await.expect("event") {
            Some(Ok(WatchEvent::Added(p))) => got.push(format!("ADDED {}", p.metadata.name.unwrap())),
            Some(Ok(WatchEvent::Deleted(p))) => got.push(format!("DELETED {}", p.metadata.name.unwrap())),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["ADDED p4", "DELETED p3"]);
}

#[tokio::test]
async fn a_node_token_can_publish_events_with_the_kube_runtime_recorder() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};

    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let token = server.add_node_token("node-a");
    let recorder = Recorder::new(
        client(&server, &token).await,
        Reporter { controller: "meshcrypt".into(), instance: Some("node-a".into()) },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("node-a".into()),
        ..ObjectReference::default()
    };
    let ev = RecorderEvent {
        type_: EventType::Normal,
        reason: "KeyPublished".into(),
        note: Some("published the WireGuard public key".into()),
        action: "Publish".into(),
        secondary: None,
    };
    // The first publish creates the Event, the second patches its series.
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();

    let events: Api<NewEvent> = Api::namespaced(client(&server, server.admin_token()).await, "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1, "{:?}", list.items);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("KeyPublished"));
    assert_eq!(e.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("node-a"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn every_patch_type_and_the_status_subresource() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let nodes: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let pp = PatchParams::default();

    // JSON patch (RFC 6902), with a failing test operation rejected as a whole.
    let p = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels", "value": {"role": "edge"}},
    ]))
    .unwrap();
    let n = nodes.patch("node-a", &pp, &Patch::Json::<()>(p)).await.unwrap();
    assert_eq!(n.metadata.labels.unwrap().get("role").map(String::as_str), Some("edge"));
    let p = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/role", "value": "core"},
        {"op": "remove", "path": "/metadata/labels/role"},
    ]))
    .unwrap();
    let err = nodes.patch("node-a", &pp, &Patch::Json::<()>(p)).await.unwrap_err();
    assert_eq!(api_code(&err).0, 422);

    // Strategic merge on the status subresource merges addresses by type.
    let n = nodes
        .patch_status(
            "node-a",
            &pp,
            &Patch::Strategic(json!({"status": {"addresses": [
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "InternalIP", "address": "198.18.9.9"}
            ]}})),
        )
        .await
        .unwrap();
    let addrs: Vec<(String, String)> =
        n.status.unwrap().addresses.unwrap().into_iter().map(|a| (a.type_, a.address)).collect();
    assert_eq!(
        addrs,
        [
            ("InternalIP".to_string(), "198.18.9.9".to_string()),
            ("Hostname".to_string(), "node-a".to_string()),
            ("ExternalIP".to_string(), "203.0.113.7".to_string()),
        ]
    );

    // Status written through the main resource is ignored (like a real server); spec written
    // through /status is ignored too.
    let n = nodes
        .patch(
            "node-a",
            &pp,
            &Patch::Merge(json!({"status": {"addresses": []}, "metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(n.status.unwrap().addresses.unwrap().len(), 3);
    assert_eq!(n.metadata.annotations.unwrap().get("a").map(String::as_str), Some("1"));
    let n = nodes
        .patch_status("node-a", &pp, &Patch::Merge(json!({"spec": {"podCIDRs": ["10.9.9.0/24"]}})))
        .await
        .unwrap();
    assert_eq!(n.spec.unwrap().pod_cidrs.unwrap(), ["10.244.1.0/24"]);

    // A merge patch carrying a stale resourceVersion is a conflict.
    let err = nodes
        .patch(
            "node-a",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".to_string()));

    // ConfigMaps: strategic merge (null deletes), update and delete.
    let cms: Api<ConfigMap> = Api::namespaced(nodes.clone().into(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let cm = cms.patch("cfg", &pp, &Patch::Strategic(json!({"data": {"a": null, "c": "3"}}))).await.unwrap();
    let data = cm.data.clone().unwrap();
    assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), ["b", "c"]);
    let mut changed = cm.clone();
    changed.data.as_mut().unwrap().insert("d".into(), "4".into());
    cms.replace("cfg", &PostParams::default(), &changed).await.unwrap();
    cms.delete("cfg", &Default::default()).await.unwrap();
    assert_eq!(api_code(&cms.get("cfg").await.unwrap_err()).0, 404);

    // Delete a collection by label.
    for (name, team) in [("x1", "a"), ("x2", "a"), ("x3", "b")] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": team}}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete_collection(&Default::default(), &ListParams::default().labels("team=a")).await.unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["x3"]);
}

#[tokio::test]
async fn managed_fields_sent_by_a_client_are_honoured() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let nodes: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let ours = PatchParams::apply("meshcrypt");
    nodes.patch("node-a", &ours, &apply_annotations(json!({"meshcrypt.dev/a": "1"}))).await.unwrap();

    // `[]` changes nothing; `[{}]` resets ownership.
    let n = nodes
        .patch("node-a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"managedFields": []}})))
        .await
        .unwrap();
    assert!(!n.metadata.managed_fields.unwrap_or_default().is_empty());
    let n = nodes
        .patch("node-a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"managedFields": [{}]}})))
        .await
        .unwrap();
    assert!(
        !n.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("meshcrypt")),
        "ownership reset"
    );
    // meshcrypt no longer owns the annotation, so an apply without it leaves it in place.
    let n = nodes.patch("node-a", &ours, &apply_annotations(json!({}))).await.unwrap();
    assert_eq!(annotations(&n).get("meshcrypt.dev/a").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn annotations_over_256_kib_are_refused_on_every_write() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let nodes: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let cms: Api<ConfigMap> = Api::namespaced(nodes.clone().into(), "default");
    // "big" and its value together are one byte over 262144.
    let too_big = "x".repeat(262_144 - 3 + 1);
    let invalid = |e: Error| {
        let Error::Api(s) = e else { panic!("expected an API error, got {e:?}") };
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
        assert!(
            s.message.ends_with("is invalid: metadata.annotations: Too long: must have at most 262144 bytes")
        );
        s.message
    };

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "big", "annotations": {"big": too_big}},
    }))
    .unwrap();
    let message = invalid(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert!(message.starts_with("ConfigMap \"big\" is invalid"), "{message}");
    assert!(cms.get_opt("big").await.unwrap().is_none());

    let rv = server.resource_version();
    let mut n = nodes.get("node-a").await.unwrap();
    n.metadata.annotations = Some([("big".to_string(), too_big.clone())].into());
    invalid(nodes.replace("node-a", &PostParams::default(), &n).await.unwrap_err());
    let merge = Patch::Merge(json!({"metadata": {"annotations": {"big": too_big}}}));
    invalid(nodes.patch("node-a", &PatchParams::default(), &merge).await.unwrap_err());
    let apply = apply_annotations(json!({"big": too_big}));
    invalid(nodes.patch("node-a", &PatchParams::apply("meshcrypt"), &apply).await.unwrap_err());
    // Two annotations that fit alone do not fit together.
    let half = "y".repeat(131_072);
    nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": half}}})),
        )
        .await
        .unwrap();
    let rv_after_first = server.resource_version();
    invalid(
        nodes
            .patch(
                "node-a",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"b": half}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(rv_after_first, rv + 1, "only the write that fitted was stored");
    assert_eq!(server.resource_version(), rv_after_first);
    let stored = annotations(&nodes.get("node-a").await.unwrap());
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["a"]);
}

#[tokio::test]
async fn a_server_side_dry_run_answers_as_if_done_and_stores_nothing() {
    use futures::StreamExt;
    use kube::api::{DeleteParams, WatchEvent, WatchParams};

    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let c = client(&server, server.admin_token()).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let rv = server.resource_version();
    let mut watch = nodes
        .watch(&WatchParams::default().timeout(10).disable_bookmarks(), &rv.to_string())
        .await
        .unwrap()
        .boxed();
    let dry_post = PostParams { dry_run: true, ..PostParams::default() };
    let dry_patch = PatchParams::default().dry_run();

    // A create answers with what would be stored (no resourceVersion yet) and stores nothing.
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "dry"}, "data": {"a": "1"}})).unwrap();
    let created = cms.create(&dry_post, &cm).await.unwrap();
    assert_eq!(created.data.unwrap()["a"], "1");
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_none());
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    // Update, every patch type and a delete answer with the changed object, keeping its version.
    let live = nodes.get("node-a").await.unwrap();
    let mut changed = live.clone();
    changed.metadata.labels = Some([("dry".to_string(), "1".to_string())].into());
    let replaced = nodes.replace("node-a", &dry_post, &changed).await.unwrap();
    assert_eq!(replaced.metadata.labels.unwrap()["dry"], "1");
    assert_eq!(replaced.metadata.resource_version, live.metadata.resource_version);
    for patch in [
        Patch::Merge(json!({"metadata": {"labels": {"dry": "2"}}})),
        Patch::Strategic(json!({"metadata": {"labels": {"dry": "2"}}})),
        Patch::Json(
            serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels", "value": {"dry": "2"}}]))
                .unwrap(),
        ),
    ] {
        let patched = nodes.patch("node-a", &dry_patch, &patch).await.unwrap();
        assert_eq!(patched.metadata.labels.unwrap()["dry"], "2", "{patch:?}");
    }
    let applied = nodes
        .patch("node-a", &PatchParams::apply("meshcrypt").dry_run(), &apply_annotations(json!({"k": "v"})))
        .await
        .unwrap();
    assert_eq!(annotations(&applied)["k"], "v");
    let applied = cms
        .patch(
            "dry",
            &PatchParams::apply("meshcrypt").dry_run(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}})),
        )
        .await
        .unwrap();
    assert!(applied.metadata.resource_version.is_none(), "an apply that creates answers as a create");
    nodes.delete("node-a", &DeleteParams { dry_run: true, ..DeleteParams::default() }).await.unwrap();
    // An invalid object is refused in a dry run too.
    let err = nodes
        .patch(
            "node-a",
            &dry_patch,
            &Patch::Merge(json!({"metadata": {"annotations": {"big": "x".repeat(262_145)}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 422);

    assert_eq!(server.resource_version(), rv, "no resourceVersion was taken");
    assert_eq!(nodes.get("node-a").await.unwrap(), live, "the node is as it was");
    assert!(cms.get_opt("dry").await.unwrap().is_none());
    // The watch saw none of it: the first event it gets is the next real change.
    nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"real": "1"}}})),
        )
        .await
        .unwrap();
    match tokio::time::timeout(apiserver_support::DEADLINE, watch.next()).await.expect("an event") {
        Some(Ok(WatchEvent::Modified(n))) => {
            let labels = n.metadata.labels.unwrap();
            assert!(labels.contains_key("real") && !labels.contains_key("dry"), "{labels:?}");
        }
        other => panic!("expected the real change, got {other:?}"),
    }
}

/// Deleting a Node takes the objects it alone owns with it (the garbage collector's background
/// cascade), and their dependents in turn; an object with another owner still there stays.
#[tokio::test]
async fn deleting_an_owner_collects_what_it_alone_owned() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    let uid = |v: &serde_json::Value| v.pointer("/metadata/uid").unwrap().as_str().unwrap().to_owned();
    let a = uid(&server.create(node("node-a", 1)).unwrap());
    let b = uid(&server.create(node("node-b", 2)).unwrap());
    let owned = |name: &str, owners: &[(&str, &str)]| {
        let refs: Vec<_> = owners
            .iter()
            .map(|(n, u)| json!({"apiVersion": "v1", "kind": "Node", "name": n, "uid": u}))
            .collect();
        json!({"apiVersion": "meshcrypt.dev/v1alpha1", "kind": "MeshPeer",
               "metadata": {"name": name, "ownerReferences": refs}, "spec": {}})
    };
    let peer_a = uid(&server.create(owned("node-a", &[("node-a", &a)])).unwrap());
    server.create(owned("shared", &[("node-a", &a), ("node-b", &b)])).unwrap();
    server.create(owned("of-peer-a", &[("x", &peer_a)])).unwrap();
    server.create(owned("node-b", &[("node-b", &b)])).unwrap();

    server.delete("v1", "Node", None, "node-a").unwrap();
    let left = |name: &str| server.get("meshcrypt.dev/v1alpha1", "MeshPeer", None, name).is_ok();
    let cases = [("node-a", false), ("of-peer-a", false), ("shared", true), ("node-b", true)];
    for (name, stays) in cases {
        assert_eq!(left(name), stays, "{name}");
    }
    server.delete("v1", "Node", None, "node-b").unwrap();
    assert!(!left("shared") && !left("node-b"), "the last owner went");
}
